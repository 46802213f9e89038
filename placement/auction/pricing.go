package auction

import (
	"cmp"
	"fmt"
	"math"
	"slices"

	"github.com/meridian-mesh/meridian/placement"
)

// PriceFunc returns a seller's asking price for a node, in US dollars per
// node-hour, given the region's compute utilization u in [0, 1] once the
// item is held. It must be pure.
type PriceFunc func(node placement.Node, utilization float64) float64

// UtilizationPricing prices a node at its cost plus markup, raised as the
// region fills up: cost·(1+markup)·(1+surge·u²). Like the proportional-share
// prices of Tycoon and Spawn, a busy seller grows expensive and so sheds
// demand to idle regions, while an idle one sells near cost. The price never
// falls below the node's cost when markup ≥ 0.
func UtilizationPricing(markup, surge float64) PriceFunc {
	return func(n placement.Node, u float64) float64 {
		u = math.Min(1, math.Max(0, u))
		return n.PricePerHour * (1 + markup) * (1 + surge*u*u)
	}
}

// DefaultPricing is UtilizationPricing(0.05, 0.5): 5% over cost when idle,
// up to 1.575× cost when full. The surge is kept moderate because a job's
// price limit binds the trade price: a steeper one (1.1·(1+u²) was the first
// default) priced the work of a job capped at 1.2× its home price out of
// every other region past half load, and it stayed unplaced where the
// regions' own prices would have served it (docs/benchmark.md).
var DefaultPricing = UtilizationPricing(0.05, 0.5)

// Quote is a seller's offer for one item before it is escrowed.
type Quote struct {
	// Item is the item quoted.
	Item Item
	// Node is the node chosen to run it.
	Node placement.Node
	// Price is the asking price, US dollars per node-hour.
	Price float64
	// Preempt names the running allocations on Node to stop to make room
	// (QuotePreempting); empty for a quote on free room.
	Preempt []string
}

// QuoteItems decides, in item order, which node of the seller's region would
// run each item and at what price. nodes is the ledger's view (Free already
// net of allocations and committed escrows); reserved is capacity promised
// but not yet reflected there (holds in flight), by node ID. An item gets the
// node that gives the buyer the best efficiency C·D/price (C the node's total
// compute, as placement's bin packing scores it) among those that fit it,
// have its GPU type and whose cost is within its maximum (an ask above the
// maximum is lowered to it, down to the node's cost); ties go to the
// node with the least free compute (the best fit, which keeps whole nodes
// free for large items), then the cheaper node, then the lower ID. Each
// quote reserves its demand for the items after it; Quote.Node.Free is what
// the node had before. Items no node can serve are declined with a reason.
func QuoteItems(items []Item, nodes []placement.Node, reserved map[string]placement.Resources, price PriceFunc) ([]Quote, []Decline) {
	if price == nil {
		price = DefaultPricing
	}
	free := make([]placement.Resources, len(nodes))
	var total, used float64
	valid := make([]bool, len(nodes))
	for i, n := range nodes {
		if n.Validate() != nil {
			continue
		}
		valid[i] = true
		free[i] = n.Free.Sub(reserved[n.ID])
		total += n.Total.ComputePerHour
		used += n.Total.ComputePerHour - free[i].ComputePerHour
	}
	var quotes []Quote
	var declines []Decline
	for _, it := range items {
		d := it.Job.Demand
		best, bestPrice, bestEff := -1, 0.0, 0.0
		fits, underMax := false, false
		u := 0.0
		if total > 0 {
			u = (used + d.ComputePerHour) / total
		}
		for i, n := range nodes {
			if !valid[i] || (it.Job.GPUType != "" && n.GPUType != it.Job.GPUType) || !d.FitsIn(free[i]) {
				continue
			}
			fits = true
			p, ok := askFor(it, n, u, price)
			if !ok {
				continue
			}
			underMax = true
			eff := n.Total.ComputePerHour * d.ComputePerHour / p
			if best < 0 || eff > bestEff || eff == bestEff && quoteTieBreak(free[i].ComputePerHour, p, n.ID, free[best].ComputePerHour, bestPrice, nodes[best].ID) {
				best, bestPrice, bestEff = i, p, eff
			}
		}
		switch {
		case best >= 0:
			n := nodes[best]
			n.Free = free[best] // what the node had before this item: C in the score
			quotes = append(quotes, Quote{Item: it, Node: n, Price: bestPrice})
			free[best] = free[best].Sub(d)
			used += d.ComputePerHour
		case fits && !underMax:
			declines = append(declines, Decline{Item: it.ID, Reason: fmt.Sprintf("every fitting node costs more than the maximum %.4g", it.Job.MaxPricePerHour)})
		default:
			declines = append(declines, Decline{Item: it.ID, Reason: "no node has the free capacity"})
		}
	}
	return quotes, declines
}

