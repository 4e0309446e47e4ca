package console_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/shardkv/shardkv/client"
	"github.com/shardkv/shardkv/cluster"
	"github.com/shardkv/shardkv/console"
)

// TestStateEndpoint serves /api/console/state for a running cluster and
// checks the document against the controller's configuration: every shard
// with its owner, every group with one leader among its replicas, the
// history, and traffic once requests flow; then a move shows in the next
// document.
func TestStateEndpoint(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := cluster.Start(ctx, cluster.Options{Dir: t.TempDir(), Groups: 2, Shards: 8, JoinAll: true,
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctl, err := c.ControllerClient()
	if err != nil {
		t.Fatal(err)
	}
	defer ctl.Close()
	con := console.New(console.Config{Controller: ctl, Dial: c.DialOptions()})
	srv := httptest.NewServer(con.Handler())
	defer srv.Close()
	get := func() console.State {
		t.Helper()
		resp, err := http.Get(srv.URL + "/api/console/state")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
			t.Fatalf("content type %q", ct)
		}
		var st console.State
		if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
			t.Fatal(err)
		}
		return st
	}
	// poll until the document says what the controller says, all served.
	poll := func(what string, ok func(console.State) bool) console.State {
		t.Helper()
		for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			con.Poll(ctx)
			if st := get(); ok(st) {
				return st
			}
			if time.Now().After(deadline) {
				t.Fatalf("the state never showed %s: %+v", what, get())
			}
		}
	}
	matches := func(st console.State) bool {
		cfg, _, err := ctl.Query(ctx, -1)
		if err != nil || st.ConfigNum != cfg.Num || len(st.Shards) != len(cfg.Shards) {
			return false
		}
		for i, s := range st.Shards {
			if s.Shard != i || s.Group != cfg.Shards[i] || s.State != "serving" {
				return false
			}
		}
		return true
	}
	st := poll("every shard served by its owner", matches)
	if len(st.Groups) != 2 {
		t.Fatalf("groups %+v", st.Groups)
	}
	for _, g := range st.Groups {
		leaders := 0
		for _, r := range g.Replicas {
			if r.Role == "leader" {
				leaders++
			}
			if r.Role == "unreachable" {
				t.Errorf("group %d replica %s unreachable: %s", g.ID, r.Addr, r.Error)
			}
		}
		if leaders != 1 || len(g.Replicas) != 3 {
			t.Errorf("group %d: %d leaders among %d replicas", g.ID, leaders, len(g.Replicas))
		}
	}
	if len(st.History) == 0 || st.History[0].Num != st.ConfigNum || st.History[0].What != "join 1, 2" {
		t.Fatalf("history %+v", st.History)
	}

	// Traffic: requests answered between two polls show as ops/s.
	cl, err := client.New(ctx, c.ControllerAddrs(), client.WithDialOptions(c.DialOptions()...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	for i := range 50 {
		if _, err := cl.Put(ctx, []byte{byte(i)}, []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	poll("traffic", func(st console.State) bool {
		for _, g := range st.Groups {
			if g.OpsPerSec > 0 && g.P99Ms > 0 && len(g.Traffic) > 1 {
				return true
			}
		}
		return false
	})

	// A move shows in the next documents: the new owner, then serving.
	cfg, _, err := ctl.Query(ctx, -1)
	if err != nil {
		t.Fatal(err)
	}
	to := cfg.Shards[0]%2 + 1
	if _, err := ctl.Move(ctx, 0, to); err != nil {
		t.Fatal(err)
	}
	st = poll("the move settled", matches)
	if st.Shards[0].Group != to || st.History[0].What != "1 shard(s) moved" {
		t.Fatalf("after the move: shard 0 %+v, history %+v", st.Shards[0], st.History[0])
	}
}

// TestPage serves the embedded page: no files fetched from elsewhere.
func TestPage(t *testing.T) {
	srv := httptest.NewServer(console.New(console.Config{}).Handler())
	defer srv.Close()
	for _, path := range []string{"/", "/console.js", "/console.css"} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("%s: %s", path, resp.Status)
		}
	}
}
