package auction

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/meridian-mesh/meridian/placement"
)

type escrowState uint8

const (
	escrowHolding    escrowState = iota + 1 // HoldEscrow proposed, not committed
	escrowHeld                              // committed
	escrowConverting                        // ConvertEscrow proposed
	escrowReleasing                         // ReleaseEscrow or CancelTrade proposed
)

// escrow is a seller's hold, from proposal until it is converted, released
// or expired.
type escrow struct {
	rec     EscrowRecord
	state   escrowState
	release bool      // the buyer released it while the hold was in flight
	retryAt time.Time // after a failed release, when to try again
}

type callKey struct{ buyer, auction string }

// sellerCall remembers the answer to a CallForBids, so a duplicate gets the
// same answer rather than a second set of escrows.
type sellerCall struct {
	waiters []uint64
	reply   *Envelope // nil while the holds are in flight
	expiry  time.Time
}

func (m *Market) onCallForBids(now time.Time, in Inbound) {
	env := in.Env
	cfb := env.CallForBids
	key := callKey{buyer: env.From, auction: env.Auction}
	if c := m.calls[key]; c != nil {
		if c.reply != nil {
			m.reply(in.Request, c.reply)
		} else {
			c.waiters = append(c.waiters, in.Request)
		}
		return
	}
	c := &sellerCall{waiters: []uint64{in.Request}}
	m.calls[key] = c
	answer := func(now time.Time, reply *Envelope, expiry time.Time) {
		c.reply, c.expiry = reply, expiry
		for _, w := range c.waiters {
			m.reply(w, reply)
		}
		c.waiters = nil
	}
	noBid := func(reason string, declined []Decline) *Envelope {
		r := m.envelope(now, KindNoBid, env.From, env.Auction)
		r.NoBid = &NoBid{Reason: reason, Declined: declined}
		return r
	}
	switch {
	case !now.Before(cfb.Deadline):
		answer(now, noBid("the deadline has passed", nil), now.Add(m.cfg.LateBidGrace))
		return
	case cfb.Deadline.After(now.Add(m.cfg.MaxAuctionWindow)):
		answer(now, noBid(fmt.Sprintf("the deadline is more than %v ahead", m.cfg.MaxAuctionWindow), nil), now.Add(m.cfg.LateBidGrace))
		return
	}
	reserved := make(map[string]placement.Resources)
	for _, e := range m.escrows {
		if e.state == escrowHolding {
			reserved[e.rec.Node] = reserved[e.rec.Node].Add(e.rec.Resources)
		}
	}
	// A follow-up round first releases the buyer's losing escrows of the
	// previous round: their capacity counts as free for this call.
	var freed []*escrow
	for _, item := range cfb.Release {
		e := m.escrows[TradeRef{Buyer: env.From, Auction: cfb.Supersedes, Item: item}]
		if e != nil && e.state == escrowHeld {
			freed = append(freed, e)
			reserved[e.rec.Node] = reserved[e.rec.Node].Sub(e.rec.Resources)
		}
	}
	items, declines := m.leaseGuard(now, cfb.Items)
	quotes, more := QuoteItems(items, in.Inventory, reserved, m.cfg.Price)
	declines = append(declines, more...)
	if !m.cfg.NoPreempt && len(in.Movable) > 0 && len(more) > 0 {
		quotes, declines = m.quotePreempting(items, in, reserved, quotes, declines)
	}
	if len(quotes) == 0 {
		m.releaseEscrows(now, freed, "released by the buyer")
		answer(now, noBid("no item can be served", declines), cfb.Deadline.Add(m.cfg.LateBidGrace))
		return
	}
	expiry := cfb.Deadline.Add(m.cfg.EscrowTTL)
	ops := make([]LedgerOp, len(freed), len(freed)+len(quotes))
	for i, e := range freed {
		e.state = escrowReleasing
		ops[i] = LedgerOp{Kind: OpReleaseEscrow, Now: now, Trade: e.rec.Trade, Reason: "released by the buyer"}
	}
	ops = append(ops, make([]LedgerOp, len(quotes))...)
	holds := ops[len(freed):]
	recs := make([]EscrowRecord, len(quotes))
	for i, q := range quotes {
		recs[i] = EscrowRecord{
			Trade: TradeRef{Buyer: env.From, Auction: env.Auction, Item: q.Item.ID},
			Kind:  q.Item.Kind, JobID: q.Item.Job.ID, Node: q.Node.ID, Resources: q.Item.Job.Demand,
			Duration: q.Item.Job.Duration, Price: q.Price, Expiry: expiry,
			Priority: q.Item.Job.Priority, Origin: q.Item.Job.OriginRegion, LatencySLO: q.Item.Job.LatencySLO,
			MaxPrice: q.Item.Job.MaxPricePerHour,
		}
		holds[i] = LedgerOp{Kind: OpHoldEscrow, Now: now, Trade: recs[i].Trade, Escrow: &recs[i], Preempt: q.Preempt}
		m.escrows[recs[i].Trade] = &escrow{rec: recs[i], state: escrowHolding}
	}
	nodes := make(map[TradeRef]placement.Node, len(quotes))
	for i, q := range quotes {
		nodes[recs[i].Trade] = q.Node // Free: what the node had before this item
	}
	m.propose(ops, func(now time.Time, res []OpResult, err error) {
		if m.calls[key] != c {
			return
		}
		m.released(now, freed, err, "released by the buyer")
		if err == nil {
			res = res[len(freed):]
		}
		bid := &Bid{Declined: declines}
		var released []*escrow
		for i, rec := range recs {
			e := m.escrows[rec.Trade]
			if e == nil {
				continue
			}
			switch {
			case err != nil:
				// The holds may or may not be committed: keep them so they
				// are released at expiry, but promise nothing.
				e.state = escrowHeld
				bid.Declined = append(bid.Declined, Decline{Item: rec.Trade.Item, Reason: "ledger unavailable"})
			case res[i].Err != nil:
				delete(m.escrows, rec.Trade)
				bid.Declined = append(bid.Declined, Decline{Item: rec.Trade.Item, Reason: truncate(res[i].Err.Error())})
			case e.release:
				e.state = escrowHeld
				released = append(released, e)
				bid.Declined = append(bid.Declined, Decline{Item: rec.Trade.Item, Reason: "released by the buyer"})
			default:
				e.state = escrowHeld
				n := nodes[rec.Trade]
				bid.Items = append(bid.Items, BidItem{Item: rec.Trade.Item, Node: rec.Node, Compute: n.Free.ComputePerHour,
					GPUType: n.GPUType, Price: rec.Price, Expiry: rec.Expiry, Escrow: rec.Trade.String()})
				m.emit(m.escrowEvent(now, EventEscrowHeld, rec, ""))
			}
		}
		m.releaseEscrows(now, released, "released by the buyer")
		if len(bid.Items) == 0 {
			reason := "no escrow could be held"
			if err != nil {
				reason = truncate("ledger unavailable: " + err.Error())
			}
			answer(now, noBid(reason, bid.Declined), cfb.Deadline.Add(m.cfg.LateBidGrace))
			return
		}
		r := m.envelope(now, KindBid, env.From, env.Auction)
		r.Bid = bid
		answer(now, r, expiry)
	})
}

