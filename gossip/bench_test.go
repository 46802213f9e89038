package gossip

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/meridian-mesh/meridian/netsim"
)

// propagationResult is what one benchmark run measured, in virtual time.
type propagationResult struct {
	to99, toAll         []time.Duration // per capacity change
	idleBytesPerNodeSec float64         // no capacity changes
	busyBytesPerNodeSec float64         // while the changes ran
	changeInterval      time.Duration   // between changes, mesh-wide
}

// arrivalProbe records when each agent first holds a given record version,
// from the agents' event subscriptions.
type arrivalProbe struct {
	mu      sync.Mutex
	node    string
	version uint64
	start   time.Time
	seen    map[string]time.Duration
}

func (p *arrivalProbe) observe(agent string, ev Event) {
	if ev.Type != EventRecordUpdate {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if ev.Record.Node != p.node || ev.Record.Version < p.version || agent == p.node {
		return
	}
	if _, ok := p.seen[agent]; !ok {
		p.seen[agent] = time.Since(p.start)
	}
}

func (p *arrivalProbe) arm(node string, version uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.node, p.version, p.start, p.seen = node, version, time.Now(), map[string]time.Duration{}
}

func (p *arrivalProbe) times() []time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]time.Duration, 0, len(p.seen))
	for _, d := range p.seen {
		out = append(out, d)
	}
	slices.Sort(out)
	return out
}

func bytesSent(agents []*Agent) uint64 {
	var n uint64
	for _, a := range agents {
		st := a.Stats()
		// Streams are counted by the node that opened them, both ways, so
		// the sum over all nodes counts every byte once.
		n += st.PacketBytesSent + st.StreamBytesSent + st.StreamBytesReceived
	}
	return n
}

// runPropagation builds an n-node mesh over the 21 regions of the world
// topology, measures the gossip bytes of the idle mesh, then makes changes
// capacity changes, one every changeInterval from random nodes, and times
// how long each takes to reach 99% of the other nodes and all of them.
func runPropagation(t *testing.T, n, changes int, changeInterval time.Duration, seed uint64) propagationResult {
	topo := netsim.WorldTopology()
	regions := topo.Regions()
	c := newTestCluster(t, topo, seed)
	defer c.close()
	for i := 0; i < n; i++ {
		r := regions[i%len(regions)]
		a := c.start(nodeName(r, i/len(regions)), r)
		if i > 0 {
			if _, err := a.Join([]string{c.addr(c.names[0])}); err != nil {
				t.Fatalf("Join: %v", err)
			}
		}
	}
	agents := c.all()
	if d, ok := waitFor(5*time.Minute, time.Second, func() bool { return c.everyoneSees(n) }); !ok {
		t.Fatalf("%d nodes did not converge within %v: %s", n, d, c.describe())
	}
	for i, a := range agents {
		if _, err := a.SetCapacity(testCapacity(i % 10)); err != nil {
			t.Fatal(err)
		}
	}
	if d, ok := waitFor(5*time.Minute, time.Second, func() bool {
		for _, a := range agents {
			if a.Stats().Records != n {
				return false
			}
		}
		return true
	}); !ok {
		t.Fatalf("records did not converge within %v", d)
	}
	// Let the join and publish storms drain before measuring.
	time.Sleep(2 * time.Minute)

	var res propagationResult
	res.changeInterval = changeInterval
	const idleWindow = 5 * time.Minute
	b0 := bytesSent(agents)
	time.Sleep(idleWindow)
	b1 := bytesSent(agents)
	res.idleBytesPerNodeSec = float64(b1-b0) / float64(n) / idleWindow.Seconds()

	probe := &arrivalProbe{}
	var wg sync.WaitGroup
	var cancels []func()
	for _, a := range agents {
		ch, cancel := a.Subscribe(4096)
		cancels = append(cancels, cancel)
		wg.Add(1)
		go func(name string) {
			defer wg.Done()
			for ev := range ch {
				probe.observe(name, ev)
			}
		}(a.cfg.Name)
	}
	rnd := rand.New(rand.NewPCG(seed, 99))
	need := int(math.Ceil(0.99 * float64(n-1)))
	start := time.Now()
	for i := 0; i < changes; i++ {
		a := agents[rnd.IntN(n)]
		capacity := testCapacity(0)
		capacity.Free.ComputePerHour = float64(20 + i%150)
		rec, err := a.SetCapacity(capacity)
		if err != nil {
			t.Fatal(err)
		}
		probe.arm(a.cfg.Name, rec.Version)
		time.Sleep(changeInterval)
		got := probe.times()
		if len(got) < need {
			t.Fatalf("change %d of %s reached %d of %d nodes in %v", i, a.cfg.Name, len(got), n-1, changeInterval)
		}
		res.to99 = append(res.to99, got[need-1])
		if len(got) == n-1 {
			res.toAll = append(res.toAll, got[len(got)-1])
		} else {
			res.toAll = append(res.toAll, -1) // reached later, by push/pull
		}
	}
	res.busyBytesPerNodeSec = float64(bytesSent(agents)-b1) / float64(n) / time.Since(start).Seconds()
	for _, cancel := range cancels {
		cancel()
	}
	wg.Wait()
	return res
}

func quantile(ds []time.Duration, q float64) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(math.Ceil(q*float64(len(s)))) - 1
	return s[max(i, 0)]
}

// BenchmarkPropagation measures, over netsim's world topology in virtual
// time, how long a capacity change takes to reach 99% of the members
// (p50 and p99 over the changes), and the bytes each node gossips per
// second when idle and while one capacity changes somewhere in the mesh
// every 10 s. Virtual time makes the figures the protocol's, free of CPU
// noise; testing/synctest has no form for benchmarks, so the bubble runs as
// a test through testing.RunTests.
//
//	go test -run '^$' -bench . -benchtime 1x ./gossip/
func BenchmarkPropagation(b *testing.B) {
	for _, n := range []int{100, 300} {
		b.Run(fmt.Sprintf("nodes=%d", n), func(b *testing.B) {
			var all []propagationResult
			for i := range b.N {
				ok := testing.RunTests(func(string, string) (bool, error) { return true, nil }, []testing.InternalTest{{
					Name: fmt.Sprintf("propagation-%d", n),
					F: func(t *testing.T) {
						synctest.Test(t, func(t *testing.T) {
							all = append(all, runPropagation(t, n, 20, 10*time.Second, uint64(i+1)))
						})
					},
				}})
				if !ok {
					b.Fatal("propagation run failed")
				}
			}
			var to99, toAll []time.Duration
			var idle, busy float64
			for _, r := range all {
				to99 = append(to99, r.to99...)
				toAll = append(toAll, r.toAll...)
				idle += r.idleBytesPerNodeSec / float64(len(all))
				busy += r.busyBytesPerNodeSec / float64(len(all))
			}
			missed, reached := 0, []time.Duration{0}
			for _, d := range toAll {
				if d < 0 {
					missed++
				} else {
					reached = append(reached, d)
				}
			}
			b.ReportMetric(quantile(to99, 0.5).Seconds(), "p50-to-99%-s")
			b.ReportMetric(quantile(to99, 0.99).Seconds(), "p99-to-99%-s")
			b.ReportMetric(quantile(reached, 1).Seconds(), "max-to-all-s")
			b.ReportMetric(float64(missed), "changes-missing-a-node")
			b.ReportMetric(idle, "idle-B/s/node")
			b.ReportMetric(busy, "busy-B/s/node")
		})
	}
}
