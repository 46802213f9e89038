package auction

import (
	"fmt"
	"time"

	"github.com/meridian-mesh/meridian/placement"
)

// Config parameterises a Market. Zero durations take the defaults shown.
type Config struct {
	// Region is the local region; required.
	Region string
	// Rule is the pricing rule the buyer pays by (default FirstPrice).
	Rule PricingRule
	// Score is placement's score configuration the buyer ranks offers with
	// (nil: DefaultScoreConfig).
	Score *placement.ScoreConfig
	// Price sets the seller's asking prices (default DefaultPricing).
	Price PriceFunc
	// NoPreempt stops the seller from making room by preemption: items
	// that ask for it (Item.Preempt) are quoted on free room only.
	NoPreempt bool
	// LeaseRoom, when set, is the compute (tasks/hour) the region may still
	// sell as leases at now: what its own forecast demand leaves (see
	// node's leaseRoom). A lease is held for its buyer whether it is used
	// or not, and every region's demand peaks in its afternoon, when its
	// neighbours within an interactive SLO peak too: a region that sold
	// the capacity its own peak needs turns its own jobs away. Lease items
	// beyond it are declined; job items are not affected. nil: no limit
	// but free capacity.
	LeaseRoom func(now time.Time) float64
	// EscrowTTL is how long after the auction's deadline a seller's escrow
	// lives: room for the buyer to commit its award and deliver it
	// (default 10s).
	EscrowTTL time.Duration
	// MaxAuctionWindow bounds how far ahead of the seller's clock a call's
	// deadline may be, so no buyer holds capacity for long (default 1m).
	MaxAuctionWindow time.Duration
	// LateBidGrace is how long after the deadline the buyer still reads a
	// seller's reply, so that it can release the late escrow at once rather
	// than leave it to expire (default 2s).
	LateBidGrace time.Duration
	// MaxRounds bounds the rounds of one auction: items left without a
	// winner go to a follow-up round among the sellers whose losing escrows
	// the round released (default 3; 1 disables follow-ups).
	MaxRounds int
	// AwardMargin is the least time an escrow must still have to live for
	// its offer to win (default 2s).
	AwardMargin time.Duration
	// RequestTimeout bounds an Award, StatusQuery, Cancel or Release
	// exchange (default 5s).
	RequestTimeout time.Duration
	// StatusRetry is the first interval between status queries about an
	// award in doubt; it doubles up to MaxStatusRetry (defaults 1s, 10s).
	// Reachable cuts the wait short when gossip sees the seller again.
	StatusRetry time.Duration
	// MaxStatusRetry caps the status-query backoff.
	MaxStatusRetry time.Duration
	// InDoubtTimeout is how long after the award the buyer waits for the
	// seller's answer before it abandons the trade and bumps the job's
	// epoch so the job can be placed again (default 1m).
	InDoubtTimeout time.Duration
	// MaxMessageAge refuses a message whose Sent time is further than this
	// from the local clock, in either direction: an old replay or a wildly
	// wrong clock (default 2m).
	MaxMessageAge time.Duration
}

func (c Config) withDefaults() (Config, error) {
	if err := checkID("region", c.Region); err != nil {
		return c, fmt.Errorf("market config: %w", err)
	}
	if c.Rule == 0 {
		c.Rule = FirstPrice
	}
	if c.Rule != FirstPrice && c.Rule != SecondPrice {
		return c, fmt.Errorf("market config: field \"rule\": unknown pricing rule %d", c.Rule)
	}
	if c.Score == nil {
		sc := DefaultScoreConfig
		c.Score = &sc
	}
	if err := c.Score.Validate(); err != nil {
		return c, fmt.Errorf("market config: field \"score\": %w", err)
	}
	if c.Price == nil {
		c.Price = DefaultPricing
	}
	defaults := []struct {
		name string
		v    *time.Duration
		def  time.Duration
	}{
		{"escrow_ttl", &c.EscrowTTL, 10 * time.Second},
		{"max_auction_window", &c.MaxAuctionWindow, time.Minute},
		{"late_bid_grace", &c.LateBidGrace, 2 * time.Second},
		{"award_margin", &c.AwardMargin, 2 * time.Second},
		{"request_timeout", &c.RequestTimeout, 5 * time.Second},
		{"status_retry", &c.StatusRetry, time.Second},
		{"max_status_retry", &c.MaxStatusRetry, 10 * time.Second},
		{"in_doubt_timeout", &c.InDoubtTimeout, time.Minute},
		{"max_message_age", &c.MaxMessageAge, 2 * time.Minute},
	}
	for _, d := range defaults {
		if *d.v < 0 {
			return c, fmt.Errorf("market config: field %q: must not be negative, got %v", d.name, *d.v)
		}
		if *d.v == 0 {
			*d.v = d.def
		}
	}
	switch {
	case c.MaxRounds < 0:
		return c, fmt.Errorf("market config: field \"max_rounds\": must not be negative, got %d", c.MaxRounds)
	case c.MaxRounds == 0:
		c.MaxRounds = 3
	}
	if c.MaxStatusRetry < c.StatusRetry {
		c.MaxStatusRetry = c.StatusRetry
	}
	if c.AwardMargin >= c.EscrowTTL {
		return c, fmt.Errorf("market config: field \"award_margin\": %v must be shorter than escrow_ttl %v", c.AwardMargin, c.EscrowTTL)
	}
	return c, nil
}

