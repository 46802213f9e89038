package consensus

import (
	"fmt"
	"time"

	"github.com/meridian-mesh/meridian/placement"
)

// The ledger's records. Values returned by a *Ledger are copies: changing
// them changes nothing in the ledger. All times are UTC.

// NodeState is where a node is in its life cycle. The numeric values are
// part of the log format.
type NodeState uint8

// Node states.
const (
	// NodeReady accepts new allocations and escrows.
	NodeReady NodeState = 1
	// NodeDraining keeps what it runs but takes nothing new.
	NodeDraining NodeState = 2
	// NodeDown is failed or gone; its allocations wait to be re-placed.
	NodeDown NodeState = 3
)

// String names the value.
func (s NodeState) String() string {
	switch s {
	case NodeReady:
		return "ready"
	case NodeDraining:
		return "draining"
	case NodeDown:
		return "down"
	}
	return fmt.Sprintf("node-state(%d)", uint8(s))
}

func (s NodeState) valid() bool { return s >= NodeReady && s <= NodeDown }

// Node is a machine registered in the region's ledger.
type Node struct {
	ID     string `msgpack:"id"`
	Region string `msgpack:"r"`
	// Total is the node's whole capacity.
	Total placement.Resources `msgpack:"t"`
	// Used is the sum of the node's live allocations and live escrows. The
	// ledger keeps it up to date command by command and stores it in
	// snapshots as is, so that every replica compares the very same
	// floating-point numbers.
	Used         placement.Resources `msgpack:"u"`
	PricePerHour float64             `msgpack:"p"`
	GPUType      string              `msgpack:"g,omitempty"`
	State        NodeState           `msgpack:"s"`
	// StateReason says why the node was last set draining or down.
	StateReason string    `msgpack:"sr,omitempty"`
	Registered  time.Time `msgpack:"rt"`
	Updated     time.Time `msgpack:"ut"`
}

// Free returns Total − Used: what a new allocation or escrow may take.
func (n Node) Free() placement.Resources { return n.Total.Sub(n.Used) }

// Placement returns the node as placement sees it, with its free capacity.
func (n Node) Placement() placement.Node {
	return placement.Node{
		ID:           n.ID,
		Region:       n.Region,
		Total:        n.Total,
		Free:         clampFree(n.Free()),
		PricePerHour: n.PricePerHour,
		GPUType:      n.GPUType,
	}
}

// clampFree removes the tiny negative components floating-point drift can
// leave in Total − Used, which placement would reject as invalid.
func clampFree(r placement.Resources) placement.Resources {
	if r.ComputePerHour < 0 {
		r.ComputePerHour = 0
	}
	if r.StorageGB < 0 {
		r.StorageGB = 0
	}
	if r.BandwidthGBps < 0 {
		r.BandwidthGBps = 0
	}
	if r.GPUs < 0 {
		r.GPUs = 0
	}
	return r
}

// AllocState says whether an allocation holds its resources.
type AllocState uint8

// Allocation states.
const (
	// AllocLive holds resources on its node.
	AllocLive AllocState = 1
	// AllocStopped has given them back; the record stays until pruned.
	AllocStopped AllocState = 2
)

// String names the value.
func (s AllocState) String() string {
	switch s {
	case AllocLive:
		return "live"
	case AllocStopped:
		return "stopped"
	}
	return fmt.Sprintf("alloc-state(%d)", uint8(s))
}

// StopReason says why an allocation stopped.
type StopReason uint8

// Stop reasons.
const (
	// StopCompleted: the job finished its work.
	StopCompleted StopReason = 1
	// StopFailed: the task failed; the job may be placed again.
	StopFailed StopReason = 2
	// StopCancelled: the allocation was cancelled (the job was cancelled,
	// a buyer released what it bought, reconciliation removed a stale
	// epoch).
	StopCancelled StopReason = 3
	// StopReplaced: the job moved to another allocation under a new epoch.
	StopReplaced StopReason = 4
	// StopLost: the node is gone and took the allocation with it.
	StopLost StopReason = 5
	// StopExpired: the allocation's lease ran out without renewal. Only the
	// ledger sets it, from the command time.
	StopExpired StopReason = 6
	// StopPreempted: a job of higher priority took the allocation's room
	// (PlaceJob.Preempt); the job is placed again, here or elsewhere. Only
	// the ledger sets it.
	StopPreempted StopReason = 7
)

