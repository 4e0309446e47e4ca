//go:build !linux

package nemesis

import "syscall"

// dieWithTest: only Linux has a parent-death signal.
func dieWithTest(*syscall.SysProcAttr) {}
