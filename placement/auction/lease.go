package auction

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/meridian-mesh/meridian/placement"
)

// PlaceInLease places a job into capacity the region already leased, without
// an auction: it picks a held lease that fits, records the draw in the
// buyer's ledger, then awards it to the lease's seller, which allocates it
// inside the lease. From there the trade runs like an auctioned one (Ack,
// in doubt, epochs). drawID names the draw the way an auction ID would (the
// trade is drawID/it.ID); it must not have been used before.
//
// A lease fits when its seller meets the item's SLO from its origin (per
// rtt), its price is within the item's maximum, it has the GPU type asked
// for, its unused capacity covers the demand, and it lasts the job's
// duration (a job without a duration may run until the lease ends). Among
// fitting leases the tightest fit wins (least compute left over), then the
// lower price, then the lower trade reference. It returns ErrNoLease when
// none fits.
func (m *Market) PlaceInLease(now time.Time, drawID string, it Item, rtt RTTTable) (TradeRef, error) {
	if !m.leader {
		return TradeRef{}, ErrNotLeader
	}
	if err := checkID("draw", drawID); err != nil {
		return TradeRef{}, fmt.Errorf("place in lease: %w", err)
	}
	if err := it.Validate("item."); err != nil {
		return TradeRef{}, fmt.Errorf("place in lease: %w", err)
	}
	if it.Kind != ItemJob {
		return TradeRef{}, fmt.Errorf("place in lease: item %q is a %s; only jobs go into leases", it.ID, it.Kind)
	}
	ref := TradeRef{Buyer: m.cfg.Region, Auction: drawID, Item: it.ID}
	if _, dup := m.trades[ref]; dup {
		return TradeRef{}, fmt.Errorf("place in lease: trade %s: %w", ref, ErrDuplicate)
	}
	if _, dup := m.auctions[drawID]; dup {
		return TradeRef{}, fmt.Errorf("place in lease: draw %q is an open auction: %w", drawID, ErrDuplicate)
	}
	best := m.leaseFor(now, it, rtt, nil)
	if best == nil {
		return TradeRef{}, fmt.Errorf("place in lease: item %q: %w", it.ID, ErrNoLease)
	}
	best.Used = best.Used.Add(it.Job.Demand)
	job := it.Job
	lease := best.Trade
	rec := AwardRecord{
		Trade: ref, Kind: ItemJob, JobID: it.Job.ID, Epoch: it.Epoch, Seller: best.Seller, Node: best.Node,
		GPUType: best.GPUType, Price: best.Price, Resources: it.Job.Demand, Duration: it.Job.Duration,
		AwardedAt: now, Lease: &lease, Job: &job,
	}
	op := LedgerOp{Kind: OpRecordAward, Now: now, Trade: ref, Award: &rec}
	m.propose([]LedgerOp{op}, func(now time.Time, res []OpResult, err error) {
		m.awardsCommitted(now, []AwardRecord{rec}, res, err)
	})
	return ref, nil
}

// returnToLease gives a failed or abandoned draw's resources back to its
// lease.
func (m *Market) returnToLease(rec AwardRecord) {
	if rec.Lease == nil {
		return
	}
	if l := m.leases[*rec.Lease]; l != nil {
		l.Used = l.Used.Sub(rec.Resources)
		if l.Used.ComputePerHour < 0 {
			l.Used = placement.Resources{}
		}
	}
}

// leaseFor picks the held lease a job item would be drawn from at now: one
// with room for it (less drawn, what is already used plus any extra
// tentative draws), within its price limit, GPU type, SLO (from rtt) and
// time, the fullest first (best fit), then the cheapest; nil if none.
func (m *Market) leaseFor(now time.Time, it Item, rtt RTTTable, drawn map[TradeRef]placement.Resources) *LeaseRecord {
	var best *LeaseRecord
	var bestLeft float64
	for _, lref := range sortedRefs(m.leases) {
		l := m.leases[lref]
		left := l.Resources.Sub(l.Used).Sub(drawn[lref])
		switch {
		case !it.Job.Demand.FitsIn(left),
			it.Job.MaxPricePerHour > 0 && l.Price > it.Job.MaxPricePerHour,
			it.Job.GPUType != "" && it.Job.GPUType != l.GPUType,
			!now.Before(l.End),
			it.Job.Duration > 0 && now.Add(it.Job.Duration).After(l.End):
			continue
		}
		if it.Job.LatencySLO > 0 {
			d, ok := originRTT(it, m.cfg.Region, l.Seller, rtt)
			if !ok || d > it.Job.LatencySLO {
				continue
			}
		}
		spare := left.ComputePerHour - it.Job.Demand.ComputePerHour
		if best == nil || spare < bestLeft || (spare == bestLeft && l.Price < best.Price) {
			best, bestLeft = l, spare
		}
	}
	return best
}

