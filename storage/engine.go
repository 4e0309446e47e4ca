package storage

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync/atomic"
	"syscall"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
	"google.golang.org/protobuf/proto"

	"github.com/shardkv/shardkv/api/kvpb"
)

// Engine is the Pebble database of one process. It is safe for concurrent
// use; every replica of the process writes to it under its own key prefix.
type Engine struct {
	db     *pebble.DB
	opts   *pebble.Options // as Open completed them (EnsureDefaults): how ReplaceState writes its tables
	images atomic.Uint64   // numbers ReplaceState's tables
	dir    string
	health *health
	done   chan struct{} // closed by Close: stops the stall watchdog
}

// DefaultCacheBytes is the block cache of an engine whose Options name
// none: 128 MiB. A replica's working set (recent keys, session records)
// fits; with Pebble's default of 8 MiB every write read its session record
// from a table file (issue 16's profile: 7 preads per put).
const DefaultCacheBytes = 128 << 20

// Open opens (creating if needed) the engine stored in dir, with default
// Options.
func Open(dir string) (*Engine, error) { return OpenWith(dir, Options{}) }

// ErrLocked is matched (errors.Is) by every *LockedError.
var ErrLocked = errors.New("storage: data directory locked by another process")

// LockedError reports a data directory that another process holds open
// (Pebble's lock file is taken).
type LockedError struct {
	Dir string
	Err error // the locking call's error
}

// Error names the directory and the locking call's error.
func (e *LockedError) Error() string {
	return fmt.Sprintf("storage %s: the data directory is locked by another process (%v)", e.Dir, e.Err)
}

// Is lets errors.Is(err, ErrLocked) find a LockedError.
func (e *LockedError) Is(target error) bool { return target == ErrLocked }

// Unwrap returns the locking call's error.
func (e *LockedError) Unwrap() error { return e.Err }

// OpenWith opens (creating if needed) the engine stored in dir, which it
// creates or narrows to DirMode first (SecureDir). It fails
// with a *CorruptionError when the write-ahead log is damaged in a way that
// would lose synced writes, and with a *LockedError when another process
// has the directory open.
func OpenWith(dir string, o Options) (*Engine, error) {
	o = o.withDefaults()
	if err := SecureDir(dir, o.Logger); err != nil {
		return nil, err
	}
	h := &health{opts: o, dir: dir}
	cache := pebble.NewCache(o.CacheBytes)
	defer cache.Unref() // the database holds its own reference
	opts := &pebble.Options{
		Cache:         cache,
		Logger:        quietLogger{dir: dir, onFatal: o.OnFatal},
		EventListener: h.listener(),
		// WAL sync chunks record, in every chunk, how far the log was
		// synced. With them Pebble tells a torn tail (an incomplete last
		// write: tolerated) from a damaged record followed by synced data
		// (corruption: Open fails). Older formats treat any bad record of
		// the newest WAL as its end, silently dropping acknowledged writes.
		FormatMajorVersion: pebble.FormatNewest,
		FS:                 o.FS,
	}
	// Bloom filters (10 bits a key, ~1% false positives) let a point read
	// skip every table that does not hold its key: every write reads its
	// key's version and every session lookup its record, and the raft log
	// churning through the same LSM keeps many tables in every level.
	// Levels below L0 inherit L0's policy.
	opts.Levels[0].FilterPolicy = bloom.FilterPolicy(10)
	if o.disableFlushableIngest {
		opts.Experimental.DisableIngestAsFlushable = func() bool { return true }
	}
	opts.EnsureDefaults()
	db, err := pebble.Open(dir, opts)
	if pebble.IsCorruptionError(err) {
		return nil, &CorruptionError{Dir: dir, Reason: err.Error()}
	}
	if lockHeld(err) {
		return nil, &LockedError{Dir: dir, Err: err}
	}
	if err != nil {
		return nil, fmt.Errorf("open engine %s: %w", dir, err)
	}
	// Pebble creates a new store at its oldest format and ratchets it up
	// after opening its first WAL, which therefore lacks sync chunks. A
	// flush retires that WAL (and any replayed one) into tables and starts
	// one written in the current format.
	// The flush rotates the WAL (Pebble panics if it cannot) and waits for
	// a flush Pebble retries for as long as the disk is full: it runs
	// under guardWrite and the stall watchdog, as every write.
	e := &Engine{db: db, opts: opts, dir: dir, health: h, done: make(chan struct{})}
	go h.watch(e.done)
	if err := e.watchSync(db.Flush); err != nil {
		_ = e.Close()
		return nil, fmt.Errorf("open engine %s: flush: %w", dir, err)
	}
	if err := removeImages(opts.FS, dir); err != nil {
		_ = e.Close()
		return nil, fmt.Errorf("open engine %s: remove tables of unfinished restores: %w", dir, err)
	}
	return e, nil
}

