package bench

import (
	"context"
	"math"
	"math/rand/v2"
	"testing"
	"time"
)

func TestSolveBucketKnownOptima(t *testing.T) {
	cases := []struct {
		name     string
		groups   []lpGroup
		capacity []float64
		prices   []float64
		penalty  float64
		cost     float64
		served   []float64
		unserved float64
	}{
		{
			name:   "cheap region first, the rest in the dear one",
			groups: []lpGroup{{Work: 3, Regions: []int{0, 1}}}, capacity: []float64{1, 10}, prices: []float64{1, 3}, penalty: 100,
			cost: 1*1 + 2*3, served: []float64{1, 2},
		},
		{
			// A greedy scheduler serving group 1 first would take the
			// cheap region from group 0, which has nowhere else to go.
			name:     "the inflexible group gets the contended region",
			groups:   []lpGroup{{Work: 2, Regions: []int{0}}, {Work: 1, Regions: []int{0, 1}}},
			capacity: []float64{2, 5}, prices: []float64{1, 2}, penalty: 100,
			cost: 2*1 + 1*2, served: []float64{2, 1},
		},
		{
			name:   "overload is unserved at the penalty",
			groups: []lpGroup{{Work: 3, Regions: []int{0}}}, capacity: []float64{1}, prices: []float64{2}, penalty: 10,
			cost: 1*2 + 2*10, served: []float64{1}, unserved: 2,
		},
		{
			name:   "a group no region may serve",
			groups: []lpGroup{{Work: 4, Regions: nil}, {Work: 1, Regions: []int{0}}}, capacity: []float64{5}, prices: []float64{2}, penalty: 10,
			cost: 4*10 + 1*2, served: []float64{1}, unserved: 4,
		},
		{
			name:   "a region without capacity takes nothing",
			groups: []lpGroup{{Work: 2, Regions: []int{0, 1}}}, capacity: []float64{0, 5}, prices: []float64{1, 3}, penalty: 10,
			cost: 2 * 3, served: []float64{0, 2},
		},
		{
			name:   "a penalty below the price leaves everything unserved",
			groups: []lpGroup{{Work: 2, Regions: []int{0}}}, capacity: []float64{5}, prices: []float64{3}, penalty: 1,
			cost: 2, served: []float64{0}, unserved: 2,
		},
		{
			// Region 0 goes to group 0, which frees region 1 for group 2
			// (saving 2 a unit over region 3), while group 1 pays 2 more
			// in region 2: 2·1 + 1·2 + 2·2 + 2·4 + 2·3 = 22. Regions 0
			// and 1 are saturated, so the dual needs their capacity's
			// value to certify it.
			name: "four regions, three groups",
			groups: []lpGroup{
				{Work: 3, Regions: []int{0, 1}},
				{Work: 2, Regions: []int{0, 2}},
				{Work: 4, Regions: []int{1, 3}},
			},
			capacity: []float64{2, 3, 10, 10}, prices: []float64{1, 2, 3, 4}, penalty: 100,
			cost: 22, served: []float64{2, 3, 2, 2},
		},
		{
			name:     "empty bucket",
			groups:   nil,
			capacity: []float64{1}, prices: []float64{1}, penalty: 10,
			cost: 0, served: []float64{0},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			sol, err := solveBucket(c.groups, c.capacity, c.prices, c.penalty)
			if err != nil {
				t.Fatal(err)
			}
			want := c.cost
			if bf := bruteForceBucket(c.groups, c.capacity, c.prices, c.penalty, 1); math.Abs(bf-want) > 1e-9 {
				t.Fatalf("the case is wrong: brute force finds %v, the case says %v", bf, want)
			}
			if math.Abs(sol.Cost-want) > 1e-9 {
				t.Errorf("cost = %v; want %v", sol.Cost, want)
			}
			if math.Abs(sol.Bound-want) > 1e-9 {
				t.Errorf("dual bound = %v; want the optimum %v", sol.Bound, want)
			}
			for k, v := range c.served {
				if math.Abs(sol.Served[k]-v) > 1e-9 {
					t.Errorf("served in region %d = %v; want %v", k, sol.Served[k], v)
				}
			}
			if math.Abs(sol.Unserved-c.unserved) > 1e-9 {
				t.Errorf("unserved = %v; want %v", sol.Unserved, c.unserved)
			}
		})
	}
}

