package gossip

import (
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/netsim"
	"github.com/meridian-mesh/meridian/placement"
)

// worldRegions are six regions of netsim's world topology on four continents.
var worldRegions = []string{"ap-northeast-1", "ap-southeast-1", "eu-west-1", "sa-east-1", "us-east-1", "us-west-2"}

// testKey is the gossip key of test clusters.
var testKey = []byte("0123456789abcdef0123456789abcdef")

const gossipPort = 7946

// testCluster is a mesh of agents over a netsim network. Create it inside a
// synctest bubble: everything then runs in virtual time.
type testCluster struct {
	tb     testing.TB
	net    *netsim.Network
	mu     sync.Mutex
	agents map[string]*Agent
	names  []string // in start order
	seed   uint64
	tune   func(*Config)
	// published is the version of each node's last SetCapacity in grow.
	published map[string]uint64
}

// testLogger logs to stderr when GOSSIP_TEST_LOG is set (for debugging a
// failing run), and discards otherwise.
func testLogger() *slog.Logger {
	if os.Getenv("GOSSIP_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug - 4}))
	}
	return slog.New(slog.DiscardHandler)
}

func newTestCluster(tb testing.TB, topo *netsim.Topology, seed uint64) *testCluster {
	tb.Helper()
	n, err := netsim.New(netsim.Config{Topology: topo, Seed: int64(seed)})
	if err != nil {
		tb.Fatalf("netsim.New: %v", err)
	}
	return &testCluster{tb: tb, net: n, agents: make(map[string]*Agent), seed: seed, published: make(map[string]uint64)}
}

func nodeName(region string, i int) string { return fmt.Sprintf("%s-%02d", region, i) }

// start starts an agent on a new endpoint.
func (c *testCluster) start(name, region string) *Agent {
	c.tb.Helper()
	ep, err := c.net.AddEndpoint(name, region)
	if err != nil {
		c.tb.Fatalf("AddEndpoint(%q): %v", name, err)
	}
	a := c.startOn(ep)
	return a
}

func (c *testCluster) startOn(ep *netsim.Endpoint) *Agent {
	c.tb.Helper()
	tr, err := netsim.NewMemberlistTransport(ep, gossipPort)
	if err != nil {
		c.tb.Fatalf("NewMemberlistTransport(%s): %v", ep.Name(), err)
	}
	ip := ep.IP().String()
	c.mu.Lock()
	idx := uint64(len(c.names))
	c.mu.Unlock()
	cfg := Config{
		Name:          ep.Name(),
		Region:        ep.Region(),
		Role:          RoleWorker,
		HTTPAddr:      ip + ":8080",
		RaftAddr:      ip + ":7000",
		P2PAddr:       "/ip4/" + ip + "/tcp/4001",
		Version:       "test",
		Transport:     tr,
		BindAddr:      ip,
		BindPort:      gossipPort,
		AdvertiseAddr: ip,
		AdvertisePort: gossipPort,
		SecretKey:     testKey,
		Logger:        testLogger().With("test_node", ep.Name()),
		Rand:          rand.New(rand.NewPCG(c.seed, idx)),
	}
	if c.tune != nil {
		c.tune(&cfg)
	}
	a, err := Start(cfg)
	if err != nil {
		_ = tr.Shutdown()
		c.tb.Fatalf("Start(%s): %v", ep.Name(), err)
	}
	c.mu.Lock()
	if _, ok := c.agents[ep.Name()]; !ok {
		c.names = append(c.names, ep.Name())
	}
	c.agents[ep.Name()] = a
	c.mu.Unlock()
	return a
}

func (c *testCluster) agent(name string) *Agent {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.agents[name]
}

// all returns the running agents in start order.
func (c *testCluster) all() []*Agent {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]*Agent, 0, len(c.names))
	for _, n := range c.names {
		if a := c.agents[n]; a != nil {
			out = append(out, a)
		}
	}
	return out
}

func (c *testCluster) addr(name string) string {
	ep, ok := c.net.Endpoint(name)
	if !ok {
		c.tb.Fatalf("no endpoint %q", name)
	}
	return fmt.Sprintf("%s/%s:%d", name, ep.IP(), gossipPort)
}

