package raftnode

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
)

// raftLogger sends etcd raft's log lines to slog. Raft's info lines (votes,
// elections, term changes) are debug here: a healthy cluster logs nothing at
// info in steady state.
type raftLogger struct{ l *slog.Logger }

func (r raftLogger) Debug(v ...any)              { r.l.Debug(fmt.Sprint(v...)) }
func (r raftLogger) Debugf(f string, v ...any)   { r.l.Debug(fmt.Sprintf(f, v...)) }
func (r raftLogger) Info(v ...any)               { r.l.Debug(fmt.Sprint(v...)) }
func (r raftLogger) Infof(f string, v ...any)    { r.l.Debug(fmt.Sprintf(f, v...)) }
func (r raftLogger) Warning(v ...any)            { r.l.Warn(fmt.Sprint(v...)) }
func (r raftLogger) Warningf(f string, v ...any) { r.l.Warn(fmt.Sprintf(f, v...)) }
func (r raftLogger) Error(v ...any)              { r.l.Error(fmt.Sprint(v...)) }
func (r raftLogger) Errorf(f string, v ...any)   { r.l.Error(fmt.Sprintf(f, v...)) }
func (r raftLogger) Fatal(v ...any)              { r.Panic(v...) }
func (r raftLogger) Fatalf(f string, v ...any)   { r.Panicf(f, v...) }
func (r raftLogger) Panic(v ...any)              { r.Panicf("%s", fmt.Sprint(v...)) }
func (r raftLogger) Panicf(f string, v ...any) {
	msg := fmt.Sprintf(f, v...)
	r.l.Log(context.Background(), slog.LevelError, msg)
	panic(&raftPanic{msg: msg})
}

// ErrRaftPanicked matches the error a member stops with (Node.Err) when
// etcd raft panicked in it: an invariant of its log did not hold. Most
// often its log lost entries it had acknowledged (a data directory
// restored from an older copy), which the leader's next message shows:
// "tocommit(N) is out of range [lastIndex(M)]". The member stops with it
// (Node.Done, Node.Err) instead of panicking on whichever goroutine
// stepped the message; what then becomes of the process is its owner's
// choice (`shardkv server` exits with it as its last line). Raft's panics
// outside the member's own calls (MemoryStorage's, through raft's global
// logger) still panic: they take a local bug.
var ErrRaftPanicked = errors.New("raft panicked")

// raftPanic is what raftLogger panics with, so that the inlineNode
// recovers raft's own panics and no others (guarded).
type raftPanic struct{ msg string }

func (p *raftPanic) Error() string { return "raft: " + p.msg }
func (p *raftPanic) Unwrap() error { return ErrRaftPanicked }

// asRaftPanic returns r, a recovered panic, as raft's own; any other
// panic goes on.
func asRaftPanic(r any) *raftPanic {
	p, ok := r.(*raftPanic)
	if !ok {
		panic(r)
	}
	return p
}