// Inbound is a request from a peer, handed to Market.Receive.
type Inbound struct {
	// Request identifies the exchange so the Market's reply (Ready.Replies)
	// finds its way back; the caller picks it, unique among open requests.
	Request uint64
	// Env is the decoded, authenticated message.
	Env *Envelope
	// Inventory is the region's nodes as the ledger sees them at receipt
	// (Free net of allocations and committed escrows). Required for a
	// CallForBids, ignored otherwise.
	Inventory []placement.Node
	// Movable is the running work the seller may stop to make room for
	// items that ask for preemption (Item.Preempt): allocations of lower
	// priority than those items whose work gossip shows another region
	// could serve. Only read for a CallForBids with such items.
	Movable []Movable
}

// Outbound is a request the Market wants sent.
type Outbound struct {
	// ID identifies the request; report its reply with HandleReply or its
	// failure with HandleSendFailure.
	ID uint64
	// To is the recipient region; the caller resolves its leader.
	To string
	// Env is the message.
	Env *Envelope
	// Deadline bounds the exchange.
	Deadline time.Time
}

// Reply answers an Inbound request.
type Reply struct {
	// Request is the Inbound.Request answered.
	Request uint64
	// Env is the reply; nil means close the exchange without one (the
	// requester will treat the outcome as unknown).
	Env *Envelope
}

// Proposal is a batch of ledger operations to commit; report the outcome
// with Committed(ID, ...).
type Proposal struct {
	// ID identifies the proposal.
	ID uint64
	// Ops are committed in order.
	Ops []LedgerOp
}

// Ready is the output of the Market since the last call to Ready.
type Ready struct {
	// Messages are requests to send.
	Messages []Outbound
	// Replies answer inbound requests.
	Replies []Reply
	// Proposals are ledger operations to commit.
	Proposals []Proposal
	// Events are for observers.
	Events []Event
}

// Empty reports whether there is nothing to do.
func (r Ready) Empty() bool {
	return len(r.Messages) == 0 && len(r.Replies) == 0 && len(r.Proposals) == 0 && len(r.Events) == 0
}

// EventKind names a market event.
type EventKind uint8

// Buyer events (Trade.Buyer is the local region) and seller events.
const (
	// EventAllocated: the seller acknowledged the allocation, committed in
	// its ledger; the job runs at Seller/Node.
	EventAllocated EventKind = 1
	// EventConfirmed: the buyer's ledger recorded the acknowledgment; the
	// trade is done.
	EventConfirmed EventKind = 2
	// EventUnplaced: no feasible offer for the item, or its award could not
	// be recorded; the job's epoch is unchanged and it is still to place.
	EventUnplaced EventKind = 3
	// EventFailed: the seller could not honour the award; Epoch is the
	// job's new epoch and it is to place again.
	EventFailed EventKind = 4
	// EventAbandoned: the award stayed in doubt past InDoubtTimeout; Epoch
	// is the job's new epoch and it is to place again.
	EventAbandoned EventKind = 5
	// EventStale: the seller allocated the trade but its epoch is no longer
	// the job's; the allocation is being cancelled.
	EventStale EventKind = 6
	// EventSettled: an abandoned or stale trade is reconciled; the seller
	// holds nothing for it.
	EventSettled EventKind = 7
	// EventLeaseAcquired: a lease is confirmed and open for PlaceInLease.
	EventLeaseAcquired EventKind = 8
	// EventEscrowHeld (seller): an escrow was committed for a bid.
	EventEscrowHeld EventKind = 9
	// EventEscrowReleased (seller): an escrow was released (by the buyer,
	// or at its expiry).
	EventEscrowReleased EventKind = 10
	// EventAllocationCreated (seller): an award became an allocation.
	EventAllocationCreated EventKind = 11
	// EventAllocationCancelled (seller): a stale allocation was cancelled.
	EventAllocationCancelled EventKind = 12
)

