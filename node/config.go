package node

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"time"

	"github.com/meridian-mesh/meridian/node/runner"
	"github.com/meridian-mesh/meridian/placement"
)

// Config configures an Agent. Name, Region, DataDir and Network are
// required; everything else has a default a single-machine cluster works
// with.
type Config struct {
	// Name is the node's name, unique in the mesh and stable across
	// restarts: it is the node's gossip name, Raft server ID and ledger ID.
	Name string
	// Region is the region the node runs in.
	Region string
	// Server makes the node a Raft voter candidate of its region; the
	// region's leader runs placement and the market. A node that is not a
	// server is a worker: it reports capacity and runs allocations.
	Server bool
	// BootstrapExpect is how many servers of the region must be seen in
	// gossip before the region's Raft group bootstraps (servers only; 0
	// means join an existing group).
	BootstrapExpect int
	// MaxVoters caps the voters of the region's group (1, 3 or 5; default 3).
	MaxVoters int
	// DataDir holds the node's Raft log, snapshots, identity and task
	// output. It is created if missing.
	DataDir string

	// Resources is the capacity the node offers; zero offers none (a
	// server that only coordinates).
	Resources placement.Resources
	// PricePerHour is what the whole node costs, US dollars per hour.
	PricePerHour float64
	// GPUType names the node's accelerator model, if any.
	GPUType string

	// Join lists gossip addresses ("host:port") of nodes already in the
	// mesh; the agent retries them until one answers.
	Join []string
	// Network binds the node's gossip, Raft, libp2p and node-to-node HTTP:
	// NetsimNetwork in a simulation, TCPNetwork on a real machine.
	Network Network
	// GossipKey encrypts gossip (16, 24 or 32 bytes); nil sends it in the
	// clear, which only suits a simulation or a trusted network.
	GossipKey []byte
	// ACLToken, when set, is required on every API request but health.
	ACLToken string
	// Market lets the region's leader buy and sell capacity from and to
	// other regions.
	Market bool
	// Version is reported in gossip and /v1/health.
	Version string
	// BridgeMetrics sends memberlist's and Raft's metrics (which go through
	// go-metrics' process-wide sink) to /metrics. The sink is process-wide,
	// so the first agent that asks installs it for all. Leave it off inside
	// a testing/synctest bubble: the sink's summaries would keep the
	// bubble's virtual time and spin once real time resumes.
	BridgeMetrics bool

	// NoSync skips the fsync after each Raft log write (servers only): a
	// crash of the machine, not only of the process, can then lose
	// placements already acknowledged. It is for simulations, whose disk is
	// not under test: inside a testing/synctest bubble a sync takes no
	// virtual time but holds the bubble's clock for its wall time.
	NoSync bool

	// Logger receives the agent's logs; nil discards them.
	Logger *slog.Logger
	// RaftLogLevel sets what Raft logs through Logger ("" is off).
	RaftLogLevel string
	// Seed seeds the agent's own randomness (retry jitter, tie choices).
	Seed int64
	// Tuning sets the agent's intervals; zero fields take defaults.
	Tuning Tuning
}