// grow starts perRegion agents in each region, each joining the first node
// started, waits until every agent sees every other, then publishes a
// capacity for each (testCapacity of its index in the region).
//
// Publishing after the mesh has formed keeps the test about the steady
// state: a broadcast sent while the mesh is still growing is retransmitted
// fewer times (memberlist scales retransmits with the log of the size it
// knows) and reaches late joiners only through push/pull, minutes later.
func (c *testCluster) grow(regions []string, perRegion int) {
	c.tb.Helper()
	for i := 0; i < perRegion; i++ {
		for _, r := range regions {
			name := nodeName(r, i)
			a := c.start(name, r)
			if len(c.names) > 1 {
				if _, err := a.Join([]string{c.addr(c.names[0])}); err != nil {
					c.tb.Fatalf("%s: Join: %v", name, err)
				}
			}
		}
	}
	total := len(c.all())
	if d, ok := waitFor(2*time.Minute, 100*time.Millisecond, func() bool { return c.everyoneSees(total) }); !ok {
		c.tb.Fatalf("membership did not converge within %v: %s", d, c.describe())
	}
	for i := 0; i < perRegion; i++ {
		for _, r := range regions {
			rec, err := c.agent(nodeName(r, i)).SetCapacity(testCapacity(i))
			if err != nil {
				c.tb.Fatalf("SetCapacity(%s): %v", nodeName(r, i), err)
			}
			c.mu.Lock()
			c.published[rec.Node] = rec.Version
			c.mu.Unlock()
		}
	}
}

// stop shuts one agent down (without leaving).
func (c *testCluster) stop(name string) {
	c.mu.Lock()
	a := c.agents[name]
	delete(c.agents, name)
	c.mu.Unlock()
	if a != nil {
		if err := a.Shutdown(); err != nil {
			c.tb.Errorf("Shutdown(%s): %v", name, err)
		}
	}
}

// close shuts every agent down, then the network. memberlist's Shutdown
// does not wait for a probe in flight, which waits for its ack until its
// timeout: the probe interval scaled by the node's health awareness (up to
// AwarenessMaxMultiplier times, after partitions), then a TCP fallback ping
// within the TCP timeout. In a bubble time stops when the test returns, so
// close lets that much virtual time pass first.
func (c *testCluster) close() {
	var linger time.Duration
	for _, a := range c.all() {
		probe := a.mlConf.ProbeInterval * time.Duration(max(1, a.mlConf.AwarenessMaxMultiplier))
		linger = max(linger, probe+a.mlConf.TCPTimeout)
		c.stop(a.cfg.Name)
	}
	time.Sleep(linger)
	if err := c.net.Close(); err != nil {
		c.tb.Errorf("netsim Close: %v", err)
	}
}

// testCapacity is a plausible capacity, different per index.
func testCapacity(i int) Capacity {
	total := placement.Resources{ComputePerHour: 200, StorageGB: 500, BandwidthGBps: 10, GPUs: 8}
	return Capacity{
		Total:         total,
		Free:          placement.Resources{ComputePerHour: float64(100 + i), StorageGB: 250, BandwidthGBps: 5, GPUs: 4},
		PricePerHour:  float64(800 + 10*i),
		GPUType:       "H100",
		Utilization:   0.5,
		QueueLength:   i,
		DemandPerHour: 40,
	}
}

// waitFor polls cond every step of (virtual) time until it holds or within
// passes; it returns how long it took and whether it held.
func waitFor(within, step time.Duration, cond func() bool) (time.Duration, bool) {
	start := time.Now()
	for {
		if cond() {
			return time.Since(start), true
		}
		if time.Since(start) >= within {
			return time.Since(start), false
		}
		time.Sleep(step)
	}
}

// aliveCount returns how many members a sees alive (suspect counts: it is
// alive for memberlist).
func aliveCount(a *Agent) int {
	st := a.view.stats()
	return st.Alive + st.Suspect
}

// everyoneSees reports whether every running agent sees n members alive.
func (c *testCluster) everyoneSees(n int) bool {
	for _, a := range c.all() {
		if aliveCount(a) != n {
			return false
		}
	}
	return true
}

// missingRecords returns the published records a lacks (or holds in an
// older version).
func (c *testCluster) missingRecords(a *Agent) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var missing []string
	for name, v := range c.published {
		if r, ok := a.Record(name); (!ok || r.Version < v) && name != a.cfg.Name {
			missing = append(missing, name)
		}
	}
	return missing
}

// recordsConverged reports whether every agent holds every published record.
func (c *testCluster) recordsConverged() bool {
	for _, a := range c.all() {
		if len(c.missingRecords(a)) > 0 {
			return false
		}
	}
	return true
}

// describe summarizes who sees how many alive members, for failures.
func (c *testCluster) describe() string {
	counts := map[int]int{}
	for _, a := range c.all() {
		counts[aliveCount(a)]++
	}
	return fmt.Sprintf("alive-count → agents: %v", counts)
}
