package client_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"os"
	"time"

	"github.com/shardkv/shardkv/client"
	"github.com/shardkv/shardkv/cluster"
)

// startCluster runs a small cluster in this process for the examples (in
// production the controllers' addresses come from your deployment).
func startCluster(ctx context.Context) (ctls []string, stop func()) {
	dir, err := os.MkdirTemp("", "shardkv-example-")
	if err != nil {
		log.Fatal(err)
	}
	c, err := cluster.Start(ctx, cluster.Options{Dir: dir, Groups: 2, Shards: 8, JoinAll: true,
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		log.Fatal(err)
	}
	return c.ControllerAddrs(), func() { c.Close(); os.RemoveAll(dir) }
}

func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ctls, stop := startCluster(ctx)
	defer stop()

	c, err := client.New(ctx, ctls)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Put(ctx, []byte("greeting"), []byte("hello")); err != nil {
		log.Fatal(err)
	}
	if _, err := c.Append(ctx, []byte("greeting"), []byte(", world")); err != nil {
		log.Fatal(err)
	}
	got, err := c.Get(ctx, []byte("greeting"))
	v, found := got.Value, got.Found
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(string(v), found)
	// Output: hello, world true
}

// A write that may or may not have been applied says so: retrying it with
// a new call could apply it twice, so the caller decides (read it back, or
// make the write idempotent).
func ExampleErrUnknownOutcome() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ctls, stop := startCluster(ctx)
	defer stop()

	c, err := client.New(ctx, ctls)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	_, err = c.Append(ctx, []byte("log"), []byte("entry 1"))
	switch {
	case errors.Is(err, client.ErrUnknownOutcome):
		fmt.Println("may have been applied: read the key before appending again")
	case errors.Is(err, client.ErrValueTooLarge):
		fmt.Println("certainly not applied: the value is over the limit")
	case err != nil:
		fmt.Println("certainly not applied:", err)
	default:
		fmt.Println("applied once")
	}
	// Output: applied once
}
