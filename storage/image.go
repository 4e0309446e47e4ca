package storage

import (
	"bytes"
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
// does not delete keys of its own table (they share one sequence number),
// and it hides the old state from new reads while snapshots opened before
// still see it. This is how CockroachDB applies a range snapshot. A batch
// would do the same in one commit, but every byte of it would pass through
// the write-ahead log that the process's other replicas share, ahead of
// their writes: an image of a few gigabytes held every group on the node
// for seconds (elections, and past Options.StallLimit the process exits).
// The table is written and synced on the caller's goroutine instead; the
// commit pipeline only records that it was linked.
//
// fill may Set and Delete; a Delete inside r's state space is implied by
// the range deletion, one outside it is kept. Other kinds are refused.
func (r Replica) ReplaceState(e *Engine, p Progress, fill func(b *pebble.Batch) error) error {
	b := e.db.NewBatch()
	defer b.Close()
	if err := fill(b); err != nil {
		return err
	}
	if err := r.WriteProgress(b, p); err != nil {
		return err
	}
	path, err := e.writeImage(r, b)
	if err != nil {
		return fmt.Errorf("replace state of replica %d of group %d: %w", r.ID, r.Group, err)
	}
	// Ingest removes the table once it is linked; on failure it is ours.
	if err := e.db.Ingest(context.Background(), []string{path}); err != nil {
		_ = e.fs.Remove(path)
		return fmt.Errorf("replace state of replica %d of group %d: ingest: %w", r.ID, r.Group, err)
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
		writes = append(writes, write{kind, key, value})
	}
	cmp := e.opts.Comparer.Compare
	// Stable: of two writes of one key, the later stays later.
	slices.SortStableFunc(writes, func(a, b write) int { return cmp(a.key, b.key) })

	path = e.fs.PathJoin(e.dir, fmt.Sprintf("%s%d-%d-%d.sst", imagePrefix, r.Group, r.ID, e.images.Add(1)))
	f, err := e.fs.Create(path, vfs.WriteCategoryUnspecified)
	if err != nil {
		return "", err
	}
	w := sstable.NewWriter(objstorageprovider.NewFileWritable(f), e.opts.MakeWriterOptions(0, e.db.FormatMajorVersion().MaxTableFormat()))
	err = w.DeleteRange(lo, hi)
	for i, wr := range writes {
		if err != nil {
			break
		}
		if i+1 < len(writes) && bytes.Equal(writes[i+1].key, wr.key) {
			continue // a later write of the key wins
		}
		switch {
		case wr.kind == pebble.InternalKeyKindSet:
			err = w.Set(wr.key, wr.value)
		case cmp(wr.key, lo) < 0 || cmp(wr.key, hi) >= 0:
			err = w.Delete(wr.key)
		}
	}
	// Close finishes the table: it syncs and closes the file.
	err = errors.Join(err, w.Close())
	if err != nil {
		_ = e.fs.Remove(path)
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
