package storage

import (
	"errors"
	"fmt"
	"runtime"

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
	return e.noSpace(e.guardWrite(func() error { return b.Commit(pebble.NoSync) }))
}

// set writes one key through Commit.
func (e *Engine) set(key, value []byte, sync bool) error {
	b := e.db.NewBatch()
	defer b.Close()
	if err := b.Set(key, value, nil); err != nil {
		return err
	}
	return e.Commit(b, sync)
}

// noSpace reports a full disk as rpcerr.ErrNoSpace.
func (e *Engine) noSpace(err error) error {
	if err != nil && isNoSpace(err) {
		return fmt.Errorf("storage %s: %w (%v)", e.dir, rpcerr.ErrNoSpace, err)
	}
	return err
}

// guardWrite runs write, a call into Pebble that writes, and turns an
// error Pebble panics with in it into a fatal storage error:
// Options.OnFatal gets an error matching ErrCannotPersist (and
// rpcerr.ErrNoSpace when the disk is full), as Pebble's own Fatalf does
// (quietLogger). guardWrite then panics with that error (OnFatal, in a
// process, exits first): Pebble must not go on, and its commit pipeline
// may still hold the lock it panicked under. Other panics are bugs, not
// disk failures, and go on unchanged: a runtime error, a value that is
// not an error (Pebble's invariant checks panic with strings), a write
// to a closed engine (pebble.ErrClosed), and Fatalf's own (reported
// already). OnFatal must not call into the engine.
func (e *Engine) guardWrite(write func() error) error {
	defer func() {
		r := recover()
		if r == nil {
			return
		}
		cause, ok := r.(error)
		var runtimeErr runtime.Error
		if !ok || errors.As(cause, &runtimeErr) || errors.Is(cause, pebble.ErrClosed) || errors.Is(cause, ErrCannotPersist) {
			panic(r)
		}
		err := e.cannotPersist(cause)
		if onFatal := e.health.opts.OnFatal; onFatal != nil {
			onFatal(err)
		}
		panic(err)
	}()
	return write()
}

// cannotPersist describes the error cause Pebble panicked with in a write.
func (e *Engine) cannotPersist(cause error) error {
	h := e.health
	h.mu.Lock()
	full := h.noSpace
	h.mu.Unlock()
	if isNoSpace(cause) || full != nil {
		return fmt.Errorf("storage %s: %w: a write failed in Pebble (%v): %w", e.dir, ErrCannotPersist, cause, rpcerr.ErrNoSpace)
	}
	return fmt.Errorf("storage %s: %w: a write failed in Pebble: %w", e.dir, ErrCannotPersist, cause)
}
