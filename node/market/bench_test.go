package market

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"testing/synctest"
	"time"

	"github.com/meridian-mesh/meridian/consensus"
	"github.com/meridian-mesh/meridian/netsim"
)

// benchRegions are a buyer and three sellers of the world topology, the
// farthest 115 ms away.
var benchRegions = []string{"us-east-1", "eu-west-1", "us-west-2", "ca-central-1"}

func benchWorld(t *testing.T) *world {
	topo, err := netsim.WorldTopology().Subset(benchRegions...)
	if err != nil {
		t.Fatal(err)
	}
	w := newWorldOn(t, topo, nil)
	w.addRegion(benchRegions[0], 1, nodeSpec{compute: 10, price: 5})
	for i, r := range benchRegions[1:] {
		w.addRegion(r, 1, nodeSpec{compute: 1e9, price: float64(20 + i)})
	}
	w.ready()
	return w
}

// runBubble runs f as a test in a synctest bubble (testing/synctest has no
// form for benchmarks).
func runBubble(b *testing.B, f func(t *testing.T)) {
	if !testing.RunTests(func(string, string) (bool, error) { return true, nil },
		[]testing.InternalTest{{Name: "bubble", F: func(t *testing.T) { synctest.Test(t, f) }}}) {
		b.Fatal("the benchmark's bubble failed")
	}
}

// BenchmarkTradeCompletion measures, in virtual time over the world
// topology's latencies and real Raft servers, one job's trade from Trade to
// the confirmation committed in the buyer's ledger, against the protocol's
// lower bound: two round trips to the farthest invited seller plus three
// Raft commits (seller hold, buyer award, seller allocation; a commit
// measured on these servers). Trade adds one commit of its own (the job's
// new epoch) and the confirmation commit.
func BenchmarkTradeCompletion(b *testing.B) {
	var took, bounds []time.Duration
	for range b.N {
		runBubble(b, func(t *testing.T) {
			w := benchWorld(t)
			defer w.close()
			buyer := w.leader(benchRegions[0])
			ctx := context.Background()
			start := time.Now()
			if _, err := buyer.srv.Propose(ctx, consensus.Expire{}); err != nil {
				t.Fatal(err)
			}
			commit := time.Since(start)
			var far time.Duration
			for _, r := range benchRegions[1:] {
				d, _ := w.net.Topology().RTT(benchRegions[0], r)
				far = max(far, d)
			}
			for i := range 20 {
				id := fmt.Sprintf("job-%d", i)
				j := demandJob(id, 10)
				j.OriginRegion = benchRegions[0]
				jobs := w.submit(benchRegions[0], j)
				start := time.Now()
				if err := buyer.m.Trade(ctx, jobs); err != nil {
					t.Fatal(err)
				}
				if !pollFast(time.Minute, func() bool {
					tr, ok := buyer.srv.Ledger().Trade(remoteKey(w.job(benchRegions[0], id)))
					return ok && tr.State == consensus.TradeAcked
				}) {
					t.Fatalf("%s not traded", id)
				}
				if i > 0 { // the first one also opens the connections
					took = append(took, time.Since(start))
					bounds = append(bounds, 2*far+3*commit)
				}
			}
		})
	}
	slices.Sort(took)
	p50 := took[len(took)/2]
	b.ReportMetric(float64(p50)/1e6, "p50-ms")
	b.ReportMetric(float64(bounds[0])/1e6, "bound-ms")
	b.ReportMetric(float64(p50)/float64(bounds[0]), "p50-ratio")
}

// BenchmarkTradeBatch measures the CPU cost of trading batched jobs through
// the whole stack (Raft ledgers, gossip, libp2p streams on netsim): the
// buyer trades 200 jobs at once and waits for all of them to be confirmed.
// Inside the bubble, time is virtual, so the wall time is the CPU's;
// items/s is per buyer region.
func BenchmarkTradeBatch(b *testing.B) {
	const batch = 200
	var wall time.Duration
	for round := range b.N {
		runBubble(b, func(t *testing.T) {
			w := benchWorld(t)
			defer w.close()
			buyer := w.leader(benchRegions[0])
			var ids []string
			var jobs []consensus.Job
			for i := range batch {
				id := fmt.Sprintf("r%d-job-%d", round, i)
				j := demandJob(id, 10)
				j.OriginRegion = benchRegions[0]
				j.Demand.StorageGB, j.Demand.BandwidthGBps = 1, 0.01 // 1,000 fit a seller's node
				jobs = append(jobs, w.submit(benchRegions[0], j)...)
				ids = append(ids, id)
			}
			start := stopwatch()
			if err := buyer.m.Trade(context.Background(), jobs); err != nil {
				t.Fatal(err)
			}
			if !waitFor(5*time.Minute, func() bool {
				l := buyer.srv.Ledger()
				for _, id := range ids {
					j, _ := l.Job(id)
					tr, ok := l.Trade(remoteKey(j))
					if !ok || tr.State != consensus.TradeAcked {
						return false
					}
				}
				return true
			}) {
				states := map[string]int{}
				for _, id := range ids {
					j := w.job(benchRegions[0], id)
					tr, _ := buyer.srv.Ledger().Trade(remoteKey(j))
					states[j.State.String()+"/"+tr.State.String()+"/"+j.Reason]++
				}
				t.Fatalf("batch not traded: %v; stats %+v", states, buyer.m.Stats())
			}
			wall += start()
		})
	}
	b.ReportMetric(float64(b.N*batch)/wall.Seconds(), "items/s")
}
