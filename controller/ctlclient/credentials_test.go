package ctlclient

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"
)

// fakeAuth is an Authenticate that answers when released, counting calls.
type fakeAuth struct {
	name    string
	calls   atomic.Int32
	release chan struct{}
	life    time.Duration
	err     error
}

func (f *fakeAuth) authenticate(ctx context.Context) (string, time.Time, error) {
	n := f.calls.Add(1)
	select {
	case <-f.release:
	case <-ctx.Done():
		return "", time.Time{}, ctx.Err()
	}
	if f.err != nil {
		return "", time.Time{}, f.err
	}
	return fmt.Sprintf("%s-%d", f.name, n), time.Now().Add(f.life), nil
}

// TestCredentialsRenewInTheBackground: calls go on with a valid token while
// one renewal runs, however long it takes; a caller with no valid token
// waits for it only as long as its context allows; concurrent callers
// share one Authenticate.
func TestCredentialsRenewInTheBackground(t *testing.T) {
	f := &fakeAuth{name: "first", release: make(chan struct{}), life: time.Hour}
	c := &Credentials{user: "alice", authenticate: f.authenticate}

	// No token yet: a caller whose deadline passes gets its context's
	// error, not a stall; others share the one renewal.
	short, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, _, err := c.Token(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("without a token, past its deadline: %v, want DeadlineExceeded", err)
	}
	got := make(chan string, 4)
	for range 4 {
		go func() {
			tok, _, err := c.Token(context.Background())
			if err != nil {
				tok = err.Error()
			}
			got <- tok
		}()
	}
	time.Sleep(20 * time.Millisecond)
	close(f.release) // every later authenticate answers at once
	for range 4 {
		if tok := <-got; tok != "first-1" {
			t.Fatalf("a waiting caller got %q, want the one renewal's first-1", tok)
		}
	}
	if n := f.calls.Load(); n != 1 {
		t.Fatalf("%d authentications for concurrent callers, want 1", n)
	}

	// In the renewal window with a renewal that does not answer: calls go
	// on with the current token at once.
	f2 := &fakeAuth{name: "renewed", release: make(chan struct{}), life: time.Hour}
	c.authenticate = f2.authenticate
	c.mu.Lock()
	c.renew = time.Now().Add(-time.Second) // due for renewal, still valid
	c.mu.Unlock()
	for range 3 {
		start := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		tok, _, err := c.Token(ctx)
		cancel()
		if err != nil || tok != "first-1" {
			t.Fatalf("during a renewal: %q %v, want the current first-1", tok, err)
		}
		if d := time.Since(start); d > time.Second {
			t.Fatalf("a call waited %v for a renewal while its token was valid", d)
		}
	}
	waitCalls := func(f *fakeAuth, want int32) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for f.calls.Load() < want && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		time.Sleep(10 * time.Millisecond) // room for a second one, were it started
		if n := f.calls.Load(); n != want {
			t.Fatalf("%d authentications, want %d", n, want)
		}
	}
	waitCalls(f2, 1) // one renewal at a time, whatever the calls
	close(f2.release)
	deadline := time.Now().Add(5 * time.Second)
	for {
		tok, _, err := c.Token(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if tok == "renewed-1" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the renewed token never replaced the old one: still %q", tok)
		}
		time.Sleep(time.Millisecond)
	}

	// A renewal that fails, with no valid token: its waiters get the error.
	f3 := &fakeAuth{name: "refused", release: make(chan struct{}), life: time.Hour, err: errors.New("controller says no")}
	close(f3.release)
	c3 := &Credentials{user: "bob", authenticate: f3.authenticate}
	if _, _, err := c3.Token(context.Background()); err == nil || !errors.Is(err, f3.err) {
		t.Fatalf("a failed authentication: %v, want it wrapped", err)
	}
	// Right after, no new renewal: the same error at once.
	if _, _, err := c3.Token(context.Background()); !errors.Is(err, f3.err) {
		t.Fatalf("right after a failed authentication: %v, want its error again", err)
	}
	if n := f3.calls.Load(); n != 1 {
		t.Fatalf("%d authentications right after a failure, want 1 (a backoff)", n)
	}
}

// TestCredentialsWaiterTakesItsRenewal: a caller that waited for a renewal
// gets the token it brought, even when the local clock says it has
// expired already (a client clock ahead of the controller's by more than
// a token's life): it does not start another and wait again.
func TestCredentialsWaiterTakesItsRenewal(t *testing.T) {
	f := &fakeAuth{name: "skewed", release: make(chan struct{}), life: -time.Minute}
	close(f.release)
	c := &Credentials{user: "carol", authenticate: f.authenticate}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	tok, _, err := c.Token(ctx)
	if err != nil || tok != "skewed-1" {
		t.Fatalf("a token that looks expired on arrival: %q %v, want skewed-1 at once", tok, err)
	}
}
