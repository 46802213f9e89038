package bench

import (
	"context"
	"time"
)

// Scheduler places a run's jobs on a World and reports what happened to
// each. Run is called once per run, from the benchmark's goroutine; it may
// block for as long as the simulation takes and must return once ctx is
// done. jobs are ordered by arrival and must not be modified.
type Scheduler interface {
	// Name is the scheduler's name in the results.
	Name() string
	// Run places jobs and returns one JobResult per job, indexed like jobs.
	Run(ctx context.Context, w *World, jobs []Job) (Outcome, error)
}

// Outcome is what a scheduler did with a run's jobs.
type Outcome struct {
	// Jobs holds one result per job, indexed like the jobs given to Run.
	Jobs []JobResult
	// Notes are remarks for the report (what was modelled, what failed).
	Notes []string
}

// JobResult is what happened to one job.
type JobResult struct {
	// Placed reports that the job got capacity and ran.
	Placed bool `json:"placed"`
	// Region and Node say where it ran.
	Region string `json:"region,omitempty"`
	Node   string `json:"node,omitempty"`
	// Start is when it started running; it ran for the job's duration
	// (until its window's end), unless Segments say otherwise.
	Start time.Time `json:"start,omitzero"`
	// CostPerHour is what its allocation cost, in US dollars per hour.
	CostPerHour float64 `json:"cost_per_hour,omitempty"`
	// PlacementLatency is the time from the job's arrival to its placement
	// being committed (measured for the mesh, modelled for the baselines).
	PlacementLatency time.Duration `json:"placement_latency,omitempty"`
	// Traded reports that it ran outside its origin's region.
	Traded bool `json:"traded,omitempty"`
	// Reason says why an unplaced job was not placed.
	Reason string `json:"reason,omitempty"`
	// Segments, when not empty, are the allocations that served the job,
	// in order of start: a job the mesh moved (preempted, or its node
	// failed, then placed again) ran in more than one place, maybe with a
	// gap, and one Region/Start/CostPerHour cannot say what it cost. When
	// set they are authoritative (Evaluate reads them, not Region, Start or
	// CostPerHour); Start is still the first segment's, and Region, Node
	// and CostPerHour the last's, for readers that know only those. The
	// baselines never move a job and leave it empty.
	Segments []Segment `json:"segments,omitempty"`
}

// Segment is one allocation that served a job: where, when and at what
// price, so that a moved job is charged for each place it ran in.
type Segment struct {
	// Region and Node say where the allocation was.
	Region string `json:"region"`
	Node   string `json:"node,omitempty"`
	// Start and End bound the time it held capacity: from its commit to
	// its stop (or to the job's window's end, if it was still live).
	// Evaluate clips them to the job's window; segments may overlap
	// briefly, when the new allocation was committed before the old one
	// stopped.
	Start time.Time `json:"start"`
	End   time.Time `json:"end"`
	// CostPerHour is what the job was charged for it, in US dollars per
	// hour (for a traded allocation, the trade's price).
	CostPerHour float64 `json:"cost_per_hour,omitempty"`
}