// String names the reason.
func (r StopReason) String() string {
	switch r {
	case StopCompleted:
		return "completed"
	case StopFailed:
		return "failed"
	case StopCancelled:
		return "cancelled"
	case StopReplaced:
		return "replaced"
	case StopLost:
		return "lost"
	case StopExpired:
		return "expired"
	case StopPreempted:
		return "preempted"
	}
	return fmt.Sprintf("stop-reason(%d)", uint8(r))
}

// ItemKind says what an auction item bought: a job to run, or a capacity
// lease. The numeric values are part of the log format; zero, in records
// written before leases existed, means a job.
type ItemKind uint8

// Item kinds.
const (
	// ItemJob is a job the seller runs for the buyer.
	ItemJob ItemKind = 1
	// ItemLease is capacity the seller holds for the buyer for a time
	// window; the buyer places jobs into it later with DrawLease.
	ItemLease ItemKind = 2
)

// String names the value.
func (k ItemKind) String() string {
	switch k {
	case 0, ItemJob:
		return "job"
	case ItemLease:
		return "lease"
	}
	return fmt.Sprintf("item-kind(%d)", uint8(k))
}

func (k ItemKind) valid() bool { return k <= ItemLease }

// IsLease reports whether the item is a capacity lease.
func (k ItemKind) IsLease() bool { return k == ItemLease }

// Allocation binds a job to resources on a node. Allocations of jobs owned
// by this region have JobRegion equal to the ledger's region; allocations
// sold to other regions (from converted escrows) name the buyer's region
// and carry the auction and item they were sold in.
type Allocation struct {
	ID        string              `msgpack:"id"`
	JobID     string              `msgpack:"j"`
	JobRegion string              `msgpack:"jr"`
	NodeID    string              `msgpack:"n"`
	Resources placement.Resources `msgpack:"res"`
	// Epoch is the job's placement epoch the allocation was made under.
	// An allocation whose epoch is below its job's current epoch is stale.
	Epoch uint64    `msgpack:"e"`
	Start time.Time `msgpack:"st"`
	// LeaseExpiry is when the allocation ends unless renewed; zero means
	// it runs until stopped.
	LeaseExpiry time.Time  `msgpack:"le"`
	State       AllocState `msgpack:"s"`
	StopReason  StopReason `msgpack:"sr,omitempty"`
	StopMessage string     `msgpack:"sm,omitempty"`
	Stopped     time.Time  `msgpack:"sp"`
	AuctionID   string     `msgpack:"au,omitempty"`
	ItemID      string     `msgpack:"it,omitempty"`
	// Duration and Task describe the work of an allocation made for
	// another region's job (through the market): this ledger does not hold
	// that job, so the node that runs the allocation reads them here. Zero
	// and nil on allocations of the region's own jobs.
	Duration time.Duration `msgpack:"du,omitempty"`
	Task     *TaskSpec     `msgpack:"tk,omitempty"`
	// Kind is ItemLease for capacity sold as a lease: a reservation, not a
	// task to run; the jobs drawn on it are allocations of their own
	// (InLease). Zero or ItemJob otherwise.
	Kind ItemKind `msgpack:"k,omitempty"`
	// PricePerHour is what the buyer pays for a sold allocation, US
	// dollars per node-hour; zero for local ones.
	PricePerHour float64 `msgpack:"p,omitempty"`
	// InLease, for a job drawn on a sold lease, is the lease allocation's
	// ID. A draw uses the lease's capacity (LeaseUsed), not its node's
	// free capacity, and stops when the lease stops.
	InLease string `msgpack:"il,omitempty"`
	// LeaseUsed, for a lease allocation, is what its live draws use.
	LeaseUsed placement.Resources `msgpack:"lu"`
	// Priority, Origin, LatencySLO and MaxPricePerHour are, for an
	// allocation made for another region's job, that job's terms (from its
	// escrow): this ledger does not hold the job, and the leader judges
	// by them whether the allocation may be preempted — its priority — and
	// whether the job could be served elsewhere. Zero on allocations of the
	// region's own jobs, whose terms are in the job, and on sold
	// allocations recorded before terms were.
	Priority        int           `msgpack:"pr,omitempty"`
	Origin          string        `msgpack:"or,omitempty"`
	LatencySLO      time.Duration `msgpack:"slo,omitempty"`
	MaxPricePerHour float64       `msgpack:"mp,omitempty"`
	// Reported records that the end of an allocation sold to another region
	// was acknowledged by the buyer (MarkReported), so the seller stops
	// reporting it.
	Reported bool `msgpack:"rp,omitempty"`
}

