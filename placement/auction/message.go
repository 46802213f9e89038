package auction

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/meridian-mesh/meridian/placement"
)

// ProtocolID is the libp2p stream protocol of the market. The last component
// is the wire version; a change that old peers cannot read, or that makes
// what they send unreadable, gets a new ID and a new Version. (2.0.0: a
// bid names its escrow, BidItem.Escrow, which version 1 sellers do not
// send.)
const ProtocolID = "/meridian/market/2.0.0"

// Version is the envelope version this package writes and accepts; it
// changes with ProtocolID's major version.
const Version = 2

// MaxEscrowIDLen bounds BidItem.Escrow: an escrow ID is a trade reference
// buyer/auction/item (TradeRef.String), three names of at most MaxIDLen
// bytes and two slashes.
const MaxEscrowIDLen = 3*MaxIDLen + 2

// MaxMessageSize bounds an encoded envelope. Readers refuse a longer frame
// before reading it into memory.
const MaxMessageSize = 256 << 10

// MaxItems bounds the items of one message, and so of one auction.
const MaxItems = 1024

// Kind says which body an Envelope carries.
type Kind uint8

// The message kinds. Requests go from a buyer to a seller; each seller reply
// travels back on the request's stream.
const (
	// KindCallForBids (buyer → seller, request): the items and the deadline.
	KindCallForBids Kind = 1
	// KindBid (seller → buyer, reply to CallForBids): escrowed offers.
	KindBid Kind = 2
	// KindNoBid (seller → buyer, reply to CallForBids): nothing offered.
	KindNoBid Kind = 3
	// KindAward (buyer → seller, request): the items won, after the buyer
	// committed the award.
	KindAward Kind = 4
	// KindAck (seller → buyer, reply to Award): per item, the allocation's
	// committed status.
	KindAck Kind = 5
	// KindRelease (buyer → seller, one-way): escrows the buyer will not take.
	KindRelease Kind = 6
	// KindStatusQuery (buyer → seller, request): what the seller's ledger
	// says about some trades.
	KindStatusQuery Kind = 7
	// KindStatusReply (seller → buyer, reply to StatusQuery or Cancel).
	KindStatusReply Kind = 8
	// KindCancel (buyer → seller, request): cancel the allocations (or
	// escrows) of trades whose epoch is no longer the job's current one.
	KindCancel Kind = 9
	// KindAsk (seller → everyone, via gossip): an advertisement of surplus.
	KindAsk Kind = 10
)

var kindNames = [...]string{
	KindCallForBids: "CallForBids", KindBid: "Bid", KindNoBid: "NoBid",
	KindAward: "Award", KindAck: "Ack", KindRelease: "Release",
	KindStatusQuery: "StatusQuery", KindStatusReply: "StatusReply",
	KindCancel: "Cancel", KindAsk: "Ask",
}

// String implements fmt.Stringer.
func (k Kind) String() string {
	if int(k) < len(kindNames) && kindNames[k] != "" {
		return kindNames[k]
	}
	return fmt.Sprintf("Kind(%d)", uint8(k))
}

// Known reports whether k is a kind of this protocol version.
func (k Kind) Known() bool { return k >= KindCallForBids && k <= KindAsk }

// ExpectsReply reports whether a message of kind k is a request whose sender
// waits for a reply on the same stream.
func (k Kind) ExpectsReply() bool {
	switch k {
	case KindCallForBids, KindAward, KindStatusQuery, KindCancel:
		return true
	}
	return false
}

// IsReply reports whether k is only ever sent as a reply.
func (k Kind) IsReply() bool {
	switch k {
	case KindBid, KindNoBid, KindAck, KindStatusReply:
		return true
	}
	return false
}

