package placement

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

// These property tests draw random clusters from fixed seeds; a failure
// names its seed and replays exactly.

// TestPackProperties: for random nodes and jobs, no resource of any node is
// overcommitted, every placed job satisfies every filter on its node, every
// job is accounted for exactly once, and the plan is what job-by-job Rank
// gives.
func TestPackProperties(t *testing.T) {
	for seed := uint64(1); seed <= 40; seed++ {
		t.Run(fmt.Sprint("seed=", seed), func(t *testing.T) {
			r := rand.New(rand.NewPCG(seed, 0xfeed))
			o := genOpts{quantized: seed%2 == 0, partlyUsed: seed%3 == 0}
			nodes := randomNodes(r, 5+r.IntN(40), o)
			jobs := randomJobs(r, 20+r.IntN(150), o)
			rtt := testRTT(r)
			cfg := Config{RTT: rtt}
			switch seed % 4 {
			case 1:
				cfg.Score = WeightedConfig(EfficiencySaturating, 0.05)
				cfg.Score.LatencyPenaltyPerMs = 0.1
			case 2:
				cfg.Score = ScoreConfig{LatencyPenaltyPerMs: 0.05}
			case 3:
				cfg.Score = WeightedConfig(EfficiencyLinear, 2)
				cfg.Score.Storage.Weight = 0.5
			}
			// Both packings, each with every model: seeds 1–4 bin pack,
			// 5–8 spread, and so on.
			if (seed-1)/4%2 == 1 {
				cfg.Score.Packing = PackSpread
			}
			p := newTestPipeline(t, cfg)
			plan, err := p.Pack(jobs, nodes)
			if err != nil {
				t.Fatal(err)
			}
			checkPlanInvariants(t, rtt, jobs, nodes, plan)
			checkPlanAgainstRank(t, p, jobs, nodes, plan)
		})
	}
}

func checkPlanInvariants(t *testing.T, rtt RTTEstimator, jobs []Job, nodes []Node, plan Plan) {
	t.Helper()
	seen := map[string]bool{}
	used := make([]Resources, len(nodes))
	for _, pl := range plan.Placements {
		j, n := &jobs[pl.JobIndex], &nodes[pl.NodeIndex]
		if j.ID != pl.JobID || n.ID != pl.NodeID {
			t.Fatalf("placement %+v: indices name %s on %s", pl, j.ID, n.ID)
		}
		if seen[j.ID] {
			t.Fatalf("job %s appears twice in the plan", j.ID)
		}
		seen[j.ID] = true
		used[pl.NodeIndex] = used[pl.NodeIndex].Add(j.Demand)
		if j.GPUType != "" && n.GPUType != j.GPUType {
			t.Errorf("job %s (GPU %s) on node %s (GPU %q)", j.ID, j.GPUType, n.ID, n.GPUType)
		}
		if j.MaxPricePerHour > 0 && n.PricePerHour > j.MaxPricePerHour {
			t.Errorf("job %s (max $%v/h) on node %s ($%v/h)", j.ID, j.MaxPricePerHour, n.ID, n.PricePerHour)
		}
		if j.LatencySLO > 0 {
			d, ok := rtt.RegionRTT(j.OriginRegion, n.Region)
			if !ok || d > j.LatencySLO {
				t.Errorf("job %s (SLO %v from %s) on node %s in %s: RTT %v, known %v", j.ID, j.LatencySLO, j.OriginRegion, n.ID, n.Region, d, ok)
			}
		}
	}
	for _, u := range plan.Unplaced {
		if seen[u.JobID] {
			t.Fatalf("job %s is both placed and unplaced", u.JobID)
		}
		seen[u.JobID] = true
	}
	if len(seen) != len(jobs) {
		t.Fatalf("plan accounts for %d of %d jobs", len(seen), len(jobs))
	}
	for i, n := range nodes {
		if !used[i].FitsIn(n.Free) {
			t.Errorf("node %s overcommitted: placed %+v, had %+v free", n.ID, used[i], n.Free)
		}
		// What is left never drops below zero, and is what was free less
		// what was placed (up to rounding).
		left := plan.Free[i]
		if left.ComputePerHour < 0 || left.StorageGB < 0 || left.BandwidthGBps < 0 || left.GPUs < 0 {
			t.Errorf("node %s: negative free %+v", n.ID, left)
		}
		if !left.FitsIn(n.Free.Sub(used[i])) || !n.Free.Sub(used[i]).FitsIn(left.Add(Resources{ComputePerHour: 1e-6, StorageGB: 1e-6, BandwidthGBps: 1e-6})) {
			t.Errorf("node %s: free after plan %+v; want %+v", n.ID, left, n.Free.Sub(used[i]))
		}
	}
}

