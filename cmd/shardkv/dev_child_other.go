//go:build !linux

package main

import "os/exec"

// dieWithDev: only Linux can tie a child's life to its parent's; elsewhere
// a dev killed with SIGKILL leaves its processes running.
func dieWithDev(*exec.Cmd) {}
