// Package simcluster runs a whole Meridian mesh on netsim in one process:
// a few servers and workers per region, real gossip, Raft and libp2p over
// the simulated WAN. It serves `meridian netsim`, the end-to-end tests, the
// world benchmark and the chaos suite. It works in real time and inside a
// testing/synctest bubble (create the cluster inside the bubble).
package simcluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/meridian-mesh/meridian/netsim"
	"github.com/meridian-mesh/meridian/node"
	"github.com/meridian-mesh/meridian/placement"
	"github.com/meridian-mesh/meridian/placement/workload"
)

// NodeCapacity is what one node offers.
type NodeCapacity struct {
	Resources    placement.Resources
	PricePerHour float64
	GPUType      string
}

// Config configures a Cluster.
type Config struct {
	// Topology is the network; nil is netsim.WorldTopology().
	Topology *netsim.Topology
	// Regions are the regions to populate; nil is every region of Topology.
	Regions []string
	// Servers and Workers are the nodes per region (defaults 3 and 2).
	// Servers run work too when Capacity gives them any.
	Servers, Workers int
	// Seed seeds the network and the agents.
	Seed int64
	// Jitter is the network's jitter (fraction of each link's latency).
	Jitter float64
	// DataDir holds the nodes' data directories; "" makes a temporary
	// directory that Close removes.
	DataDir string
	// Capacity gives a node's capacity from its region and its ordinal in
	// the region (servers first). Nil gives workers one p4d.24xlarge each at
	// the region's AWS on-demand price (DefaultCapacity) and servers none.
	Capacity func(region string, ordinal int) NodeCapacity
	// Market lets regions trade capacity.
	Market bool
	// Logger receives the agents' logs; nil discards them.
	Logger *slog.Logger
	// Tuning is every agent's Tuning.
	Tuning node.Tuning
	// BridgeMetrics is every agent's Config.BridgeMetrics: on for a
	// real-time cluster that serves /metrics, off in a synctest bubble.
	BridgeMetrics bool
	// NoSync is every agent's Config.NoSync: Raft logs are written but not
	// synced. Set it in a synctest bubble, where a sync changes no result
	// and only holds the virtual clock while the disk works.
	NoSync bool
}

// DefaultCapacity is one p4d.24xlarge (8 A100 GPUs) at region's on-demand
// price from the embedded AWS price list, or at the cheapest region's price
// when the list has none for region.
func DefaultCapacity(region string) (NodeCapacity, error) {
	prices := workload.EmbeddedPrices()
	p, ok := prices.Lookup(workload.DefaultInstance, region)
	price := p.OnDemandPerHour
	if !ok || !p.HasOnDemand {
		var err error
		price, _, err = prices.CheapestOnDemand(workload.DefaultInstance)
		if err != nil {
			return NodeCapacity{}, fmt.Errorf("simcluster: price of %s: %w", workload.DefaultInstance, err)
		}
		p, _ = prices.Lookup(workload.DefaultInstance, "us-east-1")
	}
	gpus := max(p.AcceleratorCount, 8)
	return NodeCapacity{
		Resources:    workload.DefaultThroughput().NodeCapacity(gpus),
		PricePerHour: price,
		GPUType:      "A100",
	}, nil
}

// Cluster is a running mesh.
type Cluster struct {
	cfg   Config
	net   *netsim.Cluster
	seeds []string // gossip addresses every agent joins

	mu     sync.Mutex
	agents map[string]*node.Agent
}

