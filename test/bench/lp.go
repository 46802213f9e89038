package bench

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"gonum.org/v1/gonum/mat"
	"gonum.org/v1/gonum/optimize/convex/lp"
)

// The LP lower bound is a fluid relaxation of the placement problem. Time
// is cut into buckets (the aggregation window); each job's work (node-hours
// of compute) is split between the buckets its run [arrival, arrival +
// duration) overlaps. Jobs are grouped by the set of regions that may serve
// them (latency SLO from their origin, price limit). In each bucket b:
//
//	minimise   Σ_g Σ_{r∈R(g)} p_r·x[g,r] + P·u[g]
//	subject to Σ_{r∈R(g)} x[g,r] + u[g] = W[g]      for every group g
//	           Σ_g x[g,r]             ≤ K_r         for every region r
//	           x, u ≥ 0
//
// where W[g] is the group's work in the bucket, K_r = nodes × bucket hours
// the region's capacity, p_r its price per node-hour and P the penalty per
// unserved node-hour. Any schedule a scheduler can produce — integral jobs
// on whole nodes, decided online — gives a feasible point with the same
// cost (its allocations never exceed capacity at any instant, so not over a
// bucket), hence the optimum is a lower bound. Buckets share no variable,
// so the LP is block-diagonal and each block is solved alone: exactly the
// optimum of the whole, in a fraction of the time.

// Bound is the LP lower bound of a run.
type Bound struct {
	// TotalUSD is the bound: the dual objective summed over the buckets
	// (see dualBound), a lower bound on the cost of any schedule.
	TotalUSD float64 `json:"total_usd"`
	// PrimalUSD is the cost of the primal optimum the simplex found; it
	// equals TotalUSD up to rounding when the simplex converged (the gap
	// certifies the optimum).
	PrimalUSD float64 `json:"primal_usd"`
	// ServedUSD is the primal optimum's spend on capacity.
	ServedUSD float64 `json:"served_usd"`
	// PenaltyUSD is the optimum's penalty for work no capacity could take.
	PenaltyUSD float64 `json:"penalty_usd"`
	// ServedPct is the share of the work the optimum serves.
	ServedPct float64 `json:"served_pct"`
	// Buckets holds the optimum per bucket.
	Buckets []BucketBound `json:"buckets"`
	// Bucket is the bucket length.
	Bucket time.Duration `json:"bucket"`
	// Groups counts the distinct feasible-region sets.
	Groups int `json:"groups"`
	// MaxRows and MaxColumns are the largest block's size in standard form.
	MaxRows    int `json:"max_rows"`
	MaxColumns int `json:"max_columns"`
}

// BucketBound is the optimum of one time bucket.
type BucketBound struct {
	// Start is when the bucket starts.
	Start time.Time `json:"start"`
	// CostUSD is the bucket's bound (dual objective), penalty included.
	CostUSD float64 `json:"cost_usd"`
	// ServedNodeHours is the work the optimum serves, per region.
	ServedNodeHours map[string]float64 `json:"served_node_hours,omitempty"`
	// UnservedNodeHours is the work it leaves unserved.
	UnservedNodeHours float64 `json:"unserved_node_hours,omitempty"`
}

