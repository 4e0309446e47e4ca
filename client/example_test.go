package client_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"os"
	"strconv"
	"strings"
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

// connect is Example's beginning for the other examples: a cluster
// (startCluster) and a client of it, within a minute (ctx); stop closes
// both.
func connect() (ctx context.Context, c *client.Client, stop func()) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	ctls, stopCluster := startCluster(ctx)
	c, err := client.New(ctx, ctls)
	if err != nil {
		stopCluster()
		log.Fatal(err)
	}
	return ctx, c, func() { c.Close(); stopCluster(); cancel() }
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
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(string(got.Value), got.Found)
	// Output: hello, world true
}

// Every key has a version: 1 when it is created, +1 at every put or
// append. A delete removes the key, and a put after it starts at 1 again.
func ExampleGetResult() {
	ctx, c, stop := connect() // client.New(ctx, controllerAddrs), as in Example
	defer stop()
	key := []byte("colour")
	show := func() {
		got, err := c.Get(ctx, key)
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("%q found=%v version=%d\n", got.Value, got.Found, got.Version)
	}
	for _, write := range []func() (client.WriteResult, error){
		func() (client.WriteResult, error) { return c.Put(ctx, key, []byte("red")) },
		func() (client.WriteResult, error) { return c.Append(ctx, key, []byte("dish")) },
		func() (client.WriteResult, error) { return c.Delete(ctx, key) },
		func() (client.WriteResult, error) { return c.Put(ctx, key, []byte("blue")) },
	} {
		if _, err := write(); err != nil {
			log.Fatal(err)
		}
		show()
	}
	// Output:
	// "red" found=true version=1
	// "reddish" found=true version=2
	// "" found=false version=0
	// "blue" found=true version=1
}

// A compare-and-swap: read the value and its version, write the new value
// only if the version is still the one read, and read again when someone
// else wrote in between. A condition that does not hold is not an error:
// the result says so, and nothing changed.
func ExampleIfVersion() {
	ctx, c, stop := connect() // client.New(ctx, controllerAddrs), as in Example
	defer stop()
	key := []byte("counter")
	increment := func() (int, error) {
		for {
			got, err := c.Get(ctx, key)
			if err != nil {
				return 0, err
			}
			n := 0
			if got.Found {
				if n, err = strconv.Atoi(string(got.Value)); err != nil {
					return 0, err
				}
			}
			// Version 0 when the key does not exist: create it only if it
			// still does not.
			res, err := c.Put(ctx, key, []byte(strconv.Itoa(n+1)), client.IfVersion(got.Version))
			if err != nil {
				return 0, err
			}
			if res.Succeeded {
				return n + 1, nil
			}
		}
	}
	for i := 0; i < 3; i++ {
		n, err := increment()
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println("counter:", n)
	}
	// Another writer's view, one version behind: its swap fails.
	res, err := c.Put(ctx, key, []byte("100"), client.IfVersion(2), client.WithValue())
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("succeeded=%v version=%d value=%q\n", res.Succeeded, res.Version, res.Value)
	// Output:
	// counter: 1
	// counter: 2
	// counter: 3
	// succeeded=false version=3 value="3"
}

// IfValue swaps on the value instead: here a lock released only by its
// holder.
func ExampleIfValue() {
	ctx, c, stop := connect() // client.New(ctx, controllerAddrs), as in Example
	defer stop()
	lock := []byte("lock")
	for _, who := range []string{"alice", "bob"} {
		res, err := c.Put(ctx, lock, []byte(who), client.IfVersion(0)) // only if nobody holds it
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(who, "took the lock:", res.Succeeded)
	}
	for _, who := range []string{"bob", "alice"} {
		res, err := c.Delete(ctx, lock, client.IfValue([]byte(who)))
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(who, "released the lock:", res.Succeeded)
	}
	// Output:
	// alice took the lock: true
	// bob took the lock: false
	// bob released the lock: false
	// alice released the lock: true
}