// Envelope is one market message: a header every kind shares and exactly
// one body, the one Kind names.
type Envelope struct {
	// Version is the protocol version (Version).
	Version uint16 `msgpack:"v"`
	// Kind names the body.
	Kind Kind `msgpack:"k"`
	// Auction is the auction (or lease draw) the message is about; empty
	// only for an Ask.
	Auction string `msgpack:"a,omitempty"`
	// From is the sender's region. The sender must be that region's leader.
	From string `msgpack:"f"`
	// To is the recipient's region; empty only for an Ask.
	To string `msgpack:"to,omitempty"`
	// Term is the sender region's leader term. Receivers refuse a term older
	// than one they already saw from the same region.
	Term uint64 `msgpack:"tm"`
	// Sent is the sender's clock when it built the message, for logs and to
	// refuse replays far older than any live exchange.
	Sent time.Time `msgpack:"s"`

	// The bodies, named after their kinds: exactly the one Kind names is
	// set.

	CallForBids *CallForBids `msgpack:"cfb,omitempty"` // KindCallForBids
	Bid         *Bid         `msgpack:"bid,omitempty"` // KindBid
	NoBid       *NoBid       `msgpack:"nb,omitempty"`  // KindNoBid
	Award       *Award       `msgpack:"aw,omitempty"`  // KindAward
	Ack         *Ack         `msgpack:"ack,omitempty"` // KindAck
	Release     *Release     `msgpack:"rel,omitempty"` // KindRelease
	StatusQuery *StatusQuery `msgpack:"sq,omitempty"`  // KindStatusQuery
	StatusReply *StatusReply `msgpack:"sr,omitempty"`  // KindStatusReply
	Cancel      *Cancel      `msgpack:"cx,omitempty"`  // KindCancel
	Ask         *Ask         `msgpack:"ask,omitempty"` // KindAsk
}

// CallForBids invites a seller to bid on items.
type CallForBids struct {
	// Items are what the buyer wants; the seller bids on those it can serve.
	Items []Item `msgpack:"i"`
	// Deadline is when the buyer stops waiting for bids.
	Deadline time.Time `msgpack:"d"`
	// Supersedes, in a follow-up round, names the previous round's auction.
	Supersedes string `msgpack:"sup,omitempty"`
	// Release lists the items of Supersedes whose escrows at this seller the
	// buyer does not take. The seller releases them before it holds for this
	// call, in the same commit, so the capacity they held is free for these
	// bids.
	Release []string `msgpack:"rel,omitempty"`
}

// BidItem is a firm offer for one item, backed by an escrow in the seller's
// ledger.
type BidItem struct {
	// Item is the item ID.
	Item string `msgpack:"i"`
	// Node is the seller's node that would run it.
	Node string `msgpack:"n"`
	// Compute is the node's free compute before this call's holds (C in the
	// score), tasks/hour; at least the item's demand.
	Compute float64 `msgpack:"c"`
	// GPUType is the node's accelerator model, empty for none.
	GPUType string `msgpack:"g,omitempty"`
	// Price is the asked price in US dollars per node-hour (c in the score).
	Price float64 `msgpack:"p"`
	// Expiry is when the escrow lapses by itself (seller's clock).
	Expiry time.Time `msgpack:"x"`
	// Escrow is the ID of the escrow the seller committed for the offer
	// before it answered. Escrow IDs are trade references (TradeRef.String
	// of buyer, auction, item), which Award, Release and Cancel name by
	// their envelope and item: the buyer takes an offer only if its escrow
	// is the one they will name.
	Escrow string `msgpack:"e"`
}

// Decline says why a seller did not bid on an item.
type Decline struct {
	// Item is the item ID.
	Item string `msgpack:"i"`
	// Reason is a short human-readable cause.
	Reason string `msgpack:"r"`
}

// Bid answers a CallForBids with escrowed offers.
type Bid struct {
	// Items are the offers, one per item bid on.
	Items []BidItem `msgpack:"i"`
	// Declined lists items the seller did not bid on, with reasons.
	Declined []Decline `msgpack:"d,omitempty"`
}

// NoBid answers a CallForBids on which the seller offers nothing.
type NoBid struct {
	// Reason is the overall cause.
	Reason string `msgpack:"r"`
	// Declined gives per-item causes, when there are distinct ones.
	Declined []Decline `msgpack:"d,omitempty"`
}

// AwardItem is one item won.
type AwardItem struct {
	// Item is the item ID; with the envelope's From and Auction it names the
	// escrow to convert (or, for a lease draw, the allocation to create).
	Item string `msgpack:"i"`
	// Epoch is the job's placement epoch the allocation is for.
	Epoch uint64 `msgpack:"e"`
	// Price is what the buyer pays, US dollars per node-hour.
	Price float64 `msgpack:"p"`
	// Lease, for a draw on a held lease, names the lease trade (the buyer is
	// the envelope's From); nil for an auctioned item.
	Lease *LeaseRef `msgpack:"l,omitempty"`
	// Job is the job to run inside the lease; set only with Lease.
	Job *placement.Job `msgpack:"j,omitempty"`
}

