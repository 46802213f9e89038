package consensus

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/hashicorp/raft"
)

// Config configures one server of a region's Raft group. Zero values take
// the defaults documented on each field.
type Config struct {
	// NodeID is the server's Raft ID, unique in the region and stable
	// across restarts (the node's name).
	NodeID string
	// Region is the region whose ledger the group agrees on.
	Region string
	// DataDir holds raft.db (the bolt log and stable store) and the
	// snapshots/ directory. It is created if missing.
	DataDir string
	// StreamLayer is the network Raft and the forwarding RPC share:
	// netsim.NewRaftStreamLayer in simulations, NewTCPStreamLayer in
	// production. Its Addr() is the address other servers dial. The server
	// owns it from Open on and closes it, also when Open fails.
	StreamLayer raft.StreamLayer

	// BootstrapExpect is how many servers of the region must have been
	// observed (ObserveServer) before the group bootstraps itself, as
	// Consul's and Nomad's bootstrap_expect. 0 never bootstraps: the
	// server waits to be added by an existing group's leader. 1 bootstraps
	// a single-server group at once. At most MaxVoters.
	BootstrapExpect int
	// MaxVoters caps the voters of the group: 1, 3 or 5 (default 3).
	// Further servers join as non-voters and replace failed voters.
	MaxVoters int

	// SnapshotThreshold is how many log entries since the last snapshot
	// trigger a new one (default 8192).
	SnapshotThreshold uint64
	// TrailingLogs is how many entries are kept after a snapshot, so that
	// a follower a little behind catches up from the log rather than from
	// a snapshot (default 10240).
	TrailingLogs uint64
	// SnapshotInterval is how often the threshold is checked (default
	// 120 s; Raft staggers it randomly up to twice that).
	SnapshotInterval time.Duration
	// SnapshotRetain is how many snapshots are kept on disk (default 2).
	SnapshotRetain int

	// HeartbeatTimeout, ElectionTimeout, LeaderLeaseTimeout and
	// CommitTimeout tune Raft (defaults: Raft's, 1 s, 1 s, 500 ms, 50 ms).
	HeartbeatTimeout   time.Duration
	ElectionTimeout    time.Duration
	LeaderLeaseTimeout time.Duration
	CommitTimeout      time.Duration

	// ReconcileInterval is how often the leader reconciles the Raft
	// membership with what gossip reports (default 2 s); an observed change
	// triggers a reconcile at once.
	ReconcileInterval time.Duration
	// DeadServerTimeout is how long gossip must report a server failed
	// before the leader replaces it (a voter, by a healthy non-voter) or
	// removes it (a non-voter) (default 30 s).
	DeadServerTimeout time.Duration
	// ServerStabilizationTime is how long a non-voter must be alive and
	// caught up before it is promoted (default 10 s, as Consul's autopilot).
	ServerStabilizationTime time.Duration
	// MaxNonvoterLag is how many log entries a non-voter may trail the
	// leader by and still count as caught up (default 250).
	MaxNonvoterLag uint64

	// HoldTimeout is how long a proposal or consistent read waits for a
	// leader to exist before it fails with ErrNoLeader (default 7 s, as
	// Consul's rpc_hold_timeout).
	HoldTimeout time.Duration
	// MaxEntryCommands and MaxEntryBytes cap one log entry of packed
	// proposals (defaults 512 commands, 1 MiB). A single proposal above
	// either cap fails with ErrTooLarge.
	MaxEntryCommands int
	MaxEntryBytes    int
	// MaxInflightEntries bounds the entries the leader has handed to Raft
	// and not yet seen applied (default 2: one being committed while the
	// next is written). Proposals arriving meanwhile wait and are packed
	// into the next entry, which is what makes one disk sync commit many
	// commands; a large value sends each proposal on its own as it
	// arrives, and pays a sync, a bolt transaction and a round of RPCs for
	// each (docs/consensus.md, Benchmarks, has the measurements).
	MaxInflightEntries int

	// ExpireInterval is how often the leader checks for escrows and
	// allocation leases past their expiry and proposes Expire (default 1 s).
	ExpireInterval time.Duration
	// PruneInterval is how often the leader proposes Prune (default 1 h);
	// PruneAfter is how long history is kept (default 72 h).
	PruneInterval time.Duration
	PruneAfter    time.Duration

	// Logger receives the server's logs; nil discards them.
	Logger *slog.Logger
	// RaftLogLevel sets what Raft itself logs through Logger: "" or "off"
	// (the default), "error", "warn", "info", "debug" or "trace".
	RaftLogLevel string
	// Clock stamps commands on the leader; nil is time.Now (which inside a
	// testing/synctest bubble is virtual time).
	Clock func() time.Time
	// NoSync skips fsync after each log write. It loses acknowledged
	// writes on power loss: for tests only.
	NoSync bool
}

