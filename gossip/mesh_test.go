package gossip

import (
	"fmt"
	"math"
	"os"
	"slices"
	"testing"
	"testing/synctest"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/meridian-mesh/meridian/netsim"
	"github.com/meridian-mesh/meridian/placement"
)

// longTests reports whether the long variants run: not -short, and
// GOSSIP_LONG=1 in the environment.
func longTests() bool { return !testing.Short() && os.Getenv("GOSSIP_LONG") == "1" }

// propagationTime changes the capacity of node and returns how long until
// every running agent holds the new version, and how long until 99% do.
func propagationTime(t testing.TB, c *testCluster, node string, free float64, within time.Duration) (p99, all time.Duration) {
	t.Helper()
	capacity := testCapacity(0)
	capacity.Free.ComputePerHour = free
	rec, err := c.agent(node).SetCapacity(capacity)
	if err != nil {
		t.Fatalf("SetCapacity(%s): %v", node, err)
	}
	agents := c.all()
	// 99 % of the nodes, rounded down (59 of 60): an epidemic broadcast
	// with memberlist's bounded retransmits now and then misses a node,
	// which a push/pull repairs (see pushPullPeriod); the caller gives that
	// room in within.
	need := int(math.Floor(0.99 * float64(len(agents))))
	start := time.Now()
	p99 = -1
	d, ok := waitFor(within, 10*time.Millisecond, func() bool {
		have := 0
		for _, a := range agents {
			if r, ok := a.Record(node); ok && r.Version >= rec.Version {
				have++
			}
		}
		if have >= need && p99 < 0 {
			p99 = time.Since(start)
		}
		return have == len(agents)
	})
	if !ok {
		t.Fatalf("capacity change of %s reached only part of the mesh within %v", node, within)
	}
	return p99, d
}

// pushPullPeriod is how often each of n nodes starts a push/pull, the
// anti-entropy exchange that repairs a broadcast a node missed: the
// configured interval, which memberlist lengthens beyond 32 nodes by
// ceil(log2(n/32)) + 1 times (twice at 60 nodes). A missed node is repaired
// within one period, unless its partner missed the change too; two give
// room for that.
func pushPullPeriod(conf *memberlist.Config, n int) time.Duration {
	if n <= 32 {
		return conf.PushPullInterval
	}
	return time.Duration(math.Ceil(math.Log2(float64(n)/32))+1) * conf.PushPullInterval
}

