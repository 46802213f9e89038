package auction

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// AuctionSpec is what a buyer auctions, to whom, until when.
type AuctionSpec struct {
	// ID names the auction; unique for the buyer region forever (the Driver
	// uses region/term/sequence).
	ID string
	// Items are what is bought; 1..MaxItems, IDs unique.
	Items []Item
	// Sellers are the regions invited to bid (see SelectSellers).
	Sellers []string
	// Deadline is when the buyer stops waiting for bids.
	Deadline time.Time
	// RTT gives the RTT from each item's origin to each seller, for SLOs
	// and the score.
	RTT RTTTable
}

type auction struct {
	spec     AuctionSpec
	round    int           // 1 for the auction StartAuction opened
	window   time.Duration // bidding time of a round
	invites  map[string]*invite
	pending  int
	offers   []Offer
	deciding bool
}

type invite struct {
	answered bool
	failed   bool
	declined map[string]bool // items the seller did not bid on
	release  []string        // escrows of the previous round released by this round's call
}

// limbo is a batch of awards whose commit and abort both failed: whether the
// ledger has them is unknown until an abort commits.
type limbo struct {
	recs    []AwardRecord
	cause   error
	retryAt time.Time
}

// trade is a buyer's award after it is committed, until it is settled.
type trade struct {
	rec       AwardRecord
	state     TradeState
	inflight  uint64 // the outstanding request about the trade, if any
	proposing bool   // a ledger proposal about the trade is pending
	cancel    bool   // the next request is a Cancel, not a StatusQuery
	allocated bool   // EventAllocated emitted
	nextQuery time.Time
	backoff   time.Duration
}

// StartAuction opens an auction: it sends a CallForBids to every seller and
// waits until all have answered or the deadline passes, then determines the
// winners, records the awards in the ledger and sends them.
func (m *Market) StartAuction(now time.Time, spec AuctionSpec) error {
	if !m.leader {
		return ErrNotLeader
	}
	if err := checkID("auction", spec.ID); err != nil {
		return fmt.Errorf("start auction: %w", err)
	}
	if _, dup := m.auctions[spec.ID]; dup {
		return fmt.Errorf("start auction %q: %w", spec.ID, ErrDuplicate)
	}
	if err := checkCount("items", len(spec.Items), false); err != nil {
		return fmt.Errorf("start auction %q: %w", spec.ID, err)
	}
	ids := make(map[string]bool, len(spec.Items))
	for i, it := range spec.Items {
		if err := it.Validate(fmt.Sprintf("items[%d].", i)); err != nil {
			return fmt.Errorf("start auction %q: %w", spec.ID, err)
		}
		if ids[it.ID] {
			return fmt.Errorf("start auction %q: item %q: %w", spec.ID, it.ID, ErrDuplicate)
		}
		if _, busy := m.trades[TradeRef{Buyer: m.cfg.Region, Auction: spec.ID, Item: it.ID}]; busy {
			return fmt.Errorf("start auction %q: item %q already traded: %w", spec.ID, it.ID, ErrDuplicate)
		}
		ids[it.ID] = true
	}
	if len(spec.Sellers) == 0 {
		return fmt.Errorf("start auction %q: %w", spec.ID, ErrNoSellers)
	}
	a := &auction{spec: spec, invites: make(map[string]*invite, len(spec.Sellers))}
	for _, s := range spec.Sellers {
		if err := checkID("sellers", s); err != nil {
			return fmt.Errorf("start auction %q: %w", spec.ID, err)
		}
		if s == m.cfg.Region {
			return fmt.Errorf("start auction %q: the buyer %q cannot invite itself", spec.ID, s)
		}
		if a.invites[s] != nil {
			return fmt.Errorf("start auction %q: seller %q: %w", spec.ID, s, ErrDuplicate)
		}
		a.invites[s] = &invite{}
	}
	if !spec.Deadline.After(now) {
		return fmt.Errorf("start auction %q: deadline %s is not in the future", spec.ID, spec.Deadline.UTC().Format(time.RFC3339Nano))
	}
	if spec.RTT == nil {
		a.spec.RTT = RTTTable{}
	}
	a.round, a.window = 1, spec.Deadline.Sub(now)
	m.openRound(now, a, "")
	return nil
}

