//go:build !linux

package main_test

import "os/exec"

// dieWithTest: only Linux has a parent-death signal.
func dieWithTest(*exec.Cmd) {}
