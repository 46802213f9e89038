package auction

import (
	"errors"
	"fmt"
	"time"

	"github.com/meridian-mesh/meridian/placement"
)

// ItemKind says what an auctioned item buys.
type ItemKind uint8

const (
	// ItemJob buys a placement for one job: the seller runs the job.
	ItemJob ItemKind = 1
	// ItemLease buys a capacity lease: resources held for the buyer for a
	// time window, into which the buyer later places jobs without a further
	// auction (Market.PlaceInLease).
	ItemLease ItemKind = 2
)

// String implements fmt.Stringer.
func (k ItemKind) String() string {
	switch k {
	case ItemJob:
		return "job"
	case ItemLease:
		return "lease"
	}
	return fmt.Sprintf("ItemKind(%d)", uint8(k))
}

// Item is one thing a buyer auctions: a job to run, or a capacity lease.
//
// For a lease, Job describes the lease: Job.ID names it, Job.Demand is the
// resources held, Job.Duration the window (required), and OriginRegion,
// LatencySLO and MaxPricePerHour constrain the seller exactly as for a job.
type Item struct {
	// ID names the item within its auction; for a job it is normally the
	// job ID.
	ID string `msgpack:"id"`
	// Kind says whether the item is a job or a lease.
	Kind ItemKind `msgpack:"k"`
	// Job is what is bought: demand, duration, origin, SLO and price limit.
	Job placement.Job `msgpack:"j"`
	// Epoch is the job's placement epoch in the home ledger when the auction
	// started. An allocation is live only while its epoch is the job's
	// current one; after a partition, allocations for older epochs are
	// cancelled.
	Epoch uint64 `msgpack:"e"`
	// Preempt says that no region had room for the job and its home could
	// not make room: a seller may stop running work of lower priority
	// that can move elsewhere to make room for it (seller-side
	// preemption, QuotePreempting). Buyers invite every region within the
	// job's SLO and price limit for such an item, room or not. Sellers
	// that do not preempt (Config.NoPreempt, or an older version) ignore
	// it. Never set on a lease.
	Preempt bool `msgpack:"pe,omitempty"`
}

// Validate checks the item; errors name the field, prefixed with prefix.
func (it Item) Validate(prefix string) error {
	if err := checkID(prefix+"id", it.ID); err != nil {
		return err
	}
	if it.Kind != ItemJob && it.Kind != ItemLease {
		return fieldErr(prefix+"kind", fmt.Sprintf("unknown item kind %d", it.Kind))
	}
	if len(it.Job.ID) > MaxIDLen || len(it.Job.OriginRegion) > MaxIDLen || len(it.Job.GPUType) > MaxIDLen {
		return fieldErr(prefix+"job", fmt.Sprintf("names longer than %d bytes", MaxIDLen))
	}
	if err := it.Job.Validate(); err != nil {
		return wrapField(prefix+"job", err)
	}
	if it.Kind == ItemLease && it.Job.Duration <= 0 {
		return fieldErr(prefix+"job.duration", "a lease needs a positive duration")
	}
	if it.Kind == ItemLease && it.Preempt {
		return fieldErr(prefix+"preempt", "a lease is never sold by preemption: it holds room whether used or not")
	}
	return nil
}

// TradeRef names one trade everywhere it is recorded: in the buyer's ledger
// (the award) and in the seller's (the escrow, then the allocation). Auction
// IDs are unique per buyer, so the triple is unique in the mesh; every ledger
// operation that touches a trade is idempotent by it.
type TradeRef struct {
	// Buyer is the buyer's region.
	Buyer string `msgpack:"b"`
	// Auction is the auction (or lease draw) ID chosen by the buyer.
	Auction string `msgpack:"a"`
	// Item is the item ID within the auction.
	Item string `msgpack:"i"`
}

// String renders the reference as buyer/auction/item for logs.
func (r TradeRef) String() string { return r.Buyer + "/" + r.Auction + "/" + r.Item }

// PricingRule says what a winning seller is paid.
type PricingRule uint8

const (
	// FirstPrice pays each winner its own bid.
	FirstPrice PricingRule = 1
	// SecondPrice pays each winner the highest price at which it would still
	// have won: the price that brings its score down to the runner-up's
	// score (a second-score, or Vickrey, auction). When bids differ only in
	// price this is exactly the runner-up's price. A sole bidder is paid its
	// own bid.
	SecondPrice PricingRule = 2
)

// String implements fmt.Stringer.
func (p PricingRule) String() string {
	switch p {
	case FirstPrice:
		return "first-price"
	case SecondPrice:
		return "second-price"
	}
	return fmt.Sprintf("PricingRule(%d)", uint8(p))
}

// TradeStatus is the state of a trade in the seller's ledger, as a status
// reply or an acknowledgment reports it.
type TradeStatus uint8

const (
	// StatusUnknown: the seller's ledger has no record of the trade (it never
	// held an escrow for it, or has forgotten a long-settled one).
	StatusUnknown TradeStatus = 1
	// StatusHeld: an escrow is held and not yet converted.
	StatusHeld TradeStatus = 2
	// StatusAllocated: the escrow became an allocation (for the epoch given).
	StatusAllocated TradeStatus = 3
	// StatusReleased: the escrow was released or expired; nothing is held.
	StatusReleased TradeStatus = 4
	// StatusCancelled: the allocation was cancelled on the buyer's request.
	StatusCancelled TradeStatus = 5
)

// String implements fmt.Stringer.
func (s TradeStatus) String() string {
	switch s {
	case StatusUnknown:
		return "unknown"
	case StatusHeld:
		return "held"
	case StatusAllocated:
		return "allocated"
	case StatusReleased:
		return "released"
	case StatusCancelled:
		return "cancelled"
	}
	return fmt.Sprintf("TradeStatus(%d)", uint8(s))
}