// A write that may or may not have been applied says so: retrying it with
// a new call could apply it twice, so the caller decides (read it back, or
// make the write idempotent).
func ExampleErrUnknownOutcome() {
	ctx, c, stop := connect() // client.New(ctx, controllerAddrs), as in Example
	defer stop()

	_, err := c.Append(ctx, []byte("log"), []byte("entry 1"))
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

// A watch streams every change to a key, or WatchPrefix to every key under
// a prefix, with the value and version after it: each key's changes once
// and in version order, across leader changes and shard moves.
// WithCreatedNotify says when the watch covers every shard.
func ExampleClient_Watch() {
	ctx, c, stop := connect() // client.New(ctx, controllerAddrs), as in Example
	defer stop()
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch := c.Watch(wctx, []byte("config/"), client.WatchPrefix(), client.WithCreatedNotify())
	if resp := <-ch; !resp.Created {
		log.Fatal(resp.Err())
	}
	go func() {
		for _, k := range []string{"config/a", "other", "config/a"} {
			if _, err := c.Append(ctx, []byte(k), []byte("x")); err != nil {
				log.Print(err)
			}
		}
		if _, err := c.Delete(ctx, []byte("config/a")); err != nil {
			log.Print(err)
		}
	}()
	for seen := 0; seen < 3; {
		resp := <-ch
		if resp.Gap != nil {
			// Changes to the keys of resp.GapShard were missed: read them
			// again to resync.
			log.Print(resp.Gap)
		}
		for _, ev := range resp.Events {
			fmt.Println(ev.Type, string(ev.Key), ev.Version, string(ev.Value))
			seen++
		}
	}
	// Output:
	// APPEND config/a 1 x
	// APPEND config/a 2 xx
	// DELETE config/a 0
}

// A listing, page by page: each page After the previous one's last key
// (Next), until one says there is no More. Keys come in byte order from
// every shard, whichever group holds them.
func ExampleClient_List() {
	ctx, c, stop := connect() // client.New(ctx, controllerAddrs), as in Example
	defer stop()
	for _, name := range []string{"ada", "alan", "barbara", "edsger", "grace", "tony"} {
		if _, err := c.Put(ctx, []byte("user/"+name), []byte(strings.ToUpper(name[:1])+name[1:])); err != nil {
			log.Fatal(err)
		}
	}
	if _, err := c.Put(ctx, []byte("group/admins"), []byte("ada,grace")); err != nil {
		log.Fatal(err)
	}
	opts := []client.ListOption{client.WithPrefix([]byte("user/")), client.WithLimit(4)}
	for page := 1; ; page++ {
		res, err := c.List(ctx, opts...)
		if err != nil {
			log.Fatal(err)
		}
		for _, kv := range res.KVs {
			fmt.Printf("page %d: %s = %s (version %d)\n", page, kv.Key, kv.Value, kv.Version)
		}
		if !res.More {
			break
		}
		opts = append(opts, client.After(res.Next))
	}
	// Output:
	// page 1: user/ada = Ada (version 1)
	// page 1: user/alan = Alan (version 1)
	// page 1: user/barbara = Barbara (version 1)
	// page 1: user/edsger = Edsger (version 1)
	// page 2: user/grace = Grace (version 1)
	// page 2: user/tony = Tony (version 1)
}

// WithRange lists [start, end); WithKeysOnly leaves the values on the
// servers.
func ExampleWithKeysOnly() {
	ctx, c, stop := connect() // client.New(ctx, controllerAddrs), as in Example
	defer stop()
	for i := 0; i < 10; i++ {
		if _, err := c.Put(ctx, []byte(fmt.Sprintf("log/%03d", i)), bytes.Repeat([]byte("x"), 1000)); err != nil {
			log.Fatal(err)
		}
	}
	res, err := c.List(ctx, client.WithRange([]byte("log/003"), []byte("log/006")), client.WithKeysOnly())
	if err != nil {
		log.Fatal(err)
	}
	for _, kv := range res.KVs {
		fmt.Printf("%s (%d value bytes)\n", kv.Key, len(kv.Value))
	}
	fmt.Println("more:", res.More)
	// Output:
	// log/003 (0 value bytes)
	// log/004 (0 value bytes)
	// log/005 (0 value bytes)
	// more: false
}
