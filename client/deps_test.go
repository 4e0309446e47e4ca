package client_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestClientLinksNoServer keeps the public client free of server code:
// a program that uses it must not link raft, storage or the state
// machines (the client-only binary is within a few percent of gRPC and the
// protos alone).
func TestClientLinksNoServer(t *testing.T) {
	for _, pkg := range []string{"github.com/shardkv/shardkv/client", "github.com/shardkv/shardkv/controller/ctlclient"} {
		out, err := exec.Command("go", "list", "-deps", pkg).Output()
		if err != nil {
			t.Skipf("go list: %v", err)
		}
		for _, dep := range strings.Fields(string(out)) {
			for _, server := range []string{"github.com/cockroachdb/pebble", "go.etcd.io/raft/v3", "github.com/shardkv/shardkv/raftnode",
				"github.com/shardkv/shardkv/storage", "github.com/shardkv/shardkv/group", "github.com/shardkv/shardkv/controller/ctlserver",
				"github.com/shardkv/shardkv/transport", "github.com/shardkv/shardkv/api/transportpb"} {
				if (dep == server || strings.HasPrefix(dep, server+"/")) && dep != "go.etcd.io/raft/v3/raftpb" {
					t.Errorf("%s links server package %s", pkg, dep)
				}
			}
			if dep == "github.com/shardkv/shardkv/controller" {
				t.Errorf("%s links the controller's state machine", pkg)
			}
		}
	}
}