// Sold reports whether the allocation runs for another region (bought from
// this one in an auction, or drawn on a lease this region sold).
func (a Allocation) Sold() bool { return a.AuctionID != "" }

// Live reports whether the allocation holds its resources.
func (a Allocation) Live() bool { return a.State == AllocLive }

// JobState is where a job owned by this region is in its life cycle.
type JobState uint8

// Job states.
const (
	// JobPending has no live placement.
	JobPending JobState = 1
	// JobPlaced has a live allocation in this region.
	JobPlaced JobState = 2
	// JobTraded has been awarded to another region in an auction.
	JobTraded JobState = 3
	// JobRunning has a live placement whose task has started.
	JobRunning JobState = 4
	// JobCompleted finished its work (terminal).
	JobCompleted JobState = 5
	// JobFailed gave up (terminal).
	JobFailed JobState = 6
	// JobCancelled was cancelled by its client (terminal).
	JobCancelled JobState = 7
)

// String names the value.
func (s JobState) String() string {
	switch s {
	case JobPending:
		return "pending"
	case JobPlaced:
		return "placed"
	case JobTraded:
		return "traded"
	case JobRunning:
		return "running"
	case JobCompleted:
		return "completed"
	case JobFailed:
		return "failed"
	case JobCancelled:
		return "cancelled"
	}
	return fmt.Sprintf("job-state(%d)", uint8(s))
}

// Terminal reports whether the job has ended for good.
func (s JobState) Terminal() bool { return s >= JobCompleted && s <= JobCancelled }

func (s JobState) valid() bool { return s >= JobPending && s <= JobCancelled }

// RemotePlacement says where a traded job runs: the region that sold the
// capacity and the auction item it was bought in.
type RemotePlacement struct {
	Region    string `msgpack:"r"`
	AuctionID string `msgpack:"a"`
	ItemID    string `msgpack:"i"`
}

// Job is a job owned by this region: its home ledger is the source of truth
// for its state and placement epoch for its whole life.
type Job struct {
	// ID is the client's idempotency key.
	ID   string        `msgpack:"id"`
	Spec placement.Job `msgpack:"spec"`
	// Task is how the job runs once allocated; nil runs it as a simulated
	// task for its duration.
	Task *TaskSpec `msgpack:"tk,omitempty"`
	// State is where the job is in its life cycle.
	State JobState `msgpack:"s"`
	// Attempts counts placements made (local or by trade).
	Attempts int `msgpack:"at"`
	// Epoch is the job's current placement epoch; it grows with every
	// placement, replacement and bump, so that stale placements can be
	// told apart after a partition heals.
	Epoch uint64 `msgpack:"e"`
	// Reason says why the job is in its state (why it is pending, why it
	// failed).
	Reason string `msgpack:"re,omitempty"`
	// AllocID is the job's live allocation in this region, if any.
	AllocID string `msgpack:"al,omitempty"`
	// Remote is where the job runs when it was traded to another region.
	Remote *RemotePlacement `msgpack:"rm,omitempty"`
	// Submission is the SubmitJob.Submission that created the job.
	Submission string    `msgpack:"sb,omitempty"`
	Submitted  time.Time `msgpack:"su"`
	Updated    time.Time `msgpack:"up"`
}

