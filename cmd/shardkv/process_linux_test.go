package main_test

import (
	"os/exec"
	"syscall"
)

// dieWithTest makes the kernel kill a process a test starts when the test
// binary dies without stopping it (a timeout panics past t.Cleanup).
func dieWithTest(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
