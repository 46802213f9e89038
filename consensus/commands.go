package consensus

import (
	"fmt"
	"time"

	"github.com/meridian-mesh/meridian/placement"
)

// Kind identifies a command's type. The numeric values are part of the log
// format: never renumber or reuse one.
type Kind uint8

// Command kinds.
const (
	KindRegisterNode      Kind = 1
	KindUpdateNode        Kind = 2
	KindSetNodeState      Kind = 3
	KindRemoveNode        Kind = 4
	KindSubmitJob         Kind = 5
	KindPlaceJob          Kind = 6
	KindReplaceAllocation Kind = 7
	KindStopAllocation    Kind = 8
	KindRenewAllocation   Kind = 9
	KindSetJobState       Kind = 10
	KindBumpEpoch         Kind = 11
	KindHoldEscrow        Kind = 12
	KindReleaseEscrow     Kind = 13
	KindConvertEscrow     Kind = 14
	KindExpire            Kind = 15
	KindRecordAward       Kind = 16
	KindSetTradeState     Kind = 17
	KindAddLease          Kind = 18
	KindRemoveLease       Kind = 19
	KindPrune             Kind = 20
	KindDrawLease         Kind = 21
	KindEndTrade          Kind = 22
	KindMarkReported      Kind = 23

	maxKind = KindMarkReported
)

var kindNames = [...]string{
	KindRegisterNode:      "RegisterNode",
	KindUpdateNode:        "UpdateNode",
	KindSetNodeState:      "SetNodeState",
	KindRemoveNode:        "RemoveNode",
	KindSubmitJob:         "SubmitJob",
	KindPlaceJob:          "PlaceJob",
	KindReplaceAllocation: "ReplaceAllocation",
	KindStopAllocation:    "StopAllocation",
	KindRenewAllocation:   "RenewAllocation",
	KindSetJobState:       "SetJobState",
	KindBumpEpoch:         "BumpEpoch",
	KindHoldEscrow:        "HoldEscrow",
	KindReleaseEscrow:     "ReleaseEscrow",
	KindConvertEscrow:     "ConvertEscrow",
	KindExpire:            "Expire",
	KindRecordAward:       "RecordAward",
	KindSetTradeState:     "SetTradeState",
	KindAddLease:          "AddLease",
	KindRemoveLease:       "RemoveLease",
	KindPrune:             "Prune",
	KindDrawLease:         "DrawLease",
	KindEndTrade:          "EndTrade",
	KindMarkReported:      "MarkReported",
}