// Escrow is capacity held on a node for a buyer region during an auction,
// until it is converted into an allocation, released, or expires.
type Escrow struct {
	ID          string              `msgpack:"id"`
	NodeID      string              `msgpack:"n"`
	Resources   placement.Resources `msgpack:"res"`
	BuyerRegion string              `msgpack:"b"`
	AuctionID   string              `msgpack:"au"`
	ItemID      string              `msgpack:"it"`
	Created     time.Time           `msgpack:"c"`
	Expiry      time.Time           `msgpack:"x"`
	// Kind is what the buyer bids for (zero: a job).
	Kind ItemKind `msgpack:"k,omitempty"`
	// JobID is the buyer's job (or lease) the hold is for, if the seller
	// recorded it.
	JobID string `msgpack:"j,omitempty"`
	// Duration is how long the job or lease runs once allocated; zero means
	// until stopped.
	Duration time.Duration `msgpack:"d,omitempty"`
	// PricePerHour is the seller's asking price, US dollars per node-hour.
	PricePerHour float64 `msgpack:"p,omitempty"`
	// Priority, Origin, LatencySLO and MaxPricePerHour are the buyer's
	// job's terms; the allocation the escrow becomes inherits them.
	Priority        int           `msgpack:"pr,omitempty"`
	Origin          string        `msgpack:"or,omitempty"`
	LatencySLO      time.Duration `msgpack:"slo,omitempty"`
	MaxPricePerHour float64       `msgpack:"mp,omitempty"`
}

// LeaseDirection says whether this region bought a lease or sold it.
type LeaseDirection uint8

// Lease directions.
const (
	// LeaseBought is capacity this region bought from PeerRegion.
	LeaseBought LeaseDirection = 1
	// LeaseSold is capacity this region sold to PeerRegion.
	LeaseSold LeaseDirection = 2
)

// String names the value.
func (d LeaseDirection) String() string {
	switch d {
	case LeaseBought:
		return "bought"
	case LeaseSold:
		return "sold"
	}
	return fmt.Sprintf("lease-direction(%d)", uint8(d))
}

// Lease is capacity bought from or sold to another region for a window of
// time, ahead of forecast demand. A lease is a record of the deal; the
// capacity itself is held by escrows and allocations.
type Lease struct {
	ID           string              `msgpack:"id"`
	Direction    LeaseDirection      `msgpack:"d"`
	PeerRegion   string              `msgpack:"pr"`
	Resources    placement.Resources `msgpack:"res"`
	Start        time.Time           `msgpack:"st"`
	End          time.Time           `msgpack:"en"`
	PricePerHour float64             `msgpack:"p"`
	AuctionID    string              `msgpack:"au,omitempty"`
	ItemID       string              `msgpack:"it,omitempty"`
	Added        time.Time           `msgpack:"ad"`
	// NodeID and GPUType describe the seller's node the capacity is on
	// (bought leases recorded by the market).
	NodeID  string `msgpack:"n,omitempty"`
	GPUType string `msgpack:"g,omitempty"`
	// Used is the part of a bought lease that jobs drawn on it take (see
	// RecordAward with a lease).
	Used placement.Resources `msgpack:"u"`
}

// TradeState is where an award this region decided as a buyer stands.
type TradeState uint8

// Trade states.
const (
	// TradeAwarded: the award is committed here and sent to the seller.
	TradeAwarded TradeState = 1
	// TradeAcked: the seller committed the allocation and said so.
	TradeAcked TradeState = 2
	// TradeInDoubt: the seller's answer did not come; a status query will
	// settle it.
	TradeInDoubt TradeState = 3
	// TradeCancelled: the trade is void; the job goes back to pending.
	TradeCancelled TradeState = 4
	// TradeFailed: the seller could not honour the award (its escrow had
	// expired or was released); the job's epoch was bumped. Final: the
	// seller holds nothing.
	TradeFailed TradeState = 5
	// TradeAbandoned: the award stayed in doubt too long (or turned out
	// stale); the job's epoch was bumped so it can be placed again. The
	// trade stays open until the seller confirms it holds nothing for it.
	TradeAbandoned TradeState = 6
	// TradeSettled: an abandoned or failed trade is reconciled: the seller
	// holds nothing for it.
	TradeSettled TradeState = 7
	// TradeEnded: the seller's allocation ended (EndTrade: completed,
	// failed, lost); EndReason says how.
	TradeEnded TradeState = 8
)