// askFor is the seller's ask for item it on node n at utilization u, or
// false when the node cannot sell within the item's price limit.
func askFor(it Item, n placement.Node, u float64, price PriceFunc) (float64, bool) {
	p := price(n, u)
	if !(p > 0) || math.IsInf(p, 0) {
		return 0, false
	}
	if limit := it.Job.MaxPricePerHour; limit > 0 && p > limit {
		if n.PricePerHour > limit {
			return 0, false
		}
		// The ask is what the seller opens with, its cost what it must
		// recover: for a buyer whose limit lies between, it sells at the
		// limit rather than leave the node idle.
		p = limit
	}
	return p, true
}

// MaxPreempt bounds the allocations a seller stops for one item, as the
// region ledger does (consensus.MaxPreempt).
const MaxPreempt = 8

// QuotePreempting quotes items that ask for preemption (Item.Preempt) on
// room the seller makes by stopping movable work of lower priority
// (placement.PlanPreemptions: the node whose victims matter least, at most
// MaxPreempt per item, each victim stopped for one item only). nodes' Free
// must already be net of reservations and of the quotes made on free
// room; movable is the work that may be stopped. The price is the node's
// ask at the region's utilization, within the item's limit as QuoteItems
// sells. Items without Preempt, leases and items no node can take so are
// left out. Deterministic.
func QuotePreempting(items []Item, nodes []placement.Node, movable []Movable, price PriceFunc) []Quote {
	if price == nil {
		price = DefaultPricing
	}
	var want []placement.Job
	byID := map[string]Item{}
	for _, it := range items {
		if it.Preempt && it.Kind == ItemJob {
			j := it.Job
			j.ID = it.ID // items are unique by ID within a call; jobs need not be
			want = append(want, j)
			byID[it.ID] = it
		}
	}
	if len(want) == 0 || len(movable) == 0 {
		return nil
	}
	running := make([]placement.Preemptible, len(movable))
	for i, m := range movable {
		running[i] = placement.Preemptible{AllocID: m.AllocID, NodeID: m.NodeID, Priority: m.Job.Priority, Resources: m.Job.Demand}
	}
	u := Utilization(nodes)
	valid := make([]placement.Node, 0, len(nodes))
	for _, n := range nodes {
		if n.Validate() == nil {
			valid = append(valid, n)
		}
	}
	plan := placement.PlanPreemptions(want, valid, running, MaxPreempt, func(j placement.Job, n placement.Node) bool {
		if j.GPUType != "" && n.GPUType != j.GPUType {
			return false
		}
		_, ok := askFor(byID[j.ID], n, u, price)
		return ok
	})
	nodeByID := make(map[string]placement.Node, len(valid))
	for _, n := range valid {
		nodeByID[n.ID] = n
	}
	quotes := make([]Quote, 0, len(plan))
	held := make(map[string]placement.Resources, len(movable))
	for _, m := range movable {
		held[m.AllocID] = m.Job.Demand
	}
	for _, p := range plan {
		it, n := byID[p.Job.ID], nodeByID[p.NodeID]
		ask, _ := askFor(it, n, u, price)
		for _, v := range p.Victims {
			n.Free = n.Free.Add(held[v]) // the room made: C in the buyer's score
		}
		quotes = append(quotes, Quote{Item: it, Node: n, Price: ask, Preempt: p.Victims})
	}
	// In the items' order, as QuoteItems quotes.
	slices.SortStableFunc(quotes, func(a, b Quote) int {
		return cmp.Compare(slices.IndexFunc(items, func(it Item) bool { return it.ID == a.Item.ID }),
			slices.IndexFunc(items, func(it Item) bool { return it.ID == b.Item.ID }))
	})
	return quotes
}

// quoteTieBreak reports whether a node with free compute free, asking
// price and named id goes before the current best of equal efficiency.
func quoteTieBreak(free, price float64, id string, bestFree, bestPrice float64, bestID string) bool {
	if free != bestFree {
		return free < bestFree
	}
	if price != bestPrice {
		return price < bestPrice
	}
	return id < bestID
}

// Utilization returns the compute utilization of nodes: 1 − free/total.
func Utilization(nodes []placement.Node) float64 {
	var total, free float64
	for _, n := range nodes {
		total += n.Total.ComputePerHour
		free += n.Free.ComputePerHour
	}
	if total <= 0 {
		return 0
	}
	return math.Min(1, math.Max(0, 1-free/total))
}

// sortedKeys returns the keys of m in order, for deterministic output.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, cmp.Compare[string])
	return keys
}
