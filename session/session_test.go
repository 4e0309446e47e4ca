package session

import (
	"errors"
	"fmt"
	"testing"
)

func TestOutcomesRoundTrip(t *testing.T) {
	a, b := errors.New("a"), errors.New("b")
	o := Outcomes{nil, a, b}
	for _, err := range []error{nil, a, b, fmt.Errorf("wrapped: %w", b)} {
		if got := o.Err(o.Code(err)); !errors.Is(err, got) && !(err == nil && got == nil) {
			t.Errorf("%v -> %d -> %v", err, o.Code(err), got)
		}
	}
	if o.Code(errors.New("other")) != 0 {
		t.Error("an unlisted error got a code")
	}
	if !errors.Is(o.Err(9), ErrUnknownOutcome) {
		t.Error("an unknown code decoded")
	}
}