// maxEntryBytesLimit keeps an entry (and a forwarded proposal) well below
// the RPC frame limit.
const maxEntryBytesLimit = 8 << 20

func (c Config) withDefaults() (Config, error) {
	if err := checkID("NodeID", c.NodeID); err != nil {
		return c, fmt.Errorf("consensus config: %w", err)
	}
	if err := checkID("Region", c.Region); err != nil {
		return c, fmt.Errorf("consensus config: %w", err)
	}
	if c.DataDir == "" {
		return c, fmt.Errorf("consensus config: %w", invalid("DataDir", "must be set"))
	}
	if c.StreamLayer == nil {
		return c, fmt.Errorf("consensus config: %w", invalid("StreamLayer", "must be set"))
	}
	if c.MaxVoters == 0 {
		c.MaxVoters = 3
	}
	if c.MaxVoters != 1 && c.MaxVoters != 3 && c.MaxVoters != 5 {
		return c, fmt.Errorf("consensus config: %w", invalid("MaxVoters", "must be 1, 3 or 5, got %d", c.MaxVoters))
	}
	if c.BootstrapExpect < 0 || c.BootstrapExpect > c.MaxVoters {
		return c, fmt.Errorf("consensus config: %w", invalid("BootstrapExpect", "must be between 0 and MaxVoters (%d), got %d", c.MaxVoters, c.BootstrapExpect))
	}
	def := raft.DefaultConfig()
	setU := func(v *uint64, d uint64) {
		if *v == 0 {
			*v = d
		}
	}
	setD := func(name string, v *time.Duration, d time.Duration) error {
		if *v < 0 {
			return invalid(name, "must not be negative, got %v", *v)
		}
		if *v == 0 {
			*v = d
		}
		return nil
	}
	setU(&c.SnapshotThreshold, def.SnapshotThreshold)
	setU(&c.TrailingLogs, def.TrailingLogs)
	setU(&c.MaxNonvoterLag, 250)
	for _, d := range []struct {
		name string
		v    *time.Duration
		def  time.Duration
	}{
		{"SnapshotInterval", &c.SnapshotInterval, def.SnapshotInterval},
		{"HeartbeatTimeout", &c.HeartbeatTimeout, def.HeartbeatTimeout},
		{"ElectionTimeout", &c.ElectionTimeout, def.ElectionTimeout},
		{"LeaderLeaseTimeout", &c.LeaderLeaseTimeout, def.LeaderLeaseTimeout},
		{"CommitTimeout", &c.CommitTimeout, def.CommitTimeout},
		{"ReconcileInterval", &c.ReconcileInterval, 2 * time.Second},
		{"DeadServerTimeout", &c.DeadServerTimeout, 30 * time.Second},
		{"ServerStabilizationTime", &c.ServerStabilizationTime, 10 * time.Second},
		{"HoldTimeout", &c.HoldTimeout, 7 * time.Second},
		{"ExpireInterval", &c.ExpireInterval, time.Second},
		{"PruneInterval", &c.PruneInterval, time.Hour},
		{"PruneAfter", &c.PruneAfter, 72 * time.Hour},
	} {
		if err := setD(d.name, d.v, d.def); err != nil {
			return c, fmt.Errorf("consensus config: %w", err)
		}
	}
	if c.SnapshotRetain == 0 {
		c.SnapshotRetain = 2
	}
	if c.SnapshotRetain < 1 {
		return c, fmt.Errorf("consensus config: %w", invalid("SnapshotRetain", "must be at least 1, got %d", c.SnapshotRetain))
	}
	if c.MaxEntryCommands == 0 {
		c.MaxEntryCommands = 512
	}
	if c.MaxEntryBytes == 0 {
		c.MaxEntryBytes = 1 << 20
	}
	if c.MaxInflightEntries == 0 {
		c.MaxInflightEntries = 2
	}
	if c.MaxInflightEntries < 1 || c.MaxInflightEntries > 4096 {
		return c, fmt.Errorf("consensus config: %w", invalid("MaxInflightEntries", "must be between 1 and 4096, got %d", c.MaxInflightEntries))
	}
	if c.MaxEntryCommands < 1 {
		return c, fmt.Errorf("consensus config: %w", invalid("MaxEntryCommands", "must be at least 1, got %d", c.MaxEntryCommands))
	}
	if c.MaxEntryBytes < 1024 || c.MaxEntryBytes > maxEntryBytesLimit {
		return c, fmt.Errorf("consensus config: %w", invalid("MaxEntryBytes", "must be between 1 KiB and %d bytes, got %d", maxEntryBytesLimit, c.MaxEntryBytes))
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Clock == nil {
		c.Clock = time.Now
	}
	if _, err := parseRaftLogLevel(c.RaftLogLevel); err != nil {
		return c, fmt.Errorf("consensus config: %w", invalid("RaftLogLevel", "%v", err))
	}
	return c, nil
}