// bruteForceBucket finds the optimum of a small bucket by trying every
// assignment of work in steps of step to the regions (and to unserved).
func bruteForceBucket(groups []lpGroup, capacity, prices []float64, penalty, step float64) float64 {
	best := math.Inf(1)
	used := make([]float64, len(capacity))
	var rec func(g int, cost float64)
	rec = func(g int, cost float64) {
		if cost >= best {
			return
		}
		if g == len(groups) {
			best = cost
			return
		}
		var split func(k int, left, cost float64)
		split = func(k int, left, cost float64) {
			if k == len(groups[g].Regions) {
				rec(g+1, cost+left*penalty)
				return
			}
			r := groups[g].Regions[k]
			for x := 0.0; x <= left+1e-12; x += step {
				if used[r]+x > capacity[r]+1e-12 {
					break
				}
				used[r] += x
				split(k+1, left-x, cost+x*prices[r])
				used[r] -= x
			}
		}
		split(0, groups[g].Work, cost)
	}
	rec(0, 0)
	return best
}

func TestSolveBucketMatchesBruteForce(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for n := range 60 {
		regions := 1 + rng.IntN(3)
		capacity := make([]float64, regions)
		prices := make([]float64, regions)
		for k := range regions {
			capacity[k] = float64(rng.IntN(5))
			prices[k] = float64(1 + rng.IntN(6))
		}
		var groups []lpGroup
		for range 1 + rng.IntN(3) {
			var rs []int
			for k := range regions {
				if rng.IntN(3) > 0 {
					rs = append(rs, k)
				}
			}
			groups = append(groups, lpGroup{Work: float64(1 + rng.IntN(4)), Regions: rs})
		}
		sol, err := solveBucket(groups, capacity, prices, 10)
		if err != nil {
			t.Fatalf("case %d: %v", n, err)
		}
		// Integral data have an integral optimum (the constraint matrix is
		// totally unimodular), so steps of 1 find it.
		want := bruteForceBucket(groups, capacity, prices, 10, 1)
		if math.Abs(sol.Cost-want) > 1e-9 || math.Abs(sol.Bound-want) > 1e-9 {
			t.Errorf("case %d %+v cap %v prices %v: cost %v, bound %v; brute force %v", n, groups, capacity, prices, sol.Cost, sol.Bound, want)
		}
	}
}

// TestDualBoundNeverExceedsTheOptimum feeds dualBound wrong "primal
// choices": whatever they are, weak duality keeps the result a bound.
func TestDualBoundNeverExceedsTheOptimum(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for n := range 200 {
		regions := 1 + rng.IntN(4)
		capacity := make([]float64, regions)
		prices := make([]float64, regions)
		for k := range regions {
			capacity[k] = rng.Float64() * 4
			prices[k] = 1 + rng.Float64()*5
		}
		var groups []lpGroup
		for range 1 + rng.IntN(4) {
			var rs []int
			for k := range regions {
				if rng.IntN(2) == 0 {
					rs = append(rs, k)
				}
			}
			groups = append(groups, lpGroup{Work: rng.Float64() * 5, Regions: rs})
		}
		sol, err := solveBucket(groups, capacity, prices, 20)
		if err != nil {
			t.Fatal(err)
		}
		used := make([][]bool, len(groups))
		unserved := make([]bool, len(groups))
		for g := range groups {
			used[g] = make([]bool, regions)
			for k := range regions {
				used[g][k] = rng.IntN(2) == 0
			}
			unserved[g] = rng.IntN(3) == 0
		}
		if d := dualBound(groups, capacity, prices, 20, used, unserved); d > sol.Cost+1e-9 {
			t.Fatalf("case %d: dual bound %v from arbitrary choices exceeds the optimum %v", n, d, sol.Cost)
		}
	}
}

func TestSolveBucketRejectsBadInput(t *testing.T) {
	g := []lpGroup{{Work: 1, Regions: []int{0}}}
	for _, c := range []struct {
		name             string
		groups           []lpGroup
		capacity, prices []float64
		penalty          float64
	}{
		{"NaN work", []lpGroup{{Work: math.NaN(), Regions: []int{0}}}, []float64{1}, []float64{1}, 10},
		{"negative capacity", g, []float64{-1}, []float64{1}, 10},
		{"zero price", g, []float64{1}, []float64{0}, 10},
		{"infinite penalty", g, []float64{1}, []float64{1}, math.Inf(1)},
	} {
		if _, err := solveBucket(c.groups, c.capacity, c.prices, c.penalty); err == nil {
			t.Errorf("%s: no error", c.name)
		}
	}
}