func (s TradeStatus) valid() bool { return s >= StatusUnknown && s <= StatusCancelled }

// settledWithoutAllocation reports whether the seller holds nothing for the
// trade and never will again.
func (s TradeStatus) settledWithoutAllocation() bool {
	return s == StatusUnknown || s == StatusReleased || s == StatusCancelled
}

// TradeState is the state of a trade in the buyer's ledger.
type TradeState uint8

const (
	// TradeAwarded: the award is committed and sent; no answer yet.
	TradeAwarded TradeState = 1
	// TradeConfirmed: the seller acknowledged the allocation; the job runs
	// there under the trade's epoch.
	TradeConfirmed TradeState = 2
	// TradeFailed: the seller answered that it could not honour the award
	// (its escrow had expired or was released); the job's epoch was bumped
	// and it must be placed again. The seller holds nothing: the trade is
	// final.
	TradeFailed TradeState = 3
	// TradeAbandoned: the award stayed in doubt past InDoubtTimeout; the
	// job's epoch was bumped and it may be placed again. The trade stays
	// open until the seller confirms it holds nothing for it.
	TradeAbandoned TradeState = 4
	// TradeSettled: an abandoned or stale trade is reconciled: the seller
	// holds nothing for it. Nothing remains to do.
	TradeSettled TradeState = 5
)

// String implements fmt.Stringer.
func (s TradeState) String() string {
	switch s {
	case TradeAwarded:
		return "awarded"
	case TradeConfirmed:
		return "confirmed"
	case TradeFailed:
		return "failed"
	case TradeAbandoned:
		return "abandoned"
	case TradeSettled:
		return "settled"
	}
	return fmt.Sprintf("TradeState(%d)", uint8(s))
}

// Sentinel errors. Callers test them with errors.Is.
var (
	// ErrMalformed is wrapped by every error about a message that does not
	// decode or does not validate.
	ErrMalformed = errors.New("malformed market message")
	// ErrTooLarge is returned for a frame longer than MaxMessageSize; it is
	// detected before the frame is read into memory.
	ErrTooLarge = errors.New("market message too large")
	// ErrVersion is returned for a message of an unknown protocol version.
	ErrVersion = errors.New("unsupported market protocol version")
	// ErrUnknownKind is returned for a message of an unknown kind.
	ErrUnknownKind = errors.New("unknown market message kind")
	// ErrRefused is wrapped by every error about a well-formed message that
	// the market will not act on: wrong recipient, stale term, unknown
	// auction, non-leader sender.
	ErrRefused = errors.New("market message refused")
	// ErrNotLeader is returned when the local node is not its region's
	// leader, so it can neither buy nor sell.
	ErrNotLeader = errors.New("not the region leader")
	// ErrNoSellers is returned when no region could serve any of the items.
	ErrNoSellers = errors.New("no candidate sellers")
	// ErrNoLease is returned by PlaceInLease when no held lease fits the item.
	ErrNoLease = errors.New("no lease fits the item")
	// ErrDuplicate is returned when an auction or item ID is reused.
	ErrDuplicate = errors.New("duplicate ID")
)

// Ledger-side sentinel errors: a Ledger implementation returns them (wrapped
// as it likes) in OpResult.Err so the market can tell the outcomes apart.
var (
	// ErrInsufficientCapacity: a hold or draw does not fit the node's (or
	// lease's) free capacity at the operation's time.
	ErrInsufficientCapacity = errors.New("insufficient capacity")
	// ErrEscrowGone: the escrow to convert is expired, released or unknown.
	ErrEscrowGone = errors.New("escrow expired or released")
	// ErrStaleEpoch: the job's placement epoch in the home ledger is not the
	// one the operation names (the job was re-placed meanwhile).
	ErrStaleEpoch = errors.New("stale placement epoch")
	// ErrUnknownTrade: the ledger has no record of the trade.
	ErrUnknownTrade = errors.New("unknown trade")
)

// MessageError names the field of a message that is invalid. It wraps
// ErrMalformed.
type MessageError struct {
	// Field is the path of the offending field, e.g. "bid.items[2].price".
	Field string
	// Reason says what is wrong with it.
	Reason string
	// Err is the underlying error, if any.
	Err error
}

// Error implements error.
func (e *MessageError) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%s: field %q: %s: %v", ErrMalformed, e.Field, e.Reason, e.Err)
	}
	return fmt.Sprintf("%s: field %q: %s", ErrMalformed, e.Field, e.Reason)
}

// Unwrap returns ErrMalformed and the underlying error.
func (e *MessageError) Unwrap() []error {
	if e.Err != nil {
		return []error{ErrMalformed, e.Err}
	}
	return []error{ErrMalformed}
}

func fieldErr(field, reason string) error { return &MessageError{Field: field, Reason: reason} }

func wrapField(field string, err error) error {
	return &MessageError{Field: field, Reason: "invalid", Err: err}
}

// MaxIDLen bounds every name and ID in a message (regions, auctions, items,
// nodes, reasons).
const MaxIDLen = 256

func checkID(field, s string) error {
	switch {
	case s == "":
		return fieldErr(field, "must not be empty")
	case len(s) > MaxIDLen:
		return fieldErr(field, fmt.Sprintf("longer than %d bytes", MaxIDLen))
	}
	return nil
}

// checkTime rejects the zero time and times far outside any plausible clock,
// which would otherwise overflow duration arithmetic.
func checkTime(field string, t time.Time) error {
	if t.IsZero() {
		return fieldErr(field, "must be set")
	}
	if t.Year() < 2000 || t.Year() > 9999 {
		return fieldErr(field, fmt.Sprintf("implausible time %s", t.UTC().Format(time.RFC3339)))
	}
	return nil
}
