package market

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"

	"github.com/meridian-mesh/meridian/consensus"
	"github.com/meridian-mesh/meridian/netsim"
)

// benchRegions are a buyer and three sellers of the world topology. The
// farthest, eu-west-1, is 70 ms away (round trip); it also asks the lowest
// price, so it wins every trade.
var benchRegions = []string{"us-east-1", "eu-west-1", "us-west-2", "ca-central-1"}

// benchServers is the size of each region's Raft group: three servers, as
// a region runs them, so that a commit costs a round of replication to a
// follower (the intra-region round trip of the topology) and not nothing.
const benchServers = 3

// benchMode is how a benchmark's world runs.
type benchMode struct {
	// realTime runs outside a synctest bubble: the wall clock counts the
	// CPU, the disk and the network's latencies alike.
	realTime bool
	// fsync makes the Raft servers sync their logs (bolt files under the
	// test's temporary directory).
	fsync bool
}

func benchWorld(t *testing.T, mode benchMode) *world {
	topo, err := netsim.WorldTopology().Subset(benchRegions...)
	if err != nil {
		t.Fatal(err)
	}
	w := newWorldOn(t, topo, nil)
	w.fsync, w.realTime = mode.fsync, mode.realTime
	if mode.realTime {
		w.before = goleak.IgnoreCurrent()
	}
	w.addRegion(benchRegions[0], benchServers, nodeSpec{compute: 10, price: 5})
	for i, r := range benchRegions[1:] {
		w.addRegion(r, benchServers, nodeSpec{compute: 1e9, price: float64(20 + i)})
	}
	w.ready()
	return w
}

// runBubble runs f as a test in a synctest bubble (testing/synctest has no
// form for benchmarks).
func runBubble(b *testing.B, f func(t *testing.T)) {
	runTest(b, func(t *testing.T) { synctest.Test(t, f) })
}

// runTest runs f as a test, for the worlds' helpers, which take a
// *testing.T.
func runTest(b *testing.B, f func(t *testing.T)) {
	if !testing.RunTests(func(string, string) (bool, error) { return true, nil },
		[]testing.InternalTest{{Name: "world", F: f}}) {
		b.Fatal("the benchmark's world failed")
	}
}

// commitTime is the median time of n commits of a command that changes
// nothing (Expire) at region's leader: what each of the protocol's Raft
// commits costs in that region's group.
func (w *world) commitTime(region string, n int) time.Duration {
	w.t.Helper()
	l := w.leader(region)
	took := make([]time.Duration, n)
	for i := range took {
		start := time.Now()
		if _, err := l.srv.Propose(context.Background(), consensus.Expire{}); err != nil {
			w.t.Fatalf("commit in %s: %v", region, err)
		}
		took[i] = time.Since(start)
	}
	slices.Sort(took)
	return took[n/2]
}

// completion is what one run of tradeCompletion measured.
type completion struct {
	took, bounds []time.Duration
	// commits is each region's median commit time.
	commits map[string]time.Duration
	// farthest is the farthest invited seller.
	farthest string
}

// tradeCompletion trades trades jobs one at a time from the buyer and
// measures each from Trade to the confirmation committed in the buyer's
// ledger, with its lower bound: two round trips to the farthest invited
// seller plus the three commits of the protocol, each measured in the
// group that makes it (the hold in the farthest seller's, which the buyer
// waits for; the award in the buyer's; the allocation in the winner's).
// The first trade also opens the connections and is not counted.
func tradeCompletion(t *testing.T, mode benchMode, trades int) completion {
	w := benchWorld(t, mode)
	defer w.close()
	buyer := w.leader(benchRegions[0])
	ctx := context.Background()
	out := completion{commits: map[string]time.Duration{}}
	var far time.Duration
	for _, r := range benchRegions {
		out.commits[r] = w.commitTime(r, 9)
		if r == benchRegions[0] {
			continue
		}
		if d, _ := w.net.Topology().RTT(benchRegions[0], r); d > far {
			far, out.farthest = d, r
		}
	}
	for i := range trades {
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
		took := time.Since(start)
		if i == 0 {
			continue
		}
		winner := w.job(benchRegions[0], id).Remote.Region
		out.took = append(out.took, took)
		out.bounds = append(out.bounds, 2*far+out.commits[out.farthest]+out.commits[benchRegions[0]]+out.commits[winner])
	}
	return out
}

