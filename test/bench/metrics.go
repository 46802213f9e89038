package bench

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"gonum.org/v1/gonum/stat"
)

// Results is results.json: the LP bound and one row per scheduler.
type Results struct {
	LPBoundUSD float64           `json:"lp_bound_usd"`
	Schedulers []SchedulerResult `json:"schedulers"`
}

// SchedulerResult is one scheduler's row of the results (see
// docs/benchmark.md, "Reading the results", for each column).
type SchedulerResult struct {
	// Name is the scheduler's name.
	Name string `json:"name"`
	// CostUSD is what the run cost: the placed jobs' allocations for their
	// durations, plus the penalty for the work of jobs left unplaced.
	CostUSD float64 `json:"cost_usd"`
	// CostVsLP is CostUSD over the LP bound (≥ 1).
	CostVsLP float64 `json:"cost_vs_lp"`
	// PlacedPct is the share of jobs placed, in percent.
	PlacedPct float64 `json:"placed_pct"`
	// SLOPct is the share of placed jobs served from a region within
	// their latency SLO and price limit, in percent.
	SLOPct float64 `json:"slo_pct"`
	// PlacementP50Ms and PlacementP99Ms are percentiles of the time from a
	// job's arrival to its committed placement, over placed jobs.
	PlacementP50Ms float64 `json:"placement_p50_ms"`
	PlacementP99Ms float64 `json:"placement_p99_ms"`
	// CrossRegionGB is the request and response bytes of jobs served
	// outside their origin region.
	CrossRegionGB float64 `json:"cross_region_gb"`
	// JainUtilization is Jain's fairness index of the regions' mean
	// utilization over the run: 1 when every region is as busy as the
	// others, 1/n when one region does all the work.
	JainUtilization float64 `json:"jain_utilization"`
}

// Evaluation is a scheduler's result with the figures behind it.
type Evaluation struct {
	Result SchedulerResult `json:"result"`
	// ServedUSD is what the capacity that served the work costs: every
	// placed job at its serving node's own (list) price, for the time it
	// ran. PenaltyUSD is the unserved work's. Their sum is the cost the
	// LP bounds and the baselines pay.
	ServedUSD  float64 `json:"served_usd"`
	PenaltyUSD float64 `json:"penalty_usd"`
	// PaidUSD is the served work at the prices the jobs were charged: for
	// a job the mesh traded, the trade's price, which carries the seller's
	// utilization markup. Between regions of one operator that markup is a
	// transfer — one region's cost is another's revenue — not spend, so it
	// is reported here and not in the cost. The baselines pay list prices,
	// so for them it equals ServedUSD.
	PaidUSD float64 `json:"paid_usd"`
	// Jobs, Placed and Traded count jobs; Traded ran outside their origin.
	Jobs   int `json:"jobs"`
	Placed int `json:"placed"`
	Traded int `json:"traded"`
	// SLOMisses counts placed jobs served outside their SLO or price limit.
	SLOMisses int `json:"slo_misses"`
	// PlacedWorkPct is the share of the work (node-hours) placed.
	PlacedWorkPct float64 `json:"placed_work_pct"`
	// Utilization is each region's mean utilization over the run.
	Utilization map[string]float64 `json:"utilization"`
	// Unplaced counts unplaced jobs by reason (its text before the first
	// ": ", the rest being particulars; one example of each is in Notes).
	Unplaced map[string]int `json:"unplaced,omitempty"`
	// unplacedExamples keeps the first full reason of each kind.
	unplacedExamples map[string]string
	// Notes are the scheduler's remarks.
	Notes []string `json:"notes,omitempty"`
	// Timeline is per interval: cost and per-region utilization.
	Timeline Timeline `json:"-"`
}

// Timeline holds a scheduler's figures per time bucket.
type Timeline struct {
	// Start and Interval place the buckets in time.
	Start    time.Time
	Interval time.Duration
	// CostUSD is the cost accrued in each bucket, penalty included.
	CostUSD []float64
	// Utilization[region][b] is the region's allocated compute over its
	// capacity in bucket b.
	Utilization map[string][]float64
}

// horizon returns the span the timelines cover: from the run's start to
// the last job's end.
func horizon(w *World, jobs []Job) (time.Time, time.Time) {
	start, end := w.Start(), w.End()
	for i := range jobs {
		if jobs[i].At.Before(start) {
			start = jobs[i].At
		}
		if e := jobs[i].End(); e.After(end) {
			end = e
		}
	}
	return start, end
}

