package nemesis

import "syscall"

// dieWithTest makes the kernel kill a process the cluster starts when the
// test process dies without stopping it (a test's timeout panics past
// Close): a cluster left running would hold its ports and skew every
// later run's timings on a small machine.
func dieWithTest(attr *syscall.SysProcAttr) { attr.Pdeathsig = syscall.SIGKILL }
