package bench

import (
	"cmp"
	"fmt"
	"os"
	"slices"
	"testing"

	"github.com/meridian-mesh/meridian/placement"
	"github.com/meridian-mesh/meridian/placement/auction"
)

// feasibleRegions lists the regions that may serve j (SLO, price limit).
func feasibleRegions(w *World, j *Job) []string {
	var out []string
	for _, r := range w.Regions() {
		if w.feasible(j, r) {
			out = append(out, r)
		}
	}
	return out
}

// nearestOrder is nearest-first's order.
func nearestOrder(w *World, j *Job, _ map[string]float64) []string {
	return NearestFirst().(*baseline).order(w, j, nil)
}

// reserveOrder is the mesh's policy with perfect information: home while
// placing the job leaves at least reserve of home's compute free (or no
// other region may serve it); otherwise the other feasible regions by
// their ask (auction.DefaultPricing at their utilization once the job is
// held, the lowest first), home last.
func reserveOrder(reserve float64) func(w *World, j *Job, free map[string]float64) []string {
	return func(w *World, j *Job, free map[string]float64) []string {
		home := j.Origin
		feasible := feasibleRegions(w, j)
		if len(feasible) <= 1 || (free[home]-j.Demand.ComputePerHour)/w.RegionCompute(home) >= reserve {
			return nearestOrder(w, j, free)
		}
		ask := func(r string) float64 {
			u := 1 - (free[r]-j.Demand.ComputePerHour)/w.RegionCompute(r)
			return auction.DefaultPricing(placement.Node{PricePerHour: w.Price(r)}, u)
		}
		out := slices.DeleteFunc(feasible, func(r string) bool { return r == home })
		slices.SortStableFunc(out, func(a, b string) int { return cmp.Compare(ask(a), ask(b)) })
		return append(out, home)
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
	policy := func(name string, packing placement.Packing, order func(*World, *Job, map[string]float64) []string) *baseline {
		return &baseline{name: name, packing: packing, order: order, latency: peerLatency, note: func(*World) string { return "" }}
	}
	policies := []*baseline{
		policy("nearest-first, spread", placement.PackSpread, nearestOrder),
		policy("nearest-first, bin packing", placement.PackBinpack, nearestOrder),
	}
	for _, r := range []float64{0.3, 0.5, 0.7} {
		policies = append(policies, policy(fmt.Sprintf("reserve %.1f, bin packing", r), placement.PackBinpack, reserveOrder(r)))
	}
	policies = append(policies, policy("reserve 0.5, spread", placement.PackSpread, reserveOrder(0.5)))
	lower := policy("reserve 0.5, bin packing, preemption of lower priorities only", placement.PackBinpack, reserveOrder(0.5))
	lower.lowerOnly = true
	sellers := policy("reserve 0.5, bin packing, preemption at home and by sellers", placement.PackBinpack, reserveOrder(0.5))
	sellers.sellers = true
	for _, p := range []*baseline{
		policy("nearest-first, bin packing, preemption", placement.PackBinpack, nearestOrder),
		lower,
		policy("reserve 0.5, bin packing, preemption", placement.PackBinpack, reserveOrder(0.5)),
		sellers,
	} {
		p.preempt = true
		policies = append(policies, p)
	}
	cost := map[string]float64{}
	t.Logf("LP bound $%.2f", bound.TotalUSD)
	t.Logf("| policy | cost_vs_lp | placed_pct | placed_work_pct | traded | moved |")
	for _, p := range policies {
		out, err := p.Run(t.Context(), w, wl.Jobs)
		if err != nil {
			t.Fatal(err)
		}
		ev, err := Evaluate(w, wl.Jobs, p.name, out)
		if err != nil {
			t.Fatal(err)
		}
		if ev.SLOMisses != 0 {
			t.Errorf("%s: %d placements outside their SLO or price limit", p.name, ev.SLOMisses)
		}
		cost[p.name] = ev.Result.CostUSD
		t.Logf("| %s | %.4f | %.2f | %.2f | %d | %d |", p.name, ev.Result.CostUSD/bound.TotalUSD, ev.Result.PlacedPct, ev.PlacedWorkPct, ev.Traded, ev.Moved)
	}
	if !(cost["reserve 0.5, bin packing"] < cost["nearest-first, bin packing"]) {
		t.Errorf("the reserve costs %v, nearest-first %v", cost["reserve 0.5, bin packing"], cost["nearest-first, bin packing"])
	}
	if !(cost["reserve 0.5, bin packing, preemption"] < cost["reserve 0.5, bin packing"]) {
		t.Errorf("preemption at home costs %v, none %v", cost["reserve 0.5, bin packing, preemption"], cost["reserve 0.5, bin packing"])
	}
	if !(cost["reserve 0.5, bin packing, preemption at home and by sellers"] < cost["reserve 0.5, bin packing, preemption"]) {
		t.Errorf("the mesh's policy (preemption by sellers too) costs %v, at home only %v",
			cost["reserve 0.5, bin packing, preemption at home and by sellers"], cost["reserve 0.5, bin packing, preemption"])
	}
}
