// Package consensus runs a region's Raft group: hashicorp/raft on
// raft-boltdb, whose replicated state machine is the region's ledger of
// nodes, allocations, owned jobs, escrows, leases and trades. A placement
// exists once its command is committed in the ledger.
//
// The ledger (Ledger, Apply, the Command types) is pure and deterministic:
// it never reads a clock, takes its time from the commands, and checks its
// invariants (no node overcommitted by allocations and escrows, at most one
// live placement per job, no escrow past its expiry) in every replica.
//
// A Server is one server of the group: it stores the log and snapshots
// under its data directory, packs concurrent proposals into shared log
// entries, forwards proposals and consistent reads from followers to the
// leader over the same network layer as Raft, bootstraps and reconciles
// the group's membership from what gossip reports (ObserveServer,
// ServerLeft), and serves stale and linearizable reads.
//
// See docs/consensus.md for the design, the log format and the figures.
package consensus