// LowerBound solves the fluid relaxation of the run's placement problem
// with bucket length bucket (0 means the World's aggregation window).
func LowerBound(w *World, jobs []Job, bucket time.Duration) (Bound, error) {
	if bucket <= 0 {
		bucket = w.cfg.Window
	}
	nodeCompute := w.node.ComputePerHour
	start, end := w.Start(), w.End()
	for i := range jobs {
		if jobs[i].At.Before(start) {
			start = jobs[i].At
		}
		if e := jobs[i].End(); e.After(end) {
			end = e
		}
	}
	nb := int((end.Sub(start) + bucket - 1) / bucket)
	regionIdx := map[string]int{}
	for i, r := range w.regions {
		regionIdx[r] = i
	}

	// Group the jobs by feasible-region set, and spread their work over
	// the buckets.
	type groupID = string
	groupOf := map[groupID]int{}
	var groupRegions [][]int
	work := make([]map[int]float64, nb) // bucket → group → node-hours
	for i := range work {
		work[i] = map[int]float64{}
	}
	var key strings.Builder
	for i := range jobs {
		j := &jobs[i]
		key.Reset()
		var rs []int
		for k, r := range w.regions {
			if w.feasible(j, r) {
				rs = append(rs, k)
				key.WriteByte('1')
			} else {
				key.WriteByte('0')
			}
		}
		g, ok := groupOf[key.String()]
		if !ok {
			g = len(groupRegions)
			groupOf[key.String()] = g
			groupRegions = append(groupRegions, rs)
		}
		rate := j.Demand.ComputePerHour / nodeCompute // nodes
		from, to := j.At, j.End()
		for b := int(from.Sub(start) / bucket); b < nb; b++ {
			bs := start.Add(time.Duration(b) * bucket)
			be := bs.Add(bucket)
			if !bs.Before(to) {
				break
			}
			ov := minTime(be, to).Sub(maxTime(bs, from))
			if ov > 0 {
				work[b][g] += rate * ov.Hours()
			}
		}
	}

	prices := make([]float64, len(w.regions))
	for k, r := range w.regions {
		prices[k] = w.price[r]
	}
	penalty := w.PenaltyPerNodeHour()
	out := Bound{Bucket: bucket, Groups: len(groupRegions), Buckets: make([]BucketBound, nb)}
	totalWork, served := 0.0, 0.0
	for b := range nb {
		capacity := make([]float64, len(w.regions))
		for k, r := range w.regions {
			capacity[k] = w.RegionCompute(r) / nodeCompute * bucket.Hours()
		}
		var groups []lpGroup
		gs := make([]int, 0, len(work[b]))
		for g := range work[b] {
			gs = append(gs, g)
		}
		slices.Sort(gs)
		for _, g := range gs {
			if work[b][g] > 0 {
				groups = append(groups, lpGroup{Work: work[b][g], Regions: groupRegions[g]})
			}
		}
		sol, err := solveBucket(groups, capacity, prices, penalty)
		if err != nil {
			return Bound{}, fmt.Errorf("LP bound, bucket %d (%s): %w", b, start.Add(time.Duration(b)*bucket).Format(time.RFC3339), err)
		}
		bb := BucketBound{Start: start.Add(time.Duration(b) * bucket), CostUSD: sol.Bound, UnservedNodeHours: sol.Unserved}
		for k, v := range sol.Served {
			if v > 0 {
				if bb.ServedNodeHours == nil {
					bb.ServedNodeHours = map[string]float64{}
				}
				bb.ServedNodeHours[w.regions[k]] = v
				out.ServedUSD += v * prices[k]
				served += v
			}
		}
		out.PenaltyUSD += sol.Unserved * penalty
		for _, g := range groups {
			totalWork += g.Work
		}
		out.Buckets[b] = bb
		out.TotalUSD += sol.Bound
		out.PrimalUSD += sol.Cost
		out.MaxRows = max(out.MaxRows, sol.Rows)
		out.MaxColumns = max(out.MaxColumns, sol.Columns)
	}
	out.ServedPct = 100
	if totalWork > 0 {
		out.ServedPct = 100 * served / totalWork
	}
	return out, nil
}

// lpGroup is the work of one feasible-region set in one bucket.
type lpGroup struct {
	// Work is in node-hours.
	Work float64
	// Regions are the indices of the regions that may serve it, sorted.
	Regions []int
}

// bucketSolution is the optimum of one bucket.
type bucketSolution struct {
	// Cost is the primal optimum: the cost of the flows the simplex found.
	Cost float64
	// Bound is the dual objective at a dual-feasible point built from the
	// primal solution: a lower bound on the bucket's optimum whatever the
	// simplex's numerical accuracy, equal to Cost when it converged.
	Bound    float64
	Served   []float64 // node-hours per region
	Unserved float64
	Rows     int
	Columns  int
}

// solveBucket solves one bucket's LP (see the comment at the top of the
// file) with gonum's simplex, in standard form: columns x[g,r] for every
// feasible pair, then u[g] per group, then a slack s[r] per region that
// some group may use. The all-unserved point (u = W, s = K) is a feasible
// basis to start from. The solution is checked for feasibility, and a dual
// solution is rebuilt from it to certify the bound (see dualBound).
func solveBucket(groups []lpGroup, capacity, prices []float64, penalty float64) (bucketSolution, error) {
	sol := bucketSolution{Served: make([]float64, len(capacity))}
	if len(groups) == 0 {
		return sol, nil
	}
	if !(penalty > 0) || math.IsInf(penalty, 0) {
		return sol, fmt.Errorf("penalty %v is not a positive finite number", penalty)
	}
	for k, c := range capacity {
		if !(c >= 0) || math.IsInf(c, 0) {
			return sol, fmt.Errorf("capacity of region %d is %v", k, c)
		}
		if !(prices[k] > 0) || math.IsInf(prices[k], 0) {
			return sol, fmt.Errorf("price of region %d is %v", k, prices[k])
		}
	}
	for _, g := range groups {
		if !(g.Work >= 0) || math.IsInf(g.Work, 0) {
			return sol, fmt.Errorf("work %v is not a finite non-negative number", g.Work)
		}
	}
	// Rows: groups, then the regions with capacity some group may use.
	rowOfRegion := make([]int, len(capacity))
	for k := range rowOfRegion {
		rowOfRegion[k] = -1
	}
	rows := len(groups)
	var regionRows []int
	type flow struct{ group, region int }
	var flows []flow
	for gi, g := range groups {
		for _, k := range g.Regions {
			if capacity[k] <= 0 {
				continue
			}
			flows = append(flows, flow{gi, k})
			if rowOfRegion[k] < 0 {
				rowOfRegion[k] = rows
				rows++
				regionRows = append(regionRows, k)
			}
		}
	}
	cols := len(flows) + len(groups) + len(regionRows)
	a := mat.NewDense(rows, cols, nil)
	c := make([]float64, cols)
	b := make([]float64, rows)
	for i, f := range flows {
		a.Set(f.group, i, 1)
		a.Set(rowOfRegion[f.region], i, 1)
		c[i] = prices[f.region]
	}
	basis := make([]int, rows)
	for gi, g := range groups {
		col := len(flows) + gi
		a.Set(gi, col, 1)
		c[col] = penalty
		b[gi] = g.Work
		basis[gi] = col
	}
	for i, k := range regionRows {
		col := len(flows) + len(groups) + i
		row := rowOfRegion[k]
		a.Set(row, col, 1)
		b[row] = capacity[k]
		basis[row] = col
	}
	sol.Rows, sol.Columns = rows, cols
	var x []float64
	if len(flows) == 0 {
		// Nothing can be served: the starting basis is the solution.
		x = make([]float64, cols)
		for i, bi := range basis {
			x[bi] = b[i]
		}
	} else {
		var err error
		_, x, err = lp.Simplex(c, a, b, 1e-10, basis)
		if err != nil {
			return sol, fmt.Errorf("simplex (%d rows, %d columns): %w", rows, cols, err)
		}
	}
	if err := checkFeasible(a, b, x); err != nil {
		return sol, fmt.Errorf("simplex (%d rows, %d columns): %w", rows, cols, err)
	}
	used := make([][]bool, len(groups))
	unserved := make([]bool, len(groups))
	for gi := range groups {
		used[gi] = make([]bool, len(capacity))
	}
	for i, f := range flows {
		v := max(x[i], 0)
		sol.Served[f.region] += v
		sol.Cost += v * prices[f.region]
		if v > 1e-9*max(1, groups[f.group].Work) {
			used[f.group][f.region] = true
		}
	}
	for gi, g := range groups {
		v := max(x[len(flows)+gi], 0)
		sol.Unserved += v
		sol.Cost += v * penalty
		if v > 1e-9*max(1, g.Work) {
			unserved[gi] = true
		}
	}
	sol.Bound = dualBound(groups, capacity, prices, penalty, used, unserved)
	return sol, nil
}