// LeasesFit reports, for each job item in order, whether a lease the
// region holds would take it now (as PlaceInLease picks), each counted
// against the room the ones before it took. It changes nothing.
func (m *Market) LeasesFit(now time.Time, items []Item, rtt RTTTable) []bool {
	out := make([]bool, len(items))
	if !m.leader || len(m.leases) == 0 {
		return out
	}
	drawn := map[TradeRef]placement.Resources{}
	for i, it := range items {
		if it.Kind != ItemJob {
			continue
		}
		if l := m.leaseFor(now, it, rtt, drawn); l != nil {
			drawn[l.Trade] = drawn[l.Trade].Add(it.Job.Demand)
			out[i] = true
		}
	}
	return out
}

// Leases returns the leases the region holds as buyer, in trade order.
func (m *Market) Leases() []LeaseRecord {
	out := make([]LeaseRecord, 0, len(m.leases))
	for _, ref := range sortedRefs(m.leases) {
		out = append(out, *m.leases[ref])
	}
	return out
}

// LeasePolicy is the simple threshold trigger for buying capacity ahead of
// need: when the region's compute utilization reaches BuyAbove and the
// unused part of its leases is below Amount, buy one lease of Amount for
// Duration. (Forecast-driven buying replaces the threshold later; the
// mechanism stays.)
type LeasePolicy struct {
	// BuyAbove is the compute utilization in (0, 1] that triggers a buy.
	BuyAbove float64
	// Amount is the capacity of one lease.
	Amount placement.Resources
	// Duration is the lease window.
	Duration time.Duration
	// MaxPricePerHour caps what the lease may cost (0: no cap).
	MaxPricePerHour float64
	// LatencySLO bounds the RTT from the region to the seller (0: none).
	LatencySLO time.Duration
}

// Validate checks the policy.
func (p LeasePolicy) Validate() error {
	if math.IsNaN(p.BuyAbove) || p.BuyAbove <= 0 || p.BuyAbove > 1 {
		return fmt.Errorf("lease policy: field \"buy_above\": must be in (0, 1], got %v", p.BuyAbove)
	}
	if err := p.Amount.Validate("lease policy amount."); err != nil {
		return err
	}
	if !(p.Amount.ComputePerHour > 0) {
		return fmt.Errorf("lease policy: field \"amount.compute\": must be positive")
	}
	if p.Duration <= 0 {
		return fmt.Errorf("lease policy: field \"duration\": must be positive, got %v", p.Duration)
	}
	if math.IsNaN(p.MaxPricePerHour) || p.MaxPricePerHour < 0 {
		return fmt.Errorf("lease policy: field \"max_price_per_hour\": must not be negative")
	}
	if p.LatencySLO < 0 {
		return fmt.Errorf("lease policy: field \"latency_slo\": must not be negative")
	}
	return nil
}

// Want reports whether to buy a lease now, given the region's nodes (as the
// ledger sees them) and the leases held; if so it returns the lease item to
// auction, with ID leaseID.
func (p LeasePolicy) Want(region, leaseID string, local []placement.Node, held []LeaseRecord, now time.Time) (Item, bool) {
	if Utilization(local) < p.BuyAbove {
		return Item{}, false
	}
	var spare float64
	for _, l := range held {
		if now.Before(l.End) {
			spare += l.Resources.ComputePerHour - l.Used.ComputePerHour
		}
	}
	if spare >= p.Amount.ComputePerHour {
		return Item{}, false
	}
	return Item{ID: leaseID, Kind: ItemLease, Job: placement.Job{
		ID: leaseID, OriginRegion: region, Demand: p.Amount, Duration: p.Duration,
		MaxPricePerHour: p.MaxPricePerHour, LatencySLO: p.LatencySLO,
	}}, true
}

// AskPolicy decides when a seller advertises its surplus.
type AskPolicy struct {
	// SellBelow is the compute utilization below which the region advertises
	// (e.g. 0.7: advertise while less than 70% used).
	SellBelow float64
	// TTL is how long an ask stays valid.
	TTL time.Duration
}