// TestPackPermutationInvariance: shuffling the jobs and the nodes gives the
// same plan.
func TestPackPermutationInvariance(t *testing.T) {
	for seed := uint64(1); seed <= 20; seed++ {
		t.Run(fmt.Sprint("seed=", seed), func(t *testing.T) {
			r := rand.New(rand.NewPCG(seed, 0xbeef))
			o := genOpts{quantized: true, partlyUsed: seed%2 == 0} // quantized: many ties
			nodes := randomNodes(r, 10+r.IntN(30), o)
			jobs := randomJobs(r, 30+r.IntN(100), o)
			p := newTestPipeline(t, Config{RTT: testRTT(r)})
			base, err := p.Pack(jobs, nodes)
			if err != nil {
				t.Fatal(err)
			}
			for range 5 {
				sj := slices.Clone(jobs)
				sn := slices.Clone(nodes)
				r.Shuffle(len(sj), func(a, b int) { sj[a], sj[b] = sj[b], sj[a] })
				r.Shuffle(len(sn), func(a, b int) { sn[a], sn[b] = sn[b], sn[a] })
				got, err := p.Pack(sj, sn)
				if err != nil {
					t.Fatal(err)
				}
				if a, b := placements(got), placements(base); !slices.Equal(a, b) {
					t.Fatalf("shuffled input: placements differ\n got %v\nwant %v", a, b)
				}
				if a, b := unplacedIDs(got), unplacedIDs(base); !slices.Equal(a, b) {
					t.Fatalf("shuffled input: unplaced %v; want %v", a, b)
				}
				for i, pl := range got.Placements {
					if pl.Score != base.Placements[i].Score {
						t.Fatalf("placement %d: score %v; want %v", i, pl.Score, base.Placements[i].Score)
					}
				}
			}
		})
	}
}

// TestRankPermutationInvariance: shuffling the nodes gives the same ranking
// and the same rejections.
func TestRankPermutationInvariance(t *testing.T) {
	for seed := uint64(1); seed <= 30; seed++ {
		r := rand.New(rand.NewPCG(seed, 0xcafe))
		nodes := randomNodes(r, 50+r.IntN(200), genOpts{quantized: true, partlyUsed: seed%2 == 0})
		job := randomJobs(r, 1, genOpts{quantized: true})[0]
		p := newTestPipeline(t, Config{RTT: testRTT(r)})
		base, err := p.Rank(job, nodes)
		if err != nil {
			t.Fatal(err)
		}
		rejected := func(d Decision) []string {
			var out []string
			for _, rj := range d.Rejected() {
				out = append(out, rj.String())
			}
			slices.Sort(out)
			return out
		}
		for range 5 {
			sn := slices.Clone(nodes)
			r.Shuffle(len(sn), func(a, b int) { sn[a], sn[b] = sn[b], sn[a] })
			got, err := p.Rank(job, sn)
			if err != nil {
				t.Fatal(err)
			}
			if a, b := rankedIDs(got), rankedIDs(base); !slices.Equal(a, b) {
				t.Fatalf("seed %d: shuffled ranking differs\n got %v\nwant %v", seed, a, b)
			}
			if a, b := rejected(got), rejected(base); !slices.Equal(a, b) {
				t.Fatalf("seed %d: shuffled rejections differ", seed)
			}
		}
		// The winner found in one pass is the head of the full ordering, and
		// the tie group is at its head.
		w, _ := base.Winner()
		if ranked := base.Ranked(); len(ranked) > 0 && (ranked[0].NodeID != w.NodeID || ranked[0].Tied != w.Tied) {
			t.Fatalf("seed %d: Winner() = %s (tied %v); Ranked()[0] = %s (tied %v)", seed, w.NodeID, w.Tied, ranked[0].NodeID, ranked[0].Tied)
		}
		// The ranking is ordered by the documented rule.
		for i := 1; i < len(base.Ranked()); i++ {
			a, b := base.Ranked()[i-1], base.Ranked()[i]
			if a.Score < b.Score && !scoresEqual(a.Score, b.Score) {
				t.Fatalf("seed %d: %s (%v) ranked above %s (%v)", seed, a.NodeID, a.Score, b.NodeID, b.Score)
			}
		}
	}
}

// TestDecisionConcurrentReads: the ranking is ordered on first use; readers
// on several goroutines must all see the same order (run under -race).
func TestDecisionConcurrentReads(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 7))
	nodes := randomNodes(r, 2000, genOpts{quantized: true})
	p := newTestPipeline(t, Config{})
	d, err := p.Rank(Job{ID: "j", Demand: Resources{ComputePerHour: 10}}, nodes)
	if err != nil {
		t.Fatal(err)
	}
	results := make(chan []string, 4)
	for range 4 {
		go func() {
			ids := make([]string, 0, d.NumRanked())
			for _, c := range d.Ranked() {
				ids = append(ids, c.NodeID)
			}
			results <- ids
		}()
	}
	first := <-results
	for range 3 {
		if got := <-results; !slices.Equal(got, first) {
			t.Fatal("concurrent readers saw different rankings")
		}
	}
}
