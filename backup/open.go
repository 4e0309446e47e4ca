package backup

import (
	"bufio"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"

	"google.golang.org/protobuf/encoding/protodelim"

	"github.com/shardkv/shardkv/api/config"
	"github.com/shardkv/shardkv/internal/grouppb"
)

// Backup is a backup opened and verified by Open.
type Backup struct {
	Dir        string
	Manifest   Manifest
	Controller Controller
	sums       map[string]File
}

// Open reads the backup in dir and verifies it whole before returning it:
// the manifest decodes and is complete (every shard once, each owned
// shard's file listed), every file it lists has its size and SHA-256, and
// controller.json agrees with it. A damaged backup is refused with a
// *DamagedError (errors.Is(err, ErrDamaged)).
func Open(dir string) (*Backup, error) {
	damaged := func(file, format string, args ...any) error {
		return &DamagedError{Dir: dir, File: file, Reason: fmt.Sprintf(format, args...)}
	}
	b := &Backup{Dir: dir, sums: map[string]File{}}
	raw, err := os.ReadFile(filepath.Join(dir, ManifestFile))
	if errors.Is(err, os.ErrNotExist) {
		if _, serr := os.Stat(dir); serr != nil {
			return nil, fmt.Errorf("no backup in %s: %w", dir, serr)
		}
		return nil, damaged(ManifestFile, "missing (a backup is complete only once its manifest is written)")
	}
	if err != nil {
		return nil, err
	}
	m := &b.Manifest
	if err := json.Unmarshal(raw, m); err != nil {
		return nil, damaged(ManifestFile, "does not decode: %v", err)
	}
	switch {
	case m.Format != Format:
		return nil, damaged(ManifestFile, "format %q, want %q", m.Format, Format)
	case m.NumShards < 1 || m.NumShards > config.MaxShards || len(m.Shards) != m.NumShards:
		return nil, damaged(ManifestFile, "%d shard entries for %d shards", len(m.Shards), m.NumShards)
	case m.ConfigNum == 0:
		return nil, damaged(ManifestFile, "no configuration number")
	}
	for _, f := range m.Files {
		if f.Name != filepath.Base(f.Name) || f.Name == ManifestFile || f.Name == "" {
			return nil, damaged(ManifestFile, "lists a file named %q", f.Name)
		}
		if _, dup := b.sums[f.Name]; dup {
			return nil, damaged(ManifestFile, "lists %s twice", f.Name)
		}
		b.sums[f.Name] = f
	}
	if _, ok := b.sums[ControllerFile]; !ok {
		return nil, damaged(ManifestFile, "does not list %s", ControllerFile)
	}
	for i, s := range m.Shards {
		switch _, listed := b.sums[s.File]; {
		case s.Shard != i:
			return nil, damaged(ManifestFile, "shard entry %d is for shard %d", i, s.Shard)
		case s.Group != 0 && (s.File != shardName(i) || !listed):
			return nil, damaged(ManifestFile, "shard %d of group %d has no file listed", i, s.Group)
		case s.Group == 0 && s.File != "":
			return nil, damaged(ManifestFile, "shard %d of no group has a file", i)
		}
	}
	for _, f := range m.Files {
		if err := b.verify(f); err != nil {
			return nil, err
		}
	}
	raw, err = os.ReadFile(filepath.Join(dir, ControllerFile))
	if err != nil {
		return nil, damaged(ControllerFile, "%v", err)
	}
	if err := json.Unmarshal(raw, &b.Controller); err != nil {
		return nil, damaged(ControllerFile, "does not decode: %v", err)
	}
	c := b.Controller
	if c.ConfigNum != m.ConfigNum || c.NumShards != m.NumShards || len(c.Shards) != m.NumShards {
		return nil, damaged(ControllerFile, "configuration %d with %d shards, the manifest says %d with %d", c.ConfigNum, len(c.Shards), m.ConfigNum, m.NumShards)
	}
	for s, g := range c.Shards {
		if g != m.Shards[s].Group {
			return nil, damaged(ControllerFile, "shard %d is group %d's, the manifest says group %d's", s, g, m.Shards[s].Group)
		}
		if _, ok := c.Groups[strconv.FormatUint(g, 10)]; g != 0 && !ok {
			return nil, damaged(ControllerFile, "shard %d belongs to group %d, which the configuration lacks", s, g)
		}
	}
	return b, nil
}

