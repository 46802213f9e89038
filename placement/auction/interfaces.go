package auction

import (
	"context"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/meridian-mesh/meridian/placement"
)

// Ledger is the region's replicated ledger as the market uses it. node/
// implements it on its region's Raft group: Propose wraps the ops in one log
// entry whose FSM applies them as the LedgerOp docs say, escrows and
// allocations counting against the same free capacity as local placements.
type Ledger interface {
	// Propose commits ops, in order, and returns one result per op once
	// they are applied. The Driver calls it from its own worker goroutines,
	// possibly several at once; it blocks until the ops are applied or ctx
	// ends. An error means the batch as a whole failed (lost leadership or
	// quorum, timeout): its ops may or may not have been committed.
	Propose(ctx context.Context, ops []LedgerOp) ([]OpResult, error)
	// Inventory returns the region's nodes, Free net of allocations and of
	// escrows live at now, from the local replica's applied state. The
	// Driver calls it from its loop goroutine for each CallForBids, so it
	// must not wait on the network. The slice belongs to the caller.
	Inventory(now time.Time) ([]placement.Node, error)
	// MarketSnapshot returns the market's durable state. The Driver calls it
	// from its loop goroutine when the node becomes leader; node/ must call
	// SetLeadership only once the new leader has applied its whole log
	// (raft's Barrier), so the snapshot is complete.
	MarketSnapshot() (MarketSnapshot, error)
}

// RunningWork is implemented by a Ledger whose region makes room for
// buyers by moving its running work elsewhere (seller-side preemption,
// Item.Preempt). The Driver asks it only for calls with such items and
// keeps, of what it returns, the work gossip shows another region could
// serve.
type RunningWork interface {
	// Preemptible returns the region's live allocations of jobs of
	// priority below below that a hold may preempt (not leases nor drawn
	// on one), with their jobs' terms, from the local replica's applied
	// state. Called from the Driver's loop goroutine: it must not wait on
	// the network.
	Preemptible(below int) ([]Movable, error)
}

// Movable is running work a seller may stop to make room for an item that
// asks for preemption.
type Movable struct {
	// AllocID and NodeID name the allocation and the node it runs on.
	AllocID, NodeID string
	// Job is its job's terms: Demand is what the allocation holds, and
	// OriginRegion, LatencySLO, MaxPricePerHour and Priority say where
	// else it may run and what it yields to.
	Job placement.Job
}

// Transport carries market requests to other regions' leaders.
type Transport interface {
	// Request sends env to the peer and, when env.Kind.ExpectsReply(),
	// waits for the reply, returning it decoded and validated (but not
	// authenticated: the caller checks the replier with its Authority). For
	// one-way kinds it returns (nil, nil) once the message is handed to the
	// stream. The Driver calls it from worker goroutines, concurrently; it
	// blocks until the reply, an error, or ctx's deadline, which it honours
	// even on transports whose streams ignore deadlines.
	Request(ctx context.Context, to peer.AddrInfo, env *Envelope) (*Envelope, error)
}

// Handler answers one inbound request. A transport calls it from the
// goroutine serving the stream, with the authenticated remote peer ID; it
// returns the reply to send, or nil to close the stream without one. It
// must return when ctx ends.
type Handler func(ctx context.Context, from peer.ID, env *Envelope) *Envelope

// Directory is the gossip view the buyer chooses sellers from and reaches
// them by. The Driver calls it from its loop goroutine only; it must not
// block (it reads gossip's current view).
type Directory interface {
	// Regions returns what gossip knows of every region (the local one may
	// be included; it is skipped).
	Regions() []RegionInfo
	// Leader returns the peer ID and addresses of region's current leader,
	// as published in its gossip metadata.
	Leader(region string) (peer.AddrInfo, bool)
	// RTT estimates the round-trip time between two regions (measured, or
	// from network coordinates).
	RTT(from, to string) (time.Duration, bool)
}

// Authority decides whether a peer speaks for a region's leader. It is
// called from stream goroutines and Driver workers, concurrently, and must
// not block.
type Authority interface {
	// Authorize returns nil if gossip lists p as a server of region and
	// region's ledger (as its gossip reports) names p leader for term;
	// otherwise an error saying which check failed.
	Authorize(p peer.ID, region string, term uint64) error
}
