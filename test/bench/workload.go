package bench

import (
	"cmp"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/meridian-mesh/meridian/placement"
	"github.com/meridian-mesh/meridian/placement/workload"
)

// Job is one unit of placement of the benchmark: the requests of one
// origin region and one class (latency SLO step and price limit) that
// arrived in one aggregation window, or a piece of them when they need more
// than Config.MaxJobFraction of a node. It asks for the mean resources its
// requests need over the window, for the window's length.
type Job struct {
	// ID is unique in the workload: "w<window>-<origin>-<class>-<piece>".
	ID string `json:"id"`
	// Index is the job's position in Workload.Jobs.
	Index int `json:"-"`
	// Origin is the region the requests came from.
	Origin string `json:"origin"`
	// Class is interactive (with a latency SLO) or batch.
	Class workload.SLOClass `json:"class"`
	// At is when the job arrives: when the first of its requests arrived,
	// truncated to a whole second.
	At time.Time `json:"at"`
	// Duration is how long it runs: to the end of its window, so that
	// the jobs of consecutive windows never overlap.
	Duration time.Duration `json:"duration"`
	// Demand is what it asks of one node: the mean compute (tasks/hour),
	// KV-cache storage and network bandwidth of its requests over the
	// window.
	Demand placement.Resources `json:"demand"`
	// LatencySLO is the round-trip time bound from Origin, the tightest of
	// its requests' rounded down to Config.SLOStep; zero for batch.
	LatencySLO time.Duration `json:"latency_slo"`
	// MaxPricePerHour is its requests' price limit for a whole node; zero
	// means none.
	MaxPricePerHour float64 `json:"max_price_per_hour,omitempty"`
	// Priority is 2 for interactive jobs and 1 for batch ones.
	Priority int `json:"priority"`
	// Requests is how many real requests the job stands for.
	Requests float64 `json:"requests"`
	// WireGB is the prompt and output bytes of its requests, which cross
	// regions when the job is served away from its origin.
	WireGB float64 `json:"wire_gb"`
}

// End returns when the job ends if it starts on arrival.
func (j *Job) End() time.Time { return j.At.Add(j.Duration) }

// Tasks returns the job's work in tasks: compute per hour × hours.
func (j *Job) Tasks() float64 { return j.Demand.ComputePerHour * j.Duration.Hours() }

// PlacementJob returns the job as Meridian's placement pipeline sees it.
func (j *Job) PlacementJob() placement.Job {
	return placement.Job{
		ID: j.ID, OriginRegion: j.Origin, Demand: j.Demand, LatencySLO: j.LatencySLO,
		MaxPricePerHour: j.MaxPricePerHour, Priority: j.Priority, Duration: j.Duration,
	}
}

// Workload is the demand of one run, the same for every scheduler.
type Workload struct {
	// Jobs are ordered by arrival time, then ID.
	Jobs []Job
	// Multiplier is how many real requests each sampled request stands
	// for (see docs/benchmark.md, "Workload").
	Multiplier float64
	// SampledRequests counts the generator's arrivals the jobs aggregate.
	SampledRequests int
	// MeanTasksPerRequest is the trace's mean request size in tasks.
	MeanTasksPerRequest float64
	// RequestsPerSecond is the real mean request rate per region over a
	// day that the sizing asks for.
	RequestsPerSecond float64
	// History are the jobs of the warm-up days before the run that feed
	// the forecaster only (their own seed stream).
	History []Job
}

// BuildWorkload generates the run's jobs: requests from the workload
// generator in trace mode (the trace's sizes and minute-to-minute
// burstiness, each region's envelope peaking in its local afternoon, the
// default SLO and price-limit mixes) at Config.SampleRate sampled requests
// per second per region, each standing for Multiplier real requests so
// that a region's mean demand over a day is Config.Load of its capacity;
// then aggregated into jobs per window, origin and class.
func BuildWorkload(w *World) (*Workload, error) {
	cfg := w.cfg
	mean := w.meanTasks
	target := cfg.Load * w.RegionCompute(w.regions[0]) // tasks/hour per region
	wl := &Workload{MeanTasksPerRequest: mean}
	wl.RequestsPerSecond = target / 3600 / mean
	wl.Multiplier = wl.RequestsPerSecond / cfg.SampleRate

	jobs, sampled, err := aggregate(w, cfg.Start, cfg.Start.Add(cfg.Length), cfg.SampleRate, wl.Multiplier, 0)
	if err != nil {
		return nil, err
	}
	wl.Jobs, wl.SampledRequests = jobs, sampled
	if cfg.HistoryDays > 0 {
		// The warm-up is only a demand series, so it is sampled ten times
		// more thinly (and scaled ten times more) to stay cheap.
		rate := cfg.SampleRate / 10
		from := cfg.Start.Add(-time.Duration(cfg.HistoryDays) * 24 * time.Hour)
		hist, _, err := aggregate(w, from, cfg.Start, rate, wl.RequestsPerSecond/rate, 1)
		if err != nil {
			return nil, fmt.Errorf("forecast warm-up: %w", err)
		}
		wl.History = hist
	}
	return wl, nil
}