// verify checks one file's size and checksum.
func (b *Backup) verify(f File) error {
	fh, err := os.Open(filepath.Join(b.Dir, f.Name))
	if errors.Is(err, os.ErrNotExist) {
		return &DamagedError{Dir: b.Dir, File: f.Name, Reason: "missing"}
	}
	if err != nil {
		return &DamagedError{Dir: b.Dir, File: f.Name, Reason: fmt.Sprintf("cannot be read (%v)", err)}
	}
	defer fh.Close()
	h := sha256.New()
	n, err := io.Copy(h, fh)
	switch {
	case err != nil:
		return &DamagedError{Dir: b.Dir, File: f.Name, Reason: fmt.Sprintf("cannot be read (%v)", err)}
	case n != f.Size:
		return &DamagedError{Dir: b.Dir, File: f.Name, Reason: fmt.Sprintf("%d bytes, the manifest says %d", n, f.Size)}
	case hashSum(h) != f.SHA256:
		return &DamagedError{Dir: b.Dir, File: f.Name, Reason: fmt.Sprintf("SHA-256 %s, the manifest says %s", hashSum(h), f.SHA256)}
	}
	return nil
}

// Shards returns the shards that hold data or sessions, ascending.
func (b *Backup) Shards() []int {
	var out []int
	for _, s := range b.Manifest.Shards {
		if s.File != "" && (s.Keys > 0 || s.Sessions > 0) {
			out = append(out, s.Shard)
		}
	}
	return out
}

// Chunks calls fn with the records of shard's file, numbered from 1, from
// chunk from on; the last one has Last set. The file is read again and
// checked as it is read: its checksum is verified before fn sees the last
// chunk, so a file changed since Open fails before a restore could
// complete with it. An error of fn ends Chunks with that error.
func (b *Backup) Chunks(shard int, from uint64, fn func(chunk uint64, c *grouppb.ShardChunk) error) error {
	if shard < 0 || shard >= len(b.Manifest.Shards) || b.Manifest.Shards[shard].File == "" {
		return fmt.Errorf("backup: no file for shard %d", shard)
	}
	name := b.Manifest.Shards[shard].File
	damaged := func(format string, args ...any) error {
		return &DamagedError{Dir: b.Dir, File: name, Reason: fmt.Sprintf(format, args...)}
	}
	f, err := os.Open(filepath.Join(b.Dir, name))
	if err != nil {
		return damaged("cannot be read (%v)", err)
	}
	defer f.Close()
	h := sha256.New()
	r := bufio.NewReaderSize(io.TeeReader(f, h), 1<<20)
	for n := uint64(1); ; n++ {
		c := &grouppb.ShardChunk{}
		if err := (protodelim.UnmarshalOptions{MaxSize: 64 << 20}).UnmarshalFrom(r, c); err != nil {
			if errors.Is(err, io.EOF) {
				return damaged("ends without its last record")
			}
			return damaged("record %d does not decode: %v", n, err)
		}
		if c.GetLast() {
			if _, err := r.ReadByte(); err != io.EOF {
				return damaged("data after the last record")
			}
			if sum := hashSum(h); sum != b.sums[name].SHA256 {
				return damaged("changed since it was verified (SHA-256 %s)", sum)
			}
		}
		if n >= from {
			if err := fn(n, c); err != nil {
				return err
			}
		}
		if c.GetLast() {
			return nil
		}
	}
}

// Owners returns the shard -> group map of the backup's configuration.
func (b *Backup) Owners() []uint64 { return slices.Clone(b.Controller.Shards) }
