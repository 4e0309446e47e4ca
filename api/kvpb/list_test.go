package kvpb

import "testing"

func TestPrefixEnd(t *testing.T) {
	for _, tc := range []struct{ in, want []byte }{
		{[]byte{1, 2}, []byte{1, 3}},
		{[]byte{1, 0xff}, []byte{2}},
		{[]byte{0xff}, nil},
	} {
		if got := PrefixEnd(tc.in); string(got) != string(tc.want) {
			t.Errorf("PrefixEnd(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

func TestListFrom(t *testing.T) {
	for _, tc := range []struct{ start, after, want string }{
		{"", "", ""},
		{"b", "", "b"},
		{"", "a", "a\x00"},
		{"b", "a", "b"},
		{"a", "a", "a\x00"},
		{"a\x00", "a", "a\x00"},
		{"a", "b", "b\x00"},
	} {
		req := &ListRequest{Start: []byte(tc.start), After: []byte(tc.after)}
		if got := ListFrom(req); string(got) != tc.want {
			t.Errorf("ListFrom(start %q, after %q) = %q, want %q", tc.start, tc.after, got, tc.want)
		}
		if string(req.After) != tc.after {
			t.Errorf("ListFrom changed the request's cursor to %q", req.After)
		}
	}
}