// quotePreempting adds to quotes those of the declined items that ask for
// preemption and that the seller can make room for by stopping movable
// work (QuotePreempting), on the room the quotes and reservations leave.
func (m *Market) quotePreempting(items []Item, in Inbound, reserved map[string]placement.Resources, quotes []Quote, declines []Decline) ([]Quote, []Decline) {
	declined := make(map[string]bool, len(declines))
	for _, d := range declines {
		declined[d.Item] = true
	}
	var ask []Item
	for _, it := range items {
		if it.Preempt && declined[it.ID] {
			ask = append(ask, it)
		}
	}
	if len(ask) == 0 {
		return quotes, declines
	}
	taken := make(map[string]placement.Resources, len(reserved))
	for id, r := range reserved {
		taken[id] = r
	}
	for _, q := range quotes {
		taken[q.Node.ID] = taken[q.Node.ID].Add(q.Item.Job.Demand)
	}
	nodes := make([]placement.Node, len(in.Inventory))
	for i, n := range in.Inventory {
		n.Free = n.Free.Sub(taken[n.ID])
		nodes[i] = n
	}
	more := QuotePreempting(ask, nodes, in.Movable, m.cfg.Price)
	if len(more) == 0 {
		return quotes, declines
	}
	quoted := make(map[string]bool, len(more))
	for _, q := range more {
		quoted[q.Item.ID] = true
	}
	declines = slices.DeleteFunc(declines, func(d Decline) bool { return quoted[d.Item] })
	return append(quotes, more...), declines
}

func (m *Market) escrowEvent(now time.Time, kind EventKind, rec EscrowRecord, reason string) Event {
	return Event{Kind: kind, At: now, Trade: rec.Trade, ItemKind: rec.Kind, JobID: rec.JobID,
		Seller: m.cfg.Region, Node: rec.Node, Price: rec.Price, Reason: reason}
}

func truncate(s string) string {
	if len(s) > MaxIDLen {
		return s[:MaxIDLen-3] + "..."
	}
	return s
}