var eventNames = [...]string{
	EventAllocated: "allocated", EventConfirmed: "confirmed", EventUnplaced: "unplaced",
	EventFailed: "failed", EventAbandoned: "abandoned", EventStale: "stale",
	EventSettled: "settled", EventLeaseAcquired: "lease-acquired", EventEscrowHeld: "escrow-held",
	EventEscrowReleased: "escrow-released", EventAllocationCreated: "allocation-created",
	EventAllocationCancelled: "allocation-cancelled",
}

// String implements fmt.Stringer.
func (k EventKind) String() string {
	if int(k) < len(eventNames) && eventNames[k] != "" {
		return eventNames[k]
	}
	return fmt.Sprintf("EventKind(%d)", uint8(k))
}

// Event tells observers (node/, metrics, tests) what happened to a trade.
type Event struct {
	// Kind names the event.
	Kind EventKind
	// At is the Market's clock when it happened.
	At time.Time
	// Trade names the trade.
	Trade TradeRef
	// ItemKind is what the trade buys.
	ItemKind ItemKind
	// JobID is the job (or lease) ID.
	JobID string
	// Seller is the seller's region.
	Seller string
	// Node is the seller's node.
	Node string
	// Price is the price paid (buyer) or asked (seller), $/node-hour.
	Price float64
	// Epoch is the allocation's epoch, or the job's new epoch for
	// EventFailed and EventAbandoned.
	Epoch uint64
	// Reason explains EventUnplaced, EventFailed, EventStale and releases.
	Reason string
}

// Market is the market protocol state machine of one region: buyer and
// seller at once. It is pure: no goroutines, no clock, no I/O, no
// randomness. Every input carries the current time; outputs accumulate
// until Ready. It is not safe for concurrent use: one goroutine (the
// Driver's) owns it.
type Market struct {
	cfg    Config
	leader bool
	term   uint64
	// seen is the highest leader term accepted from each region, to refuse
	// replays from deposed leaders.
	seen map[string]uint64

	nextMsg, nextProp uint64
	outbound          map[uint64]*outbound
	proposals         map[uint64]*proposal
	requests          map[uint64]bool // inbound requests owed a reply

	// buyer
	auctions map[string]*auction
	trades   map[TradeRef]*trade
	leases   map[TradeRef]*LeaseRecord
	limbo    []*limbo

	// seller
	escrows map[TradeRef]*escrow
	calls   map[callKey]*sellerCall

	rd Ready
}

type outbound struct {
	kind    Kind
	to      string
	auction string
	items   []string
}

type proposal struct {
	ops  []LedgerOp
	done func(now time.Time, res []OpResult, err error)
}

// NewMarket returns a Market for cfg.Region, not yet leader.
func NewMarket(cfg Config) (*Market, error) {
	c, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	m := &Market{cfg: c, seen: make(map[string]uint64)}
	m.clear()
	return m, nil
}

// Config returns the configuration in effect, defaults filled in.
func (m *Market) Config() Config { return m.cfg }

// Leader returns the leader term and whether the Market acts as leader.
func (m *Market) Leader() (term uint64, leader bool) { return m.term, m.leader }

func (m *Market) clear() {
	m.outbound = make(map[uint64]*outbound)
	m.proposals = make(map[uint64]*proposal)
	m.requests = make(map[uint64]bool)
	m.auctions = make(map[string]*auction)
	m.trades = make(map[TradeRef]*trade)
	m.leases = make(map[TradeRef]*LeaseRecord)
	m.limbo = nil
	m.escrows = make(map[TradeRef]*escrow)
	m.calls = make(map[callKey]*sellerCall)
}

