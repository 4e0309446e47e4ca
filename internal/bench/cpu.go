package bench

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// clockTicks is the unit of /proc/PID/stat's utime and stime (USER_HZ,
// 100 on every Linux the project runs on).
const clockTicks = 100

// cpuTime is the user plus system CPU time the processes pids have used so
// far (Linux: /proc/PID/stat, all threads, 10 ms resolution); 0 for pid
// means this process (getrusage, microsecond resolution).
func cpuTime(pids []int) (time.Duration, error) {
	var total time.Duration
	for _, pid := range pids {
		if pid == 0 {
			var ru syscall.Rusage
			if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
				return 0, err
			}
			total += time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return 0, err
		}
		// The command name (field 2) may hold spaces: count fields from
		// the closing parenthesis. utime and stime are fields 14 and 15.
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(f) < 13 {
			return 0, fmt.Errorf("bench: /proc/%d/stat: too few fields", pid)
		}
		for _, x := range f[11:13] {
			t, err := strconv.ParseInt(x, 10, 64)
			if err != nil {
				return 0, fmt.Errorf("bench: /proc/%d/stat: %w", pid, err)
			}
			total += time.Duration(t) * time.Second / clockTicks
		}
	}
	return total, nil
}

// cpuMeter measures CPU time over the measured part of a run.
type cpuMeter struct {
	pids  []int
	start time.Duration
	err   error
}

func startCPU(pids []int) *cpuMeter {
	m := &cpuMeter{pids: pids}
	m.start, m.err = cpuTime(pids)
	return m
}

// perOp is the CPU time used since start per operation, in microseconds
// (0 when unmeasured).
func (m *cpuMeter) perOp(ops int) float64 {
	if m == nil || m.err != nil || ops == 0 {
		return 0
	}
	now, err := cpuTime(m.pids)
	if err != nil {
		return 0
	}
	return float64((now - m.start).Microseconds()) / float64(ops)
}
