package memberpb

import "strings"

// Name is the role as people read it: "voter", "learner", "outgoing", or
// "unspecified" for no role.
func (r Role) Name() string {
	return strings.ToLower(strings.TrimPrefix(r.String(), "ROLE_"))
}
