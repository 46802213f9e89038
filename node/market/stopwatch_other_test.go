//go:build !unix

package market

import "time"

// stopwatch measures wall time from now where the process's CPU time is not
// available.
func stopwatch() func() time.Duration {
	start := time.Now()
	return func() time.Duration { return time.Since(start) }
}
