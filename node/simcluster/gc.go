package simcluster

import (
	"os"
	"runtime/debug"
)

// SimulationGCPercent is the garbage collector's target that TuneGC sets.
const SimulationGCPercent = 400

// TuneGC raises the garbage collector's target to SimulationGCPercent unless
// the GOGC environment variable chose one. A simulated mesh allocates fast
// but keeps little alive, so at Go's default the collector took a fifth of a
// chaos run's CPU; where CPU decides how fast virtual time runs, memory is
// the cheaper resource. Call it from TestMain or main before starting
// clusters.
func TuneGC() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(SimulationGCPercent)
	}
}
