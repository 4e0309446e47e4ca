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