// openRound registers a and sends its calls for bids. A call of a follow-up
// round also tells its seller which escrows of the previous round (parent)
// it may release first.
func (m *Market) openRound(now time.Time, a *auction, parent string) {
	a.pending = len(a.invites)
	m.auctions[a.spec.ID] = a
	for _, s := range sortedKeys(a.invites) {
		env := m.envelope(now, KindCallForBids, s, a.spec.ID)
		env.CallForBids = &CallForBids{Items: a.spec.Items, Deadline: a.spec.Deadline}
		if rel := a.invites[s].release; len(rel) > 0 {
			env.CallForBids.Supersedes, env.CallForBids.Release = parent, rel
		}
		m.send(env, a.spec.Deadline.Add(m.cfg.LateBidGrace), &outbound{})
	}
}

func (m *Market) onBids(now time.Time, ob *outbound, env *Envelope) {
	var bids []BidItem
	if env.Kind == KindBid {
		bids = env.Bid.Items
	}
	a := m.auctions[ob.auction]
	if a == nil || a.deciding {
		// Too late to compete: release what the seller escrowed at once.
		if len(bids) > 0 {
			items := make([]string, len(bids))
			for i, b := range bids {
				items[i] = b.Item
			}
			m.sendRelease(now, ob.to, ob.auction, items)
		}
		return
	}
	inv := a.invites[ob.to]
	if inv == nil || inv.answered {
		return
	}
	inv.answered = true
	a.pending--
	var declined []Decline
	switch env.Kind {
	case KindBid:
		declined = env.Bid.Declined
	case KindNoBid:
		declined = env.NoBid.Declined
	}
	inv.declined = make(map[string]bool, len(declined))
	for _, d := range declined {
		inv.declined[d.Item] = true
	}
	// The award, a release and a cancel name an escrow by the trade
	// reference, so an offer whose escrow has another ID is one the buyer
	// could not take: it is dropped, and the item released at the seller
	// all the same.
	var unnamed []string
	for _, b := range bids {
		if b.Escrow != (TradeRef{Buyer: m.cfg.Region, Auction: ob.auction, Item: b.Item}).String() {
			unnamed = append(unnamed, b.Item)
			continue
		}
		a.offers = append(a.offers, Offer{Seller: ob.to, Bid: b})
	}
	if len(unnamed) > 0 {
		m.sendRelease(now, ob.to, ob.auction, unnamed)
	}
	if a.pending == 0 {
		m.decide(now, a)
	}
}

func (m *Market) onSendFailed(now time.Time, id uint64, ob *outbound) {
	switch ob.kind {
	case KindCallForBids:
		a := m.auctions[ob.auction]
		if a == nil || a.deciding {
			return
		}
		if inv := a.invites[ob.to]; inv != nil && !inv.answered {
			inv.answered, inv.failed = true, true
			a.pending--
			if a.pending == 0 {
				m.decide(now, a)
			}
		}
	case KindAward, KindStatusQuery, KindCancel:
		for _, item := range ob.items {
			t := m.trades[TradeRef{Buyer: m.cfg.Region, Auction: ob.auction, Item: item}]
			if t != nil && t.inflight == id {
				t.inflight = 0
				m.retryLater(now, t)
			}
		}
	}
}

// Reachable tells the Market that gossip sees region's leader again (after
// a partition heals, or a new leader is known): trades in doubt with it, or
// waiting to be reconciled, are asked about at once instead of at their next
// backoff.
func (m *Market) Reachable(now time.Time, region string) {
	if !m.leader {
		return
	}
	for _, ref := range sortedRefs(m.trades) {
		t := m.trades[ref]
		if t.rec.Seller == region && t.inflight == 0 && !t.proposing && !t.nextQuery.IsZero() {
			t.nextQuery = now
			t.backoff = m.cfg.StatusRetry
		}
	}
	m.tickBuyer(now)
}

// retryLater schedules the next status query about t, backing off.
func (m *Market) retryLater(now time.Time, t *trade) {
	if t.backoff <= 0 {
		t.backoff = m.cfg.StatusRetry
	}
	t.nextQuery = now.Add(t.backoff)
	t.backoff = min(2*t.backoff, m.cfg.MaxStatusRetry)
}

