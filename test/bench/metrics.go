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
	// Moved counts placed jobs served by more than one allocation (their
	// JobResult.Segments): preempted, or their node failed, and placed
	// again. Each allocation is charged at its own region's price, and the
	// gaps between them as unserved work.
	Moved int `json:"moved"`
	// OverrunNodeHours is capacity held past the jobs' windows (beyond a
	// second of tolerance): allocations still running after their job's
	// requests ended. It is charged nothing, but holds room the next
	// window's jobs need, so it should be zero: the baselines end every job
	// with its window, and the mesh's client stops its jobs then.
	OverrunNodeHours float64 `json:"overrun_node_hours"`
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
		var (
			segs    []Segment
			spans   [][2]time.Time
			covered time.Duration
			gaps    [][2]time.Time
		)
		if res.Placed {
			var err error
			if segs, err = servedSegments(w, name, j, res); err != nil {
				return Evaluation{}, err
			}
			// A job serves its requests only within its window: each
			// segment counts from the job's arrival at the earliest to its
			// window's end at the latest (one placed late serves only what
			// is left of its window; the mesh's client stops it then).
			spans = make([][2]time.Time, len(segs))
			for k, s := range segs {
				from, to := maxTime(s.Start, j.At), minTime(s.End, j.End())
				spans[k] = [2]time.Time{from, maxTime(from, to)}
			}
			covered, gaps = coverage(j.At, j.End(), spans)
		}
		if res.Placed && covered == 0 {
			// Placed in the last instant of its window (the mesh's
			// capacity frees as the window's jobs end): it served nothing,
			// and counts as not placed.
			res = &JobResult{Reason: "placed only as its window ended"}
		}
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
		ev.Placed++
		if len(res.Segments) > 1 {
			ev.Moved++
		}
		for _, sg := range segs {
			if over := sg.End.Sub(maxTime(sg.Start, j.End())); over > time.Second {
				ev.OverrunNodeHours += over.Hours() * j.Demand.ComputePerHour / w.node.ComputePerHour
			}
		}
		// The part of the window no segment covers is unserved work,
		// charged the penalty; where segments overlap (a move that started
		// the new allocation before stopping the old) both held capacity
		// and both are paid for, but the window is served once.
		share := j.Demand.ComputePerHour / w.node.ComputePerHour // of a node
		if late := j.Duration - covered; late > 0 {
			ev.PenaltyUSD += late.Hours() * share * penalty
			for _, g := range gaps {
				spread(ev.Timeline.CostUSD, g[0], g[1], penalty*share)
			}
		}
		placedWork += work * float64(covered) / float64(j.Duration)
		var served, away time.Duration // segment time, and the part of it outside the origin
		traded, miss := false, false
		for k, s := range segs {
			from, to := spans[k][0], spans[k][1]
			ran := to.Sub(from)
			served += ran
			if s.Region != j.Origin {
				traded = true
				away += ran
			}
			if !w.feasible(j, s.Region) {
				miss = true
			}
			ev.PaidUSD += s.CostPerHour * ran.Hours()
			ev.ServedUSD += w.price[s.Region] * share * ran.Hours()
			spread(ev.Timeline.CostUSD, from, to, w.price[s.Region]*share)
			u := j.Demand.ComputePerHour / w.RegionCompute(s.Region)
			spread(ev.Timeline.Utilization[s.Region], from, to, u)
			if from, to := maxTime(from, start), minTime(to, end); from.Before(to) {
				busy[s.Region] += j.Demand.ComputePerHour / w.node.ComputePerHour * to.Sub(from).Hours()
			}
		}
		if traded {
			ev.Traded++
			// Its requests and responses crossed regions for the share of
			// its serving time spent away from its origin (a placed job
			// served some time: one that served none is not placed).
			crossGB += j.WireGB * (float64(away) / float64(served))
		}
		if miss {
			ev.SLOMisses++
		}
		latencies = append(latencies, float64(res.PlacementLatency)/float64(time.Millisecond))
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

// servedSegments returns the allocations that served placed job j: its
// result's Segments, or, for a result without them, one segment from its
// Start to its window's end in its Region. It fails on a result that cannot
// be evaluated (an unknown region, a negative or non-finite cost, a missing
// start, a segment ending before it starts): a scheduler bug, not a result.
func servedSegments(w *World, name string, j *Job, res *JobResult) ([]Segment, error) {
	check := func(what, region string, cost float64, start time.Time) error {
		if _, ok := w.price[region]; !ok {
			return fmt.Errorf("%s: job %s%s placed in region %q, which is not in the run", name, j.ID, what, region)
		}
		if !(cost >= 0) || math.IsInf(cost, 0) {
			return fmt.Errorf("%s: job %s%s costs %v per hour", name, j.ID, what, cost)
		}
		if start.IsZero() {
			return fmt.Errorf("%s: job %s%s placed with no start time", name, j.ID, what)
		}
		return nil
	}
	if len(res.Segments) == 0 {
		if err := check("", res.Region, res.CostPerHour, res.Start); err != nil {
			return nil, err
		}
		// It runs from its start to its window's end (Evaluate clips a
		// start after that end to nothing served).
		return []Segment{{Region: res.Region, Node: res.Node, Start: res.Start, End: maxTime(res.Start, j.End()), CostPerHour: res.CostPerHour}}, nil
	}
	for k, s := range res.Segments {
		what := fmt.Sprintf(" segment %d", k)
		if err := check(what, s.Region, s.CostPerHour, s.Start); err != nil {
			return nil, err
		}
		if s.End.Before(s.Start) {
			return nil, fmt.Errorf("%s: job %s segment %d ends at %s, before it starts at %s", name, j.ID, k,
				s.End.Format(time.RFC3339Nano), s.Start.Format(time.RFC3339Nano))
		}
	}
	return res.Segments, nil
}

// coverage returns how much of [from, to) the spans cover, counting time
// covered by more than one span once, and the gaps of [from, to) no span
// covers, in order. Spans are [start, end) pairs within [from, to), in any
// order.
func coverage(from, to time.Time, spans [][2]time.Time) (time.Duration, [][2]time.Time) {
	sorted := slices.Clone(spans)
	slices.SortFunc(sorted, func(a, b [2]time.Time) int { return a[0].Compare(b[0]) })
	var covered time.Duration
	var gaps [][2]time.Time
	cursor := from // everything before it is covered or a gap already
	for _, s := range sorted {
		if !s[0].Before(s[1]) {
			continue // empty
		}
		if s[0].After(cursor) {
			gaps = append(gaps, [2]time.Time{cursor, s[0]})
			cursor = s[0]
		}
		if s[1].After(cursor) {
			covered += s[1].Sub(cursor)
			cursor = s[1]
		}
	}
	if cursor.Before(to) {
		gaps = append(gaps, [2]time.Time{cursor, to})
	}
	return covered, gaps
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