// BecomeLeader makes the Market act for its region under term, resuming
// from the ledger's durable market state: awards still unanswered are sent
// again, abandoned trades are reconciled, held escrows expire on time, held
// leases are open for draws. Anything volatile from an earlier leadership
// (open auctions, requests in flight) is dropped; requests still owed a
// reply get a nil Reply.
func (m *Market) BecomeLeader(now time.Time, term uint64, snap MarketSnapshot) {
	m.StepDown()
	m.leader, m.term = true, term
	resend := make(map[[2]string][]*trade)
	for _, rec := range snap.Trades {
		if rec.Trade.Buyer != m.cfg.Region {
			continue
		}
		t := &trade{rec: rec, state: rec.State, backoff: m.cfg.StatusRetry}
		switch rec.State {
		case TradeAwarded:
			// The previous leader may never have sent the award: send it
			// again (it is idempotent) rather than ask first.
			k := [2]string{rec.Seller, rec.Trade.Auction}
			resend[k] = append(resend[k], t)
		case TradeAbandoned:
			t.nextQuery = now
		default:
			continue
		}
		m.trades[rec.Trade] = t
	}
	for _, k := range sortedPairs(resend) {
		m.sendAward(now, k[0], k[1], resend[k])
	}
	for _, rec := range snap.Escrows {
		m.escrows[rec.Trade] = &escrow{rec: rec, state: escrowHeld}
	}
	for _, l := range snap.Leases {
		l := l
		m.leases[l.Trade] = &l
	}
}

// StepDown makes the Market stop acting for its region: it forgets all
// volatile state and answers every request still owed a reply with nil.
// Late commit results and replies for the old leadership are ignored.
func (m *Market) StepDown() {
	for _, id := range sortedIDs(m.requests) {
		m.rd.Replies = append(m.rd.Replies, Reply{Request: id})
	}
	m.leader = false
	m.clear()
}

// Ready returns the output accumulated since the last call, and clears it.
func (m *Market) Ready() Ready {
	rd := m.rd
	m.rd = Ready{}
	return rd
}

// HasReady reports whether Ready has anything to return.
func (m *Market) HasReady() bool { return !m.rd.Empty() }

// Committed reports the outcome of proposal id: one result per op, or err
// if the batch as a whole failed (its ops may or may not have committed).
// Results for proposals of an earlier leadership are ignored.
func (m *Market) Committed(now time.Time, id uint64, results []OpResult, err error) {
	p, ok := m.proposals[id]
	if !ok {
		return
	}
	delete(m.proposals, id)
	if err == nil && len(results) != len(p.ops) {
		err = fmt.Errorf("ledger returned %d results for %d operations", len(results), len(p.ops))
	}
	if err != nil {
		results = nil
	}
	p.done(now, results, err)
}

// Receive handles a request from a peer (already authenticated by the
// caller, see Authority). It returns an error wrapping ErrRefused or
// ErrNotLeader for a message it will not act on; the caller then closes the
// exchange without a reply. Otherwise a Reply for in.Request follows in a
// later Ready if in.Env.Kind expects one.
func (m *Market) Receive(now time.Time, in Inbound) error {
	env := in.Env
	if err := m.admit(now, env); err != nil {
		return err
	}
	if in.Request != 0 && env.Kind.ExpectsReply() {
		if m.requests[in.Request] {
			return fmt.Errorf("%w: request %d is already open", ErrRefused, in.Request)
		}
		m.requests[in.Request] = true
	}
	switch env.Kind {
	case KindCallForBids:
		m.onCallForBids(now, in)
	case KindAward:
		m.onAward(now, in)
	case KindRelease:
		m.onRelease(now, env)
	case KindStatusQuery:
		m.onStatusQuery(now, in)
	case KindCancel:
		m.onCancel(now, in)
	default:
		delete(m.requests, in.Request)
		return fmt.Errorf("%w: a %s is not a request", ErrRefused, env.Kind)
	}
	return nil
}

// HandleReply handles the reply to the Market's request id.
func (m *Market) HandleReply(now time.Time, id uint64, env *Envelope) error {
	ob, ok := m.outbound[id]
	if !ok {
		return fmt.Errorf("%w: reply to unknown request %d", ErrRefused, id)
	}
	delete(m.outbound, id)
	err := m.admit(now, env)
	if err == nil {
		switch {
		case env.From != ob.to:
			err = fmt.Errorf("%w: reply from %q to a request sent to %q", ErrRefused, env.From, ob.to)
		case env.Auction != ob.auction:
			err = fmt.Errorf("%w: reply about auction %q to a request about %q", ErrRefused, env.Auction, ob.auction)
		case !replyMatches(ob.kind, env.Kind):
			err = fmt.Errorf("%w: a %s does not answer a %s", ErrRefused, env.Kind, ob.kind)
		}
	}
	if err != nil {
		m.onSendFailed(now, id, ob)
		return err
	}
	switch ob.kind {
	case KindCallForBids:
		m.onBids(now, ob, env)
	case KindAward:
		m.onStatuses(now, id, ob, env.Ack.Items)
	case KindStatusQuery, KindCancel:
		m.onStatuses(now, id, ob, env.StatusReply.Items)
	}
	return nil
}

