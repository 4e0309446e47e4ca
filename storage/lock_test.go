package storage

import (
	"bufio"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestOpenLockedByAnotherProcess opens a data directory that a child
// process holds open: Open fails with a *LockedError naming the directory.
func TestOpenLockedByAnotherProcess(t *testing.T) {
	if dir := os.Getenv("STORAGE_TEST_HOLD_LOCK"); dir != "" {
		e := openEngine(t, dir, Options{})
		defer e.Close()
		os.Stdout.WriteString("open\n")
		_, _ = bufio.NewReader(os.Stdin).ReadString('\n') // until the parent closes stdin
		return
	}
	dir := t.TempDir()
	child := exec.Command(os.Args[0], "-test.run=^TestOpenLockedByAnotherProcess$")
	child.Env = append(os.Environ(), "STORAGE_TEST_HOLD_LOCK="+dir)
	stdin, err := child.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := child.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { stdin.Close(); _ = child.Wait() }()
	if line, err := bufio.NewReader(stdout).ReadString('\n'); err != nil || line != "open\n" {
		t.Fatalf("child: %q, %v", line, err)
	}
	_, err = Open(dir)
	var le *LockedError
	if !errors.Is(err, ErrLocked) || !errors.As(err, &le) || le.Dir != dir || !strings.Contains(err.Error(), "locked by another process") {
		t.Fatalf("open of a directory another process holds: %v", err)
	}
	stdin.Close()
	_ = child.Wait()
	e, err := Open(dir)
	if err != nil {
		t.Fatalf("open once the other process exited: %v", err)
	}
	e.Close()
}
