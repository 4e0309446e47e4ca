package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The test binary runs as runSlowStopper when SHARDKV_SLOW_STOPPER is set.
func init() {
	if os.Getenv("SHARDKV_SLOW_STOPPER") != "" {
		runSlowStopper()
	}
}

// runSlowStopper stops on the first signal as a real process does, then
// takes an hour to stop: only a second signal ends it.
func runSlowStopper() {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, cancel := stopOnSignal(context.Background(), log)
	defer cancel()
	fmt.Println("ready")
	<-ctx.Done()
	fmt.Println("stopping")
	time.Sleep(time.Hour)
	os.Exit(0)
}

// TestSecondSignalExitsAtOnce: a process busy stopping after one signal
// exits at once, with exitSecondSignal and a line saying so, on a second.
func TestSecondSignalExitsAtOnce(t *testing.T) {
	logPath := filepath.Join(t.TempDir(), "out")
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	output := func() string { b, _ := os.ReadFile(logPath); return string(b) }
	cmd := exec.Command(os.Args[0], "-test.run", "^$")
	cmd.Env = append(os.Environ(), "SHARDKV_SLOW_STOPPER=1")
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	waitFor := func(s string) {
		t.Helper()
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			if strings.Contains(output(), s) {
				return
			}
		}
		_ = cmd.Process.Kill()
		t.Fatalf("no %q in output: %s", s, output())
	}
	waitFor("ready")
	_ = cmd.Process.Signal(syscall.SIGINT)
	waitFor("stopping")
	sent := time.Now()
	_ = cmd.Process.Signal(syscall.SIGINT)
	select {
	case err := <-done:
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != exitSecondSignal {
			t.Fatalf("exit %v, want code %d", err, exitSecondSignal)
		}
		t.Logf("exited %v after the second signal", time.Since(sent).Round(time.Millisecond))
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatal("still running 10s after a second signal")
	}
	if !strings.Contains(output(), "second signal: exiting at once") {
		t.Fatalf("the process did not say why it exited: %s", output())
	}
}
