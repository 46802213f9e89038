//go:build unix

package market

import (
	"syscall"
	"time"
)

// stopwatch measures the process's CPU time (user + system) from now: inside
// a synctest bubble the clock is virtual, so the CPU is what a benchmark of
// the work can measure.
func stopwatch() func() time.Duration {
	start := cpuTime()
	return func() time.Duration { return cpuTime() - start }
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