// meanTasksPerRequest returns the mean size of the requests the generator
// samples in trace mode: those of the trace's whole minutes from the first
// request.
func meanTasksPerRequest(tr *workload.Trace, tp workload.Throughput) (float64, error) {
	if tr == nil || len(tr.Requests) == 0 {
		return 0, fmt.Errorf("-trace: the trace has no requests")
	}
	first := tr.Requests[0].At
	whole := first.Add(tr.Span().Truncate(time.Minute))
	sum, n := 0.0, 0
	for _, r := range tr.Requests {
		if !r.At.Before(whole) {
			break
		}
		sum += tp.GPUSeconds(r.ContextTokens, r.GeneratedTokens) / tp.GPUSecondsPerTask
		n++
	}
	if n == 0 {
		return 0, fmt.Errorf("-trace %s: spans %v, less than the whole minute the generator resamples", tr.Source, tr.Span())
	}
	return sum / float64(n), nil
}

// groupKey is what the requests of one job share.
type groupKey struct {
	origin   string
	class    workload.SLOClass
	slo      time.Duration
	maxPrice float64
}

// groupAcc accumulates a group's requests over a window.
type groupAcc struct {
	first    time.Time
	tasks    float64 // tasks
	storage  float64 // GB·seconds
	wire     float64 // GB
	requests int
}

// aggregate generates [from, to) with stream as the second word of the
// generator's seed, and turns it into jobs. It returns the jobs and the
// number of sampled requests.
func aggregate(w *World, from, to time.Time, rate, multiplier float64, stream uint64) ([]Job, int, error) {
	cfg := w.cfg
	gcfg, err := workload.DefaultConfig(from, w.regions...)
	if err != nil {
		return nil, 0, fmt.Errorf("-regions: %w", err)
	}
	gcfg.Trace = cfg.Trace
	gcfg.Prices = cfg.Prices
	gcfg.Instance = cfg.Instance
	gcfg.RatePerSecond = rate
	gcfg.Throughput = w.throughput
	gen, err := workload.NewGenerator(gcfg, rand.New(rand.NewPCG(uint64(cfg.Seed), stream)))
	if err != nil {
		return nil, 0, fmt.Errorf("workload generator: %w", err)
	}
	maxCompute := cfg.MaxJobFraction * w.node.ComputePerHour
	var jobs []Job
	sampled := 0
	win := cfg.Window
	for i, t := 0, from; t.Before(to); i, t = i+1, t.Add(win) {
		end := t.Add(win)
		if end.After(to) {
			end = to
		}
		groups := map[groupKey]*groupAcc{}
		for _, a := range gen.Between(t, end) {
			sampled++
			k := groupKey{origin: a.Job.OriginRegion, class: a.Class, maxPrice: a.Job.MaxPricePerHour}
			if a.Class == workload.Interactive {
				k.slo = a.Job.LatencySLO.Truncate(cfg.SLOStep)
				if k.slo <= 0 {
					k.slo = a.Job.LatencySLO // a bound below one step is kept as is
				}
			}
			g := groups[k]
			if g == nil {
				g = &groupAcc{first: a.At}
				groups[k] = g
			}
			d := a.Job.Duration.Seconds()
			g.tasks += a.Job.Demand.ComputePerHour * d / 3600
			g.storage += a.Job.Demand.StorageGB * d
			g.wire += a.Job.Demand.BandwidthGBps * d
			g.requests++
		}
		keys := make([]groupKey, 0, len(groups))
		for k := range groups {
			keys = append(keys, k)
		}
		slices.SortFunc(keys, func(a, b groupKey) int {
			return cmp.Or(cmp.Compare(a.origin, b.origin), cmp.Compare(a.class, b.class),
				cmp.Compare(a.slo, b.slo), cmp.Compare(a.maxPrice, b.maxPrice))
		})
		for _, k := range keys {
			g := groups[k]
			// The job arrives with its first request (on a whole second)
			// and runs to the window's end; the last window may be cut
			// short by the run's end.
			at := t.Add(g.first.Sub(t).Truncate(time.Second))
			if end.Sub(at) < time.Second {
				at = end.Add(-time.Second)
			}
			dur := end.Sub(at)
			secs := dur.Seconds()
			demand := placement.Resources{
				ComputePerHour: multiplier * g.tasks / dur.Hours(),
				StorageGB:      multiplier * g.storage / secs,
				BandwidthGBps:  multiplier * g.wire / secs,
			}
			pieces := max(1, int(math.Ceil(demand.ComputePerHour/maxCompute-1e-9)))
			share := 1 / float64(pieces)
			for p := range pieces {
				j := Job{
					ID:     fmt.Sprintf("w%05d-%s-%s-%d", i, k.origin, classCode(k), p),
					Origin: k.origin, Class: k.class,
					At:       at,
					Duration: dur,
					Demand: placement.Resources{
						ComputePerHour: demand.ComputePerHour * share,
						StorageGB:      demand.StorageGB * share,
						BandwidthGBps:  demand.BandwidthGBps * share,
					},
					LatencySLO:      k.slo,
					MaxPricePerHour: k.maxPrice,
					Priority:        1,
					Requests:        multiplier * float64(g.requests) * share,
					WireGB:          multiplier * g.wire * share,
				}
				if k.class == workload.Interactive {
					j.Priority = 2
				}
				jobs = append(jobs, j)
			}
		}
	}
	slices.SortStableFunc(jobs, func(a, b Job) int {
		return cmp.Or(a.At.Compare(b.At), cmp.Compare(a.ID, b.ID))
	})
	for i := range jobs {
		jobs[i].Index = i
	}
	return jobs, sampled, nil
}

// classCode names a job class in IDs: i100 for interactive with a 100 ms
// SLO, b for batch, with a trailing c when the requests carry a price cap.
func classCode(k groupKey) string {
	s := "b"
	if k.class == workload.Interactive {
		s = fmt.Sprintf("i%d", k.slo.Milliseconds())
	}
	if k.maxPrice > 0 {
		s += "c"
	}
	return s
}