// Open reports whether the market still has work to do on the trade: an
// award waiting for the seller's answer, or an abandoned trade to
// reconcile.
func (s TradeState) Open() bool { return s == TradeAwarded || s == TradeInDoubt || s == TradeAbandoned }

// String names the value.
func (s TradeState) String() string {
	switch s {
	case TradeAwarded:
		return "awarded"
	case TradeAcked:
		return "acked"
	case TradeInDoubt:
		return "in-doubt"
	case TradeCancelled:
		return "cancelled"
	case TradeFailed:
		return "failed"
	case TradeAbandoned:
		return "abandoned"
	case TradeSettled:
		return "settled"
	case TradeEnded:
		return "ended"
	}
	return fmt.Sprintf("trade-state(%d)", uint8(s))
}

// Trade is an award this region decided as a buyer: one auction item of one
// of its jobs, sold by another region.
type Trade struct {
	AuctionID    string              `msgpack:"au"`
	ItemID       string              `msgpack:"it"`
	JobID        string              `msgpack:"j"`
	SellerRegion string              `msgpack:"sr"`
	Resources    placement.Resources `msgpack:"res"`
	PricePerHour float64             `msgpack:"p"`
	// Score is the winning offer's cost-efficiency score.
	Score float64 `msgpack:"sc,omitempty"`
	// Epoch is the job's placement epoch the award was made under.
	Epoch uint64     `msgpack:"e"`
	State TradeState `msgpack:"s"`
	// Reason says why the trade was last moved (why it is in doubt or
	// cancelled).
	Reason string `msgpack:"re,omitempty"`
	// SellerAllocID is the allocation's ID in the seller's ledger, once the
	// seller has acknowledged.
	SellerAllocID string    `msgpack:"sa,omitempty"`
	Created       time.Time `msgpack:"c"`
	Updated       time.Time `msgpack:"u"`
	// Kind is what was bought (zero: a job). For a lease, JobID names the
	// lease.
	Kind ItemKind `msgpack:"k,omitempty"`
	// NodeID and GPUType describe the seller's node.
	NodeID  string `msgpack:"n,omitempty"`
	GPUType string `msgpack:"g,omitempty"`
	// Duration is how long the job or lease runs; zero means until stopped.
	Duration time.Duration `msgpack:"d,omitempty"`
	// AwardedAt is the buyer's clock when it decided the award (the
	// market's in-doubt timeout counts from it).
	AwardedAt time.Time `msgpack:"at"`
	// LeaseAuctionID and LeaseItemID, for a job drawn on a bought lease,
	// name the lease's trade.
	LeaseAuctionID string `msgpack:"la,omitempty"`
	LeaseItemID    string `msgpack:"li,omitempty"`
	// EndReason says how the seller's allocation ended (TradeEnded).
	EndReason StopReason `msgpack:"er,omitempty"`
}

// Draw reports whether the trade placed a job in a bought lease.
func (t Trade) Draw() bool { return t.LeaseAuctionID != "" }

// TaskSpec is how an allocation of a job runs on its node: which driver, and
// for the exec driver the command and its extra environment. The ledger keeps
// it so that whichever node the job lands on, after any re-placement or
// trade, runs the same task.
type TaskSpec struct {
	// Driver is "sim" (a simulated task that runs for the job's duration)
	// or "exec" (a child process).
	Driver string `msgpack:"d,omitempty"`
	// Command is the exec driver's program and arguments.
	Command []string `msgpack:"c,omitempty"`
	// Env is extra environment for the exec driver.
	Env map[string]string `msgpack:"env,omitempty"`
}
