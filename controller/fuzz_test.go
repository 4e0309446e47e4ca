package controller

import (
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/shardkv/shardkv/api/controllerpb"
	"github.com/shardkv/shardkv/internal/controllerlogpb"
)

// FuzzApply applies arbitrary decoded commands after a valid history: the
// state machine must not panic, and every configuration it holds must stay
// well formed: the fixed shard count, every shard on a present group, and
// no shard on group 0 while any group exists; with auth enabled a user
// keeps the admin role, and the auth revision grows by one with a change
// that succeeds, never with a refusal.
func FuzzApply(f *testing.F) {
	for _, c := range []*controllerlogpb.Command{
		join(1, 1, map[uint64][]string{1: {"a"}}), leave(1, 2, false, 1), leave(1, 3, true, 1, 2),
		move(1, 4, 1<<31, 1), move(1, 5, 0, 1<<63), initCmd(1 << 31), {},
		authCmd(0, 0, userDelete("root"), "", nil), authCmd(0, 0, revokeRole("root", AdminRole), "", nil),
		authCmd(0, 0, roleGrant("r", "a/", controllerpb.Access_ACCESS_READ), "", nil), authCmd(0, 0, passwd("root"), "h", nil),
	} {
		b, err := proto.Marshal(c)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
		f.Add(b[:len(b)/2])
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var s State
		s.Apply(initCmd(16))
		s.Apply(join(9, 1, map[uint64][]string{1: {"a"}, 2: {"b"}}))
		// Auth on, root its only admin (client 0: no session).
		for _, c := range []*controllerlogpb.Command{authCmd(0, 0, userAdd("root"), "h", nil), authCmd(0, 0, grantRole("root", AdminRole), "", nil),
			authCmd(0, 0, roleAdd("r"), "", nil), authCmd(0, 0, enable(), "", make([]byte, 32))} {
			if r := s.Apply(c); r.Err != nil {
				t.Fatal(r.Err)
			}
		}
		rev := s.AuthRevision()
		var cmd controllerlogpb.Command
		if proto.Unmarshal(data, &cmd) != nil {
			return // the store answers undecodable entries without applying them
		}
		res := s.Apply(&cmd)
		if s.AuthEnabled() && !s.hasAdmin("") {
			t.Fatal("auth enabled with no user of the admin role")
		}
		if changed := s.AuthRevision() != rev; changed && res.Err != nil || s.AuthRevision() > rev+1 {
			t.Fatalf("revision %d after %d, outcome %v", s.AuthRevision(), rev, res.Err)
		}
		for _, cfg := range s.configs {
			if len(cfg.Shards) != 16 {
				t.Fatalf("configuration %d has %d shards", cfg.Num, len(cfg.Shards))
			}
			for sh, g := range cfg.Shards {
				if _, ok := cfg.Groups[g]; g != 0 && !ok {
					t.Fatalf("configuration %d puts shard %d on absent group %d", cfg.Num, sh, g)
				}
				if g == 0 && len(cfg.Groups) > 0 {
					t.Fatalf("configuration %d orphans shard %d with groups present", cfg.Num, sh)
				}
			}
		}
	})
}