func TestLowerBoundSpreadsWorkOverBuckets(t *testing.T) {
	// Two regions of one node (3,600 tasks/h): Dublin at $1/h, N. Virginia
	// at $4/h, 80 ms apart.
	w := tinyWorld(t, map[string]float64{"us-east-1": 4, "eu-west-1": 1}, map[[2]string]int{{"us-east-1", "eu-west-1"}: 80}, 1)
	slo := 50 * time.Millisecond
	jobs := indexed(
		// A whole node from N. Virginia for 10 minutes starting 5 minutes
		// into the first bucket: 5 minutes in each of two buckets.
		job("a", "us-east-1", 5*time.Minute, 3600, slo, 10*time.Minute),
		// Batch half a node for the whole first bucket: Dublin is cheaper.
		job("b", "us-east-1", 0, 1800, 0, 10*time.Minute),
		// Another whole node from N. Virginia in the second bucket, with
		// "a" still there for 5 minutes: 5 node-minutes do not fit.
		job("c", "us-east-1", 10*time.Minute, 3600, slo, 10*time.Minute),
	)
	b, err := LowerBound(w, jobs, 10*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	// The run is an hour: six buckets, the last four empty.
	if len(b.Buckets) != 6 {
		t.Fatalf("%d buckets; want 6", len(b.Buckets))
	}
	for _, bb := range b.Buckets[2:] {
		if bb.CostUSD != 0 {
			t.Errorf("empty bucket at %v costs %v", bb.Start, bb.CostUSD)
		}
	}
	h := func(min float64) float64 { return min / 60 } // node-hours
	penalty := w.PenaltyPerNodeHour()
	wantFirst := h(5)*4 + h(5)*1         // a in N. Virginia, b in Dublin
	wantSecond := h(10)*4 + h(5)*penalty // a+c need 15 node-minutes of N. Virginia's 10
	if math.Abs(b.Buckets[0].CostUSD-wantFirst) > 1e-9 || math.Abs(b.Buckets[1].CostUSD-wantSecond) > 1e-9 {
		t.Errorf("bucket costs %v, %v; want %v, %v", b.Buckets[0].CostUSD, b.Buckets[1].CostUSD, wantFirst, wantSecond)
	}
	if math.Abs(b.TotalUSD-(wantFirst+wantSecond)) > 1e-9 || math.Abs(b.PrimalUSD-b.TotalUSD) > 1e-9 {
		t.Errorf("total %v (primal %v); want %v", b.TotalUSD, b.PrimalUSD, wantFirst+wantSecond)
	}
	if math.Abs(b.PenaltyUSD-h(5)*penalty) > 1e-9 {
		t.Errorf("penalty %v; want %v", b.PenaltyUSD, h(5)*penalty)
	}
	wantServed := 100 * h(20) / h(25)
	if math.Abs(b.ServedPct-wantServed) > 1e-9 {
		t.Errorf("served %v%%; want %v%%", b.ServedPct, wantServed)
	}
	if b.Groups != 2 {
		t.Errorf("%d groups; want 2 (SLO-bound and batch)", b.Groups)
	}
}

// TestLowerBoundIsBelowEveryBaseline checks the bound against the
// baselines on generated workloads of several seeds and loads.
func TestLowerBoundIsBelowEveryBaseline(t *testing.T) {
	for _, c := range []struct {
		seed int64
		load float64
	}{{1, 0.5}, {2, 0.8}, {3, 1.3}} {
		w, err := Load(Config{Length: time.Hour, Seed: c.seed, Load: c.load, HistoryDays: -1,
			Regions: []string{"ap-south-1", "eu-central-1", "eu-west-1", "us-east-1"}})
		if err != nil {
			t.Fatal(err)
		}
		wl, err := BuildWorkload(w)
		if err != nil {
			t.Fatal(err)
		}
		b, err := LowerBound(w, wl.Jobs, 0)
		if err != nil {
			t.Fatal(err)
		}
		if gap := math.Abs(b.PrimalUSD-b.TotalUSD) / b.TotalUSD; gap > 1e-9 {
			t.Errorf("seed %d: primal %v and dual %v differ", c.seed, b.PrimalUSD, b.TotalUSD)
		}
		for _, s := range Baselines() {
			out, err := s.Run(context.Background(), w, wl.Jobs)
			if err != nil {
				t.Fatal(err)
			}
			ev, err := Evaluate(w, wl.Jobs, s.Name(), out)
			if err != nil {
				t.Fatal(err)
			}
			if ev.Result.CostUSD < b.TotalUSD*(1-1e-9) {
				t.Errorf("seed %d load %v: %s costs %v, below the bound %v", c.seed, c.load, s.Name(), ev.Result.CostUSD, b.TotalUSD)
			}
		}
	}
}
