package main

import (
	"os/exec"
	"syscall"
)

// dieWithDev makes the kernel kill cmd, a process dev starts, if dev
// itself dies without stopping it (kill -9, a crash): its controllers and
// nodes would otherwise live on, holding their ports and data directories.
// cmd also gets a process group of its own: a terminal's Ctrl-C signals
// its foreground group, and dev, not each child at once, must get it, to
// stop the nodes before the controllers (children.stopAll); a child
// signalled by both would take dev's SIGTERM as a second signal and exit
// at once.
func dieWithDev(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
}