// decide runs winner determination, releases the losers' escrows and
// proposes the awards. Items left without a winner go to a follow-up round
// when a seller that declined them for this round has just had escrows
// released (independent per-item decisions can leave a seller's capacity
// promised to items another seller won); otherwise they are reported
// unplaced.
func (m *Market) decide(now time.Time, a *auction) {
	a.deciding = true
	outcomes, err := DetermineWinners(a.spec.Items, a.offers, WinnerParams{
		Home: m.cfg.Region, Rule: m.cfg.Rule, Score: m.cfg.Score, RTT: a.spec.RTT,
		Now: now, MinEscrowLeft: m.cfg.AwardMargin,
	})
	if err != nil {
		// Only an invalid score configuration fails, and Config rejects
		// those: treat it as no feasible offer rather than crash.
		outcomes = make([]Outcome, len(a.spec.Items))
		for i, it := range a.spec.Items {
			outcomes[i] = Outcome{Item: it.ID}
			for _, o := range a.offers {
				if o.Bid.Item == it.ID {
					outcomes[i].Rejected = append(outcomes[i].Rejected, RejectedOffer{Offer: o, Reason: err.Error()})
				}
			}
		}
	}
	releases := make(map[string][]string)
	var recs []AwardRecord
	var unplaced []int
	for i, o := range outcomes {
		it := a.spec.Items[i]
		for j, r := range o.Ranked {
			if j > 0 {
				releases[r.Seller] = append(releases[r.Seller], it.ID)
			}
		}
		for _, r := range o.Rejected {
			releases[r.Seller] = append(releases[r.Seller], it.ID)
		}
		if o.Winner == nil {
			unplaced = append(unplaced, i)
			continue
		}
		recs = append(recs, AwardRecord{
			Trade: TradeRef{Buyer: m.cfg.Region, Auction: a.spec.ID, Item: it.ID},
			Kind:  it.Kind, JobID: it.Job.ID, Epoch: it.Epoch,
			Seller: o.Winner.Seller, Node: o.Winner.Bid.Node, GPUType: o.Winner.Bid.GPUType,
			Price: o.Paid, Score: o.Score, Resources: it.Job.Demand, Duration: it.Job.Duration, AwardedAt: now,
		})
	}
	next := m.nextRound(now, a, unplaced, releases)
	if next == nil {
		for _, i := range unplaced {
			it := a.spec.Items[i]
			m.emit(Event{Kind: EventUnplaced, At: now, Trade: TradeRef{Buyer: m.cfg.Region, Auction: a.spec.ID, Item: it.ID},
				ItemKind: it.Kind, JobID: it.Job.ID, Epoch: it.Epoch, Reason: unplacedReason(outcomes[i])})
		}
	}
	for _, s := range sortedKeys(a.invites) {
		switch inv := a.invites[s]; {
		case !inv.answered || inv.failed:
			// Its bid may yet be escrowed (or its reply lost): release the
			// whole auction there, blindly. Escrow IDs are the trade refs,
			// so the seller knows what to drop.
			m.sendRelease(now, s, a.spec.ID, nil)
		case next != nil && next.invites[s] != nil:
			// The follow-up call carries the release.
		case len(releases[s]) > 0:
			m.sendRelease(now, s, a.spec.ID, releases[s])
		}
	}
	if next != nil {
		m.openRound(now, next, a.spec.ID)
	}
	if len(recs) == 0 {
		delete(m.auctions, a.spec.ID)
		return
	}
	ops := make([]LedgerOp, len(recs))
	for i := range recs {
		ops[i] = LedgerOp{Kind: OpRecordAward, Now: now, Trade: recs[i].Trade, Award: &recs[i]}
	}
	m.propose(ops, func(now time.Time, res []OpResult, err error) {
		delete(m.auctions, a.spec.ID)
		m.awardsCommitted(now, recs, res, err)
	})
}

