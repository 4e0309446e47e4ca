package session

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeTime is a TimeSource whose wall clock a test steps independently of
// its monotonic clock.
type fakeTime struct {
	mu   sync.Mutex
	wall time.Time
	mono time.Duration
}

func (f *fakeTime) Wall() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.wall
}

func (f *fakeTime) Monotonic() time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.mono
}

// elapse advances both clocks, as real time passing does.
func (f *fakeTime) elapse(d time.Duration) {
	f.mu.Lock()
	f.wall, f.mono = f.wall.Add(d), f.mono+d
	f.mu.Unlock()
}

// step moves only the wall clock, as NTP or an operator does.
func (f *fakeTime) step(d time.Duration) {
	f.mu.Lock()
	f.wall = f.wall.Add(d)
	f.mu.Unlock()
}

func TestClockIgnoresWallSteps(t *testing.T) {
	var logs bytes.Buffer
	src := &fakeTime{wall: time.UnixMilli(1_000_000_000)}
	c := NewClock(src, slog.New(slog.NewTextHandler(&logs, nil)))

	applied := int64(500_000) // replicated time far behind the wall: a restarted cluster
	s0 := c.Stamp(applied)
	if s0 != applied {
		t.Fatalf("first stamp %d, want the applied time %d", s0, applied)
	}
	src.elapse(3 * time.Second)
	if got := c.Stamp(s0); got != s0+3000 {
		t.Fatalf("after 3s: %d, want %d", got, s0+3000)
	}
	if strings.Contains(logs.String(), "WARN") {
		t.Fatalf("warned without a step: %s", logs.String())
	}
	src.step(2 * time.Hour)
	src.elapse(time.Second)
	if got := c.Stamp(s0); got != s0+4000 {
		t.Fatalf("wall stepped 2h ahead: stamp %d, want %d", got, s0+4000)
	}
	if !strings.Contains(logs.String(), "wall clock disagrees") {
		t.Fatalf("no warning for a 2h step: %s", logs.String())
	}
	logs.Reset()
	src.step(-3 * time.Hour)
	src.elapse(time.Second)
	if got := c.Stamp(s0); got != s0+5000 {
		t.Fatalf("wall stepped 3h back: stamp %d, want %d", got, s0+5000)
	}
	if !strings.Contains(logs.String(), "wall clock disagrees") {
		t.Fatalf("no warning for a backward step: %s", logs.String())
	}
}

func TestClockNeverBehindApplied(t *testing.T) {
	src := &fakeTime{wall: time.UnixMilli(1_000_000)}
	c := NewClock(src, slog.New(slog.DiscardHandler))
	s := c.Stamp(1000)
	// Another leader stamped further ahead in the meantime: follow it.
	if got := c.Stamp(s + 60_000); got != s+60_000 {
		t.Fatalf("stamp %d behind applied %d", got, s+60_000)
	}
	src.elapse(10 * time.Millisecond)
	if got := c.Stamp(s); got != s+60_010 {
		t.Fatalf("stamp %d went backwards (want %d)", got, s+60_010)
	}
}

func TestClockNewStateStartsAtWall(t *testing.T) {
	src := &fakeTime{wall: time.UnixMilli(1_700_000_000_000)}
	c := NewClock(src, slog.New(slog.DiscardHandler))
	if got := c.Stamp(0); got != 1_700_000_000_000 {
		t.Fatalf("first stamp of a new state machine %d, want the wall clock", got)
	}
}

func TestAdvanceIsMonotonic(t *testing.T) {
	if Advance(10, 5) != 10 || Advance(10, 15) != 15 {
		t.Fatal("Advance must be max(now, stamp)")
	}
}