// String names the kind after its command type.
func (k Kind) String() string {
	if k >= 1 && k <= maxKind {
		return kindNames[k]
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Command is one typed ledger command. Each kind has exactly one type,
// declared below; the leader stamps it with the time when it packs it into
// a log entry, and every replica applies it with that time.
//
// Apply validates each command against the ledger and either applies all of
// it or none of it; the outcome (a Result) is the same on every replica.
type Command interface {
	// Kind names the command's type on the wire.
	Kind() Kind
}

// RegisterNode adds a node with its capacity. Registering the same node
// again with the same description changes nothing (Result.Existing); with a
// different one it fails with ErrConflict: use UpdateNode. A new node is
// ready. Result.ID is the node ID.
type RegisterNode struct {
	ID string `msgpack:"id"`
	// Region must be the ledger's region, or empty for it.
	Region       string              `msgpack:"r,omitempty"`
	Total        placement.Resources `msgpack:"t"`
	PricePerHour float64             `msgpack:"p"`
	GPUType      string              `msgpack:"g,omitempty"`
}

// UpdateNode changes a node's capacity, price or GPU type. Shrinking the
// capacity below what live allocations and escrows use fails with
// ErrOvercommit.
type UpdateNode struct {
	ID           string              `msgpack:"id"`
	Total        placement.Resources `msgpack:"t"`
	PricePerHour float64             `msgpack:"p"`
	GPUType      string              `msgpack:"g,omitempty"`
}

// SetNodeState marks a node ready, draining or down. It moves no
// allocation: the leader re-places a down node's allocations with
// ReplaceAllocation.
type SetNodeState struct {
	ID     string    `msgpack:"id"`
	State  NodeState `msgpack:"s"`
	Reason string    `msgpack:"re,omitempty"`
}

// RemoveNode deletes a node that holds no live allocation or escrow
// (ErrConflict otherwise). Removing an unknown node succeeds with
// Result.Existing, so that a retried removal is harmless.
type RemoveNode struct {
	ID string `msgpack:"id"`
}

// SubmitJob records a job this region now owns, pending. Submission is
// idempotent by Job.ID: the same ID with the same spec returns the existing
// job (Result.Existing); with a different spec it fails with ErrConflict.
// Result.ID is the job ID.
type SubmitJob struct {
	Job placement.Job `msgpack:"job"`
	// Task is how the job runs; nil means a simulated task.
	Task *TaskSpec `msgpack:"tk,omitempty"`
	// Submission identifies the client call that sent the command, across
	// the retries the nodes make for it. A repeat with the same Submission
	// reports Result.Created: a retry whose first attempt committed (and
	// whose answer was lost) still tells its caller it created the job.
	Submission string `msgpack:"sb,omitempty"`
}

// The zero Resources and LeaseExpiry of PlaceJob, ReplaceAllocation and
// RenewAllocation (the job's demand, no expiry) are left out of the
// encoding (omitempty): a missing key decodes to the zero value, so every
// version reads the shorter form as it read the full one, and a placement
// takes a third of the log bytes it took.

// PlaceJob creates a live allocation of a pending job on a ready node, under
// the job's next placement epoch. It fails with ErrDoubleAllocation if the
// job already has a live placement (local or traded), with ErrOvercommit if
// the node lacks the free capacity, with ErrNodeNotReady if the node is not
// ready. Result.ID is the new allocation's ID, Result.Epoch its epoch.
type PlaceJob struct {
	JobID  string `msgpack:"j"`
	NodeID string `msgpack:"n"`
	// Resources to allocate; zero means the job's demand.
	Resources placement.Resources `msgpack:"res,omitempty"`
	// Epoch, when not zero, must be exactly the job's epoch + 1 (the epoch
	// the caller expects to create); otherwise the command fails with
	// ErrStaleEpoch, because someone placed the job since the caller read
	// the ledger.
	Epoch uint64 `msgpack:"e,omitempty"`
	// LeaseExpiry ends the allocation unless renewed; zero means never.
	LeaseExpiry time.Time `msgpack:"le,omitempty"`
	// Preempt names live allocations on the node to stop first
	// (StopPreempted) so that the job fits: each must run a job of lower
	// priority than this one (for the region's own jobs, the job's
	// priority; for jobs of other regions, the allocation's) or, for room
	// sold to another region, of the same priority — a region takes back
	// the room it lent for its own work — and none may be a lease or drawn
	// on one. The command is all or nothing: it fails,
	// stopping none, when one does not qualify (ErrInvalid, ErrNotFound,
	// ErrInvalidTransition) or when the room they free would not be enough
	// (ErrOvercommit). The stopped allocations' jobs are placed again: the
	// region's own go back to pending, and other regions learn of the stop
	// as of any other end of an allocation they bought.
	Preempt []string `msgpack:"pr,omitempty"`
}

// ReplaceAllocation moves a job's live local allocation to a node in one
// step: the old allocation stops (StopReplaced) and a new one starts under
// the next epoch. The capacity the old allocation frees counts when the new
// node is the same node. Result.ID is the new allocation, Result.Epoch its
// epoch.
type ReplaceAllocation struct {
	JobID       string              `msgpack:"j"`
	NodeID      string              `msgpack:"n"`
	Resources   placement.Resources `msgpack:"res,omitempty"`
	Epoch       uint64              `msgpack:"e,omitempty"`
	LeaseExpiry time.Time           `msgpack:"le,omitempty"`
	Reason      string              `msgpack:"re,omitempty"`
}

// StopAllocation stops a live allocation and gives its resources back. It
// is idempotent: stopping a stopped allocation succeeds with
// Result.Existing. When the allocation is the live allocation of a job this
// region owns, the job becomes completed (for StopCompleted) or pending
// (for any other reason, with the reason recorded).
type StopAllocation struct {
	AllocID string     `msgpack:"a"`
	Reason  StopReason `msgpack:"r"`
	Message string     `msgpack:"m,omitempty"`
}

// RenewAllocation moves a live allocation's lease expiry (later, or to zero
// for no expiry). The new expiry must be after the command time.
type RenewAllocation struct {
	AllocID     string    `msgpack:"a"`
	LeaseExpiry time.Time `msgpack:"le,omitempty"`
}

// SetJobState moves a job to running (it must have a live placement), or
// ends it: completed, failed or cancelled, stopping its live local
// allocation with the matching reason. Setting the state a job already has
// succeeds with Result.Existing; leaving a terminal state fails with
// ErrInvalidTransition. Setting pending on a pending job records a new
// Reason (why it is still pending, for example why no seller took it).
type SetJobState struct {
	JobID  string   `msgpack:"j"`
	State  JobState `msgpack:"s"`
	Reason string   `msgpack:"re,omitempty"`
}

// BumpEpoch starts a new placement epoch for a job with no live placement,
// for example before the job is put up for auction: the award is then
// recorded under this epoch. Result.Epoch is the new epoch.
type BumpEpoch struct {
	JobID string `msgpack:"j"`
	// Epoch, when not zero, must be the job's epoch + 1 (ErrStaleEpoch
	// otherwise).
	Epoch  uint64 `msgpack:"e,omitempty"`
	Reason string `msgpack:"re,omitempty"`
}

// HoldEscrow holds capacity on a ready node for a buyer region's auction
// item until Expiry (which must be after the command time). It is
// idempotent by AuctionID and ItemID. The hold counts against the node's
// capacity exactly as an allocation does. Result.ID is the escrow's ID.
type HoldEscrow struct {
	NodeID      string              `msgpack:"n"`
	Resources   placement.Resources `msgpack:"res"`
	BuyerRegion string              `msgpack:"b"`
	AuctionID   string              `msgpack:"au"`
	ItemID      string              `msgpack:"it"`
	Expiry      time.Time           `msgpack:"x"`
	// ItemKind, JobID, Duration and PricePerHour describe what is bid for (the
	// buyer's job or lease, how long it runs, the asking price); the
	// allocation the escrow becomes inherits them.
	ItemKind     ItemKind      `msgpack:"k,omitempty"`
	JobID        string        `msgpack:"j,omitempty"`
	Duration     time.Duration `msgpack:"d,omitempty"`
	PricePerHour float64       `msgpack:"p,omitempty"`
	// Priority, Origin, LatencySLO and MaxPricePerHour are the buyer's
	// job's terms (zero for a lease): the allocation the escrow becomes
	// keeps them, so that the seller's leader can tell whether it may
	// preempt it and whether the job could be served elsewhere.
	Priority        int           `msgpack:"pr,omitempty"`
	Origin          string        `msgpack:"or,omitempty"`
	LatencySLO      time.Duration `msgpack:"slo,omitempty"`
	MaxPricePerHour float64       `msgpack:"mp,omitempty"`
	// Preempt names live allocations on the node to stop first
	// (StopPreempted) to make room for the hold: a seller makes room for a
	// buyer's job no region had room for by moving work that can run
	// elsewhere. Each must run a job of lower priority than Priority, and
	// none may be a lease or drawn on one; a lease is never held so. All
	// or nothing, as PlaceJob.Preempt. A repeated hold (same auction and
	// item, same terms) succeeds without stopping anything again.
	Preempt []string `msgpack:"pe,omitempty"`
}

// ReleaseEscrow gives an escrow's capacity back (the buyer chose another
// seller). Releasing an escrow that is gone (released, expired, converted)
// succeeds with Result.Existing.
type ReleaseEscrow struct {
	AuctionID string `msgpack:"au"`
	ItemID    string `msgpack:"it"`
	Reason    string `msgpack:"re,omitempty"`
}

// ConvertEscrow turns an escrow into a live allocation of the buyer's job
// (the award arrived). It is idempotent by AuctionID and ItemID: converting
// again returns the allocation (Result.Existing). It fails with ErrNotFound
// when no live escrow is held for the item (it expired or was released),
// and with ErrInvalidTransition when the item's allocation was cancelled.
// Result.ID is the allocation's ID, Result.Epoch its epoch.
//
// A live allocation of the same job made under an older epoch (a trade the
// buyer abandoned during a partition) is stopped as cancelled: the job's
// newer placement supersedes it. One under the same or a newer epoch makes
// the command fail with ErrDoubleAllocation.
type ConvertEscrow struct {
	AuctionID string `msgpack:"au"`
	ItemID    string `msgpack:"it"`
	// JobID may be empty when the escrow recorded the job (HoldEscrow.JobID).
	JobID string `msgpack:"j"`
	// JobRegion is the buyer's region, which owns the job.
	JobRegion string `msgpack:"jr"`
	Epoch     uint64 `msgpack:"e"`
	// LeaseExpiry ends the allocation unless renewed; zero means never, or,
	// for a lease escrow with a duration, the command time plus the
	// duration.
	LeaseExpiry time.Time `msgpack:"le"`
	// PricePerHour is the price the buyer pays; zero keeps the escrow's
	// asking price.
	PricePerHour float64 `msgpack:"p,omitempty"`
}

// Expire does nothing but advance the ledger's time to the command time.
// Every command does that first: escrows whose expiry has come are
// released and allocations whose lease has run out are stopped
// (StopExpired), and Result.Expired lists their IDs. The leader proposes
// Expire when the earliest expiry has passed, so that an idle ledger is
// cleaned too.
type Expire struct{}

// RecordAward records that this region, as buyer, awarded an auction item
// for one of its jobs to a seller region. The job must have no live
// placement (ErrDoubleAllocation) and Epoch must be the job's current epoch
// (ErrStaleEpoch); the job becomes traded. Idempotent by AuctionID and
// ItemID.
//
// For a lease (ItemKind ItemLease) JobID names the lease and no job is
// involved. For a job drawn on a bought lease (LeaseAuctionID and
// LeaseItemID set) the demand is also taken from the lease's unused
// capacity, failing with ErrOvercommit when it does not fit and with
// ErrNotFound when the region holds no such lease.
type RecordAward struct {
	AuctionID    string              `msgpack:"au"`
	ItemID       string              `msgpack:"it"`
	JobID        string              `msgpack:"j"`
	SellerRegion string              `msgpack:"sr"`
	Resources    placement.Resources `msgpack:"res"`
	PricePerHour float64             `msgpack:"p"`
	// Score is the winning offer's cost-efficiency score (after the RTT
	// penalty), kept so that operators see why this seller won.
	Score float64 `msgpack:"sc,omitempty"`
	Epoch uint64  `msgpack:"e"`
	// ItemKind is what was bought (zero: a job).
	ItemKind ItemKind `msgpack:"k,omitempty"`
	// NodeID and GPUType describe the seller's node.
	NodeID  string `msgpack:"n,omitempty"`
	GPUType string `msgpack:"g,omitempty"`
	// Duration is how long the job or lease runs.
	Duration time.Duration `msgpack:"d,omitempty"`
	// AwardedAt is the buyer's clock when it decided.
	AwardedAt time.Time `msgpack:"at"`
	// LeaseAuctionID and LeaseItemID name the bought lease a job is drawn
	// on, if any.
	LeaseAuctionID string `msgpack:"la,omitempty"`
	LeaseItemID    string `msgpack:"li,omitempty"`
}

// SetTradeState moves a trade: awarded → acked, in-doubt, cancelled, failed
// or abandoned; in-doubt → acked, cancelled, failed or abandoned; acked →
// cancelled, failed or abandoned; failed or abandoned → settled. Setting the
// state a trade already has succeeds with Result.Existing, and so does
// acking a trade that has ended. Result.Epoch is the job's epoch
// afterwards.
//
//   - Acked requires the job to still run under the trade (its epoch is the
//     trade's and it names the trade as its remote placement), else
//     ErrStaleEpoch; acking a lease opens it for draws: it adds a bought
//     Lease record naming the trade's auction and item.
//   - Cancelled sends a job that runs under the trade back to pending.
//   - Failed and abandoned do too, and bump its epoch, so that the job is
//     placed again under a new one and the old placement is recognisably
//     stale; a draw's resources go back to its lease, a lost lease is
//     removed.
type SetTradeState struct {
	AuctionID string     `msgpack:"au"`
	ItemID    string     `msgpack:"it"`
	State     TradeState `msgpack:"s"`
	Reason    string     `msgpack:"re,omitempty"`
	// SellerAllocID is the seller's allocation ID, recorded on ack.
	SellerAllocID string `msgpack:"sa,omitempty"`
}

// AddLease records a lease bought from or sold to another region. It is
// idempotent by Lease.ID (ErrConflict when the same ID comes with different
// terms). Lease.Added is set by the ledger.
type AddLease struct {
	Lease Lease `msgpack:"lease"`
}

// RemoveLease deletes a lease record; removing an unknown lease succeeds
// with Result.Existing.
type RemoveLease struct {
	ID string `msgpack:"id"`
}

// DrawLease allocates a buyer's job inside a lease this region sold to that
// buyer, without an auction: the draw takes the lease's unused capacity,
// not its node's free capacity (the lease already holds that). It is
// idempotent by AuctionID and ItemID (the draw's trade): drawing again
// returns the allocation (Result.Existing). It fails with ErrNotFound when
// the lease is unknown, not live or sold to another region, with
// ErrOvercommit when the lease's unused capacity does not cover Resources,
// and with ErrDoubleAllocation when the job already runs here under the
// same or a newer epoch (an older one is superseded, as in ConvertEscrow).
// Result.ID is the allocation's ID.
type DrawLease struct {
	// AuctionID and ItemID name the draw's trade.
	AuctionID string `msgpack:"au"`
	ItemID    string `msgpack:"it"`
	// LeaseAuctionID and LeaseItemID name the lease's trade.
	LeaseAuctionID string `msgpack:"la"`
	LeaseItemID    string `msgpack:"li"`
	// JobRegion is the buyer, which owns the job and the lease.
	JobRegion    string              `msgpack:"jr"`
	JobID        string              `msgpack:"j"`
	Resources    placement.Resources `msgpack:"res"`
	Epoch        uint64              `msgpack:"e"`
	PricePerHour float64             `msgpack:"p,omitempty"`
	// Duration is how long the job runs (zero: until stopped).
	Duration time.Duration `msgpack:"d,omitempty"`
}

// EndTrade records, in the buyer's ledger, that the seller's allocation of a
// traded job ended (the seller reports it). If the job still runs under
// the trade it becomes completed (Outcome StopCompleted) or, for any other
// outcome, pending under a new epoch so that it is placed again; the trade
// becomes ended. A report about a trade the job no longer runs under
// changes nothing (Result.Existing), nor does a repeated one. ErrNotFound
// when the ledger has no such trade. Result.Epoch is the job's epoch
// afterwards.
type EndTrade struct {
	AuctionID string     `msgpack:"au"`
	ItemID    string     `msgpack:"it"`
	Epoch     uint64     `msgpack:"e"`
	Outcome   StopReason `msgpack:"o"`
	Message   string     `msgpack:"m,omitempty"`
}

// MarkReported records that the buyer acknowledged the end of a stopped
// allocation this region ran for it (see EndTrade), so that the seller's
// market stops reporting it. Marking again succeeds with Result.Existing;
// ErrInvalidTransition for a live or a local allocation.
type MarkReported struct {
	AllocID string `msgpack:"a"`
}

// Prune deletes history older than Before: stopped allocations stopped
// before it, terminal jobs last updated before it (with their stopped
// allocations), cancelled trades and acked trades of terminal jobs updated
// before it, and leases that ended before it. After a job is pruned its ID
// may be submitted again as a new job. Before must not be after the command
// time. Result.Pruned counts the records deleted.
type Prune struct {
	Before time.Time `msgpack:"b"`
}

// Kind implements Command.
func (RegisterNode) Kind() Kind { return KindRegisterNode }

// Kind implements Command.
func (UpdateNode) Kind() Kind { return KindUpdateNode }

// Kind implements Command.
func (SetNodeState) Kind() Kind { return KindSetNodeState }

// Kind implements Command.
func (RemoveNode) Kind() Kind { return KindRemoveNode }

// Kind implements Command.
func (SubmitJob) Kind() Kind { return KindSubmitJob }

// Kind implements Command.
func (PlaceJob) Kind() Kind { return KindPlaceJob }

// Kind implements Command.
func (ReplaceAllocation) Kind() Kind { return KindReplaceAllocation }

// Kind implements Command.
func (StopAllocation) Kind() Kind { return KindStopAllocation }

// Kind implements Command.
func (RenewAllocation) Kind() Kind { return KindRenewAllocation }

// Kind implements Command.
func (SetJobState) Kind() Kind { return KindSetJobState }

// Kind implements Command.
func (BumpEpoch) Kind() Kind { return KindBumpEpoch }

// Kind implements Command.
func (HoldEscrow) Kind() Kind { return KindHoldEscrow }

// Kind implements Command.
func (ReleaseEscrow) Kind() Kind { return KindReleaseEscrow }

// Kind implements Command.
func (ConvertEscrow) Kind() Kind { return KindConvertEscrow }

// Kind implements Command.
func (Expire) Kind() Kind { return KindExpire }

// Kind implements Command.
func (RecordAward) Kind() Kind { return KindRecordAward }

// Kind implements Command.
func (SetTradeState) Kind() Kind { return KindSetTradeState }

// Kind implements Command.
func (AddLease) Kind() Kind { return KindAddLease }

// Kind implements Command.
func (RemoveLease) Kind() Kind { return KindRemoveLease }

// Kind implements Command.
func (Prune) Kind() Kind { return KindPrune }

// Kind implements Command.
func (DrawLease) Kind() Kind { return KindDrawLease }

// Kind implements Command.
func (EndTrade) Kind() Kind { return KindEndTrade }

// Kind implements Command.
func (MarkReported) Kind() Kind { return KindMarkReported }

// newBody returns a pointer to a zero command of the kind, to decode into.
func newBody(k Kind) (any, bool) {
	switch k {
	case KindRegisterNode:
		return new(RegisterNode), true
	case KindUpdateNode:
		return new(UpdateNode), true
	case KindSetNodeState:
		return new(SetNodeState), true
	case KindRemoveNode:
		return new(RemoveNode), true
	case KindSubmitJob:
		return new(SubmitJob), true
	case KindPlaceJob:
		return new(PlaceJob), true
	case KindReplaceAllocation:
		return new(ReplaceAllocation), true
	case KindStopAllocation:
		return new(StopAllocation), true
	case KindRenewAllocation:
		return new(RenewAllocation), true
	case KindSetJobState:
		return new(SetJobState), true
	case KindBumpEpoch:
		return new(BumpEpoch), true
	case KindHoldEscrow:
		return new(HoldEscrow), true
	case KindReleaseEscrow:
		return new(ReleaseEscrow), true
	case KindConvertEscrow:
		return new(ConvertEscrow), true
	case KindExpire:
		return new(Expire), true
	case KindRecordAward:
		return new(RecordAward), true
	case KindSetTradeState:
		return new(SetTradeState), true
	case KindAddLease:
		return new(AddLease), true
	case KindRemoveLease:
		return new(RemoveLease), true
	case KindPrune:
		return new(Prune), true
	case KindDrawLease:
		return new(DrawLease), true
	case KindEndTrade:
		return new(EndTrade), true
	case KindMarkReported:
		return new(MarkReported), true
	}
	return nil, false
}

// deref turns the pointer newBody returned back into a Command value.
func deref(p any) Command {
	switch b := p.(type) {
	case *RegisterNode:
		return *b
	case *UpdateNode:
		return *b
	case *SetNodeState:
		return *b
	case *RemoveNode:
		return *b
	case *SubmitJob:
		return *b
	case *PlaceJob:
		return *b
	case *ReplaceAllocation:
		return *b
	case *StopAllocation:
		return *b
	case *RenewAllocation:
		return *b
	case *SetJobState:
		return *b
	case *BumpEpoch:
		return *b
	case *HoldEscrow:
		return *b
	case *ReleaseEscrow:
		return *b
	case *ConvertEscrow:
		return *b
	case *Expire:
		return *b
	case *RecordAward:
		return *b
	case *SetTradeState:
		return *b
	case *AddLease:
		return *b
	case *RemoveLease:
		return *b
	case *Prune:
		return *b
	case *DrawLease:
		return *b
	case *EndTrade:
		return *b
	case *MarkReported:
		return *b
	}
	panic(fmt.Sprintf("consensus: deref of unknown command type %T", p))
}