// TestMeshWorld is the 60-node acceptance run over netsim's world topology,
// in virtual time: 10 nodes in each of 6 regions converge on membership and
// capacity records; capacity changes reach the whole mesh; a partitioned
// region is marked failed by the others (and marks them failed); after the
// partition heals, every node sees all 60 again within 60 s without any
// manual join.
func TestMeshWorld(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const perRegion = 10
		total := perRegion * len(worldRegions)
		c := newTestCluster(t, netsim.WorldTopology(), 4)
		defer c.close()
		c.grow(worldRegions, perRegion)

		// Membership and records converge.
		d, ok := waitFor(time.Minute, 100*time.Millisecond, func() bool { return c.everyoneSees(total) && c.recordsConverged() })
		if !ok {
			for _, a := range c.all() {
				if missing := c.missingRecords(a); len(missing) > 0 {
					t.Logf("%s lacks the records of %v", a.cfg.Name, missing)
				}
			}
			t.Fatalf("mesh did not converge in %v: %s", d, c.describe())
		}
		t.Logf("records converged %v after every node published its capacity", d)

		// Metadata arrives intact.
		observer := c.agent(nodeName("eu-west-1", 3))
		for _, m := range observer.Members() {
			ep, _ := c.net.Endpoint(m.Name)
			if m.Region != ep.Region() || m.Role != RoleWorker || m.HTTPAddr != ep.IP().String()+":8080" ||
				m.RaftAddr != ep.IP().String()+":7000" || m.Version != "test" || !m.Addr.Equal(ep.IP()) || m.Port != gossipPort {
				t.Fatalf("member %s as seen by %s = %+v; metadata does not match its endpoint %s", m.Name, observer.cfg.Name, m, ep)
			}
		}

		// Region summaries add up.
		sums := observer.RegionSummaries()
		if len(sums) != len(worldRegions) {
			t.Fatalf("RegionSummaries() has %d regions; want %d", len(sums), len(worldRegions))
		}
		var wantFree placement.Resources
		for i := 0; i < perRegion; i++ {
			wantFree = wantFree.Add(testCapacity(i).Free)
		}
		for _, s := range sums {
			if s.Alive != perRegion || s.Nodes != perRegion || s.Failed != 0 || s.Free != wantFree ||
				s.CheapestPricePerHour != 800 || s.CheapestNode != nodeName(s.Region, 0) || len(s.RTT) != len(worldRegions) {
				t.Fatalf("summary of %s = %+v; want %d alive nodes, free %v, cheapest %s at 800, RTT to %d regions",
					s.Region, s, perRegion, wantFree, nodeName(s.Region, 0), len(worldRegions))
			}
		}

		// Capacity changes reach every node.
		repair := 2*pushPullPeriod(c.all()[0].mlConf, total) + 30*time.Second
		for i, node := range []string{nodeName("us-east-1", 1), nodeName("ap-southeast-1", 7), nodeName("sa-east-1", 4)} {
			p99, all := propagationTime(t, c, node, float64(10+i), repair)
			t.Logf("capacity change of %s: 99%% of nodes after %v, all after %v", node, p99, all)
			if p99 > 3*time.Second {
				t.Errorf("capacity change of %s reached 99%% of the mesh after %v; want ≤ 3s", node, p99)
			}
		}

		// Partition one region from the rest.
		const cutOff = "sa-east-1"
		inCut := func(a *Agent) bool { return a.cfg.Region == cutOff }
		c.net.Partition([]string{cutOff})
		// The 50 nodes outside mark the region failed within memberlist's
		// suspicion bounds. (The 10 inside take longer to mark the 50 failed:
		// Lifeguard makes a node that hears no acks doubt itself and slow its
		// probes; the test does not wait for them.)
		d, ok = waitFor(6*time.Minute, time.Second, func() bool {
			for _, a := range c.all() {
				if inCut(a) {
					continue
				}
				for _, m := range a.Members() {
					if m.Region == cutOff && m.State != StateFailed {
						return false
					}
				}
			}
			return true
		})
		if !ok {
			for _, a := range c.all() {
				states := map[MemberState]int{}
				for _, m := range a.Members() {
					if (m.Region == cutOff) != inCut(a) {
						states[m.State]++
					}
				}
				t.Logf("%s sees the other side as %v", a.cfg.Name, states)
			}
			t.Fatalf("the rest of the mesh did not mark %s failed within %v: %s", cutOff, d, c.describe())
		}
		bound := suspicionMaxTimeout(c.all()[0].mlConf, total)
		t.Logf("the rest of the mesh marked %s failed %v after the partition (memberlist's longest suspicion timeout: %v)", cutOff, d, bound)
		if d > bound+time.Minute {
			t.Errorf("marking the partitioned region failed took %v; want within the suspicion bound %v plus a minute of probing", d, bound)
		}
		for _, s := range observer.RegionSummaries() {
			want := perRegion
			if s.Region == cutOff {
				want = 0
			}
			if s.Alive != want || s.Failed != perRegion-want {
				t.Fatalf("during the partition, summary of %s = alive %d failed %d; want alive %d failed %d",
					s.Region, s.Alive, s.Failed, want, perRegion-want)
			}
		}
		// Let the partition outlast memberlist's GossipToTheDeadTime (60 s
		// with the WAN profile), after which it no longer gossips to the
		// dead members: past that point it cannot re-merge by itself.
		time.Sleep(observer.mlConf.GossipToTheDeadTime + 5*time.Second)

		c.net.Heal()
		d, ok = waitFor(60*time.Second, 100*time.Millisecond, func() bool { return c.everyoneSees(total) })
		if !ok {
			t.Fatalf("60 s after the heal, not every node sees all %d: %s", total, c.describe())
		}
		t.Logf("all %d nodes see all %d again %v after the heal", total, total, d)
		var attempts, successes uint64
		for _, a := range c.all() {
			st := a.Stats()
			attempts += st.ReconnectAttempts
			successes += st.ReconnectSuccesses
		}
		if successes == 0 {
			t.Fatalf("the mesh re-merged without a reconnect (%d attempts); the test no longer shows what it should", attempts)
		}
		t.Logf("reconnects: %d attempts, %d succeeded", attempts, successes)
	})
}