// nextRound returns the follow-up round for the unplaced items of a, or nil
// when there is none: the rounds are used up, or no seller that declined
// one of them had escrows released this round. The follow-up invites those
// sellers only; its call releases their losing escrows first, so the
// capacity is free for the new bids.
func (m *Market) nextRound(now time.Time, a *auction, unplaced []int, releases map[string][]string) *auction {
	if len(unplaced) == 0 || a.round >= m.cfg.MaxRounds {
		return nil
	}
	items := make([]Item, len(unplaced))
	for k, i := range unplaced {
		items[k] = a.spec.Items[i]
	}
	next := &auction{round: a.round + 1, window: a.window, invites: make(map[string]*invite)}
	for _, s := range sortedKeys(a.invites) {
		inv := a.invites[s]
		if !inv.answered || inv.failed || len(releases[s]) == 0 {
			continue
		}
		for _, it := range items {
			if inv.declined[it.ID] {
				next.invites[s] = &invite{release: releases[s]}
				break
			}
		}
	}
	if len(next.invites) == 0 {
		return nil
	}
	root, _, _ := strings.Cut(a.spec.ID, "#")
	next.spec = AuctionSpec{ID: fmt.Sprintf("%s#%d", root, next.round), Items: items,
		Sellers: sortedKeys(next.invites), Deadline: now.Add(a.window), RTT: a.spec.RTT}
	if _, dup := m.auctions[next.spec.ID]; dup || len(next.spec.ID) > MaxIDLen {
		return nil
	}
	return next
}

func unplacedReason(o Outcome) string {
	if len(o.Rejected) == 0 {
		return "no offers"
	}
	reasons := make([]string, 0, len(o.Rejected))
	for _, r := range o.Rejected {
		reasons = append(reasons, r.Seller+": "+r.Reason)
	}
	return "no feasible offer (" + strings.Join(reasons, "; ") + ")"
}

// awardsCommitted sends the awards the ledger recorded, grouped by seller.
func (m *Market) awardsCommitted(now time.Time, recs []AwardRecord, res []OpResult, err error) {
	if err != nil {
		m.abortAwards(now, recs, err)
		return
	}
	bySeller := make(map[[2]string][]*trade)
	for i, rec := range recs {
		if e := res[i].Err; e != nil {
			m.unrecorded(now, rec, e)
			continue
		}
		t := &trade{rec: rec, state: TradeAwarded, backoff: m.cfg.StatusRetry}
		m.trades[rec.Trade] = t
		k := [2]string{rec.Seller, rec.Trade.Auction}
		bySeller[k] = append(bySeller[k], t)
	}
	for _, k := range sortedPairs(bySeller) {
		m.sendAward(now, k[0], k[1], bySeller[k])
	}
}

// unrecorded handles an award the ledger refused: its escrow is released
// and the item is still to place.
func (m *Market) unrecorded(now time.Time, rec AwardRecord, cause error) {
	if rec.Lease != nil {
		m.returnToLease(rec)
	} else {
		m.sendRelease(now, rec.Seller, rec.Trade.Auction, []string{rec.Trade.Item})
	}
	reason := "award not recorded: " + cause.Error()
	if errors.Is(cause, ErrStaleEpoch) {
		reason = "the job was placed again meanwhile (stale epoch)"
	}
	m.emit(Event{Kind: EventUnplaced, At: now, Trade: rec.Trade, ItemKind: rec.Kind, JobID: rec.JobID,
		Seller: rec.Seller, Epoch: rec.Epoch, Reason: reason})
}

// abortAwards handles a batch of awards whose commit failed as a whole: they
// may or may not be in the ledger. Marking them failed settles both cases:
// the ledger either fails the award (bumping the job's epoch) or does not
// know it. Only then are the escrows released. If that fails too, it is
// tried again with backoff for as long as this node leads; a successor
// resumes from the ledger instead.
func (m *Market) abortAwards(now time.Time, recs []AwardRecord, cause error) {
	ops := make([]LedgerOp, len(recs))
	for i, rec := range recs {
		ops[i] = LedgerOp{Kind: OpSetTradeState, Now: now, Trade: rec.Trade, State: TradeFailed, Epoch: rec.Epoch,
			Reason: "award commit failed: " + cause.Error()}
	}
	m.propose(ops, func(now time.Time, res []OpResult, err error) {
		if err != nil {
			m.limbo = append(m.limbo, &limbo{recs: recs, cause: cause, retryAt: now.Add(m.cfg.StatusRetry)})
			return
		}
		for i, rec := range recs {
			switch e := res[i].Err; {
			case e == nil:
				if rec.Lease != nil {
					m.returnToLease(rec)
				} else {
					m.sendRelease(now, rec.Seller, rec.Trade.Auction, []string{rec.Trade.Item})
				}
				m.emit(m.tradeEvent(now, EventFailed, rec, res[i].Epoch, "award commit failed: "+cause.Error()))
			case errors.Is(e, ErrUnknownTrade):
				m.unrecorded(now, rec, cause)
			}
		}
	})
}