// Start starts every node of every region and returns once all are
// started (not yet joined: see WaitReady).
func Start(ctx context.Context, cfg Config) (*Cluster, error) {
	if cfg.Servers == 0 && cfg.Workers == 0 {
		cfg.Servers, cfg.Workers = 3, 2
	}
	switch {
	case cfg.Servers < 1 || cfg.Servers > 5:
		return nil, fmt.Errorf("simcluster: servers per region %d: want 1 to 5", cfg.Servers)
	case cfg.Workers < 0 || cfg.Workers > 100:
		return nil, fmt.Errorf("simcluster: workers per region %d: want 0 to 100", cfg.Workers)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	topo := cfg.Topology
	if topo == nil {
		topo = netsim.WorldTopology()
	}
	regions := cfg.Regions
	if regions == nil {
		regions = topo.Regions()
	}
	if cfg.Capacity == nil {
		caps := map[string]NodeCapacity{}
		for _, r := range regions {
			c, err := DefaultCapacity(r)
			if err != nil {
				return nil, err
			}
			caps[r] = c
		}
		servers := cfg.Servers
		cfg.Capacity = func(region string, ordinal int) NodeCapacity {
			if ordinal < servers {
				return NodeCapacity{}
			}
			return caps[region]
		}
	}
	c := &Cluster{cfg: cfg, agents: map[string]*node.Agent{}}
	// Every agent joins the first server of each of the first regions, so
	// the mesh forms whatever order nodes come up in.
	nc, err := netsim.NewCluster(ctx, netsim.ClusterConfig{
		Topology:       topo,
		Regions:        regions,
		NodesPerRegion: cfg.Servers + cfg.Workers,
		Seed:           cfg.Seed,
		Jitter:         cfg.Jitter,
		Logger:         cfg.Logger,
		DataDir:        cfg.DataDir,
		Start: func(ctx context.Context, ep *netsim.Endpoint, spec netsim.NodeSpec) (io.Closer, error) {
			return c.startAgent(ctx, ep, spec)
		},
	})
	if err != nil {
		return nil, err
	}
	c.net = nc
	return c, nil
}

func (c *Cluster) startAgent(ctx context.Context, ep *netsim.Endpoint, spec netsim.NodeSpec) (io.Closer, error) {
	if c.seeds == nil {
		// The first node of the first regions are the seeds; they are
		// started first, and later nodes join them.
		n := ep.Network()
		for _, e := range n.Endpoints() {
			if len(c.seeds) == 3 {
				break
			}
			if e.Name() == e.Region()+"-0" {
				c.seeds = append(c.seeds, node.NetsimGossipAddr(e))
			}
		}
	}
	capa := c.cfg.Capacity(spec.Region, spec.Ordinal)
	server := spec.Ordinal < c.cfg.Servers
	cfg := node.Config{
		Name:          spec.Name,
		Region:        spec.Region,
		Server:        server,
		DataDir:       spec.DataDir,
		Resources:     capa.Resources,
		PricePerHour:  capa.PricePerHour,
		GPUType:       capa.GPUType,
		Join:          slices.DeleteFunc(slices.Clone(c.seeds), func(s string) bool { return s == node.NetsimGossipAddr(ep) }),
		Network:       node.NetsimNetwork(ep),
		Market:        c.cfg.Market,
		Logger:        c.cfg.Logger,
		Seed:          spec.Seed,
		Tuning:        c.cfg.Tuning,
		Version:       "sim",
		BridgeMetrics: c.cfg.BridgeMetrics,
		NoSync:        c.cfg.NoSync,
	}
	if server {
		cfg.BootstrapExpect = min(c.cfg.Servers, 3)
		if c.cfg.Servers == 5 {
			cfg.BootstrapExpect = 5
			cfg.MaxVoters = 5
		}
	}
	a, err := node.Start(ctx, cfg)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.agents[spec.Name] = a
	c.mu.Unlock()
	return netsim.CloserFunc(func() error {
		c.mu.Lock()
		delete(c.agents, spec.Name)
		c.mu.Unlock()
		return a.Close()
	}), nil
}

// Network returns the simulated network, for faults.
func (c *Cluster) Network() *netsim.Network { return c.net.Network() }

// Regions returns the cluster's regions in start order.
func (c *Cluster) Regions() []string {
	var out []string
	for _, s := range c.net.Nodes() {
		if !slices.Contains(out, s.Region) {
			out = append(out, s.Region)
		}
	}
	return out
}

// Agents returns the running agents, by name.
func (c *Cluster) Agents() []*node.Agent {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]*node.Agent, 0, len(c.agents))
	for _, a := range c.agents {
		out = append(out, a)
	}
	slices.SortFunc(out, func(x, y *node.Agent) int {
		if x.Name() < y.Name() {
			return -1
		}
		if x.Name() > y.Name() {
			return 1
		}
		return 0
	})
	return out
}

// Agent returns the running agent of that name.
func (c *Cluster) Agent(name string) (*node.Agent, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	a, ok := c.agents[name]
	return a, ok
}

// Servers returns the region's running servers.
func (c *Cluster) Servers(region string) []*node.Agent {
	var out []*node.Agent
	for _, a := range c.Agents() {
		if a.Region() == region && a.IsServer() {
			out = append(out, a)
		}
	}
	return out
}

// Leader returns the region's current Raft leader, if a running server
// leads it.
func (c *Cluster) Leader(region string) (*node.Agent, bool) {
	for _, a := range c.Servers(region) {
		if a.IsLeader() {
			return a, true
		}
	}
	return nil, false
}

// Crash stops a node abruptly (its data dir survives).
func (c *Cluster) Crash(name string) error { return c.net.Crash(name) }

// Restart starts a crashed node again on its data dir.
func (c *Cluster) Restart(ctx context.Context, name string) error { return c.net.Restart(ctx, name) }

// WaitReady waits until every region has a leader whose ledger has
// registered every node of the region that offers capacity, and every agent
// sees every other in gossip.
func (c *Cluster) WaitReady(ctx context.Context) error {
	want := len(c.net.Nodes())
	for {
		err := c.ready(want)
		if err == nil {
			return nil
		}
		t := time.NewTimer(200 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("simcluster: not ready: %w (%v)", ctx.Err(), err)
		case <-t.C:
		}
	}
}

func (c *Cluster) ready(want int) error {
	agents := c.Agents()
	if len(agents) != want {
		return fmt.Errorf("%d of %d agents running", len(agents), want)
	}
	for _, a := range agents {
		if n := len(a.Gossip().Members()); n < want {
			return fmt.Errorf("%s sees %d of %d members", a.Name(), n, want)
		}
	}
	for _, r := range c.Regions() {
		l, ok := c.Leader(r)
		if !ok {
			return fmt.Errorf("region %s has no leader", r)
		}
		ledger := l.Ledger()
		for _, s := range c.net.Nodes() {
			if s.Region != r || c.cfg.Capacity(r, s.Ordinal).Resources.IsZero() {
				continue
			}
			if _, ok := ledger.Node(s.Name); !ok {
				return fmt.Errorf("region %s has not registered node %s", r, s.Name)
			}
		}
	}
	return nil
}

// Close stops every agent and the network.
func (c *Cluster) Close() error {
	err := c.net.Close()
	if err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}
