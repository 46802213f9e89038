package chaos

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/meridian-mesh/meridian/node/api"
	"github.com/meridian-mesh/meridian/placement"
)

// OpKind is a client operation.
type OpKind string

// The client operations of the load.
const (
	// OpSubmit submits a job (POST /v1/jobs); retried with the same ID,
	// the client's idempotency key, when the outcome is unknown.
	OpSubmit OpKind = "submit"
	// OpStatus reads a job (GET /v1/jobs/{id}).
	OpStatus OpKind = "status"
	// OpCancel cancels a job (DELETE /v1/jobs/{id}).
	OpCancel OpKind = "cancel"
)

// LoadConfig shapes the seeded client load of a run.
type LoadConfig struct {
	// Regions are the home regions of the jobs, sorted.
	Regions []string
	// HotRegion gets HotFactor times the submit rate of the others, more
	// than it can hold, so that it buys capacity from them; it also opens
	// with a burst of HotBurst size-1 jobs in the first BurstWindow, enough
	// to fill it, so that it trades from early in the run on.
	HotRegion string
	HotFactor float64
	HotBurst  int
	// Duration is how long the load runs.
	Duration time.Duration
	// JobsPerMinute is each region's submit rate (Poisson arrivals).
	JobsPerMinute float64
	// StatusPerMinute is each region's rate of status reads of its jobs.
	StatusPerMinute float64
	// CancelFraction is the share of jobs a client cancels a while after
	// submitting them.
	CancelFraction float64
	// Unit is the demand of a size-1 job; a quarter of the jobs ask twice
	// as much.
	Unit placement.Resources
	// MinRun and MaxRun bound a job's duration (uniform, whole seconds).
	MinRun, MaxRun time.Duration
}

// Validate checks the configuration, naming the field at fault.
func (c LoadConfig) Validate() error {
	if len(c.Regions) == 0 {
		return errors.New("load regions: need at least one")
	}
	if !slices.Contains(c.Regions, c.HotRegion) {
		return fmt.Errorf("load hot region %q: not one of %v", c.HotRegion, c.Regions)
	}
	for _, f := range []struct {
		name string
		v    float64
	}{{"hot factor", c.HotFactor}, {"jobs per minute", c.JobsPerMinute}, {"status per minute", c.StatusPerMinute}} {
		if math.IsNaN(f.v) || math.IsInf(f.v, 0) || f.v < 0 || f.v > 1e4 {
			return fmt.Errorf("load %s %v: want a number in [0, 10000]", f.name, f.v)
		}
	}
	if c.HotBurst < 0 || c.HotBurst > 10000 {
		return fmt.Errorf("load hot burst %d: want 0 to 10000 jobs", c.HotBurst)
	}
	if !(c.CancelFraction >= 0 && c.CancelFraction <= 1) {
		return fmt.Errorf("load cancel fraction %v: want a fraction in [0,1]", c.CancelFraction)
	}
	if c.Duration <= 0 {
		return fmt.Errorf("load duration %v: must be positive", c.Duration)
	}
	if err := c.Unit.Validate("load unit."); err != nil {
		return err
	}
	if c.Unit.ComputePerHour <= 0 {
		return fmt.Errorf("load unit compute %v: must be positive", c.Unit.ComputePerHour)
	}
	if c.MinRun < time.Second || c.MaxRun < c.MinRun || c.MaxRun > api.MaxDurationS*time.Second {
		return fmt.Errorf("load run time [%v, %v]: want 1s <= min <= max <= %ds", c.MinRun, c.MaxRun, api.MaxDurationS)
	}
	return nil
}

// BurstWindow is when the hot region's opening burst is submitted.
const BurstWindow = 10 * time.Second

// PlannedOp is one client operation of the load, At after its start.
type PlannedOp struct {
	At   time.Duration
	Kind OpKind
	// Job is the job's ID; Region its home region.
	Job    string
	Region string
	// Entry picks the agent the client calls: the runner takes it modulo
	// the number of running agents, so that the choice is seeded but
	// always lands on a live agent.
	Entry int
	// Spec is the job of a submit.
	Spec api.JobSpec
}