func (m *Market) tradeEvent(now time.Time, kind EventKind, rec AwardRecord, epoch uint64, reason string) Event {
	return Event{Kind: kind, At: now, Trade: rec.Trade, ItemKind: rec.Kind, JobID: rec.JobID,
		Seller: rec.Seller, Node: rec.Node, Price: rec.Price, Epoch: epoch, Reason: reason}
}

func (m *Market) sendAward(now time.Time, seller, auctionID string, ts []*trade) {
	env := m.envelope(now, KindAward, seller, auctionID)
	items := make([]AwardItem, len(ts))
	ids := make([]string, len(ts))
	for i, t := range ts {
		items[i] = AwardItem{Item: t.rec.Trade.Item, Epoch: t.rec.Epoch, Price: t.rec.Price}
		if t.rec.Lease != nil {
			items[i].Lease = &LeaseRef{Auction: t.rec.Lease.Auction, Item: t.rec.Lease.Item}
			items[i].Job = t.rec.Job
		}
		ids[i] = t.rec.Trade.Item
	}
	env.Award = &Award{Items: items}
	id := m.send(env, now.Add(m.cfg.RequestTimeout), &outbound{items: ids})
	for _, t := range ts {
		t.inflight = id
		t.nextQuery = time.Time{}
	}
}

func (m *Market) sendRelease(now time.Time, seller, auctionID string, items []string) {
	env := m.envelope(now, KindRelease, seller, auctionID)
	env.Release = &Release{Items: items}
	m.send(env, now.Add(m.cfg.RequestTimeout), &outbound{})
}

// onStatuses handles what a seller says about trades: an Ack, or a status
// reply to a query or a cancel.
func (m *Market) onStatuses(now time.Time, id uint64, ob *outbound, sts []ItemStatus) {
	got := make(map[string]ItemStatus, len(sts))
	for _, st := range sts {
		got[st.Item] = st
	}
	for _, item := range ob.items {
		t := m.trades[TradeRef{Buyer: m.cfg.Region, Auction: ob.auction, Item: item}]
		if t == nil || t.inflight != id {
			continue
		}
		t.inflight = 0
		st, ok := got[item]
		if !ok {
			m.retryLater(now, t)
			continue
		}
		m.onSellerStatus(now, t, st, ob.kind)
	}
}

// onSellerStatus moves a trade on from what the seller's ledger says, in
// answer to a request of kind asked. A request is repeated at once only when
// the answer shows the previous one did not reach the seller's ledger (a
// status query finding the escrow still held, an allocation not yet
// cancelled); an Award or Cancel that did reach it and did not settle the
// trade is retried with backoff, so a confused seller cannot make the buyer
// spin.
func (m *Market) onSellerStatus(now time.Time, t *trade, st ItemStatus, asked Kind) {
	if t.proposing {
		return
	}
	switch t.state {
	case TradeAwarded:
		switch {
		case st.Status == StatusAllocated && st.Epoch == t.rec.Epoch:
			if !t.allocated {
				t.allocated = true
				m.emit(m.tradeEvent(now, EventAllocated, t.rec, t.rec.Epoch, ""))
			}
			m.confirm(now, t)
		case st.Status == StatusAllocated:
			// Cannot happen with honest peers (one trade, one epoch); treat
			// the allocation as stale.
			m.abandon(now, t, fmt.Sprintf("seller allocated epoch %d, award was for %d", st.Epoch, t.rec.Epoch), true)
		case st.Status == StatusHeld && asked == KindAward:
			m.retryLater(now, t)
		case st.Status == StatusHeld:
			m.sendAward(now, t.rec.Seller, t.rec.Trade.Auction, []*trade{t})
		default:
			m.fail(now, t, fmt.Sprintf("seller reports %s: %s", st.Status, st.Reason))
		}
	case TradeAbandoned:
		if st.Status.settledWithoutAllocation() {
			m.settle(now, t)
			return
		}
		t.cancel = true
		if asked == KindCancel {
			m.retryLater(now, t)
			return
		}
		m.sendCancel(now, t.rec.Seller, t.rec.Trade.Auction, []*trade{t})
	}
}