// LeaseRef names a lease by the auction and item that bought it.
type LeaseRef struct {
	// Auction is the auction that bought the lease.
	Auction string `msgpack:"a"`
	// Item is the lease's item ID in that auction.
	Item string `msgpack:"i"`
}

// Award tells a seller which of its escrows the buyer takes.
type Award struct {
	// Items are the items won.
	Items []AwardItem `msgpack:"i"`
}

// ItemStatus is the committed state of one trade in the seller's ledger.
type ItemStatus struct {
	// Item is the item ID.
	Item string `msgpack:"i"`
	// Status is the trade's state.
	Status TradeStatus `msgpack:"s"`
	// Epoch is the allocation's epoch when Status is StatusAllocated.
	Epoch uint64 `msgpack:"e,omitempty"`
	// Reason explains a status other than the one asked for.
	Reason string `msgpack:"r,omitempty"`
}

// Ack answers an Award once the seller's ledger committed the outcome.
type Ack struct {
	// Items give the outcome per awarded item.
	Items []ItemStatus `msgpack:"i"`
}

// Release tells a seller the buyer will not take some escrows.
type Release struct {
	// Items are the item IDs; empty means every item of the auction.
	Items []string `msgpack:"i,omitempty"`
}

// StatusQuery asks a seller what its ledger says about some trades.
type StatusQuery struct {
	// Items are the item IDs of the envelope's auction.
	Items []string `msgpack:"i"`
}

// StatusReply answers a StatusQuery or a Cancel.
type StatusReply struct {
	// Items give the state per item.
	Items []ItemStatus `msgpack:"i"`
}

// CancelItem names a trade to cancel and the epoch it was for.
type CancelItem struct {
	// Item is the item ID.
	Item string `msgpack:"i"`
	// Epoch is the stale epoch; the seller cancels only an allocation made
	// for it (or an escrow not yet converted).
	Epoch uint64 `msgpack:"e"`
}

// Cancel asks a seller to cancel stale allocations.
type Cancel struct {
	// Items are the trades to cancel.
	Items []CancelItem `msgpack:"i"`
}

// Ask advertises a region's surplus, for gossip to carry. It is small: a
// seller's whole ask encodes in well under 200 bytes.
type Ask struct {
	// Surplus is the free capacity the region offers in total.
	Surplus placement.Resources `msgpack:"r"`
	// LargestNode is the most free capacity on any single node: no item
	// bigger than it can be served.
	LargestNode placement.Resources `msgpack:"n"`
	// MinPrice is the lowest price the region would quote now, US dollars
	// per node-hour.
	MinPrice float64 `msgpack:"p"`
	// MinCost is the lowest cost of a node with free capacity, US dollars
	// per node-hour: the least the region sells for to a buyer whose limit
	// is under MinPrice (QuoteItems). Zero when the seller does not say
	// (older agents), in which case MinPrice is the floor.
	MinCost float64 `msgpack:"c,omitempty"`
	// Expires is when the ask lapses.
	Expires time.Time `msgpack:"x"`
}

// Floor is the least the region sells for: MinCost when it says, else
// MinPrice.
func (a *Ask) Floor() float64 {
	if a.MinCost > 0 && a.MinCost < a.MinPrice {
		return a.MinCost
	}
	return a.MinPrice
}

// Encode validates env and returns its msgpack encoding.
func Encode(env *Envelope) ([]byte, error) {
	if err := env.Validate(); err != nil {
		return nil, fmt.Errorf("encode %s: %w", env.Kind, err)
	}
	var buf bytes.Buffer
	enc := msgpack.NewEncoder(&buf)
	enc.UseCompactInts(true)
	if err := enc.Encode(env); err != nil {
		return nil, fmt.Errorf("encode %s: %w", env.Kind, err)
	}
	if buf.Len() > MaxMessageSize {
		return nil, fmt.Errorf("encode %s: %d bytes: %w", env.Kind, buf.Len(), ErrTooLarge)
	}
	return buf.Bytes(), nil
}

