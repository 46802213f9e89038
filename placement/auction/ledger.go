package auction

import (
	"fmt"
	"time"

	"github.com/meridian-mesh/meridian/placement"
)

// OpKind names a ledger operation the market proposes.
type OpKind uint8

// Seller-side operations act on the seller region's ledger; buyer-side ones
// on the buyer's (home) region's ledger. Every operation is idempotent by its
// TradeRef, so a retried proposal or a duplicated message never acts twice.
// Apply must use LedgerOp.Now, never the replica's clock.
const (
	// OpHoldEscrow (seller) holds Escrow.Resources on Escrow.Node for the
	// trade until Escrow.Expiry. It fails with ErrInsufficientCapacity when
	// they do not fit the node's free capacity at Now (total minus
	// allocations minus escrows whose Expiry is after Now). A hold for a
	// trade the ledger already knows succeeds without change.
	OpHoldEscrow OpKind = 1
	// OpConvertEscrow (seller) turns the trade's escrow into an allocation
	// for Epoch at Price. It fails with ErrEscrowGone when the escrow is
	// released, unknown, or its Expiry is not after Now. Converting a trade
	// already allocated succeeds and returns the allocation's epoch.
	OpConvertEscrow OpKind = 2
	// OpReleaseEscrow (seller) drops the trade's escrow if it is still held
	// (not converted); otherwise it does nothing. It never fails for a
	// missing escrow.
	OpReleaseEscrow OpKind = 3
	// OpCancelTrade (seller) cancels the trade's allocation if it was made
	// for Epoch, or releases its escrow if not yet converted. An allocation
	// for another epoch is left alone (the result reports it). The result's
	// Status is the trade's state afterwards.
	OpCancelTrade OpKind = 4
	// OpDrawLease (seller) allocates Job (for Epoch, at Price) inside the
	// lease allocation Lease held by the same buyer. It fails with
	// ErrInsufficientCapacity when the lease's unused resources do not cover
	// Job.Demand, and with ErrEscrowGone when the lease is unknown, belongs
	// to another buyer or has ended at Now. Idempotent like OpConvertEscrow.
	OpDrawLease OpKind = 5
	// OpLookupTrade (seller) changes nothing: it is a linearizable read of
	// the trade's state (Status, Epoch), ordered after every earlier op.
	OpLookupTrade OpKind = 6
	// OpRecordAward (buyer) records Award: the trade is awarded and, for a
	// job, the job is placed at Award.Seller/Award.Node under Award.Epoch,
	// pending the seller's acknowledgment. It fails with ErrStaleEpoch when
	// the job's current epoch is not Award.Epoch. For a draw on a lease
	// (Award.Lease set) it also takes Award.Resources from the lease's
	// unused capacity, failing with ErrInsufficientCapacity if they do not
	// fit. Recording a trade the ledger already has succeeds without change.
	OpRecordAward OpKind = 7
	// OpSetTradeState (buyer) moves the trade to State:
	//   - TradeConfirmed: from TradeAwarded, and only while the job's current
	//     epoch is Epoch (ErrStaleEpoch otherwise); a confirmed lease becomes
	//     usable for draws.
	//   - TradeFailed, TradeAbandoned: from TradeAwarded (or from
	//     TradeConfirmed when the seller lost the allocation). If the job's
	//     epoch is still Epoch it becomes Epoch+1 and the job is to be placed
	//     again; a draw's resources go back to its lease.
	//   - TradeSettled: from TradeAbandoned, once the seller holds nothing for
	//     the trade; it may then be forgotten. (TradeFailed is final too: the
	//     seller said it held nothing.)
	// The result's Epoch is the job's current epoch afterwards.
	// ErrUnknownTrade when the ledger has no record of the trade.
	OpSetTradeState OpKind = 8
)