// dualBound returns a lower bound on a bucket's optimum by weak duality.
// The LP's dual is
//
//	maximise Σ_g W_g·π_g − Σ_r K_r·μ_r
//	s.t.     π_g ≤ P,  π_g ≤ p_r + μ_r (r ∈ R(g)),  μ ≥ 0
//
// and for any μ ≥ 0 the best π_g is min(P, min_{r∈R(g)} p_r + μ_r), so
// D(μ) = Σ_g W_g·min(P, min_r p_r + μ_r) − Σ_r K_r·μ_r is a lower bound for
// every μ ≥ 0. The μ used are the least prices of capacity consistent with
// the primal solution's choices (complementary slackness): a group that
// leaves work unserved prices each of its regions at least at P, and a
// group served by region r prices its other regions r' at least at
// p_r + μ_r. At an optimum these are the LP's duals and D(μ) equals it;
// if the simplex was inexact the bound is merely weaker, never wrong.
func dualBound(groups []lpGroup, capacity, prices []float64, penalty float64, used [][]bool, unserved []bool) float64 {
	mu := make([]float64, len(capacity))
	for gi, g := range groups {
		if unserved[gi] {
			for _, k := range g.Regions {
				mu[k] = max(mu[k], penalty-prices[k])
			}
		}
	}
	// A region without capacity cannot serve anyone: it takes no part
	// (its μ could be anything at no cost).
	usable := func(k int) bool { return capacity[k] > 0 }
	// Longest-path relaxation; a cycle of positive gain (which an optimum
	// cannot have) stops after as many rounds as there are regions.
	for range len(capacity) + 1 {
		changed := false
		for gi, g := range groups {
			for _, r := range g.Regions {
				if !used[gi][r] {
					continue
				}
				for _, r2 := range g.Regions {
					if !usable(r2) {
						continue
					}
					if v := mu[r] + prices[r] - prices[r2]; v > mu[r2]+1e-12 {
						mu[r2] = v
						changed = true
					}
				}
			}
		}
		if !changed {
			break
		}
	}
	d := 0.0
	for _, g := range groups {
		pi := penalty
		for _, k := range g.Regions {
			if usable(k) {
				pi = min(pi, prices[k]+mu[k])
			}
		}
		d += g.Work * pi
	}
	for k, m := range mu {
		d -= capacity[k] * m
	}
	return d
}

// checkFeasible verifies A·x = b and x ≥ 0 to a relative tolerance, so a
// numerical failure of the simplex cannot pass for an optimum.
func checkFeasible(a *mat.Dense, b, x []float64) error {
	rows, cols := a.Dims()
	for j := range cols {
		if x[j] < -1e-7 {
			return fmt.Errorf("solution has variable %d = %g < 0", j, x[j])
		}
	}
	for i := range rows {
		s := 0.0
		for j := range cols {
			s += a.At(i, j) * x[j]
		}
		if math.Abs(s-b[i]) > 1e-7*max(1, math.Abs(b[i])) {
			return fmt.Errorf("solution violates row %d: %g ≠ %g", i, s, b[i])
		}
	}
	return nil
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
