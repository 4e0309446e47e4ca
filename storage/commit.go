package storage

import (
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble/v2"

	"github.com/shardkv/shardkv/api/rpcerr"
)

// ErrCannotPersist matches the error a write reports, through
// Options.OnFatal, when Pebble failed inside its commit: the engine cannot
// take writes any more, and its process must end.
var ErrCannotPersist = errors.New("cannot persist")

// Commit commits b, synced (under the stall watchdog, as every synced
// write) or not. It is the one way a batch reaches Pebble outside this
// package: Pebble panics inside a commit once its write-ahead log writer
// has failed (DB.commitWrite, pebble v2.1: a write after a failed WAL
// write or sync, as on a full disk, or after the failed rotation of a log),
// and that panic, on whichever goroutine writes next, must end the process
// with the cause as its last line rather than a stack (see guardWrite).
// A full disk fails with an error matching rpcerr.ErrNoSpace.
func (e *Engine) Commit(b *pebble.Batch, sync bool) error {
	if sync {
		return e.syncWrite(b)
	}
	return e.guardWrite(func() error { return b.Commit(pebble.NoSync) })
}

// guardWrite runs write, a call into Pebble that writes, and turns a panic
// in it into a fatal storage error: Options.OnFatal gets an error matching
// ErrCannotPersist (and rpcerr.ErrNoSpace when the disk is full), as
// Pebble's own Fatalf does (quietLogger). If OnFatal returns, guardWrite
// panics with that error: Pebble must not go on, and its commit pipeline
// may still hold the lock it panicked under.
func (e *Engine) guardWrite(write func() error) error {
	defer func() {
		r := recover()
		if r == nil {
			return
		}
		if err, ok := r.(error); ok && errors.Is(err, ErrCannotPersist) {
			panic(err) // Pebble's Fatalf, reported already (quietLogger)
		}
		err := e.cannotPersist(r)
		if onFatal := e.health.opts.OnFatal; onFatal != nil {
			onFatal(err)
		}
		panic(err)
	}()
	return write()
}

// cannotPersist describes a panic r raised by Pebble in a write.
func (e *Engine) cannotPersist(r any) error {
	cause, _ := r.(error)
	if cause == nil {
		cause = fmt.Errorf("%v", r)
	}
	h := e.health
	h.mu.Lock()
	full := h.noSpace
	h.mu.Unlock()
	switch {
	case isNoSpace(cause):
		return fmt.Errorf("storage %s: %w: a write failed in Pebble: %w", e.dir, ErrCannotPersist, rpcerr.ErrNoSpace)
	case full != nil:
		return fmt.Errorf("storage %s: %w: a write failed in Pebble (%v) after the disk filled: %w", e.dir, ErrCannotPersist, cause, rpcerr.ErrNoSpace)
	}
	return fmt.Errorf("storage %s: %w: a write failed in Pebble: %w", e.dir, ErrCannotPersist, cause)
}