var opNames = [...]string{
	OpHoldEscrow: "HoldEscrow", OpConvertEscrow: "ConvertEscrow", OpReleaseEscrow: "ReleaseEscrow",
	OpCancelTrade: "CancelTrade", OpDrawLease: "DrawLease", OpLookupTrade: "LookupTrade",
	OpRecordAward: "RecordAward", OpSetTradeState: "SetTradeState",
}

// String implements fmt.Stringer.
func (k OpKind) String() string {
	if int(k) < len(opNames) && opNames[k] != "" {
		return opNames[k]
	}
	return fmt.Sprintf("OpKind(%d)", uint8(k))
}

// LedgerOp is one operation the market asks its region's ledger to commit.
// It is plain data, msgpack-encodable, so node/ can put it in a Raft log
// entry as is.
type LedgerOp struct {
	// Kind names the operation.
	Kind OpKind `msgpack:"k"`
	// Now is the proposer's clock. Apply judges expiry against it and never
	// reads the replica's clock, so every replica decides alike.
	Now time.Time `msgpack:"n"`
	// Trade is the trade the operation acts on.
	Trade TradeRef `msgpack:"t"`
	// Escrow is the hold to make (OpHoldEscrow).
	Escrow *EscrowRecord `msgpack:"es,omitempty"`
	// Award is the award to record (OpRecordAward).
	Award *AwardRecord `msgpack:"aw,omitempty"`
	// Epoch is the placement epoch (OpConvertEscrow, OpCancelTrade,
	// OpDrawLease, OpSetTradeState).
	Epoch uint64 `msgpack:"e,omitempty"`
	// Price is the price paid, US dollars per node-hour (OpConvertEscrow,
	// OpDrawLease).
	Price float64 `msgpack:"p,omitempty"`
	// State is the target state (OpSetTradeState).
	State TradeState `msgpack:"s,omitempty"`
	// Lease names the lease drawn on (OpDrawLease).
	Lease *TradeRef `msgpack:"l,omitempty"`
	// Job is the job to run in the lease (OpDrawLease).
	Job *placement.Job `msgpack:"j,omitempty"`
	// Reason says why (OpReleaseEscrow, OpSetTradeState), for the record.
	Reason string `msgpack:"r,omitempty"`
	// Preempt names the seller's running allocations (Movable.AllocID) to
	// stop before the hold (OpHoldEscrow), all or nothing: the ledger
	// refuses the hold, stopping none, unless each still runs work of
	// lower priority than the escrow's job on its node and together they
	// free enough.
	Preempt []string `msgpack:"pe,omitempty"`
}

// OpResult is the outcome of one committed LedgerOp.
type OpResult struct {
	// Err is nil on success, or wraps one of ErrInsufficientCapacity,
	// ErrEscrowGone, ErrStaleEpoch, ErrUnknownTrade.
	Err error
	// Status is the seller-side state of the trade after the op
	// (OpConvertEscrow, OpCancelTrade, OpDrawLease, OpLookupTrade).
	Status TradeStatus
	// Epoch is the allocation's epoch (seller ops) or the job's current
	// epoch (OpSetTradeState).
	Epoch uint64
}

// EscrowRecord is a seller's hold, as its ledger stores it.
type EscrowRecord struct {
	// Trade names the hold.
	Trade TradeRef `msgpack:"t"`
	// Kind is what the buyer bids for (job or lease).
	Kind ItemKind `msgpack:"k"`
	// JobID is the job's (or lease's) ID.
	JobID string `msgpack:"j"`
	// Node is the node the resources are held on.
	Node string `msgpack:"n"`
	// Resources are what is held.
	Resources placement.Resources `msgpack:"r"`
	// Duration is how long the job (or lease) runs once allocated; zero
	// means until cancelled.
	Duration time.Duration `msgpack:"d,omitempty"`
	// Price is the asked price, US dollars per node-hour.
	Price float64 `msgpack:"p"`
	// Expiry is when the hold lapses by itself.
	Expiry time.Time `msgpack:"x"`
	// Priority, Origin, LatencySLO and MaxPrice are the job's terms (zero
	// for a lease): the seller's leader judges by them whether it may
	// preempt the allocation when a job of its own needs the room, and
	// whether the buyer's job could be served elsewhere.
	Priority   int           `msgpack:"pr,omitempty"`
	Origin     string        `msgpack:"or,omitempty"`
	LatencySLO time.Duration `msgpack:"slo,omitempty"`
	MaxPrice   float64       `msgpack:"mp,omitempty"`
}

