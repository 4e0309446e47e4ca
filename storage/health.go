package storage

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/shardkv/shardkv/api/rpcerr"
)

// Options tune an engine beyond its directory.
type Options struct {
	// Logger receives storage warnings and errors (default slog.Default).
	Logger *slog.Logger
	// StallLimit is how long a synced write may take before the engine is
	// declared stuck (default 10s).
	StallLimit time.Duration
	// OnStuck is called once, from a background goroutine, when a synced
	// write exceeds StallLimit. A process that hosts replicas should exit
	// then, with the error as its last line: its raft loop is blocked in
	// the write and a replica that cannot persist must not linger silently.
	// Nothing acknowledged is lost by exiting (acknowledgements follow
	// synced writes). The default only logs.
	OnStuck func(error)
	// OnFatal is called when Pebble cannot go on (a failed WAL write); it
	// should end the process with the error as its last line. If it
	// returns, the engine panics: Pebble must not continue.
	OnFatal func(error)
	// CacheBytes is the size of Pebble's block cache (default
	// DefaultCacheBytes; Pebble's own is 8 MiB).
	CacheBytes int64
	// FS is the filesystem Pebble writes through (default the
	// operating system's). Tests give it vfs.NewCrashableMem to keep only
	// what was synced, as a power loss would (vfs.MemFS.CrashClone).
	FS vfs.FS

	// disableFlushableIngest makes Pebble flush the memtables an
	// ingestion overlaps before it, rather than queue the table behind
	// them: tests take both of its paths.
	disableFlushableIngest bool
}

func (o Options) withDefaults() Options {
	o.Logger = cmp.Or(o.Logger, slog.Default())
	o.StallLimit = cmp.Or(o.StallLimit, 10*time.Second)
	if o.OnStuck == nil {
		o.OnStuck = func(error) {}
	}
	o.CacheBytes = cmp.Or(o.CacheBytes, DefaultCacheBytes)
	return o
}

// health follows what Pebble reports (its EventListener) and the synced
// writes in flight.
type health struct {
	opts Options
	dir  string

	closeOnce   sync.Once
	resumeBytes atomic.Int64 // free space that ends a full state (spaceToResume; tests raise it)

	mu           sync.Mutex
	noSpace      error     // the last out-of-space error, until a flush succeeds
	stalledSince time.Time // Pebble's write stall, zero when none
	stuck        error     // set once a synced write exceeded the stall limit

	syncMu   sync.Mutex
	syncNext uint64
	inFlight map[uint64]time.Time // synced writes in flight, by ticket

	backgroundErrors atomic.Uint64
	diskSlow         atomic.Uint64
	writeStalls      atomic.Uint64
}

// HealthStats are counters for metrics.
type HealthStats struct {
	BackgroundErrors, DiskSlow, WriteStalls uint64
	Stalled                                 bool
}

func isNoSpace(err error) bool { return errors.Is(err, syscall.ENOSPC) }

func (h *health) listener() *pebble.EventListener {
	log := h.opts.Logger.With("component", "storage", "dir", h.dir)
	return &pebble.EventListener{
		BackgroundError: func(err error) {
			h.backgroundErrors.Add(1)
			if isNoSpace(err) {
				h.mu.Lock()
				first := h.noSpace == nil
				h.noSpace = err
				h.mu.Unlock()
				if first {
					log.Error("disk full: refusing writes until space is freed", "err", err)
				}
				return
			}
			log.Error("storage background error", "err", err)
		},
		FlushEnd: func(info pebble.FlushInfo) {
			if info.Err != nil {
				if isNoSpace(info.Err) {
					h.mu.Lock()
					h.noSpace = info.Err
					h.mu.Unlock()
				}
				return
			}
			h.writable(log, "a flush succeeded")
		},
		CompactionEnd: func(info pebble.CompactionInfo) {
			// With writes refused, no memtable fills and no flush comes:
			// a compaction that succeeds after space was freed proves the
			// disk writable again too.
			if info.Err != nil {
				return
			}
			h.writable(log, "a compaction succeeded")
		},
		WriteStallBegin: func(info pebble.WriteStallBeginInfo) {
			h.writeStalls.Add(1)
			h.mu.Lock()
			h.stalledSince = time.Now()
			h.mu.Unlock()
			log.Warn("write stall begins: writes wait for flushes or compactions", "reason", info.Reason)
		},
		WriteStallEnd: func() {
			h.mu.Lock()
			d := time.Since(h.stalledSince)
			h.stalledSince = time.Time{}
			h.mu.Unlock()
			log.Warn("write stall ends", "after", d.Round(time.Millisecond))
		},
		LowDiskSpace: func(info pebble.LowDiskSpaceInfo) {
			log.Warn("disk space low", "available_bytes", info.AvailBytes, "total_bytes", info.TotalBytes,
				"below_percent", info.PercentThreshold)
		},
		DiskSlow: func(info pebble.DiskSlowInfo) {
			h.diskSlow.Add(1)
			log.Warn("disk slow", "info", info.String())
		},
	}
}

