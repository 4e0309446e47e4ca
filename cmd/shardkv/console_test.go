package main_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/shardkv/shardkv/client"
	"github.com/shardkv/shardkv/controller"
)

// chromium returns Debian's Chromium, which .ci/run installs; without it
// the browser test is skipped (CI: failed, so it cannot silently stop
// running).
func chromium(t *testing.T) string {
	t.Helper()
	for _, p := range []string{"/usr/bin/chromium", "/usr/bin/chromium-browser"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("no chromium: .ci/run installs Debian's chromium for the console test")
	}
	t.Skip("no chromium (apt-get install chromium)")
	return ""
}

// browser starts a headless Chromium with the flags a machine without
// internet needs (no background networking, no component updates).
func browser(t *testing.T, exe string) context.Context {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(exe), chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true), chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1280, 1100))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	return ctx
}

// artefacts is where the test keeps its screenshots: $SHARDKV_ARTIFACTS,
// or the test's temporary directory.
func artefacts(t *testing.T) string {
	if d := os.Getenv("SHARDKV_ARTIFACTS"); d != "" {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		return d
	}
	return t.TempDir()
}

// TestE2EConsole opens `shardkv dev`'s web console in a real headless
// browser: the shard map shows every shard with its owner in the
// controller's configuration; after `admin move` the page shows the new
// owner serving the shard without being reloaded.
func TestE2EConsole(t *testing.T) {
	exe := chromium(t)
	bin := binary(t)
	dir := t.TempDir()
	base := freePorts(t, devPorts)
	_, c, _ := startDev(t, bin, filepath.Join(dir, "data"), filepath.Join(dir, "dev.log"), base)
	url := fmt.Sprintf("http://127.0.0.1:%d/", base) // dev's --http: base port minus 10
	var cfg struct {
		Num    uint64   `json:"num"`
		Shards []uint64 `json:"shards"`
	}
	if err := json.Unmarshal([]byte(c.ok("admin", "config", "-o", "json")), &cfg); err != nil {
		t.Fatal(err)
	}
	// Some megabytes in shard 0, so that its move below takes a moment
	// the page can show (and the screenshot keep).
	cl, err := client.New(context.Background(), strings.Split(c.controllers, ","))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	value := bytes.Repeat([]byte("v"), 64<<10)
	for i, n := 0, 0; n < 128; i++ {
		if k := fmt.Sprintf("key-%d", i); controller.ShardOf([]byte(k), len(cfg.Shards)) == 0 {
			if _, err := cl.Put(context.Background(), []byte(k), value); err != nil {
				t.Fatal(err)
			}
			n++
		}
	}

	ctx := browser(t, exe)
	ctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	// shardMap reads every cell's shard, owner and state from the page.
	type cell struct {
		Shard int    `json:"shard"`
		Group uint64 `json:"group"`
		State string `json:"state"`
	}
	shardMap := func() []cell {
		cells, err := chromedp.Run(ctx, chromedp.Evaluate[[]cell](`[...document.querySelectorAll("#shards .cell")].map(e => ({
			shard: +e.dataset.shard, group: +e.dataset.group, state: e.dataset.state}))`))
		if err != nil {
			t.Fatal(err)
		}
		return cells
	}
	waitFor := func(what string, ok func([]cell) bool) []cell {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			cells := shardMap()
			if ok(cells) {
				return cells
			}
			if time.Now().After(deadline) {
				t.Fatalf("the console never showed %s; it shows %+v", what, cells)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	if err := chromedp.Do(ctx, chromedp.Navigate(url), chromedp.WaitVisible("#shards .cell")); err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`window.loadedOnce = true`)); err != nil {
		t.Fatal(err)
	}
	waitFor("every shard with its owner, serving", func(cells []cell) bool {
		if len(cells) != len(cfg.Shards) {
			return false
		}
		for i, c := range cells {
			if c.Shard != i || c.Group != cfg.Shards[i] || c.State != "serving" {
				return false
			}
		}
		return true
	})

	const shard = 0
	to := cfg.Shards[shard]%3 + 1 // another of dev's groups 1, 2, 3
	c.ok("admin", "move", strconv.Itoa(shard), strconv.FormatUint(to, 10))
	shot := func(name string) {
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)) // 100: PNG
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(artefacts(t), name)
		if err := os.WriteFile(path, png, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("screenshot: %s", path)
	}
	// The move in flight, if the page catches it before it ends.
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if cells := shardMap(); len(cells) > shard && cells[shard].Group == to && cells[shard].State != "serving" {
			shot("console-migrating.png")
			break
		}
	}
	waitFor(fmt.Sprintf("shard %d served by group %d", shard, to), func(cells []cell) bool {
		return len(cells) > shard && cells[shard].Group == to && cells[shard].State == "serving"
	})
	same, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`window.loadedOnce === true`))
	if err != nil {
		t.Fatal(err)
	}
	if !same {
		t.Fatal("the page was reloaded: it must refresh itself")
	}
	newest, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.querySelector("#history tbody tr td").textContent`))
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprint(cfg.Num + 1); newest != want {
		t.Fatalf("the history's newest configuration is %q, want %s", newest, want)
	}
	shot("console-settled.png")
}
