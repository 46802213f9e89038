package placement

import (
	"math/rand/v2"
	"testing"
)

// Targets on the 2-core reference machine: ranking 10,000 nodes ≤ 1 ms,
// packing 10,000 jobs onto 1,000 nodes ≤ 200 ms. Run with
//
//	go test -run '^$' -bench . -benchmem ./placement/

// BenchmarkRank10kNodes ranks 10,000 nodes in 8 regions for one job with a
// latency SLO: filters, scores, the full ordering and the winner. The
// explanations are kept in compact form and built on demand; the
// "explained" case builds and formats all of them as well.
func BenchmarkRank10kNodes(b *testing.B) {
	r := rand.New(rand.NewPCG(1, 2))
	nodes := randomNodes(r, 10_000, genOpts{partlyUsed: true})
	rtt := testRTT(r)
	job := Job{ID: "bench", OriginRegion: "us-east-1", LatencySLO: 250e6, Demand: Resources{ComputePerHour: 10, StorageGB: 5, BandwidthGBps: 0.1}}
	for _, cfg := range []struct {
		name  string
		score ScoreConfig
	}{
		{"cost-efficiency", ScoreConfig{LatencyPenaltyPerMs: 0.01}},
		{"weighted", func() ScoreConfig {
			c := WeightedConfig(EfficiencySaturating, 0.1)
			c.LatencyPenaltyPerMs = 0.01
			return c
		}()},
	} {
		b.Run(cfg.name, func(b *testing.B) {
			p := newTestPipeline(b, Config{Score: cfg.score, RTT: rtt})
			b.ReportAllocs()
			var ranked int
			for b.Loop() {
				d, err := p.Rank(job, nodes)
				if err != nil {
					b.Fatal(err)
				}
				if _, ok := d.Winner(); !ok {
					b.Fatal("no winner")
				}
				ranked = d.NumRanked()
			}
			b.ReportMetric(float64(ranked), "feasible")
		})
	}
	// The cost of reading the whole explanation too: every candidate and
	// every rejection built, every reason formatted.
	b.Run("explained", func(b *testing.B) {
		p := newTestPipeline(b, Config{Score: ScoreConfig{LatencyPenaltyPerMs: 0.01}, RTT: rtt})
		b.ReportAllocs()
		for b.Loop() {
			d, err := p.Rank(job, nodes)
			if err != nil {
				b.Fatal(err)
			}
			if len(d.Explain()) != len(nodes) {
				b.Fatal("explanation misses nodes")
			}
		}
	})
}

// BenchmarkPack10kJobs1kNodes packs 10,000 jobs (a quarter needing a GPU
// model, half with a latency SLO, a third with a price cap) onto 1,000
// nodes whose capacity roughly matches the demand.
func BenchmarkPack10kJobs1kNodes(b *testing.B) {
	r := rand.New(rand.NewPCG(3, 4))
	nodes := randomNodes(r, 1_000, genOpts{})
	jobs := randomJobs(r, 10_000, genOpts{})
	p := newTestPipeline(b, Config{RTT: testRTT(r), Score: ScoreConfig{LatencyPenaltyPerMs: 0.01}})
	b.ReportAllocs()
	var placed int
	for b.Loop() {
		plan, err := p.Pack(jobs, nodes)
		if err != nil {
			b.Fatal(err)
		}
		placed = len(plan.Placements)
	}
	b.ReportMetric(float64(placed), "placed")
}