// Tuning holds the agent's intervals and limits. The defaults suit both a
// real cluster and a simulated one; tests shorten none of them, because
// virtual time makes waiting free.
type Tuning struct {
	// PlaceInterval is how often the region leader retries pending jobs
	// (default 2 s); a submission triggers a pass at once.
	PlaceInterval time.Duration
	// SyncInterval is how often the region leader reconciles the ledger's
	// nodes with gossip (default 2 s); a gossip event triggers a pass.
	SyncInterval time.Duration
	// PollInterval is how long a node with capacity waits before asking
	// its region's leader for its allocations again after a failed ask
	// (default 1 s).
	PollInterval time.Duration
	// WorkWait is how long the leader holds a node's ask for its
	// allocations while they do not change (a blocking query, as Nomad's
	// clients make): a node hears of a new allocation as soon as it is
	// committed, without asking every PollInterval (default 30 s).
	WorkWait time.Duration
	// CapacityInterval is the fastest a node republishes its capacity in
	// gossip (default 5 s): every record costs the whole mesh bandwidth.
	CapacityInterval time.Duration
	// TradeRetry is how long the leader waits before offering a job it
	// could not place to the market again (default 10 s).
	TradeRetry time.Duration
	// OffloadMargin, when positive, lets the leader offer a job it could
	// place at home to the market first if another region asks less by
	// that fraction (0.25 = 25 %, per its gossiped ask), capped at what home
	// would cost; if no seller bids under the cap, the job is placed at home
	// on the next pass. Zero (the default) or negative: never offload for
	// price. It is off by default because, measured, it did not pay: on the
	// world benchmark's day it left the cost as it was (1.276 x the LP
	// bound, 1.273 without), and in the demo it delayed offered jobs and
	// sent more of them to regions whose gossiped RTT estimate was
	// optimistic (SLO attainment 97.1 % against 98.5 %).
	OffloadMargin float64
	// LocalReserve is the share of the region's compute (0–1) the leader
	// keeps for work only home can serve: a job that another region could
	// also serve (within its latency SLO and price limit, per gossip) and
	// that would leave less than this share free is offered to the market
	// first, and placed at home on the next pass if no region takes it.
	// Interactive work near its users has nowhere else to go when home is
	// full; batch work does. Measured on the world benchmark (docs/
	// benchmark.md), keeping half of the capacity so is what brings the mesh
	// close to the LP bound. Zero means the default, 0.5; negative turns it
	// off (every job home can place is placed at home).
	LocalReserve float64
	// LeaseReach is the farthest (RTT from this region) a lease the demand
	// loop buys ahead of a forecast deficit may be (default 100 ms, the
	// tightest latency SLO of interactive work in the world benchmark's
	// mix). A lease holds capacity for this region's own demand, most of
	// which must stay near its users; capacity farther away serves only
	// batch work, which the market places anywhere on demand, so a lease
	// there only holds capacity that other regions' jobs could use.
	// Measured on the world benchmark (docs/market.md): unlimited, regions
	// leased whole nodes across oceans and drew 7 jobs on them; three hours
	// cost 1.139–1.164 x the LP bound with 91.7–93.4 % of the jobs placed,
	// and with 100 ms 1.120–1.144 and 93.5–94.8 % (the day: 1.162–1.165
	// and 91.6–91.7 % before, 1.143 and 93.05 % after).
	LeaseReach time.Duration
	// NoPreempt turns preemption off. By default a job no node has room
	// for, and that cannot go elsewhere now (no region has room for it per
	// gossip, or the market did not take it), may stop running
	// allocations of lower priority that can move — the region's own jobs
	// another region has room for, and other regions' jobs it runs — and
	// take their room; their jobs are placed again (see node/preempt.go).
	// If home cannot make room either, the job goes to the market asking
	// sellers to make room the same way (market.TradeUrgent), and this
	// region, as a seller, does so for other regions' such jobs. NoPreempt
	// turns off both sides.
	NoPreempt bool
	// MaxAttempts is how many allocations of a job may fail before the job
	// is failed for good (default 3).
	MaxAttempts int
	// SubmitWait is how long a submission waits for the job's first
	// placement pass before answering with the job still pending (default
	// 2 s). The job is committed either way.
	SubmitWait time.Duration
	// RequestTimeout bounds a node-to-node call (default 10 s).
	RequestTimeout time.Duration
	// DeadServerTimeout is how long a server must be failed before the
	// region replaces it in Raft (default 30 s).
	DeadServerTimeout time.Duration
	// KillGrace is how long an exec task has to exit after SIGTERM (default
	// 5 s).
	KillGrace time.Duration
	// DemandInterval is the bucket of the leader's demand series and the
	// period of its forecast → allocate-ahead step (default 5 min; it must
	// divide a day).
	DemandInterval time.Duration
}