// MakeAsk returns the region's ask at now, if its utilization is below
// p.SellBelow: its total free capacity, the largest free capacity of one
// node, and the lowest price it would quote for a small item. The Driver's
// caller publishes it through gossip (EncodeAsk).
func (p AskPolicy) MakeAsk(nodes []placement.Node, price PriceFunc, now time.Time) (Ask, bool) {
	if price == nil {
		price = DefaultPricing
	}
	u := Utilization(nodes)
	if u >= p.SellBelow {
		return Ask{}, false
	}
	var a Ask
	minPrice := math.Inf(1)
	for _, n := range nodes {
		if n.Validate() != nil || !(n.Free.ComputePerHour > 0) {
			continue
		}
		a.Surplus = a.Surplus.Add(n.Free)
		if n.Free.ComputePerHour > a.LargestNode.ComputePerHour {
			a.LargestNode = n.Free
		}
		minPrice = math.Min(minPrice, price(n, u))
		if a.MinCost == 0 || n.PricePerHour < a.MinCost {
			a.MinCost = n.PricePerHour
		}
	}
	if math.IsInf(minPrice, 1) || !(minPrice > 0) {
		return Ask{}, false
	}
	a.MinPrice = minPrice
	a.Expires = now.Add(p.TTL)
	return a, true
}

// EncodeAsk encodes a region's ask as a self-contained envelope for gossip
// to carry (under 200 bytes).
func EncodeAsk(region string, term uint64, a Ask, now time.Time) ([]byte, error) {
	return Encode(&Envelope{Version: Version, Kind: KindAsk, From: region, Term: term, Sent: now, Ask: &a})
}

// DecodeAsk decodes an ask published with EncodeAsk, returning the region
// and term it is from.
func DecodeAsk(b []byte) (region string, term uint64, a Ask, err error) {
	env, err := Decode(b)
	if err != nil {
		return "", 0, Ask{}, fmt.Errorf("decode ask: %w", err)
	}
	if env.Kind != KindAsk {
		return "", 0, Ask{}, fmt.Errorf("decode ask: %w: got a %s", ErrMalformed, env.Kind)
	}
	return env.From, env.Term, *env.Ask, nil
}

// RegionInfo is what gossip says about another region, for choosing sellers.
type RegionInfo struct {
	// Region is the region's name.
	Region string
	// Surplus is its free capacity in total (from gossip records, or its
	// ask).
	Surplus placement.Resources
	// LargestNode is the most free capacity on one of its nodes; zero means
	// unknown (Surplus is used instead).
	LargestNode placement.Resources
	// Ask is its current ask, if it publishes one.
	Ask *Ask
	// Reachable is false when gossip knows no live leader for it.
	Reachable bool
}

// SelectSellers picks the regions to invite for items: every reachable
// region other than home that could serve at least one item — a node with
// room for its demand, within its SLO from its origin, and (if it publishes
// an unexpired ask) a minimum price within its maximum. At most max regions
// are invited (0: no limit), nearest to the items' origins first, then by
// name.
func SelectSellers(home string, items []Item, regions []RegionInfo, rtt RTTTable, now time.Time, max int) []string {
	type cand struct {
		region string
		rtt    time.Duration
	}
	var cands []cand
	for _, r := range regions {
		if r.Region == home || !r.Reachable {
			continue
		}
		best, useful := time.Duration(math.MaxInt64), false
		for _, it := range items {
			if d, _, ok := canServe(home, it, r, rtt, now); ok {
				useful = true
				best = min(best, d)
			}
		}
		if useful {
			cands = append(cands, cand{r.Region, best})
		}
	}
	slices.SortFunc(cands, func(a, b cand) int {
		if c := cmp.Compare(a.rtt, b.rtt); c != 0 {
			return c
		}
		return cmp.Compare(a.region, b.region)
	})
	if max > 0 && len(cands) > max {
		cands = cands[:max]
	}
	out := make([]string, len(cands))
	for i, c := range cands {
		out[i] = c.region
	}
	return out
}