// PlanLoad returns the load's operations in time order. The same seed and
// config give the same plan.
//
// Each region's clients submit jobs as a Poisson process (the hot region
// opening with its burst of size-1 jobs), read the status
// of their jobs (mostly jobs already submitted; one read in twenty is of a
// job not submitted yet, which must not be found) and cancel a share of
// them a while after submitting them.
func PlanLoad(seed int64, cfg LoadConfig) ([]PlannedOp, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	r := rand.New(rand.NewPCG(uint64(seed), 0x6c6f6164)) // "load"
	var ops []PlannedOp
	n := 0
	jobs := map[string][]string{} // region → job IDs, in submit order
	var pending []PlannedOp       // cancels and reads planned ahead
	for _, region := range cfg.Regions {
		rate := cfg.JobsPerMinute
		if region == cfg.HotRegion {
			rate *= cfg.HotFactor
		}
		times := arrivals(r, rate, cfg.Duration)
		burst := 0
		if region == cfg.HotRegion && cfg.HotBurst > 0 {
			var b []time.Duration
			for range cfg.HotBurst {
				b = append(b, time.Duration(r.Int64N(int64(min(BurstWindow, cfg.Duration)))).Truncate(time.Millisecond))
			}
			slices.Sort(b)
			times, burst = append(b, times...), len(b)
		}
		for k, at := range times {
			n++
			id := fmt.Sprintf("j%05d.%s", n, region)
			size := 1.0
			if k >= burst && r.IntN(4) == 0 {
				size = 2
			}
			run := time.Duration(int64(cfg.MinRun/time.Second)+r.Int64N(int64((cfg.MaxRun-cfg.MinRun)/time.Second)+1)) * time.Second
			spec := api.JobSpec{
				ID:           id,
				OriginRegion: region,
				Demand:       scale(cfg.Unit, size),
				DurationS:    int64(run / time.Second),
			}
			ops = append(ops, PlannedOp{At: at, Kind: OpSubmit, Job: id, Region: region, Entry: r.IntN(1 << 30), Spec: spec})
			jobs[region] = append(jobs[region], id)
			if r.Float64() < cfg.CancelFraction {
				c := at + time.Duration(5+r.IntN(56))*time.Second
				if c < cfg.Duration {
					pending = append(pending, PlannedOp{At: c, Kind: OpCancel, Job: id, Region: region, Entry: r.IntN(1 << 30)})
				}
			}
		}
	}
	ops = append(ops, pending...)
	sortOps(ops)
	// Reads pick among the jobs submitted before them, so they are planned
	// once every submit time is known.
	var reads []PlannedOp
	for _, region := range cfg.Regions {
		ids := jobs[region]
		for _, at := range arrivals(r, cfg.StatusPerMinute, cfg.Duration) {
			before := submittedBefore(ops, region, at)
			var job string
			switch {
			case len(ids) == 0:
				continue
			case before > 0 && r.IntN(20) != 0:
				job = ids[r.IntN(before)]
			case before < len(ids):
				job = ids[before+r.IntN(len(ids)-before)] // submitted later: not found yet
			default:
				job = fmt.Sprintf("j%05d.%s", n+1+r.IntN(1000), region) // never submitted
			}
			reads = append(reads, PlannedOp{At: at, Kind: OpStatus, Job: job, Region: region, Entry: r.IntN(1 << 30)})
		}
	}
	ops = append(ops, reads...)
	sortOps(ops)
	return ops, nil
}

// arrivals returns the times of a Poisson process of rate per minute.
func arrivals(r *rand.Rand, perMinute float64, d time.Duration) []time.Duration {
	if perMinute <= 0 {
		return nil
	}
	mean := float64(time.Minute) / perMinute
	var out []time.Duration
	for at := time.Duration(r.ExpFloat64() * mean); at < d; at += time.Duration(r.ExpFloat64() * mean) {
		out = append(out, at.Truncate(time.Millisecond))
	}
	return out
}

// submittedBefore counts the submits of region planned before at.
func submittedBefore(ops []PlannedOp, region string, at time.Duration) int {
	n := 0
	for _, op := range ops {
		if op.At >= at {
			break
		}
		if op.Kind == OpSubmit && op.Region == region {
			n++
		}
	}
	return n
}

func sortOps(ops []PlannedOp) {
	slices.SortStableFunc(ops, func(a, b PlannedOp) int {
		switch {
		case a.At < b.At:
			return -1
		case a.At > b.At:
			return 1
		}
		return 0
	})
}

func scale(r placement.Resources, f float64) placement.Resources {
	return placement.Resources{
		ComputePerHour: r.ComputePerHour * f,
		StorageGB:      r.StorageGB * f,
		BandwidthGBps:  r.BandwidthGBps * f,
		GPUs:           int(math.Round(float64(r.GPUs) * f)),
	}
}

// UnitFor returns the demand of a size-1 job for nodes of capacity total:
// a slots-th of the node in every dimension (GPUs rounded down, at least
// one when the node has any).
func UnitFor(total placement.Resources, slots int) (placement.Resources, error) {
	if slots < 1 {
		return placement.Resources{}, fmt.Errorf("slots %d: must be at least 1", slots)
	}
	if total.ComputePerHour <= 0 {
		return placement.Resources{}, fmt.Errorf("node capacity compute %v: must be positive", total.ComputePerHour)
	}
	u := scale(total, 1/float64(slots))
	u.GPUs = total.GPUs / slots
	if total.GPUs > 0 && u.GPUs == 0 {
		u.GPUs = 1
	}
	return u, nil
}