// Decode parses and validates one encoded envelope. It never panics; every
// failure wraps ErrMalformed, ErrTooLarge, ErrVersion or ErrUnknownKind.
//
// The structure of the msgpack data is checked before it is decoded: no
// container may declare more elements than bytes remain or than MaxItems
// allows. (msgpack v5.4.1 preallocates a struct slice of whatever length the
// data declares, so five hostile bytes could otherwise ask for gigabytes.)
func Decode(b []byte) (*Envelope, error) {
	if len(b) > MaxMessageSize {
		return nil, fmt.Errorf("decode: %d bytes: %w", len(b), ErrTooLarge)
	}
	if err := checkMsgpack(b); err != nil {
		return nil, &MessageError{Field: "envelope", Reason: "not well-formed msgpack", Err: err}
	}
	var env Envelope
	if err := msgpack.Unmarshal(b, &env); err != nil {
		return nil, &MessageError{Field: "envelope", Reason: "does not decode", Err: err}
	}
	if err := env.Validate(); err != nil {
		return nil, err
	}
	return &env, nil
}

// WriteFrame writes b with its 4-byte big-endian length prefix.
func WriteFrame(w io.Writer, b []byte) error {
	if len(b) > MaxMessageSize {
		return fmt.Errorf("write frame: %d bytes: %w", len(b), ErrTooLarge)
	}
	frame := make([]byte, 4+len(b))
	binary.BigEndian.PutUint32(frame, uint32(len(b)))
	copy(frame[4:], b)
	if _, err := w.Write(frame); err != nil {
		return fmt.Errorf("write frame: %w", err)
	}
	return nil
}

// ReadFrame reads one length-prefixed frame. A declared length above
// MaxMessageSize is refused with ErrTooLarge before anything is allocated.
func ReadFrame(r io.Reader) ([]byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, fmt.Errorf("read frame length: %w", err)
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n > MaxMessageSize {
		return nil, fmt.Errorf("read frame: declared %d bytes: %w", n, ErrTooLarge)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return nil, fmt.Errorf("read frame body (%d bytes): %w", n, err)
	}
	return b, nil
}

// Validate checks the envelope: version, kind, header, and that exactly the
// body of its kind is present and valid. Errors name the field at fault.
func (env *Envelope) Validate() error {
	if env == nil {
		return fieldErr("envelope", "nil")
	}
	if env.Version != Version {
		return fmt.Errorf("%w: field \"version\": got %d, want %d", ErrVersion, env.Version, Version)
	}
	if !env.Kind.Known() {
		return fmt.Errorf("%w: field \"kind\": %d", ErrUnknownKind, uint8(env.Kind))
	}
	if err := checkID("from", env.From); err != nil {
		return err
	}
	if env.Kind != KindAsk {
		if err := checkID("auction", env.Auction); err != nil {
			return err
		}
		if err := checkID("to", env.To); err != nil {
			return err
		}
		if env.To == env.From {
			return fieldErr("to", "a region does not trade with itself")
		}
	} else if len(env.Auction) > MaxIDLen || len(env.To) > MaxIDLen {
		return fieldErr("ask", "auction and to must be short")
	}
	if env.Term == 0 {
		return fieldErr("term", "must be positive")
	}
	if err := checkTime("sent", env.Sent); err != nil {
		return err
	}
	if got := env.bodies(); got != 1 {
		return fieldErr(bodyField(env.Kind), fmt.Sprintf("want exactly the %s body, found %d bodies", env.Kind, got))
	}
	switch env.Kind {
	case KindCallForBids:
		return env.CallForBids.validate()
	case KindBid:
		return env.Bid.validate()
	case KindNoBid:
		return env.NoBid.validate()
	case KindAward:
		return env.Award.validate()
	case KindAck:
		return validateStatuses("ack.items", env.Ack.Items, true)
	case KindRelease:
		return validateIDs("release.items", env.Release.Items, true)
	case KindStatusQuery:
		return validateIDs("status_query.items", env.StatusQuery.Items, false)
	case KindStatusReply:
		return validateStatuses("status_reply.items", env.StatusReply.Items, false)
	case KindCancel:
		return env.Cancel.validate()
	case KindAsk:
		return env.Ask.validate()
	}
	return fmt.Errorf("%w: %d", ErrUnknownKind, uint8(env.Kind))
}