// HandleSendFailure reports that request id got no reply: the peer was
// unreachable, the exchange timed out, or the reply was refused.
func (m *Market) HandleSendFailure(now time.Time, id uint64) {
	ob, ok := m.outbound[id]
	if !ok {
		return
	}
	delete(m.outbound, id)
	m.onSendFailed(now, id, ob)
}

func replyMatches(req, rep Kind) bool {
	switch req {
	case KindCallForBids:
		return rep == KindBid || rep == KindNoBid
	case KindAward:
		return rep == KindAck
	case KindStatusQuery, KindCancel:
		return rep == KindStatusReply
	}
	return false
}

// admit applies the checks every inbound message must pass, whatever its
// kind: the local node leads, the message is for this region, its term is
// not older than one already accepted from its region, and its Sent time is
// plausible.
func (m *Market) admit(now time.Time, env *Envelope) error {
	if !m.leader {
		return ErrNotLeader
	}
	if err := env.Validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrRefused, err)
	}
	if env.To != m.cfg.Region {
		return fmt.Errorf("%w: addressed to region %q, this is %q", ErrRefused, env.To, m.cfg.Region)
	}
	if last := m.seen[env.From]; env.Term < last {
		return fmt.Errorf("%w: term %d from %q is older than term %d already seen", ErrRefused, env.Term, env.From, last)
	}
	if age := now.Sub(env.Sent); age > m.cfg.MaxMessageAge || age < -m.cfg.MaxMessageAge {
		return fmt.Errorf("%w: sent at %s, %v from the local clock", ErrRefused, env.Sent.UTC().Format(time.RFC3339Nano), age)
	}
	m.seen[env.From] = env.Term
	return nil
}

func (m *Market) envelope(now time.Time, kind Kind, to, auction string) *Envelope {
	return &Envelope{Version: Version, Kind: kind, Auction: auction, From: m.cfg.Region, To: to, Term: m.term, Sent: now}
}

func (m *Market) send(env *Envelope, deadline time.Time, ob *outbound) uint64 {
	m.nextMsg++
	id := m.nextMsg
	ob.kind, ob.to, ob.auction = env.Kind, env.To, env.Auction
	if env.Kind.ExpectsReply() {
		m.outbound[id] = ob
	}
	m.rd.Messages = append(m.rd.Messages, Outbound{ID: id, To: env.To, Env: env, Deadline: deadline})
	return id
}

func (m *Market) reply(req uint64, env *Envelope) {
	if !m.requests[req] {
		return
	}
	delete(m.requests, req)
	m.rd.Replies = append(m.rd.Replies, Reply{Request: req, Env: env})
}

func (m *Market) propose(ops []LedgerOp, done func(now time.Time, res []OpResult, err error)) {
	m.nextProp++
	m.proposals[m.nextProp] = &proposal{ops: ops, done: done}
	m.rd.Proposals = append(m.rd.Proposals, Proposal{ID: m.nextProp, Ops: ops})
}

func (m *Market) emit(e Event) { m.rd.Events = append(m.rd.Events, e) }

// Tick advances timers: auction deadlines, status-query retries, in-doubt
// timeouts, escrow expiries and lease ends.
func (m *Market) Tick(now time.Time) {
	if !m.leader {
		return
	}
	m.tickBuyer(now)
	m.tickSeller(now)
}

// NextTimeout returns when Tick next has something to do; ok is false when
// nothing is scheduled.
func (m *Market) NextTimeout() (t time.Time, ok bool) {
	if !m.leader {
		return time.Time{}, false
	}
	consider := func(c time.Time) {
		if !c.IsZero() && (!ok || c.Before(t)) {
			t, ok = c, true
		}
	}
	m.buyerTimeouts(consider)
	m.sellerTimeouts(consider)
	return t, ok
}

// Stats counts what the Market is tracking, for metrics and tests.
type Stats struct {
	// Auctions open (bidding or awarding) as buyer.
	Auctions int
	// Trades open as buyer (awarded, in doubt, or being reconciled).
	Trades int
	// Leases held as buyer.
	Leases int
	// Escrows held as seller.
	Escrows int
	// Proposals awaiting commit.
	Proposals int
	// Requests sent and awaiting a reply.
	Outbound int
	// Requests received and owed a reply.
	Inbound int
}

// Stats returns current counts.
func (m *Market) Stats() Stats {
	return Stats{
		Auctions: len(m.auctions), Trades: len(m.trades), Leases: len(m.leases),
		Escrows: len(m.escrows), Proposals: len(m.proposals),
		Outbound: len(m.outbound), Inbound: len(m.requests),
	}
}