func (m *Market) onAward(now time.Time, in Inbound) {
	env := in.Env
	items := env.Award.Items
	ops := make([]LedgerOp, len(items))
	for i, it := range items {
		ref := TradeRef{Buyer: env.From, Auction: env.Auction, Item: it.Item}
		if it.Lease != nil {
			ops[i] = LedgerOp{Kind: OpDrawLease, Now: now, Trade: ref, Epoch: it.Epoch, Price: it.Price,
				Lease: &TradeRef{Buyer: env.From, Auction: it.Lease.Auction, Item: it.Lease.Item}, Job: it.Job}
			continue
		}
		ops[i] = LedgerOp{Kind: OpConvertEscrow, Now: now, Trade: ref, Epoch: it.Epoch, Price: it.Price}
		if e := m.escrows[ref]; e != nil && e.state == escrowHeld {
			e.state = escrowConverting
		}
	}
	m.propose(ops, func(now time.Time, res []OpResult, err error) {
		if err != nil {
			for _, op := range ops {
				if e := m.escrows[op.Trade]; e != nil && e.state == escrowConverting {
					e.state = escrowHeld
				}
			}
			// No answer: the buyer stays in doubt and asks again.
			m.reply(in.Request, nil)
			return
		}
		ack := make([]ItemStatus, len(ops))
		for i, op := range ops {
			r := res[i]
			e := m.escrows[op.Trade]
			if r.Err == nil {
				epoch := r.Epoch
				if epoch == 0 {
					epoch = op.Epoch
				}
				ack[i] = ItemStatus{Item: op.Trade.Item, Status: StatusAllocated, Epoch: epoch}
				if e != nil {
					delete(m.escrows, op.Trade)
					ev := m.escrowEvent(now, EventAllocationCreated, e.rec, "")
					ev.Epoch, ev.Price = epoch, op.Price
					m.emit(ev)
				} else if op.Kind == OpDrawLease {
					m.emit(Event{Kind: EventAllocationCreated, At: now, Trade: op.Trade, ItemKind: ItemJob,
						JobID: op.Job.ID, Seller: m.cfg.Region, Price: op.Price, Epoch: epoch, Reason: "lease draw"})
				}
				continue
			}
			st := r.Status
			if !st.valid() || st == StatusAllocated {
				st = StatusReleased
			}
			ack[i] = ItemStatus{Item: op.Trade.Item, Status: st, Reason: truncate(r.Err.Error())}
			if e != nil {
				if errors.Is(r.Err, ErrEscrowGone) {
					delete(m.escrows, op.Trade)
				} else if e.state == escrowConverting {
					e.state = escrowHeld
				}
			}
		}
		r := m.envelope(now, KindAck, env.From, env.Auction)
		r.Ack = &Ack{Items: ack}
		m.reply(in.Request, r)
	})
}

func (m *Market) onRelease(now time.Time, env *Envelope) {
	var refs []TradeRef
	if len(env.Release.Items) == 0 {
		for _, ref := range sortedRefs(m.escrows) {
			if ref.Buyer == env.From && ref.Auction == env.Auction {
				refs = append(refs, ref)
			}
		}
	} else {
		for _, item := range env.Release.Items {
			refs = append(refs, TradeRef{Buyer: env.From, Auction: env.Auction, Item: item})
		}
	}
	var held []*escrow
	for _, ref := range refs {
		e := m.escrows[ref]
		if e == nil {
			continue
		}
		switch e.state {
		case escrowHolding:
			e.release = true
		case escrowHeld:
			held = append(held, e)
		}
	}
	m.releaseEscrows(now, held, "released by the buyer")
}

// releaseEscrows proposes to release held escrows.
func (m *Market) releaseEscrows(now time.Time, es []*escrow, reason string) {
	if len(es) == 0 {
		return
	}
	ops := make([]LedgerOp, len(es))
	for i, e := range es {
		e.state = escrowReleasing
		ops[i] = LedgerOp{Kind: OpReleaseEscrow, Now: now, Trade: e.rec.Trade, Reason: reason}
	}
	m.propose(ops, func(now time.Time, _ []OpResult, err error) { m.released(now, es, err, reason) })
}

// released handles the commit of releases of es: they are gone, or, if the
// proposal failed, held again and retried at expiry.
func (m *Market) released(now time.Time, es []*escrow, err error, reason string) {
	for _, e := range es {
		if m.escrows[e.rec.Trade] != e {
			continue
		}
		if err != nil {
			e.state = escrowHeld
			e.retryAt = now.Add(m.cfg.StatusRetry)
			continue
		}
		delete(m.escrows, e.rec.Trade)
		m.emit(m.escrowEvent(now, EventEscrowReleased, e.rec, reason))
	}
}