// lockHeld reports whether Pebble's Open failed to take its LOCK file
// because another process holds it: fcntl(F_SETLK) fails with a bare EAGAIN
// or EACCES (a permission error on a path is an *os.PathError instead).
func lockHeld(err error) bool {
	var errno syscall.Errno
	var pathErr *os.PathError
	return errors.As(err, &errno) && (errno == syscall.EAGAIN || errno == syscall.EACCES) && !errors.As(err, &pathErr)
}

// Dir is the directory the engine lives in.
func (e *Engine) Dir() string { return e.dir }

// DB exposes the Pebble database to state machines, which own the keys under
// their replica's state prefix.
func (e *Engine) DB() *pebble.DB { return e.db }

// Close flushes nothing extra (every acknowledged write was synced) and
// releases the engine.
func (e *Engine) Close() error {
	first := false
	e.health.closeOnce.Do(func() { close(e.done); first = true })
	if !first {
		return errors.New("storage: engine already closed")
	}
	return e.db.Close()
}

// Get reads one key of the engine; found is false when it is absent.
func Get(r pebble.Reader, key []byte) (value []byte, found bool, err error) {
	v, closer, err := r.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	defer closer.Close()
	return append([]byte(nil), v...), true, nil
}

// SetProto sets key to the encoding of m in b.
func SetProto(b *pebble.Batch, key []byte, m proto.Message) error {
	v, err := proto.Marshal(m)
	if err != nil {
		return err
	}
	return b.Set(key, v, nil)
}

// Scan calls fn with each key and value in [lo, hi) of r, in key order,
// until fn returns an error. The slices are valid only during the call.
func Scan(r pebble.Reader, lo, hi []byte, fn func(key, value []byte) error) error {
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		return err
	}
	defer it.Close()
	for it.First(); it.Valid(); it.Next() {
		if err := fn(it.Key(), it.Value()); err != nil {
			return err
		}
	}
	return it.Error()
}

// quietLogger drops Pebble's informational chatter; errors still surface as
// returned errors. Pebble calls Fatalf when it cannot go on (a failed WAL
// write, such as a full disk) and requires that it not return: the engine
// hands the error to Options.OnFatal, which a process ends itself with (a
// replica that cannot persist must not keep serving; nothing acknowledged
// is lost, since acknowledgements follow synced writes), and panics if
// OnFatal returns. The library never exits the process itself.
type quietLogger struct {
	dir     string
	onFatal func(error)
}

func (quietLogger) Infof(string, ...any)  {}
func (quietLogger) Errorf(string, ...any) {}
func (l quietLogger) Fatalf(format string, args ...any) {
	err := fmt.Errorf("storage %s: %w: %s", l.dir, ErrCannotPersist, fmt.Sprintf(format, args...))
	if l.onFatal != nil {
		l.onFatal(err)
	}
	panic(err)
}

var _ io.Closer = (*Engine)(nil)

// DiskUsage estimates the bytes on disk of replica r's raft log, hard
// state and state machine (Pebble's EstimateDiskUsage over its two key
// spans: sstables that overlap them, prorated; memtables not counted).
func (e *Engine) DiskUsage(r Replica) (uint64, error) {
	var total uint64
	for _, kind := range []byte{kindRaft, kindState} {
		start := r.prefix(kind)
		n, err := e.db.EstimateDiskUsage(start, kvpb.PrefixEnd(start))
		if err != nil {
			return 0, fmt.Errorf("disk usage of %s: %w", r, err)
		}
		total += n
	}
	return total, nil
}