// DefaultLocalReserve is Tuning.LocalReserve's default.
const DefaultLocalReserve = 0.5

// DefaultLeaseReach is Tuning.LeaseReach's default.
const DefaultLeaseReach = 100 * time.Millisecond

func (t Tuning) withDefaults() Tuning {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&t.PlaceInterval, 2*time.Second)
	def(&t.SyncInterval, 2*time.Second)
	def(&t.PollInterval, time.Second)
	def(&t.WorkWait, 30*time.Second)
	def(&t.CapacityInterval, 5*time.Second)
	def(&t.TradeRetry, 10*time.Second)
	def(&t.LeaseReach, DefaultLeaseReach)
	if t.LocalReserve == 0 {
		t.LocalReserve = DefaultLocalReserve
	}
	def(&t.SubmitWait, 2*time.Second)
	def(&t.RequestTimeout, 10*time.Second)
	def(&t.DeadServerTimeout, 30*time.Second)
	def(&t.KillGrace, 5*time.Second)
	def(&t.DemandInterval, 5*time.Minute)
	if t.MaxAttempts <= 0 {
		t.MaxAttempts = 3
	}
	return t
}

// validate checks cfg and fills its defaults. Errors name the field.
func (cfg *Config) validate() error {
	switch {
	case cfg.Name == "":
		return errors.New("node: config field \"name\" is required")
	case cfg.Region == "":
		return errors.New("node: config field \"region\" is required")
	case cfg.DataDir == "":
		return errors.New("node: config field \"data_dir\" is required")
	case cfg.Network == nil:
		return errors.New("node: config field \"network\" is required")
	case cfg.BootstrapExpect < 0:
		return fmt.Errorf("node: config field \"bootstrap_expect\": %d is negative", cfg.BootstrapExpect)
	case cfg.BootstrapExpect > 0 && !cfg.Server:
		return errors.New("node: config field \"bootstrap_expect\" only applies to servers")
	case cfg.MaxVoters != 0 && cfg.MaxVoters != 1 && cfg.MaxVoters != 3 && cfg.MaxVoters != 5:
		return fmt.Errorf("node: config field \"max_voters\": %d, want 1, 3 or 5", cfg.MaxVoters)
	case cfg.PricePerHour < 0:
		return fmt.Errorf("node: config field \"price_per_hour\": %v is negative", cfg.PricePerHour)
	case math.IsNaN(cfg.Tuning.OffloadMargin) || math.IsInf(cfg.Tuning.OffloadMargin, 0):
		return fmt.Errorf("node: config field \"tuning.offload_margin\": %v is not a number", cfg.Tuning.OffloadMargin)
	case math.IsNaN(cfg.Tuning.LocalReserve) || math.IsInf(cfg.Tuning.LocalReserve, 0) || cfg.Tuning.LocalReserve >= 1:
		return fmt.Errorf("node: config field \"tuning.local_reserve\": %v, want a share below 1 (0 for the default, negative for none)", cfg.Tuning.LocalReserve)
	}
	if !cfg.Resources.IsZero() {
		n := placement.Node{ID: cfg.Name, Region: cfg.Region, Total: cfg.Resources, Free: cfg.Resources,
			PricePerHour: cfg.PricePerHour, GPUType: cfg.GPUType}
		if err := n.Validate(); err != nil {
			return fmt.Errorf("node: config resources: %w", err)
		}
	}
	if cfg.MaxVoters == 0 {
		cfg.MaxVoters = 3
	}
	if cfg.BootstrapExpect > cfg.MaxVoters {
		return fmt.Errorf("node: config field \"bootstrap_expect\": %d exceeds max_voters %d", cfg.BootstrapExpect, cfg.MaxVoters)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	cfg.Tuning = cfg.Tuning.withDefaults()
	return nil
}

// driverOf maps a job's task driver to the runner's.
func driverOf(d string) string {
	if d == runner.DriverExec {
		return runner.DriverExec
	}
	return runner.DriverSim
}
