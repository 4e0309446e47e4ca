package backup

import (
	"bufio"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protodelim"

	"github.com/shardkv/shardkv/api/config"
	"github.com/shardkv/shardkv/api/kvpb"
	"github.com/shardkv/shardkv/controller/ctlclient"
	"github.com/shardkv/shardkv/internal/grouppb"
	"github.com/shardkv/shardkv/internal/rpc"
)

// Options tune Take.
type Options struct {
	// Dial adds options to the connections to the groups (tests inject
	// faults); every call carries the cluster's id anyway.
	Dial   []grpc.DialOption
	Logger *slog.Logger
	// ChunkTimeout abandons a replica whose stream stays silent this long
	// (default 5s).
	ChunkTimeout time.Duration
}

// errConfigChanged: a group has passed the backup's configuration.
var errConfigChanged = errors.New("the configuration changed during the backup")

// Take writes a backup of the cluster whose controller ctl talks to into
// dir, which must not exist or be empty, and returns its manifest. It
// retries while a group is not at the configuration yet, a shard is still
// moving, or a replica does not answer, and starts again when the
// configuration changes, until ctx ends (see the package documentation).
func Take(ctx context.Context, ctl *ctlclient.Client, dir string, opts Options) (*Manifest, error) {
	opts.Logger = cmp.Or(opts.Logger, slog.Default())
	opts.ChunkTimeout = cmp.Or(opts.ChunkTimeout, 5*time.Second)
	started := time.Now()
	if err := checkNew(dir); err != nil {
		return nil, err
	}
	clusterID, err := ctl.ClusterID(ctx)
	if err != nil {
		return nil, fmt.Errorf("read the cluster id: %w", err)
	}
	pool := rpc.NewPool(append(rpc.DialOptions(rpc.WithClusterID(clusterID)...), opts.Dial...)...)
	defer pool.Close()
	parent, base := filepath.Split(filepath.Clean(dir))
	if parent == "" {
		parent = "."
	}
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp(parent, "."+base+".partial-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp) // a renamed tmp is gone: nothing to remove
	t := &taker{opts: opts, pool: pool, tmp: tmp, log: opts.Logger.With("component", "backup")}
	var m *Manifest
	for attempt := 1; ; attempt++ {
		cfg, numShards, err := ctl.Query(ctx, -1)
		if err != nil {
			return nil, fmt.Errorf("read the configuration: %w", err)
		}
		if cfg.Num == 0 {
			return nil, ErrNoConfiguration
		}
		m, err = t.attempt(ctx, cfg, numShards)
		if errors.Is(err, errConfigChanged) {
			t.log.Info("the configuration changed during the backup: starting again at the latest", "config", cfg.Num, "why", err)
			if err := clearDir(tmp); err != nil {
				return nil, err
			}
			continue
		}
		if err != nil {
			return nil, err
		}
		m.ClusterID, m.Started, m.Attempts = strconv.FormatUint(clusterID, 16), started, attempt
		break
	}
	if err := t.finish(m); err != nil {
		return nil, err
	}
	if err := install(tmp, dir); err != nil {
		return nil, err
	}
	return m, nil
}

type taker struct {
	opts Options
	pool *rpc.Pool
	tmp  string
	log  *slog.Logger
}

// attempt backs up every shard at cfg into t.tmp.
func (t *taker) attempt(ctx context.Context, cfg config.Config, numShards int) (*Manifest, error) {
	if numShards != len(cfg.Shards) {
		return nil, fmt.Errorf("configuration %d has %d shards, the cluster %d", cfg.Num, len(cfg.Shards), numShards)
	}
	m := &Manifest{Format: Format, ConfigNum: cfg.Num, NumShards: numShards, Shards: make([]Shard, numShards)}
	for s, g := range cfg.Shards {
		m.Shards[s] = Shard{Shard: s, Group: g}
	}
	for _, gid := range cfg.GroupIDs() {
		var shards []uint32
		for s, g := range cfg.Shards {
			if g == gid {
				shards = append(shards, uint32(s))
			}
		}
		if len(shards) == 0 {
			continue
		}
		if err := t.group(ctx, cfg, gid, shards, m); err != nil {
			return nil, err
		}
	}
	m.Finished = time.Now()
	groups := map[string][]string{}
	for g, addrs := range cfg.Groups {
		groups[strconv.FormatUint(g, 10)] = addrs
	}
	ctlState := Controller{ConfigNum: cfg.Num, NumShards: numShards, Shards: cfg.Shards, Groups: groups}
	if err := writeJSON(filepath.Join(t.tmp, ControllerFile), ctlState); err != nil {
		return nil, err
	}
	return m, nil
}

// group backs up shards of group gid at cfg, from any of its replicas.
func (t *taker) group(ctx context.Context, cfg config.Config, gid uint64, shards []uint32, m *Manifest) error {
	addrs := cfg.Groups[gid]
	if len(addrs) == 0 {
		return fmt.Errorf("group %d has no addresses in configuration %d", gid, cfg.Num)
	}
	b := rpc.NewBackoff(50*time.Millisecond, time.Second)
	var last error
	for attempt := 0; ; attempt++ {
		addr := addrs[attempt%len(addrs)]
		err := t.read(ctx, addr, cfg.Num, gid, shards, m)
		if err == nil {
			return nil
		}
		if errors.Is(err, kvpb.ErrStaleConfig) {
			return fmt.Errorf("%w: group %d has passed configuration %d (%w)", errConfigChanged, gid, cfg.Num, err)
		}
		last = err
		t.log.Debug("read shards for the backup", "group", gid, "at", addr, "config", cfg.Num, "err", err)
		if errors.Is(err, kvpb.ErrNotReady) || (attempt+1)%len(addrs) == 0 {
			// A group not at the configuration yet, or a shard still
			// arriving: wait for it (from any replica).
			if rpc.Wait(ctx, b) != nil {
				return fmt.Errorf("group %d: %w (last error: %w)", gid, ctx.Err(), last)
			}
		}
	}
}

// read reads shards of group gid at num from the replica at addr into
// their files.
func (t *taker) read(ctx context.Context, addr string, num, gid uint64, shards []uint32, m *Manifest) error {
	conn, err := t.pool.Get(addr)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	silent := time.AfterFunc(t.opts.ChunkTimeout, cancel)
	defer silent.Stop()
	stream, err := grouppb.NewBackupClient(conn).ReadShards(ctx, &grouppb.ReadShardsRequest{Group: gid, ConfigNum: num, Shards: shards})
	if err != nil {
		return kvpb.Errors.FromStatus(err)
	}
	var w *shardWriter
	defer func() {
		if w != nil {
			w.abort()
		}
	}()
	for i := 0; i < len(shards); {
		silent.Reset(t.opts.ChunkTimeout)
		c, err := stream.Recv()
		silent.Stop()
		if err == io.EOF {
			return fmt.Errorf("replica %s ended the stream before shard %d", addr, shards[i])
		}
		if err != nil {
			return kvpb.Errors.FromStatus(err)
		}
		if c.GetShard() != shards[i] {
			return fmt.Errorf("replica %s sent shard %d, expected %d", addr, c.GetShard(), shards[i])
		}
		if w == nil {
			if w, err = newShardWriter(t.tmp, int(shards[i])); err != nil {
				return err
			}
		}
		if err := w.write(&grouppb.ShardChunk{Kvs: c.GetKvs(), Sessions: c.GetSessions(), Last: c.GetLast()}); err != nil {
			return err
		}
		if c.GetLast() {
			if err := w.close(); err != nil {
				return err
			}
			e := &m.Shards[shards[i]]
			e.File, e.Keys, e.Sessions, e.Bytes = w.name, w.keys, w.sessions, w.bytes
			e.AppliedIndex, e.Replica = c.GetAppliedIndex(), c.GetReplica()
			w = nil
			i++
		}
	}
	return nil
}

// shardName is the file of a shard.
func shardName(shard int) string { return fmt.Sprintf("shard-%04d.pb", shard) }

// shardWriter writes one shard's file.
type shardWriter struct {
	f              *os.File
	buf            *bufio.Writer
	name           string
	keys, sessions int
	bytes          int64
}

func newShardWriter(dir string, shard int) (*shardWriter, error) {
	name := shardName(shard)
	f, err := os.Create(filepath.Join(dir, name))
	if err != nil {
		return nil, err
	}
	return &shardWriter{f: f, buf: bufio.NewWriterSize(f, 1<<20), name: name}, nil
}

func (w *shardWriter) write(c *grouppb.ShardChunk) error {
	for _, kv := range c.GetKvs() {
		w.keys++
		w.bytes += int64(len(kv.GetKey()) + len(kv.GetValue()))
	}
	w.sessions += len(c.GetSessions())
	_, err := protodelim.MarshalTo(w.buf, c)
	return err
}

// close flushes and syncs the file.
func (w *shardWriter) close() error {
	err := w.buf.Flush()
	if err == nil {
		err = w.f.Sync()
	}
	if cerr := w.f.Close(); err == nil {
		err = cerr
	}
	return err
}

// abort drops a file left half written (a retry writes it again).
func (w *shardWriter) abort() {
	w.f.Close()
	os.Remove(w.f.Name())
}

// finish checksums every file and writes the manifest, last.
func (t *taker) finish(m *Manifest) error {
	names := []string{ControllerFile}
	for _, s := range m.Shards {
		if s.File != "" {
			names = append(names, s.File)
		}
	}
	for _, name := range names {
		sum, size, err := checksum(filepath.Join(t.tmp, name))
		if err != nil {
			return err
		}
		m.Files = append(m.Files, File{Name: name, SHA256: sum, Size: size})
	}
	m.Created = time.Now()
	if err := writeJSON(filepath.Join(t.tmp, ManifestFile), m); err != nil {
		return err
	}
	return syncDir(t.tmp)
}

// checksum returns a file's SHA-256 (hex) and size.
func checksum(path string) (string, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return "", 0, err
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

// hashSum is a hash's sum in hex.
func hashSum(h hash.Hash) string { return hex.EncodeToString(h.Sum(nil)) }

// writeJSON writes v to path, indented, and syncs it.
func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := f.Write(append(b, '\n')); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// checkNew refuses a directory that exists and is not empty.
func checkNew(dir string) error {
	entries, err := os.ReadDir(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil
	case err != nil:
		return err
	case len(entries) > 0:
		return fmt.Errorf("%w: %s", ErrExists, dir)
	}
	return nil
}

// clearDir removes everything in dir.
func clearDir(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

// install renames the complete backup in tmp to dir (which may exist,
// empty), and syncs their parent.
func install(tmp, dir string) error {
	if err := checkNew(dir); err != nil {
		return err
	}
	if err := os.Remove(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if err := os.Rename(tmp, dir); err != nil {
		return err
	}
	return syncDir(filepath.Dir(filepath.Clean(dir)))
}
