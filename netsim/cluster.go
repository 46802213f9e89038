package netsim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
)

// NodeSpec describes one node of a Cluster.
type NodeSpec struct {
	// Name is "<region>-<i>", e.g. "us-east-1-0".
	Name string
	// Region is the node's region.
	Region string
	// Index is the node's position among all nodes (start order); Ordinal
	// its position within its region.
	Index, Ordinal int
	// DataDir is the node's own directory; it survives Crash and Restart.
	DataDir string
	// Seed is a per-node seed derived from the cluster seed, for the
	// node's own randomness.
	Seed int64
}

// StartFunc starts a node's components on its endpoint and returns what
// stops them. It is called again with the same spec (and data directory)
// after a Restart. ctx is the context given to NewCluster or Restart.
type StartFunc func(ctx context.Context, ep *Endpoint, spec NodeSpec) (io.Closer, error)

// ClusterConfig configures a Cluster.
type ClusterConfig struct {
	// Topology is the network's topology; nil means WorldTopology().
	Topology *Topology
	// Regions are the regions to populate, in start order; nil means every
	// region of the topology.
	Regions []string
	// NodesPerRegion is the number of nodes in each region (≥ 1).
	NodesPerRegion int
	// Seed seeds the network and the nodes' seeds.
	Seed int64
	// Jitter is the network's Config.Jitter.
	Jitter float64
	// Logger receives fault and lifecycle logs; nil discards.
	Logger *slog.Logger
	// DataDir is the root of the nodes' data directories (one
	// subdirectory per node). Empty means a fresh temporary directory
	// that Close removes.
	DataDir string
	// Start starts a node's components; nil makes a cluster of bare
	// endpoints.
	Start StartFunc
}

// Cluster is R regions × M nodes on one Network, in one process. Tests, the
// CLI and benchmarks start their nodes through it.
type Cluster struct {
	net     *Network
	log     *slog.Logger
	start   StartFunc
	ctx     context.Context
	rootDir string
	ownDir  bool
	specs   []NodeSpec

	opMu    sync.Mutex // serializes Crash, Restart and Close
	mu      sync.Mutex // guards running and closed
	running map[string]io.Closer
	closed  bool
}

