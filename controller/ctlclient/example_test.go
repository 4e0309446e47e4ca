package ctlclient_test

import (
	"context"
	"fmt"
	"log"
	"log/slog"
	"os"
	"time"

	"github.com/shardkv/shardkv/cluster"
	"github.com/shardkv/shardkv/controller/ctlclient"
)

// An operator's session: join a group, move a shard to it, read the
// configuration back. Every change is applied exactly once, even when the
// call is retried across controller replicas.
func ExampleClient() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dir, err := os.MkdirTemp("", "shardkv-example-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	// A cluster with two replica groups, neither joined yet.
	c, err := cluster.Start(ctx, cluster.Options{Dir: dir, Groups: 2, Shards: 4, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	ctl, err := ctlclient.New(c.ControllerAddrs())
	if err != nil {
		log.Fatal(err)
	}
	defer ctl.Close()
	cfg, err := ctl.Join(ctx, map[uint64][]string{1: c.GroupAddrs(1), 2: c.GroupAddrs(2)})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("configuration", cfg.Num, "shards", cfg.Shards)
	if cfg, err = ctl.Move(ctx, 0, 2); err != nil {
		log.Fatal(err)
	}
	fmt.Println("configuration", cfg.Num, "shards", cfg.Shards)
	latest, shards, err := ctl.Query(ctx, -1)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("latest", latest.Num, "of", shards, "shards")
	// Output:
	// configuration 1 shards [1 2 1 2]
	// configuration 2 shards [2 2 1 2]
	// latest 2 of 4 shards
}