// watch declares the engine stuck when a synced write outlives the stall
// limit. It returns when done is closed.
func (h *health) watch(done <-chan struct{}) {
	t := time.NewTicker(min(h.opts.StallLimit/4, time.Second))
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-t.C:
		}
		h.recheckSpace()
		if h.oldestSync() < h.opts.StallLimit {
			continue
		}
		h.mu.Lock()
		already := h.stuck != nil
		if !already {
			cause := rpcerr.ErrStalled
			if h.noSpace != nil {
				cause = rpcerr.ErrNoSpace
			}
			h.stuck = fmt.Errorf("storage %s: a synced write has not completed in %v: %w", h.dir, h.opts.StallLimit, cause)
		}
		err := h.stuck
		h.mu.Unlock()
		if !already {
			h.opts.Logger.Error("replica cannot persist", "component", "storage", "err", err)
			h.opts.OnStuck(err)
		}
	}
}

// spaceToResume is the free space at which a full engine accepts writes
// again: writes are refused while full, so no flush or compaction may come
// to prove the disk writable; the free space is the evidence instead (a
// failure after that sets the engine full again).
const spaceToResume = 16 << 20

func (h *health) recheckSpace() {
	h.mu.Lock()
	full := h.noSpace != nil
	h.mu.Unlock()
	if !full {
		return
	}
	var st syscall.Statfs_t
	resume := h.resumeBytes.Load()
	if resume == 0 {
		resume = spaceToResume
	}
	if err := syscall.Statfs(h.dir, &st); err != nil || int64(st.Bavail)*int64(st.Bsize) < resume {
		return
	}
	h.writable(h.opts.Logger.With("component", "storage", "dir", h.dir), "space was freed")
}

// writable ends a full state, saying why.
func (h *health) writable(log *slog.Logger, why string) {
	h.mu.Lock()
	was := h.noSpace
	h.noSpace = nil
	h.mu.Unlock()
	if was != nil {
		log.Warn("storage writable again", "because", why)
	}
}

// Health returns nil when the engine accepts writes, and otherwise an error
// matching rpcerr.ErrNoSpace or rpcerr.ErrStalled. Callers refuse new
// writes while it is not nil (they would only queue behind the blocked
// ones).
func (e *Engine) Health() error {
	h := e.health
	h.mu.Lock()
	defer h.mu.Unlock()
	switch {
	case h.stuck != nil:
		return h.stuck
	case h.noSpace != nil:
		return fmt.Errorf("storage %s: %w (%v)", e.dir, rpcerr.ErrNoSpace, h.noSpace)
	case !h.stalledSince.IsZero() && time.Since(h.stalledSince) > time.Second:
		return fmt.Errorf("storage %s: writes stalled for %v: %w", e.dir, time.Since(h.stalledSince).Round(time.Millisecond), rpcerr.ErrStalled)
	}
	return nil
}

// HealthStats returns the engine's storage event counters.
func (e *Engine) HealthStats() HealthStats {
	h := e.health
	h.mu.Lock()
	stalled := !h.stalledSince.IsZero()
	h.mu.Unlock()
	return HealthStats{BackgroundErrors: h.backgroundErrors.Load(), DiskSlow: h.diskSlow.Load(),
		WriteStalls: h.writeStalls.Load(), Stalled: stalled}
}

// oldestSync returns how long the oldest synced write in flight has been
// waiting (0 if none).
func (h *health) oldestSync() time.Duration {
	h.syncMu.Lock()
	defer h.syncMu.Unlock()
	var oldest time.Duration
	for _, start := range h.inFlight {
		oldest = max(oldest, time.Since(start))
	}
	return oldest
}

// syncWrite commits b synced, under the stall watchdog.
func (e *Engine) syncWrite(b *pebble.Batch) error {
	return e.watchSync(func() error { return b.Commit(pebble.Sync) })
}

// watchSync runs write, a write that syncs, under the stall watchdog and
// guardWrite, and reports a full disk as rpcerr.ErrNoSpace.
func (e *Engine) watchSync(write func() error) error {
	h := e.health
	h.syncMu.Lock()
	h.syncNext++
	ticket := h.syncNext
	if h.inFlight == nil {
		h.inFlight = map[uint64]time.Time{}
	}
	h.inFlight[ticket] = time.Now()
	h.syncMu.Unlock()
	defer func() {
		h.syncMu.Lock()
		delete(h.inFlight, ticket)
		h.syncMu.Unlock()
	}()
	return e.noSpace(e.guardWrite(write))
}
