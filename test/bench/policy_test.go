package bench

import (
	"cmp"
	"container/heap"
	"fmt"
	"os"
	"slices"
	"testing"

	"github.com/meridian-mesh/meridian/placement"
	"github.com/meridian-mesh/meridian/placement/auction"
)

// regionOrder lists the regions to try for a job, best first, given each
// region's free compute now and the feasible regions (SLO, price limit).
type regionOrder func(w *World, j *Job, free map[string]float64, feasible []string) []string

// simulatePolicy is the baselines' discrete-event simulation with a
// dynamic region order and a chosen packing within the region.
func simulatePolicy(t *testing.T, w *World, jobs []Job, packing placement.Packing, order regionOrder) Outcome {
	t.Helper()
	pipe, err := placement.NewPipeline(placement.Config{RTT: w.RTTs(), Score: placement.ScoreConfig{Packing: packing}})
	if err != nil {
		t.Fatal(err)
	}
	nodes := w.Nodes()
	span := regionSpans(nodes)
	out := Outcome{Jobs: make([]JobResult, len(jobs))}
	var running endHeap
	for i := range jobs {
		j := &jobs[i]
		for len(running) > 0 && !running[0].end.After(j.At) {
			e := heap.Pop(&running).(ending)
			nodes[e.node].Free = nodes[e.node].Free.Add(jobs[e.job].Demand)
		}
		free := map[string]float64{}
		for _, n := range nodes {
			free[n.Region] += n.Free.ComputePerHour
		}
		var feasible []string
		for _, r := range w.Regions() {
			if w.feasible(j, r) {
				feasible = append(feasible, r)
			}
		}
		for _, r := range order(w, j, free, feasible) {
			s := span[r]
			dec, err := pipe.Rank(j.PlacementJob(), nodes[s[0]:s[1]])
			if err != nil {
				t.Fatal(err)
			}
			c, ok := dec.Winner()
			if !ok {
				continue
			}
			k := s[0] + c.Index
			nodes[k].Free = nodes[k].Free.Sub(j.Demand)
			heap.Push(&running, ending{end: j.End(), job: i, node: k})
			out.Jobs[i] = JobResult{Placed: true, Region: r, Node: nodes[k].ID, Start: j.At,
				CostPerHour: nodes[k].CostPerHour(j.Demand), Traded: r != j.Origin}
			break
		}
		if !out.Jobs[i].Placed {
			out.Jobs[i].Reason = "no room"
		}
	}
	return out
}

// nearestOrder is nearest-first's order over the feasible regions.
func nearestOrder(w *World, j *Job, _ map[string]float64, feasible []string) []string {
	rs := slices.Clone(feasible)
	slices.SortStableFunc(rs, func(a, b string) int { return cmp.Compare(w.RTT(j.Origin, a), w.RTT(j.Origin, b)) })
	return rs
}

// reserveOrder is the mesh's policy with perfect information: home while
// placing the job leaves at least reserve of home's compute free (or no
// other region may serve it); otherwise the other feasible regions by
// their ask (auction.DefaultPricing at their utilization once the job is
// held, the lowest first), home last.
func reserveOrder(reserve float64) regionOrder {
	return func(w *World, j *Job, free map[string]float64, feasible []string) []string {
		home := j.Origin
		capacity := w.RegionCompute(home)
		if len(feasible) <= 1 || (free[home]-j.Demand.ComputePerHour)/capacity >= reserve {
			return nearestOrder(w, j, free, feasible)
		}
		ask := func(r string) float64 {
			u := 1 - (free[r]-j.Demand.ComputePerHour)/w.RegionCompute(r)
			return auction.DefaultPricing(placement.Node{PricePerHour: w.Price(r)}, u)
		}
		var out []string
		for _, r := range feasible {
			if r != home {
				out = append(out, r)
			}
		}
		slices.SortStableFunc(out, func(a, b string) int { return cmp.Compare(ask(a), ask(b)) })
		if slices.Contains(feasible, home) {
			out = append(out, home)
		}
		return out
	}
}

// TestPlacementPolicies compares, on the benchmark's workload and in the
// baselines' discrete-event model (exact, instantaneous knowledge), the
// two choices the mesh's placement makes: packing within a region (spread
// or bin packing) and the local reserve (docs/benchmark.md, "Placement
// policy"). It runs with MERIDIAN_BENCH=1 and takes the benchmark's flags;
// it fails if the mesh's policy does not beat nearest-first.
func TestPlacementPolicies(t *testing.T) {
	if os.Getenv(benchEnv) == "" || testing.Short() {
		t.Skipf("runs with %s=1", benchEnv)
	}
	cfg, err := flags.Config()
	if err != nil {
		t.Fatal(err)
	}
	w, err := Load(cfg)
	if err != nil {
		t.Fatal(err)
	}
	wl, err := BuildWorkload(w)
	if err != nil {
		t.Fatal(err)
	}
	bound, err := LowerBound(w, wl.Jobs, 0)
	if err != nil {
		t.Fatal(err)
	}
	type policy struct {
		name    string
		packing placement.Packing
		order   regionOrder
	}
	policies := []policy{
		{"nearest-first, spread", placement.PackSpread, nearestOrder},
		{"nearest-first, bin packing", placement.PackBinpack, nearestOrder},
	}
	for _, r := range []float64{0.3, 0.5, 0.7} {
		policies = append(policies, policy{fmt.Sprintf("reserve %.1f, bin packing", r), placement.PackBinpack, reserveOrder(r)})
	}
	policies = append(policies, policy{"reserve 0.5, spread", placement.PackSpread, reserveOrder(0.5)})
	cost := map[string]float64{}
	t.Logf("LP bound $%.2f", bound.TotalUSD)
	t.Logf("| policy | cost_vs_lp | placed_pct | placed_work_pct | traded |")
	for _, p := range policies {
		ev, err := Evaluate(w, wl.Jobs, p.name, simulatePolicy(t, w, wl.Jobs, p.packing, p.order))
		if err != nil {
			t.Fatal(err)
		}
		if ev.SLOMisses != 0 {
			t.Errorf("%s: %d placements outside their SLO or price limit", p.name, ev.SLOMisses)
		}
		cost[p.name] = ev.Result.CostUSD
		t.Logf("| %s | %.4f | %.2f | %.2f | %d |", p.name, ev.Result.CostUSD/bound.TotalUSD, ev.Result.PlacedPct, ev.PlacedWorkPct, ev.Traded)
	}
	if !(cost["reserve 0.5, bin packing"] < cost["nearest-first, bin packing"]) {
		t.Errorf("the mesh's policy costs %v, nearest-first %v", cost["reserve 0.5, bin packing"], cost["nearest-first, bin packing"])
	}
}