// regionRTTError returns the median relative error of a's inter-region RTT
// estimates against the topology, over unordered region pairs.
func regionRTTError(t testing.TB, a *Agent, topo *netsim.Topology, regions []string) (float64, string) {
	t.Helper()
	var errs []float64
	detail := ""
	for i, r1 := range regions {
		for _, r2 := range regions[i+1:] {
			est, ok := a.RegionRTT(r1, r2)
			if !ok {
				t.Fatalf("%s: RegionRTT(%s, %s) has no estimate", a.cfg.Name, r1, r2)
			}
			ab, _ := topo.RTT(r1, r2)
			ba, _ := topo.RTT(r2, r1)
			truth := (ab + ba) / 2 // a probe crosses the link both ways
			e := math.Abs(float64(est-truth)) / float64(truth)
			errs = append(errs, e)
			detail += fmt.Sprintf(" %s↔%s %v/%v", r1, r2, est.Round(time.Millisecond), truth)
		}
	}
	slices.Sort(errs)
	return errs[len(errs)/2], detail
}

// TestCoordinatesEstimateRegionRTT checks that after a warm-up the Vivaldi
// coordinates estimate inter-region RTTs within 10% (median relative error
// over region pairs) of netsim's truth, at every node, including for pairs of
// nodes that never probed each other.
func TestCoordinatesEstimateRegionRTT(t *testing.T) {
	perRegion, warmUp := 3, 15*time.Minute
	if longTests() {
		perRegion = 10
	}
	synctest.Test(t, func(t *testing.T) {
		c := newTestCluster(t, netsim.WorldTopology(), 7)
		defer c.close()
		c.grow(worldRegions, perRegion)
		time.Sleep(warmUp)
		worst := 0.0
		for _, a := range c.all() {
			e, detail := regionRTTError(t, a, c.net.Topology(), worldRegions)
			if e > 0.10 {
				t.Errorf("%s: median relative error of region RTT estimates %.1f%% after %v; want ≤ 10%%:%s", a.cfg.Name, 100*e, warmUp, detail)
			}
			worst = max(worst, e)
		}
		t.Logf("%d nodes: worst median relative error %.1f%% after %v", perRegion*len(worldRegions), 100*worst, warmUp)

		// Any node estimates the RTT between two others, probed or not.
		a := c.agent(nodeName("us-east-1", 0))
		x, y := nodeName("ap-northeast-1", 1), nodeName("eu-west-1", 2)
		est, ok := a.EstimateRTT(x, y)
		truth, _ := c.net.Topology().RTT("ap-northeast-1", "eu-west-1")
		if !ok || math.Abs(float64(est-truth)) > 0.25*float64(truth) {
			t.Errorf("EstimateRTT(%s, %s) = %v, %v; want within 25%% of %v", x, y, est, ok, truth)
		}
		// Measured RTT to a probed peer is the topology's RTT (no jitter).
		for _, m := range a.Members() {
			if rtt, ok := a.RTT(m.Name); ok {
				ab, _ := c.net.Topology().RTT(a.cfg.Region, m.Region)
				ba, _ := c.net.Topology().RTT(m.Region, a.cfg.Region)
				if truth := (ab + ba) / 2; math.Abs(float64(rtt-truth)) > float64(time.Millisecond) {
					t.Errorf("RTT(%s) = %v; want %v", m.Name, rtt, truth)
				}
			}
		}
	})
}
