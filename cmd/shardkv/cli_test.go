package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/shardkv/shardkv/api/config"
	"github.com/shardkv/shardkv/api/controllerpb"
	"github.com/shardkv/shardkv/api/kvpb"
	"github.com/shardkv/shardkv/api/rpcerr"
	"github.com/shardkv/shardkv/client"
	"github.com/shardkv/shardkv/storage"
)

func TestCLIShardRanges(t *testing.T) {
	for _, c := range []struct {
		in   []int
		want string
	}{
		{nil, ""},
		{[]int{7}, "7"},
		{[]int{0, 1, 2, 3}, "0-3"},
		{[]int{48, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}, "0-15, 48"},
		{[]int{1, 3, 5, 6}, "1, 3, 5-6"},
		{[]int{2, 2, 3}, "2-3"},
	} {
		if got := shardRanges(c.in); got != c.want {
			t.Errorf("shardRanges(%v) = %q, want %q", c.in, got, c.want)
		}
	}
}

// TestCLIErrorSentences: what the CLI prints for the errors programs match
// with errors.Is, local or from the wire, has no Go package prefix and
// says nothing twice; the exported values are untouched.
func TestCLIErrorSentences(t *testing.T) {
	remote := func(table *rpcerr.Table, err error) error { return table.FromStatus(table.ToStatus(err)) }
	for _, c := range []struct {
		err  error
		want string
	}{
		{kvpb.ErrEmptyKey, "the key is empty (a key needs at least one byte)"},
		{remote(kvpb.Errors, fmt.Errorf("%w: 5000 bytes, limit 4096", kvpb.ErrKeyTooLarge)), "the key is too large: 5000 bytes, limit 4096"},
		{remote(controllerpb.Errors, fmt.Errorf("%w: %d", controllerpb.ErrUnknownGroup, 9)), "there is no group 9 in the configuration"},
		{remote(controllerpb.Errors, fmt.Errorf("%w: 70 (the cluster has 64)", controllerpb.ErrUnknownShard)), "there is no shard 70 (the cluster has 64)"},
		{fmt.Errorf("%w: %v", client.ErrUnknownOutcome, fmt.Errorf("%w (last error: %w)", context.DeadlineExceeded, &rpcerr.NotLeaderError{Leader: 2})),
			"the write may or may not have been applied (never twice: read the key to know): timed out (last error: the replica is not the leader (leader is 2))"},
		{fmt.Errorf("read configuration: %w", status.Error(codes.Unavailable, `connection error: desc = "transport: Error while dialing: dial tcp 127.0.0.1:1: connect: connection refused"`)),
			"read configuration: dial tcp 127.0.0.1:1: connect: connection refused"},
		// A plaintext client of a TLS server: EOF or a reset, as timing goes.
		{fmt.Errorf("read configuration: %w", status.Error(codes.Unavailable, `connection error: desc = "error reading server preface: read tcp 127.0.0.1:2->127.0.0.1:1: read: connection reset by peer"`)),
			"read configuration: connection error: desc = \"error reading server preface: read tcp 127.0.0.1:2->127.0.0.1:1: read: connection reset by peer\" (does the cluster use TLS? give --cacert, and --cert and --key if it requires client certificates)"},
		{&storage.LockedError{Dir: "/data", Err: syscall.EAGAIN}, "the data directory /data is locked by another shardkv process (stop it, or give this one another --data)"},
		{&timeoutError{after: 10 * time.Second, err: fmt.Errorf("%w (last error: %w)", context.DeadlineExceeded, rpcerr.ErrReadTimeout)},
			"no answer within --timeout 10s: last error: no leader could confirm the read (no quorum?)"},
	} {
		got := describe(c.err)
		if got != c.want {
			t.Errorf("describe(%q)\n got %q\nwant %q", c.err, got, c.want)
		}
		line := errorLine(nil, c.err)
		if strings.Count(line, "shardkv:") != 1 || strings.Contains(line, "group:") || strings.Contains(line, "controller:") ||
			strings.Contains(line, "raftnode:") || strings.Contains(line, "rpc error") {
			t.Errorf("error line %q", line)
		}
	}
	if kvpb.ErrEmptyKey.Error() != "group: empty key" {
		t.Error("an exported error's text changed")
	}
}

func TestCLIExitCodes(t *testing.T) {
	for _, c := range []struct {
		err  error
		want int
	}{
		{nil, exitOK},
		{notFound("key %q does not exist", "k"), exitNotFound},
		{usagef("bad"), exitUsage},
		{&notControllerError{addr: "a"}, exitUsage},
		{&unreachableError{addrs: []string{"a"}}, exitUnavailable},
		{&timeoutError{err: context.DeadlineExceeded}, exitUnavailable},
		{fmt.Errorf("%w (last error: x)", context.DeadlineExceeded), exitUnavailable},
		{fmt.Errorf("%w: x", client.ErrUnknownOutcome), exitUnavailable},
		{status.Error(codes.Unavailable, "down"), exitUnavailable},
		{kvpb.ErrValueTooLarge, exitFailed},
		{controllerpb.ErrUnknownGroup, exitFailed},
		{errors.New("other"), exitFailed},
		{conditionFailed([]byte("k"), client.WriteResult{Version: 3}), exitCondition},
	} {
		if got := exitCode(c.err); got != c.want {
			t.Errorf("exitCode(%v) = %d, want %d", c.err, got, c.want)
		}
	}
}

// TestCLIConfigTable: admin tables print shard lists as ranges.
func TestCLIConfigTable(t *testing.T) {
	shards := make([]uint64, 64)
	for i := range shards {
		shards[i] = 1
		if i >= 16 {
			shards[i] = 2
		}
	}
	shards[48] = 1
	var b bytes.Buffer
	cfg := config.Config{Num: 3, Shards: shards, Groups: map[uint64][]string{1: {"a:1"}, 2: {"b:1"}}}
	if err := (configView{cfg}).writeTable(&b); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "0-15, 48") || !strings.Contains(b.String(), "16-47, 49-63") {
		t.Fatalf("table:\n%s", b.String())
	}
}