// report reports the medians of c: the completion time, its lower bound,
// their ratio, and the commit times the bound counts (the buyer's group's
// and the farthest seller's, which also wins in these worlds).
func (c completion) report(b *testing.B) {
	if len(c.took) == 0 {
		b.Fatal("no trade measured")
	}
	slices.Sort(c.took)
	slices.Sort(c.bounds)
	p50, bound := c.took[len(c.took)/2], c.bounds[len(c.bounds)/2]
	b.ReportMetric(float64(p50)/1e6, "p50-ms")
	b.ReportMetric(float64(bound)/1e6, "bound-ms")
	b.ReportMetric(float64(p50)/float64(bound), "p50/bound")
	b.ReportMetric(float64(c.commits[benchRegions[0]])/1e6, "commit-ms")
	b.ReportMetric(float64(c.commits[c.farthest])/1e6, "seller-commit-ms")
}

// BenchmarkTradeCompletion measures, in virtual time over the world
// topology's latencies and real Raft groups of three servers per region
// (fsync off: in a bubble the disk would take no virtual time anyway), one
// job's trade from Trade to the confirmation committed in the buyer's
// ledger, against the protocol's lower bound: two round trips to the
// farthest invited seller plus three Raft commits (seller hold, buyer
// award, seller allocation), each the median commit measured in that
// region's group. Trade adds two commits of its own in the buyer's group:
// the job's new epoch before the call for bids, and the confirmation.
func BenchmarkTradeCompletion(b *testing.B) {
	var all completion
	for range b.N {
		runBubble(b, func(t *testing.T) {
			c := tradeCompletion(t, benchMode{}, 20)
			all.took = append(all.took, c.took...)
			all.bounds = append(all.bounds, c.bounds...)
			all.commits, all.farthest = c.commits, c.farthest
		})
	}
	all.report(b)
}

// BenchmarkTradeCompletionRealTime is BenchmarkTradeCompletion in real
// time, outside a bubble, with fsync on: the network's latencies are the
// same, and what the completion time adds to the bound is the CPU (and
// the disk, beyond the commits the bound counts). The world takes seconds
// of real time to start (elections, gossip), so each run trades only a
// few jobs.
func BenchmarkTradeCompletionRealTime(b *testing.B) {
	var all completion
	for range b.N {
		runTest(b, func(t *testing.T) {
			c := tradeCompletion(t, benchMode{realTime: true, fsync: true}, 11)
			all.took = append(all.took, c.took...)
			all.bounds = append(all.bounds, c.bounds...)
			all.commits, all.farthest = c.commits, c.farthest
		})
	}
	all.report(b)
}

// tradeBatch trades batch jobs in one Trade and waits until all of them are
// confirmed in the buyer's ledger; it returns the time that took by clock.
func tradeBatch(t *testing.T, mode benchMode, round, batch int, clock func() func() time.Duration) time.Duration {
	w := benchWorld(t, mode)
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
	elapsed := clock()
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
	return elapsed()
}

// wallClock measures real time from now.
func wallClock() func() time.Duration {
	start := time.Now()
	return func() time.Duration { return time.Since(start) }
}

// BenchmarkTradeBatch measures the CPU cost of trading batched jobs through
// the whole stack (Raft groups of three servers per region, gossip, libp2p
// streams on netsim): the buyer trades 200 jobs at once and waits for all
// of them to be confirmed. Inside the bubble, time is virtual, so the
// process's CPU time is what is measured (every server's, followers
// included); items/s is per buyer region.
func BenchmarkTradeBatch(b *testing.B) {
	const batch = 200
	var took time.Duration
	for round := range b.N {
		runBubble(b, func(t *testing.T) {
			took += tradeBatch(t, benchMode{}, round, batch, stopwatch)
		})
	}
	b.ReportMetric(float64(b.N*batch)/took.Seconds(), "items/s")
}

// BenchmarkTradeBatchRealTime is BenchmarkTradeBatch in real time with
// fsync on: the wall time from Trade to the last confirmation, network
// latencies, disk and CPU together. With one batch in flight, the round
// trips to the sellers (70 ms each) weigh on a batch of 200; a batch of
// 1,000 spreads them over five times the items.
func BenchmarkTradeBatchRealTime(b *testing.B) {
	for _, batch := range []int{200, 1000} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			var took time.Duration
			for round := range b.N {
				runTest(b, func(t *testing.T) {
					took += tradeBatch(t, benchMode{realTime: true, fsync: true}, round, batch, wallClock)
				})
			}
			b.ReportMetric(float64(b.N*batch)/took.Seconds(), "items/s")
		})
	}
}