// AwardRecord is a buyer's award, as its ledger stores it.
type AwardRecord struct {
	// Trade names the award; Trade.Buyer is the recording region.
	Trade TradeRef `msgpack:"t"`
	// Kind is what was bought (job or lease).
	Kind ItemKind `msgpack:"k"`
	// JobID is the job's (or lease's) ID.
	JobID string `msgpack:"j"`
	// Epoch is the job's placement epoch the award is for.
	Epoch uint64 `msgpack:"e"`
	// Seller is the seller's region.
	Seller string `msgpack:"s"`
	// Node is the seller's node.
	Node string `msgpack:"n"`
	// GPUType is the node's accelerator model, empty for none.
	GPUType string `msgpack:"g,omitempty"`
	// Price is the price paid, US dollars per node-hour.
	Price float64 `msgpack:"p"`
	// Score is the winning offer's score (after the RTT penalty); zero for
	// a draw on a lease, which no offers competed for.
	Score float64 `msgpack:"sc,omitempty"`
	// Resources are what the job (or lease) uses.
	Resources placement.Resources `msgpack:"r"`
	// Duration is how long the job (or lease) runs; zero means until
	// cancelled.
	Duration time.Duration `msgpack:"d,omitempty"`
	// AwardedAt is the buyer's clock when it decided: the in-doubt timeout
	// counts from it.
	AwardedAt time.Time `msgpack:"at"`
	// Lease, for a draw, names the lease trade drawn on.
	Lease *TradeRef `msgpack:"l,omitempty"`
	// Job, for a draw, is the job placed in the lease (the seller needs its
	// demand, and a new leader needs it to resend the award).
	Job *placement.Job `msgpack:"jb,omitempty"`
	// State is the trade's state (snapshots only; OpRecordAward records
	// TradeAwarded whatever is here).
	State TradeState `msgpack:"st,omitempty"`
}

// LeaseRecord is a lease the buyer holds (a confirmed ItemLease trade), as
// its ledger stores it.
type LeaseRecord struct {
	// Trade names the lease.
	Trade TradeRef `msgpack:"t"`
	// Seller is the seller's region.
	Seller string `msgpack:"s"`
	// Node is the seller's node the capacity is on.
	Node string `msgpack:"n"`
	// GPUType is the node's accelerator model, empty for none.
	GPUType string `msgpack:"g,omitempty"`
	// Resources is the leased capacity.
	Resources placement.Resources `msgpack:"r"`
	// Used is the part of it drawn by recorded awards.
	Used placement.Resources `msgpack:"u"`
	// Price is the price paid, US dollars per node-hour.
	Price float64 `msgpack:"p"`
	// End is when the lease ends (buyer's conservative estimate: award time
	// plus duration).
	End time.Time `msgpack:"x"`
}

// MarketSnapshot is the market's durable state in a region's ledger. A node
// that becomes leader reads it so its Market carries on where the previous
// leader stopped.
type MarketSnapshot struct {
	// Trades are the buyer's open trades: state TradeAwarded (waiting for an
	// acknowledgment) or TradeAbandoned (waiting to be settled).
	Trades []AwardRecord
	// Escrows are the seller's held escrows (not converted, not released),
	// expired ones included: the market releases them.
	Escrows []EscrowRecord
	// Leases are the buyer's confirmed leases that have not ended.
	Leases []LeaseRecord
}