func (m *Market) onStatusQuery(now time.Time, in Inbound) {
	env := in.Env
	ops := make([]LedgerOp, len(env.StatusQuery.Items))
	for i, item := range env.StatusQuery.Items {
		ops[i] = LedgerOp{Kind: OpLookupTrade, Now: now, Trade: TradeRef{Buyer: env.From, Auction: env.Auction, Item: item}}
	}
	m.propose(ops, func(now time.Time, res []OpResult, err error) {
		if err != nil {
			m.reply(in.Request, nil)
			return
		}
		m.replyStatuses(now, in, ops, res)
	})
}

func (m *Market) replyStatuses(now time.Time, in Inbound, ops []LedgerOp, res []OpResult) {
	sts := make([]ItemStatus, len(ops))
	for i, op := range ops {
		st := ItemStatus{Item: op.Trade.Item, Status: res[i].Status, Epoch: res[i].Epoch}
		if !st.Status.valid() {
			st.Status = StatusUnknown
		}
		if res[i].Err != nil {
			st.Reason = truncate(res[i].Err.Error())
		}
		sts[i] = st
	}
	r := m.envelope(now, KindStatusReply, in.Env.From, in.Env.Auction)
	r.StatusReply = &StatusReply{Items: sts}
	m.reply(in.Request, r)
}

func (m *Market) onCancel(now time.Time, in Inbound) {
	env := in.Env
	ops := make([]LedgerOp, len(env.Cancel.Items))
	for i, it := range env.Cancel.Items {
		ref := TradeRef{Buyer: env.From, Auction: env.Auction, Item: it.Item}
		ops[i] = LedgerOp{Kind: OpCancelTrade, Now: now, Trade: ref, Epoch: it.Epoch, Reason: "stale epoch"}
		if e := m.escrows[ref]; e != nil && e.state == escrowHeld {
			e.state = escrowReleasing
		}
	}
	m.propose(ops, func(now time.Time, res []OpResult, err error) {
		if err != nil {
			for _, op := range ops {
				if e := m.escrows[op.Trade]; e != nil && e.state == escrowReleasing {
					e.state = escrowHeld
				}
			}
			m.reply(in.Request, nil)
			return
		}
		for i, op := range ops {
			e := m.escrows[op.Trade]
			switch res[i].Status {
			case StatusCancelled:
				m.emit(Event{Kind: EventAllocationCancelled, At: now, Trade: op.Trade, Seller: m.cfg.Region,
					Epoch: op.Epoch, Reason: "stale epoch"})
			case StatusReleased:
				if e != nil {
					m.emit(m.escrowEvent(now, EventEscrowReleased, e.rec, "cancelled by the buyer"))
				}
			}
			if e != nil && res[i].Status != StatusHeld {
				delete(m.escrows, op.Trade)
			}
		}
		m.replyStatuses(now, in, ops, res)
	})
}

func (m *Market) tickSeller(now time.Time) {
	var expired []*escrow
	for _, ref := range sortedRefs(m.escrows) {
		e := m.escrows[ref]
		if e.state == escrowHeld && !now.Before(e.rec.Expiry) && !now.Before(e.retryAt) {
			expired = append(expired, e)
		}
	}
	m.releaseEscrows(now, expired, "expired")
	for k, c := range m.calls {
		if c.reply != nil && !now.Before(c.expiry) {
			delete(m.calls, k)
		}
	}
}

func (m *Market) sellerTimeouts(consider func(time.Time)) {
	for _, e := range m.escrows {
		if e.state == escrowHeld {
			t := e.rec.Expiry
			if e.retryAt.After(t) {
				t = e.retryAt
			}
			consider(t)
		}
	}
	for _, c := range m.calls {
		if c.reply != nil {
			consider(c.expiry)
		}
	}
}

// leaseGuard declines, in item order, the lease items that would take the
// region's lease sales past Config.LeaseRoom, and returns the other items.
func (m *Market) leaseGuard(now time.Time, items []Item) ([]Item, []Decline) {
	if m.cfg.LeaseRoom == nil || !slices.ContainsFunc(items, func(it Item) bool { return it.Kind == ItemLease }) {
		return items, nil
	}
	room := m.cfg.LeaseRoom(now)
	var keep []Item
	var declines []Decline
	for _, it := range items {
		if it.Kind == ItemLease {
			d := it.Job.Demand.ComputePerHour
			if !(d <= room) {
				declines = append(declines, Decline{Item: it.ID, Reason: fmt.Sprintf(
					"the region keeps its capacity for its own forecast demand: %.6g tasks/h may still be leased, the lease needs %.6g", max(room, 0), d)})
				continue
			}
			room -= d
		}
		keep = append(keep, it)
	}
	return keep, declines
}
