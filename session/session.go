// Package session holds what the controller's and the replica groups'
// duplicate tables have in common: the stable numbering of the outcomes
// they remember, and the ids clients open sessions with (NewID).
//
// A duplicate table records, per client, the last sequence number applied
// and its outcome, so that a retry is answered with the same outcome rather
// than applied again. Outcomes are sentinel errors; on disk they are small
// numbers, and the numbering must never change once written.
package session

import "errors"

// ErrUnknownOutcome is returned for a code no table entry has: data
// written by a newer version. It is not client.ErrUnknownOutcome or
// ctlclient.ErrUnknownOutcome, which say that a write's or a change's
// fate is unknown.
var ErrUnknownOutcome = errors.New("session: unknown outcome code")

// Outcomes numbers the outcomes a state machine may remember: code 0 is
// success (nil), code i is Outcomes[i]. Only append to such a list.
type Outcomes []error

// Code returns the code of err: 0 for nil or an error not in the list.
// So an error not in the list is recorded as success: list every outcome
// a state machine may return.
func (o Outcomes) Code(err error) uint32 {
	for i, e := range o {
		if i > 0 && errors.Is(err, e) {
			return uint32(i)
		}
	}
	return 0
}

// Err returns the outcome of code, Outcomes[code]. A code past the end of
// the list (data written by a newer version) gives ErrUnknownOutcome.
func (o Outcomes) Err(code uint32) error {
	if int(code) < len(o) {
		return o[code]
	}
	return ErrUnknownOutcome
}