// Evaluate computes a scheduler's figures from its outcome. It fails if
// the outcome does not match the jobs (a scheduler bug, not a result).
func Evaluate(w *World, jobs []Job, name string, out Outcome) (Evaluation, error) {
	if len(out.Jobs) != len(jobs) {
		return Evaluation{}, fmt.Errorf("%s: %d results for %d jobs", name, len(out.Jobs), len(jobs))
	}
	interval := w.cfg.ForecastInterval
	start, end := horizon(w, jobs)
	nb := int((end.Sub(start) + interval - 1) / interval)
	ev := Evaluation{Jobs: len(jobs), Utilization: map[string]float64{}, Notes: slices.Clone(out.Notes),
		Timeline: Timeline{Start: start, Interval: interval, CostUSD: make([]float64, nb), Utilization: map[string][]float64{}}}
	for _, r := range w.regions {
		ev.Timeline.Utilization[r] = make([]float64, nb)
	}
	// spread adds rate·overlap of [from, to) to each bucket, clipped to
	// the horizon.
	spread := func(series []float64, from, to time.Time, rate float64) {
		if !from.Before(to) {
			return
		}
		first := max(0, int(from.Sub(start)/interval))
		for b := first; b < nb; b++ {
			bs := start.Add(time.Duration(b) * interval)
			if !bs.Before(to) {
				break
			}
			if ov := minTime(bs.Add(interval), to).Sub(maxTime(bs, from)); ov > 0 {
				series[b] += rate * ov.Hours()
			}
		}
	}
	penalty := w.PenaltyPerNodeHour()
	var latencies []float64
	totalWork, placedWork, crossGB := 0.0, 0.0, 0.0
	busy := map[string]float64{} // node-hours per region within the horizon
	for i := range jobs {
		j, res := &jobs[i], &out.Jobs[i]
		work := j.Tasks() / w.node.ComputePerHour
		totalWork += work
		if !res.Placed {
			ev.PenaltyUSD += work * penalty
			spread(ev.Timeline.CostUSD, j.At, j.End(), penalty*j.Demand.ComputePerHour/w.node.ComputePerHour)
			if ev.Unplaced == nil {
				ev.Unplaced = map[string]int{}
			}
			cat, _, detailed := strings.Cut(res.Reason, ": ")
			if detailed && len(ev.Unplaced) < 20 && ev.unplacedExamples[cat] == "" {
				if ev.unplacedExamples == nil {
					ev.unplacedExamples = map[string]string{}
				}
				ev.unplacedExamples[cat] = res.Reason
				ev.Notes = append(ev.Notes, "unplaced, e.g.: "+res.Reason)
			}
			ev.Unplaced[cat]++
			continue
		}
		if _, ok := w.price[res.Region]; !ok {
			return Evaluation{}, fmt.Errorf("%s: job %s placed in region %q, which is not in the run", name, j.ID, res.Region)
		}
		if !(res.CostPerHour >= 0) || math.IsInf(res.CostPerHour, 0) {
			return Evaluation{}, fmt.Errorf("%s: job %s costs %v per hour", name, j.ID, res.CostPerHour)
		}
		if res.Start.IsZero() {
			return Evaluation{}, fmt.Errorf("%s: job %s placed with no start time", name, j.ID)
		}
		ev.Placed++
		// A job runs from its start to its window's end: one placed late
		// serves only what is left of its window (the mesh's client stops
		// it then), and the time before it started is unserved work.
		runEnd := minTime(res.Start.Add(j.Duration), j.End())
		ran := max(runEnd.Sub(res.Start), 0)
		share := j.Demand.ComputePerHour / w.node.ComputePerHour // of a node
		if late := j.Duration - ran; late > 0 {
			ev.PenaltyUSD += late.Hours() * share * penalty
			spread(ev.Timeline.CostUSD, j.At, res.Start, penalty*share)
		}
		placedWork += work * float64(ran) / float64(j.Duration)
		if res.Region != j.Origin {
			ev.Traded++
			crossGB += j.WireGB
		}
		if !w.feasible(j, res.Region) {
			ev.SLOMisses++
		}
		ev.PaidUSD += res.CostPerHour * ran.Hours()
		ev.ServedUSD += w.price[res.Region] * share * ran.Hours()
		latencies = append(latencies, float64(res.PlacementLatency)/float64(time.Millisecond))
		spread(ev.Timeline.CostUSD, res.Start, runEnd, w.price[res.Region]*share)
		u := j.Demand.ComputePerHour / w.RegionCompute(res.Region)
		spread(ev.Timeline.Utilization[res.Region], res.Start, runEnd, u)
		from, to := maxTime(res.Start, start), minTime(runEnd, end)
		if from.Before(to) {
			busy[res.Region] += j.Demand.ComputePerHour / w.node.ComputePerHour * to.Sub(from).Hours()
		}
	}
	// Utilization series hold utilization·hours per bucket: turn them
	// into mean utilization.
	for _, r := range w.regions {
		s := ev.Timeline.Utilization[r]
		for b := range s {
			s[b] /= interval.Hours()
		}
		ev.Utilization[r] = busy[r] / (float64(w.NodesPerRegion()) * end.Sub(start).Hours())
	}
	res := SchedulerResult{Name: name, CostUSD: ev.ServedUSD + ev.PenaltyUSD, CrossRegionGB: crossGB}
	if len(jobs) > 0 {
		res.PlacedPct = 100 * float64(ev.Placed) / float64(len(jobs))
	}
	if ev.Placed > 0 {
		res.SLOPct = 100 * float64(ev.Placed-ev.SLOMisses) / float64(ev.Placed)
		slices.Sort(latencies)
		res.PlacementP50Ms = stat.Quantile(0.5, stat.Empirical, latencies, nil)
		res.PlacementP99Ms = stat.Quantile(0.99, stat.Empirical, latencies, nil)
	}
	if totalWork > 0 {
		ev.PlacedWorkPct = 100 * placedWork / totalWork
	}
	utils := make([]float64, 0, len(w.regions))
	for _, r := range w.regions {
		utils = append(utils, ev.Utilization[r])
	}
	res.JainUtilization = jain(utils)
	ev.Result = res
	return ev, nil
}

// jain returns Jain's fairness index (Σx)²/(n·Σx²) of xs, or 0 when every
// x is zero (no work, nothing to be fair about).
func jain(xs []float64) float64 {
	sum, sq := 0.0, 0.0
	for _, x := range xs {
		sum += x
		sq += x * x
	}
	if sq == 0 {
		return 0
	}
	return sum * sum / (float64(len(xs)) * sq)
}