// bodies counts the bodies present; it returns 0 when the kind's own body
// is missing, whatever else is there.
func (env *Envelope) bodies() int {
	present := [...]bool{
		KindCallForBids: env.CallForBids != nil, KindBid: env.Bid != nil,
		KindNoBid: env.NoBid != nil, KindAward: env.Award != nil,
		KindAck: env.Ack != nil, KindRelease: env.Release != nil,
		KindStatusQuery: env.StatusQuery != nil, KindStatusReply: env.StatusReply != nil,
		KindCancel: env.Cancel != nil, KindAsk: env.Ask != nil,
	}
	if !present[env.Kind] {
		return 0
	}
	n := 0
	for _, p := range present {
		if p {
			n++
		}
	}
	return n
}

func bodyField(k Kind) string {
	switch k {
	case KindCallForBids:
		return "call_for_bids"
	case KindNoBid:
		return "no_bid"
	case KindStatusQuery:
		return "status_query"
	case KindStatusReply:
		return "status_reply"
	}
	s := k.String()
	if s == "" {
		return "body"
	}
	return string(bytes.ToLower([]byte(s)))
}

func (c *CallForBids) validate() error {
	if err := checkCount("call_for_bids.items", len(c.Items), false); err != nil {
		return err
	}
	seen := make(map[string]bool, len(c.Items))
	for i, it := range c.Items {
		prefix := fmt.Sprintf("call_for_bids.items[%d].", i)
		if err := it.Validate(prefix); err != nil {
			return err
		}
		if seen[it.ID] {
			return fieldErr(prefix+"id", fmt.Sprintf("duplicate item %q", it.ID))
		}
		seen[it.ID] = true
	}
	if err := checkTime("call_for_bids.deadline", c.Deadline); err != nil {
		return err
	}
	if len(c.Release) > 0 {
		if err := checkID("call_for_bids.supersedes", c.Supersedes); err != nil {
			return err
		}
	} else if c.Supersedes != "" {
		return fieldErr("call_for_bids.release", "a call that supersedes an auction releases some of its items")
	}
	return validateIDs("call_for_bids.release", c.Release, true)
}

func (b *Bid) validate() error {
	if err := checkCount("bid.items", len(b.Items), false); err != nil {
		return err
	}
	seen := make(map[string]bool, len(b.Items)+len(b.Declined))
	for i, it := range b.Items {
		prefix := fmt.Sprintf("bid.items[%d].", i)
		if err := checkID(prefix+"item", it.Item); err != nil {
			return err
		}
		if seen[it.Item] {
			return fieldErr(prefix+"item", fmt.Sprintf("duplicate item %q", it.Item))
		}
		seen[it.Item] = true
		if err := checkID(prefix+"node", it.Node); err != nil {
			return err
		}
		if len(it.GPUType) > MaxIDLen {
			return fieldErr(prefix+"gpu_type", "too long")
		}
		if err := checkPositive(prefix+"compute", it.Compute); err != nil {
			return err
		}
		if err := checkPositive(prefix+"price", it.Price); err != nil {
			return err
		}
		if err := checkTime(prefix+"expiry", it.Expiry); err != nil {
			return err
		}
		switch {
		case it.Escrow == "":
			return fieldErr(prefix+"escrow", "must not be empty")
		case len(it.Escrow) > MaxEscrowIDLen:
			return fieldErr(prefix+"escrow", fmt.Sprintf("longer than %d bytes", MaxEscrowIDLen))
		}
	}
	return validateDeclines("bid.declined", b.Declined, seen)
}

func (n *NoBid) validate() error {
	if len(n.Reason) > MaxIDLen {
		return fieldErr("no_bid.reason", "too long")
	}
	return validateDeclines("no_bid.declined", n.Declined, map[string]bool{})
}

func validateDeclines(field string, ds []Decline, seen map[string]bool) error {
	if err := checkCount(field, len(ds), true); err != nil {
		return err
	}
	for i, d := range ds {
		prefix := fmt.Sprintf("%s[%d].", field, i)
		if err := checkID(prefix+"item", d.Item); err != nil {
			return err
		}
		if seen[d.Item] {
			return fieldErr(prefix+"item", fmt.Sprintf("duplicate item %q", d.Item))
		}
		seen[d.Item] = true
		if len(d.Reason) > MaxIDLen {
			return fieldErr(prefix+"reason", "too long")
		}
	}
	return nil
}