// canServe reports whether gossip says region r could serve it: a node with
// room for its demand, within its SLO from its origin and, if r publishes
// an unexpired ask, a minimum price within the item's maximum. It returns
// the RTT from the origin (MaxInt64 when unknown and the item has no SLO)
// and r's unexpired ask, if any.
func canServe(home string, it Item, r RegionInfo, rtt RTTTable, now time.Time) (time.Duration, *Ask, bool) {
	room := r.LargestNode
	if room.IsZero() {
		room = r.Surplus
	}
	ask := r.Ask
	if ask != nil && !now.Before(ask.Expires) {
		ask = nil
	}
	if !it.Preempt && !it.Job.Demand.FitsIn(room) {
		// (An item that asks for preemption may be served in room the
		// seller makes: its free room does not decide.)
		return 0, nil, false
	}
	if ask != nil && it.Job.MaxPricePerHour > 0 && ask.Floor() > it.Job.MaxPricePerHour {
		return 0, nil, false
	}
	d, ok := originRTT(it, home, r.Region, rtt)
	if it.Job.LatencySLO > 0 && (!ok || d > it.Job.LatencySLO) {
		return 0, nil, false
	}
	if !ok {
		d = time.Duration(math.MaxInt64)
	}
	return d, ask, true
}

// ServableElsewhere reports whether a reachable region other than home
// could serve it, per gossip (canServe: room on one node, within its SLO
// from its origin and its maximum price). A region leader that keeps its
// own capacity for the work only it can serve offers such a job to the
// market first.
func ServableElsewhere(home string, it Item, regions []RegionInfo, rtt RTTTable, now time.Time) bool {
	for _, r := range regions {
		if r.Region == home || !r.Reachable {
			continue
		}
		if _, _, ok := canServe(home, it, r, rtt, now); ok {
			return true
		}
	}
	return false
}

// FitElsewhere reports, for each of items in order, whether a reachable
// region other than home could serve it per gossip (canServe) in the room
// the items before it left: an item that fits is counted into the region
// with the most room on one node among those that could serve it, and
// takes its demand from that region's room. It judges moves made together:
// several jobs each checked alone against one region's free node would
// all find it free, and all but one would then find it full.
func FitElsewhere(home string, items []Item, regions []RegionInfo, rtt RTTTable, now time.Time) []bool {
	room := slices.Clone(regions)
	out := make([]bool, len(items))
	for i, it := range items {
		best := -1
		for k, r := range room {
			if r.Region == home || !r.Reachable {
				continue
			}
			if _, _, ok := canServe(home, it, r, rtt, now); !ok {
				continue
			}
			if best < 0 || largest(r).ComputePerHour > largest(room[best]).ComputePerHour {
				best = k
			}
		}
		if best < 0 {
			continue
		}
		out[i] = true
		r := &room[best]
		d := it.Job.Demand
		if !r.LargestNode.IsZero() {
			r.LargestNode = r.LargestNode.Sub(d)
		}
		if d.FitsIn(r.Surplus) {
			r.Surplus = r.Surplus.Sub(d)
		} else {
			r.Surplus = placement.Resources{}
		}
	}
	return out
}

// largest is the room of r's emptiest node, as canServe reads it.
func largest(r RegionInfo) placement.Resources {
	if r.LargestNode.IsZero() {
		return r.Surplus
	}
	return r.LargestNode
}

// CheaperSeller returns a region that asks clearly less for it than
// localPrice, what serving it at home costs (US dollars per node-hour, as
// asks and bids are): a reachable region other than home that could serve
// it (canServe) and whose unexpired ask, raised by margin (0.1 = 10 %), is
// still below localPrice. Of several, the lowest ask wins, then the nearest,
// then the name. A region leader offers such a job to the market before
// placing it at home, capped at localPrice, so that the trade happens only
// if a seller's firm bid beats home.
func CheaperSeller(home string, it Item, localPrice, margin float64, regions []RegionInfo, rtt RTTTable, now time.Time) (string, bool) {
	if !(localPrice > 0) || margin < 0 {
		return "", false
	}
	best, bestPrice, bestRTT := "", math.Inf(1), time.Duration(math.MaxInt64)
	for _, r := range regions {
		if r.Region == home || !r.Reachable {
			continue
		}
		d, ask, ok := canServe(home, it, r, rtt, now)
		if !ok || ask == nil || !(ask.MinPrice*(1+margin) < localPrice) {
			continue
		}
		better := ask.MinPrice < bestPrice ||
			ask.MinPrice == bestPrice && (d < bestRTT || d == bestRTT && r.Region < best)
		if better {
			best, bestPrice, bestRTT = r.Region, ask.MinPrice, d
		}
	}
	return best, best != ""
}
