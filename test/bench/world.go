package bench

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/meridian-mesh/meridian/netsim"
	"github.com/meridian-mesh/meridian/placement"
	"github.com/meridian-mesh/meridian/placement/workload"
)

// World is what every scheduler of a run shares: the regions, the measured
// RTTs between them, each region's price and capacity, and the run's span.
// It is immutable once Load returns it and safe for concurrent reads.
type World struct {
	cfg        Config
	regions    []string
	topology   *netsim.Topology
	rtt        *placement.RTTMatrix
	price      map[string]float64
	instance   workload.Price
	throughput workload.Throughput
	node       placement.Resources
	gpus       int
	meanTasks  float64 // the trace's mean request size in tasks
}

// Load checks cfg, fills its defaults and builds the World: the regions
// (those given, or every region of the topology with a price for the
// instance), their RTTs and prices, and the capacity of a node.
func Load(cfg Config) (*World, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	priced, err := cfg.Prices.RegionsWithPrice(cfg.Instance)
	if err != nil {
		return nil, fmt.Errorf("-instance %q in %s: %w", cfg.Instance, cfg.Prices.Source(), err)
	}
	regions := cfg.Regions
	if len(regions) == 0 {
		for _, r := range priced {
			if cfg.Topology.HasRegion(r) {
				regions = append(regions, r)
			}
		}
		if len(regions) == 0 {
			return nil, fmt.Errorf("-regions: no region of %s has a price for %s in %s (priced in: %s)",
				cfg.TopologySource, cfg.Instance, cfg.Prices.Source(), strings.Join(priced, ", "))
		}
	}
	regions = slices.Clone(regions)
	slices.Sort(regions)
	w := &World{cfg: cfg, regions: regions, price: map[string]float64{}, rtt: placement.NewRTTMatrix(),
		throughput: workload.DefaultThroughput()}
	for _, r := range regions {
		if !cfg.Topology.HasRegion(r) {
			return nil, fmt.Errorf("-regions: region %q is not in the topology (%s; it has %s)", r, cfg.TopologySource, strings.Join(cfg.Topology.Regions(), ", "))
		}
		p, err := cfg.Prices.OnDemand(cfg.Instance, r)
		if err != nil {
			return nil, fmt.Errorf("-regions: region %q: %w (%s has a price in: %s)", r, err, cfg.Instance, strings.Join(priced, ", "))
		}
		w.price[r] = p
		if _, err := workload.UTCOffset(r); err != nil {
			return nil, fmt.Errorf("-regions: region %q has no known time zone, so its daily envelope cannot be placed: %w", r, err)
		}
	}
	if w.topology, err = cfg.Topology.Subset(regions...); err != nil {
		return nil, fmt.Errorf("-regions: %w", err)
	}
	for _, a := range regions {
		for _, b := range regions {
			d, err := w.topology.RTT(a, b)
			if err != nil {
				return nil, fmt.Errorf("-topology: %w", err)
			}
			if err := w.rtt.Set(a, b, d); err != nil {
				return nil, fmt.Errorf("-topology: RTT %s→%s: %w", a, b, err)
			}
		}
	}
	w.instance, _ = cfg.Prices.Lookup(cfg.Instance, regions[0])
	w.gpus = w.instance.AcceleratorCount
	if w.gpus < 1 {
		return nil, fmt.Errorf("-instance %q: %s lists %d accelerators; the throughput model needs at least one GPU", cfg.Instance, cfg.Prices.Source(), w.gpus)
	}
	w.node = w.throughput.NodeCapacity(w.gpus)
	if w.meanTasks, err = meanTasksPerRequest(cfg.Trace, w.throughput); err != nil {
		return nil, err
	}
	return w, nil
}

// Config returns the run's configuration with its defaults filled in.
func (w *World) Config() Config { return w.cfg }

// Regions returns the run's regions, sorted.
func (w *World) Regions() []string { return slices.Clone(w.regions) }

// Topology returns the topology restricted to the run's regions.
func (w *World) Topology() *netsim.Topology { return w.topology }

// RTTs returns the measured RTT matrix as placement's estimator.
func (w *World) RTTs() *placement.RTTMatrix { return w.rtt }

// RTT returns the measured round-trip time from region a to region b.
func (w *World) RTT(a, b string) time.Duration {
	d, _ := w.rtt.RegionRTT(a, b)
	return d
}

// Price returns the on-demand price of one node in region r, in US dollars
// per hour.
func (w *World) Price(r string) float64 { return w.price[r] }

// Instance returns the price-list row of the instance type in the first
// region (its accelerator and count are the same everywhere).
func (w *World) Instance() workload.Price { return w.instance }

// Throughput returns the model that turns tokens into tasks.
func (w *World) Throughput() workload.Throughput { return w.throughput }

// NodeCapacity returns one node's capacity.
func (w *World) NodeCapacity() placement.Resources { return w.node }

// NodesPerRegion returns the nodes each region has: its servers and
// workers, every one an instance.
func (w *World) NodesPerRegion() int { return w.cfg.Servers + w.cfg.Workers }

// RegionCompute returns a region's compute capacity in tasks per hour.
func (w *World) RegionCompute(r string) float64 {
	if _, ok := w.price[r]; !ok {
		return 0
	}
	return float64(w.NodesPerRegion()) * w.node.ComputePerHour
}

// Start returns when the run's first window opens.
func (w *World) Start() time.Time { return w.cfg.Start }

// End returns when the run's last window closes (jobs of that window run
// on past it for their duration).
func (w *World) End() time.Time { return w.cfg.Start.Add(w.cfg.Length) }

// PenaltyPerNodeHour is what an unserved node-hour of work costs: the
// penalty factor times the dearest region's price.
func (w *World) PenaltyPerNodeHour() float64 {
	m := 0.0
	for _, p := range w.price {
		m = max(m, p)
	}
	return w.cfg.PenaltyFactor * m
}

// Nodes returns a fresh node list of the whole world, every node free:
// "<region>-<i>" for i below NodesPerRegion, named as node/simcluster names
// its agents, in region then ordinal order.
func (w *World) Nodes() []placement.Node {
	var nodes []placement.Node
	for _, r := range w.regions {
		for i := range w.NodesPerRegion() {
			nodes = append(nodes, placement.Node{
				ID: fmt.Sprintf("%s-%d", r, i), Region: r,
				Total: w.node, Free: w.node,
				PricePerHour: w.price[r], GPUType: w.instance.Accelerator,
			})
		}
	}
	return nodes
}

// feasible reports whether region r may serve job j: its RTT from the
// job's origin is within the job's SLO and its price within the job's
// limit. It is the LP's and the reports' notion of feasibility, the same
// as placement's latency-slo and max-price filters.
func (w *World) feasible(j *Job, r string) bool {
	if j.MaxPricePerHour > 0 && w.price[r] > j.MaxPricePerHour {
		return false
	}
	if j.LatencySLO > 0 && w.RTT(j.Origin, r) > j.LatencySLO {
		return false
	}
	return true
}
