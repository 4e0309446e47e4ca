package main

import (
	"os/exec"
	"syscall"
)

// dieWithDev makes the kernel kill cmd, a process dev starts, if dev
// itself dies without stopping it (kill -9, a crash): its controllers and
// nodes would otherwise live on, holding their ports and data directories.
func dieWithDev(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