// confirm records the seller's acknowledgment in the buyer's ledger.
func (m *Market) confirm(now time.Time, t *trade) {
	t.proposing = true
	op := LedgerOp{Kind: OpSetTradeState, Now: now, Trade: t.rec.Trade, State: TradeConfirmed, Epoch: t.rec.Epoch}
	m.propose([]LedgerOp{op}, func(now time.Time, res []OpResult, err error) {
		t.proposing = false
		if m.trades[t.rec.Trade] != t {
			return
		}
		switch {
		case err != nil:
			m.retryLater(now, t) // a later status query confirms again
		case res[0].Err == nil:
			delete(m.trades, t.rec.Trade)
			m.emit(m.tradeEvent(now, EventConfirmed, t.rec, t.rec.Epoch, ""))
			if t.rec.Kind == ItemLease {
				l := &LeaseRecord{Trade: t.rec.Trade, Seller: t.rec.Seller, Node: t.rec.Node, GPUType: t.rec.GPUType,
					Resources: t.rec.Resources, Price: t.rec.Price, End: t.rec.AwardedAt.Add(t.rec.Duration)}
				m.leases[l.Trade] = l
				m.emit(m.tradeEvent(now, EventLeaseAcquired, t.rec, t.rec.Epoch, ""))
			}
		case errors.Is(res[0].Err, ErrStaleEpoch):
			m.emit(m.tradeEvent(now, EventStale, t.rec, t.rec.Epoch, "the job's epoch moved on: cancelling the allocation"))
			m.abandon(now, t, "stale epoch at confirmation", false)
		case errors.Is(res[0].Err, ErrUnknownTrade):
			delete(m.trades, t.rec.Trade)
		default:
			m.retryLater(now, t)
		}
	})
}

// fail records that the seller will not honour the award; the job's epoch is
// bumped so it can be placed again.
func (m *Market) fail(now time.Time, t *trade, reason string) {
	m.setState(now, t, TradeFailed, reason, func(now time.Time, r OpResult) {
		delete(m.trades, t.rec.Trade)
		m.returnToLease(t.rec)
		m.emit(m.tradeEvent(now, EventFailed, t.rec, r.Epoch, reason))
	})
}

// abandon gives up waiting on an award in doubt (or a stale one): the job's
// epoch is bumped so it can be placed again, and the trade is reconciled
// with the seller until it holds nothing for it. notify is false when the
// job's epoch had already moved on (someone else re-placed it), so node/ is
// not told to place it again.
func (m *Market) abandon(now time.Time, t *trade, reason string, notify bool) {
	m.setState(now, t, TradeAbandoned, reason, func(now time.Time, r OpResult) {
		t.state = TradeAbandoned
		t.nextQuery = now
		t.backoff = m.cfg.StatusRetry
		m.returnToLease(t.rec)
		if notify {
			m.emit(m.tradeEvent(now, EventAbandoned, t.rec, r.Epoch, reason))
		}
	})
}

// settle records that an abandoned trade holds nothing at the seller.
func (m *Market) settle(now time.Time, t *trade) {
	m.setState(now, t, TradeSettled, "seller holds nothing", func(now time.Time, r OpResult) {
		delete(m.trades, t.rec.Trade)
		m.emit(m.tradeEvent(now, EventSettled, t.rec, t.rec.Epoch, ""))
	})
}

func (m *Market) setState(now time.Time, t *trade, state TradeState, reason string, ok func(time.Time, OpResult)) {
	t.proposing = true
	op := LedgerOp{Kind: OpSetTradeState, Now: now, Trade: t.rec.Trade, State: state, Epoch: t.rec.Epoch, Reason: reason}
	m.propose([]LedgerOp{op}, func(now time.Time, res []OpResult, err error) {
		t.proposing = false
		if m.trades[t.rec.Trade] != t {
			return
		}
		switch {
		case err != nil:
			m.retryLater(now, t)
		case res[0].Err == nil:
			ok(now, res[0])
		case errors.Is(res[0].Err, ErrUnknownTrade):
			delete(m.trades, t.rec.Trade)
		default:
			m.retryLater(now, t)
		}
	})
}

func (m *Market) sendCancel(now time.Time, seller, auctionID string, ts []*trade) {
	env := m.envelope(now, KindCancel, seller, auctionID)
	items := make([]CancelItem, len(ts))
	ids := make([]string, len(ts))
	for i, t := range ts {
		items[i] = CancelItem{Item: t.rec.Trade.Item, Epoch: t.rec.Epoch}
		ids[i] = t.rec.Trade.Item
	}
	env.Cancel = &Cancel{Items: items}
	id := m.send(env, now.Add(m.cfg.RequestTimeout), &outbound{items: ids})
	for _, t := range ts {
		t.inflight = id
		t.nextQuery = time.Time{}
	}
}

