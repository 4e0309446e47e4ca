package storage

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/objstorage/objstorageprovider"
	"github.com/cockroachdb/pebble/v2/sstable"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// ReplaceState replaces r's whole state machine space in e with an image's:
// fill writes the image's keys into a batch (which is never committed), and
// p is the progress the image is at. Nothing of the old state remains, and
// after a crash either all of it or all of the image is there.
//
// The image is ingested, not committed: its keys, sorted, go into one
// sstable together with a range deletion of r's state space, and Pebble
// links that table into the LSM atomically (DB.Ingest). A range deletion
// hides only keys of lower sequence numbers, so it clears the old state
// but not its own table's keys (they share one), while snapshots opened
// before still read the old state. CockroachDB applied range snapshots
// this way before it had excises. A batch would do the same in one commit,
// but every byte of it would pass through the write-ahead log the
// process's other replicas share, ahead of their writes: an image of a few
// gigabytes held every group on the node for seconds (elections, and past
// Options.StallLimit the process exits). The table is written on the
// caller's goroutine instead, synced as it grows (BytesPerSync, as Pebble
// writes its own tables), so no single large sync queues the others'. The
// commit pipeline then writes one small record, unless the replica's old
// state is in the memtables and two are already waiting to be flushed:
// then writes wait for that flush (a memtable, 4 MiB, not the image).
//
// fill may Set and Delete keys of r's state space only (a Delete is
// implied by the range deletion); anything else is refused, and changes
// nothing. A full disk fails with an error matching rpcerr.ErrNoSpace. The
// restore runs under the stall watchdog, as synced writes do.
func (r Replica) ReplaceState(e *Engine, p Progress, fill func(b *pebble.Batch) error) error {
	b := e.db.NewBatch()
	defer b.Close()
	if err := fill(b); err != nil {
		return err
	}
	if err := r.WriteProgress(b, p); err != nil {
		return err
	}
	err := e.watchSync(func() error {
		path, err := e.writeImage(r, b)
		if err != nil {
			return err
		}
		// Ingest removes the table once it is linked; on failure it is ours.
		if err := e.db.Ingest(context.Background(), []string{path}); err != nil {
			_ = e.opts.FS.Remove(path)
			return fmt.Errorf("ingest: %w", err)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("replace state of replica %d of group %d: %w", r.ID, r.Group, err)
	}
	return nil
}

// imagePrefix starts the name of a table ReplaceState writes before it is
// ingested. Pebble ignores files it did not name; OpenWith removes the ones
// a crash left behind.
const imagePrefix = "image-"

// writeImage writes b's keys, sorted, the last write of a key winning, into
// a new synced sstable in the engine's directory, after a range deletion of
// r's state space, and returns its path.
func (e *Engine) writeImage(r Replica, b *pebble.Batch) (path string, err error) {
	type write struct {
		kind       pebble.InternalKeyKind
		key, value []byte
	}
	cmp := e.opts.Comparer.Compare
	lo, hi := r.StateSpan()
	var writes []write
	br := b.Reader()
	for {
		kind, key, value, ok, err := br.Next()
		if err != nil {
			return "", err
		}
		if !ok {
			break
		}
		switch kind {
		case pebble.InternalKeyKindSet, pebble.InternalKeyKindDelete:
		default:
			return "", fmt.Errorf("an image holds sets and deletes only, not %s", kind)
		}
		if cmp(key, lo) < 0 || cmp(key, hi) >= 0 {
			return "", fmt.Errorf("an image holds keys of its replica's state space only, not %x", key)
		}
		writes = append(writes, write{kind, key, value})
	}
	// Stable: of two writes of one key, the later stays later.
	slices.SortStableFunc(writes, func(a, b write) int { return cmp(a.key, b.key) })

	path = e.opts.FS.PathJoin(e.dir, fmt.Sprintf("%s%d-%d-%d.sst", imagePrefix, r.Group, r.ID, e.images.Add(1)))
	f, err := e.opts.FS.Create(path, vfs.WriteCategoryUnspecified)
	if err != nil {
		return "", err
	}
	f = vfs.NewSyncingFile(f, vfs.SyncingFileOptions{BytesPerSync: e.opts.BytesPerSync})
	// Level 0: a table for the lowest level would need every key it
	// shadows marked (sstable's strict obsolete mode).
	w := sstable.NewWriter(objstorageprovider.NewFileWritable(f), e.opts.MakeWriterOptions(0, e.db.TableFormat()))
	err = w.DeleteRange(lo, hi)
	for i, wr := range writes {
		if err != nil {
			break
		}
		if i+1 < len(writes) && cmp(writes[i+1].key, wr.key) == 0 {
			continue // a later write of the key wins
		}
		if wr.kind == pebble.InternalKeyKindSet {
			err = w.Set(wr.key, wr.value)
		}
	}
	// Close finishes the table: it syncs and closes the file.
	err = errors.Join(err, w.Close())
	if err != nil {
		_ = e.opts.FS.Remove(path)
		return "", err
	}
	return path, nil
}

// removeImages removes the tables ReplaceState wrote and a crash kept it
// from ingesting: their replacements never happened.
func removeImages(fs vfs.FS, dir string) error {
	names, err := fs.List(dir)
	if err != nil {
		return err
	}
	for _, name := range names {
		if strings.HasPrefix(name, imagePrefix) && filepath.Ext(name) == ".sst" {
			if err := fs.Remove(fs.PathJoin(dir, name)); err != nil {
				return err
			}
		}
	}
	return nil
}