// NewCluster creates the network and its endpoints and starts every node in
// order. If a node fails to start, the nodes started so far are stopped and
// the error names the node.
func NewCluster(ctx context.Context, cfg ClusterConfig) (*Cluster, error) {
	if cfg.NodesPerRegion < 1 {
		return nil, fmt.Errorf("netsim: cluster NodesPerRegion %d: want at least 1", cfg.NodesPerRegion)
	}
	topo := cfg.Topology
	if topo == nil {
		topo = WorldTopology()
	}
	regions := cfg.Regions
	if regions == nil {
		regions = topo.Regions()
	}
	if len(regions) == 0 {
		return nil, errors.New("netsim: cluster Regions: empty")
	}
	seen := map[string]bool{}
	for _, r := range regions {
		if !topo.HasRegion(r) {
			return nil, fmt.Errorf("netsim: cluster Regions: %q: %w", r, ErrUnknownRegion)
		}
		if seen[r] {
			return nil, fmt.Errorf("netsim: cluster Regions: %q given twice", r)
		}
		seen[r] = true
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	n, err := New(Config{Topology: topo, Seed: cfg.Seed, Jitter: cfg.Jitter, Logger: log})
	if err != nil {
		return nil, err
	}
	c := &Cluster{net: n, log: log, start: cfg.Start, ctx: ctx, rootDir: cfg.DataDir, running: map[string]io.Closer{}}
	if c.rootDir == "" {
		dir, err := os.MkdirTemp("", "netsim-cluster-")
		if err != nil {
			_ = n.Close()
			return nil, fmt.Errorf("netsim: cluster data dir: %w", err)
		}
		c.rootDir, c.ownDir = dir, true
	}
	for _, r := range regions {
		for i := range cfg.NodesPerRegion {
			name := fmt.Sprintf("%s-%d", r, i)
			if _, err := n.AddEndpoint(name, r); err != nil {
				_ = c.Close()
				return nil, err
			}
			c.specs = append(c.specs, NodeSpec{
				Name:    name,
				Region:  r,
				Index:   len(c.specs),
				Ordinal: i,
				DataDir: filepath.Join(c.rootDir, name),
				Seed:    cfg.Seed ^ int64(len(c.specs)+1)*0x5851f42d4c957f2d,
			})
		}
	}
	for _, spec := range c.specs {
		if err := c.startNode(ctx, spec); err != nil {
			_ = c.Close()
			return nil, err
		}
	}
	return c, nil
}

func (c *Cluster) startNode(ctx context.Context, spec NodeSpec) error {
	if err := os.MkdirAll(spec.DataDir, 0o755); err != nil {
		return fmt.Errorf("netsim: node %s data dir: %w", spec.Name, err)
	}
	if c.start == nil {
		return nil
	}
	ep, _ := c.net.Endpoint(spec.Name)
	closer, err := c.start(ctx, ep, spec)
	if err != nil {
		return fmt.Errorf("netsim: start node %s: %w", spec.Name, err)
	}
	if closer == nil {
		return fmt.Errorf("netsim: start node %s: StartFunc returned a nil io.Closer", spec.Name)
	}
	c.mu.Lock()
	c.running[spec.Name] = closer
	c.mu.Unlock()
	c.log.Info("netsim node started", "node", spec.Name)
	return nil
}

// Network returns the cluster's network.
func (c *Cluster) Network() *Network { return c.net }

// Nodes returns the specs of all nodes in start order.
func (c *Cluster) Nodes() []NodeSpec { return slices.Clone(c.specs) }

// Node returns the spec of the node named name.
func (c *Cluster) Node(name string) (NodeSpec, bool) {
	for _, s := range c.specs {
		if s.Name == name {
			return s, true
		}
	}
	return NodeSpec{}, false
}

// Endpoint returns the endpoint of the node named name, or nil.
func (c *Cluster) Endpoint(name string) *Endpoint {
	ep, _ := c.net.Endpoint(name)
	return ep
}

// Component returns what the StartFunc returned for a running node, or nil
// for a crashed (or unknown) node.
func (c *Cluster) Component(name string) io.Closer {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.running[name]
}

// Crash crashes a node as a process crash would: the network crashes its
// endpoint (connections reset, traffic dropped), then its components are
// closed, so their in-memory state is gone; the data directory stays.
func (c *Cluster) Crash(name string) error {
	if _, ok := c.Node(name); !ok {
		return fmt.Errorf("netsim: crash %q: %w", name, ErrUnknownEndpoint)
	}
	c.opMu.Lock()
	defer c.opMu.Unlock()
	if err := c.net.Apply(Fault{Kind: FaultCrash, A: name}); err != nil {
		return err
	}
	c.mu.Lock()
	closer := c.running[name]
	delete(c.running, name)
	c.mu.Unlock()
	if closer != nil {
		if err := closer.Close(); err != nil {
			return fmt.Errorf("netsim: crash %s: close components: %w", name, err)
		}
	}
	return nil
}

// Restart brings a crashed node back: the endpoint restarts and the
// StartFunc runs again with the same spec and data directory.
func (c *Cluster) Restart(ctx context.Context, name string) error {
	spec, ok := c.Node(name)
	if !ok {
		return fmt.Errorf("netsim: restart %q: %w", name, ErrUnknownEndpoint)
	}
	c.opMu.Lock()
	defer c.opMu.Unlock()
	c.mu.Lock()
	_, running := c.running[name]
	closed := c.closed
	c.mu.Unlock()
	if closed {
		return fmt.Errorf("netsim: restart %s: %w", name, ErrNetworkClosed)
	}
	if running {
		return fmt.Errorf("netsim: restart %s: node is running; crash it first", name)
	}
	if err := c.net.Apply(Fault{Kind: FaultRestart, A: name}); err != nil {
		return err
	}
	return c.startNode(ctx, spec)
}

// Apply applies a fault to the cluster: crash and restart act on the node
// (see Crash and Restart, with the context given to NewCluster), every
// other fault goes to the network.
func (c *Cluster) Apply(f Fault) error {
	switch f.Kind {
	case FaultCrash:
		return c.Crash(f.A)
	case FaultRestart:
		return c.Restart(c.ctx, f.A)
	}
	return c.net.Apply(f)
}

// Close stops every running node (in reverse start order), closes the
// network, and removes the data directory if the cluster created it.
func (c *Cluster) Close() error {
	c.opMu.Lock()
	defer c.opMu.Unlock()
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	c.mu.Unlock()
	var errs []error
	for i := len(c.specs) - 1; i >= 0; i-- {
		c.mu.Lock()
		closer := c.running[c.specs[i].Name]
		delete(c.running, c.specs[i].Name)
		c.mu.Unlock()
		if closer != nil {
			if err := closer.Close(); err != nil {
				errs = append(errs, fmt.Errorf("netsim: stop node %s: %w", c.specs[i].Name, err))
			}
		}
	}
	if err := c.net.Close(); err != nil {
		errs = append(errs, err)
	}
	if c.ownDir {
		if err := os.RemoveAll(c.rootDir); err != nil {
			errs = append(errs, fmt.Errorf("netsim: remove cluster data dir: %w", err))
		}
	}
	return errors.Join(errs...)
}

// CloserFunc adapts a function to io.Closer, for StartFuncs.
type CloserFunc func() error

// Close calls f.
func (f CloserFunc) Close() error { return f() }