func (m *Market) sendStatusQuery(now time.Time, seller, auctionID string, ts []*trade) {
	env := m.envelope(now, KindStatusQuery, seller, auctionID)
	ids := make([]string, len(ts))
	for i, t := range ts {
		ids[i] = t.rec.Trade.Item
	}
	env.StatusQuery = &StatusQuery{Items: ids}
	id := m.send(env, now.Add(m.cfg.RequestTimeout), &outbound{items: slices.Clone(ids)})
	for _, t := range ts {
		t.inflight = id
		t.nextQuery = time.Time{}
	}
}

func (m *Market) tickBuyer(now time.Time) {
	var waiting []*limbo
	for _, l := range m.limbo {
		if now.Before(l.retryAt) {
			waiting = append(waiting, l)
			continue
		}
		m.abortAwards(now, l.recs, l.cause)
	}
	m.limbo = waiting
	for _, id := range sortedKeys(m.auctions) {
		if a := m.auctions[id]; a != nil && !a.deciding && !now.Before(a.spec.Deadline) {
			m.decide(now, a)
		}
	}
	queries := make(map[[2]string][]*trade)
	cancels := make(map[[2]string][]*trade)
	for _, ref := range sortedRefs(m.trades) {
		t := m.trades[ref]
		if t.proposing || t.inflight != 0 {
			continue
		}
		if t.state == TradeAwarded && !now.Before(t.rec.AwardedAt.Add(m.cfg.InDoubtTimeout)) {
			m.abandon(now, t, fmt.Sprintf("no answer from %s within %v of the award", t.rec.Seller, m.cfg.InDoubtTimeout), true)
			continue
		}
		if t.nextQuery.IsZero() || now.Before(t.nextQuery) {
			continue
		}
		k := [2]string{t.rec.Seller, t.rec.Trade.Auction}
		if t.cancel {
			cancels[k] = append(cancels[k], t)
		} else {
			queries[k] = append(queries[k], t)
		}
	}
	for _, k := range sortedPairs(queries) {
		for _, batch := range chunks(queries[k]) {
			m.sendStatusQuery(now, k[0], k[1], batch)
		}
	}
	for _, k := range sortedPairs(cancels) {
		for _, batch := range chunks(cancels[k]) {
			m.sendCancel(now, k[0], k[1], batch)
		}
	}
	for _, ref := range sortedRefs(m.leases) {
		if l := m.leases[ref]; !now.Before(l.End) {
			delete(m.leases, ref)
		}
	}
}

func (m *Market) buyerTimeouts(consider func(time.Time)) {
	for _, l := range m.limbo {
		consider(l.retryAt)
	}
	for _, a := range m.auctions {
		if !a.deciding {
			consider(a.spec.Deadline)
		}
	}
	for _, t := range m.trades {
		if t.proposing || t.inflight != 0 {
			continue
		}
		if t.state == TradeAwarded {
			consider(t.rec.AwardedAt.Add(m.cfg.InDoubtTimeout))
		}
		consider(t.nextQuery)
	}
	for _, l := range m.leases {
		consider(l.End)
	}
}

func chunks(ts []*trade) [][]*trade {
	var out [][]*trade
	for len(ts) > MaxItems {
		out = append(out, ts[:MaxItems])
		ts = ts[MaxItems:]
	}
	return append(out, ts)
}

func sortedPairs[V any](m map[[2]string]V) [][2]string {
	keys := make([][2]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b [2]string) int {
		if c := strings.Compare(a[0], b[0]); c != 0 {
			return c
		}
		return strings.Compare(a[1], b[1])
	})
	return keys
}

func sortedRefs[V any](m map[TradeRef]V) []TradeRef {
	keys := make([]TradeRef, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, compareRefs)
	return keys
}

func compareRefs(a, b TradeRef) int {
	if c := strings.Compare(a.Buyer, b.Buyer); c != 0 {
		return c
	}
	if c := strings.Compare(a.Auction, b.Auction); c != 0 {
		return c
	}
	return strings.Compare(a.Item, b.Item)
}

func sortedIDs(m map[uint64]bool) []uint64 {
	keys := make([]uint64, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