func (a *Award) validate() error {
	if err := checkCount("award.items", len(a.Items), false); err != nil {
		return err
	}
	seen := make(map[string]bool, len(a.Items))
	for i, it := range a.Items {
		prefix := fmt.Sprintf("award.items[%d].", i)
		if err := checkID(prefix+"item", it.Item); err != nil {
			return err
		}
		if seen[it.Item] {
			return fieldErr(prefix+"item", fmt.Sprintf("duplicate item %q", it.Item))
		}
		seen[it.Item] = true
		if err := checkPositive(prefix+"price", it.Price); err != nil {
			return err
		}
		if (it.Lease == nil) != (it.Job == nil) {
			return fieldErr(prefix+"lease", "a lease draw needs both lease and job; an auctioned item neither")
		}
		if it.Lease != nil {
			if err := checkID(prefix+"lease.auction", it.Lease.Auction); err != nil {
				return err
			}
			if err := checkID(prefix+"lease.item", it.Lease.Item); err != nil {
				return err
			}
			draw := Item{ID: it.Item, Kind: ItemJob, Job: *it.Job, Epoch: it.Epoch}
			if err := draw.Validate(prefix); err != nil {
				return err
			}
		}
	}
	return nil
}

func (c *Cancel) validate() error {
	if err := checkCount("cancel.items", len(c.Items), false); err != nil {
		return err
	}
	seen := make(map[string]bool, len(c.Items))
	for i, it := range c.Items {
		prefix := fmt.Sprintf("cancel.items[%d].", i)
		if err := checkID(prefix+"item", it.Item); err != nil {
			return err
		}
		if seen[it.Item] {
			return fieldErr(prefix+"item", fmt.Sprintf("duplicate item %q", it.Item))
		}
		seen[it.Item] = true
	}
	return nil
}

func (a *Ask) validate() error {
	if err := a.Surplus.Validate("ask.surplus."); err != nil {
		return wrapField("ask.surplus", err)
	}
	if err := a.LargestNode.Validate("ask.largest_node."); err != nil {
		return wrapField("ask.largest_node", err)
	}
	if err := checkPositive("ask.min_price", a.MinPrice); err != nil {
		return err
	}
	if a.MinCost != 0 {
		if err := checkPositive("ask.min_cost", a.MinCost); err != nil {
			return err
		}
	}
	return checkTime("ask.expires", a.Expires)
}

func validateIDs(field string, ids []string, emptyOK bool) error {
	if err := checkCount(field, len(ids), emptyOK); err != nil {
		return err
	}
	seen := make(map[string]bool, len(ids))
	for i, id := range ids {
		f := fmt.Sprintf("%s[%d]", field, i)
		if err := checkID(f, id); err != nil {
			return err
		}
		if seen[id] {
			return fieldErr(f, fmt.Sprintf("duplicate item %q", id))
		}
		seen[id] = true
	}
	return nil
}

func validateStatuses(field string, sts []ItemStatus, nonEmpty bool) error {
	if err := checkCount(field, len(sts), !nonEmpty); err != nil {
		return err
	}
	seen := make(map[string]bool, len(sts))
	for i, st := range sts {
		prefix := fmt.Sprintf("%s[%d].", field, i)
		if err := checkID(prefix+"item", st.Item); err != nil {
			return err
		}
		if seen[st.Item] {
			return fieldErr(prefix+"item", fmt.Sprintf("duplicate item %q", st.Item))
		}
		seen[st.Item] = true
		if !st.Status.valid() {
			return fieldErr(prefix+"status", fmt.Sprintf("unknown status %d", st.Status))
		}
		if len(st.Reason) > MaxIDLen {
			return fieldErr(prefix+"reason", "too long")
		}
	}
	return nil
}

func checkCount(field string, n int, emptyOK bool) error {
	switch {
	case n == 0 && !emptyOK:
		return fieldErr(field, "must not be empty")
	case n > MaxItems:
		return fieldErr(field, fmt.Sprintf("%d entries, at most %d allowed", n, MaxItems))
	}
	return nil
}

func checkPositive(field string, v float64) error {
	if math.IsNaN(v) || math.IsInf(v, 0) || v <= 0 {
		return fieldErr(field, fmt.Sprintf("must be a positive finite number, got %v", v))
	}
	return nil
}
