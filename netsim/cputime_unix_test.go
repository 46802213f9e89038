//go:build unix

package netsim

import (
	"syscall"
	"time"
)

// processCPUTime returns the user+system CPU time the process has used, so
// benchmarks can report work per CPU-second whatever else loads the machine.
func processCPUTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
