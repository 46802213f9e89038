package auction

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/meridian-mesh/meridian/placement"
)

// DefaultScoreConfig is the market's score when Config.Score is nil: the
// model's cost efficiency E = C·D/c, minus 0.01 per millisecond of RTT from
// the job's origin for jobs with a latency SLO (so 100 ms costs 1, a twentieth
// of the worked example's E = 20). It is placement's scorer, so a job is
// judged the same whether it is placed at home or bought abroad.
var DefaultScoreConfig = placement.ScoreConfig{Model: placement.ModelCostEfficiency, LatencyPenaltyPerMs: 0.01}

// RTTTable holds round-trip times between regions, from → to → RTT. The
// buyer fills it from gossip (measured RTTs or network coordinates) when the
// auction starts, so winner determination reads no live state.
type RTTTable map[string]map[string]time.Duration

// Set records the RTT from → to.
func (t RTTTable) Set(from, to string, rtt time.Duration) {
	row := t[from]
	if row == nil {
		row = make(map[string]time.Duration)
		t[from] = row
	}
	row[to] = rtt
}

// Get returns the RTT from → to, falling back to to → from. A region's RTT
// to itself defaults to zero.
func (t RTTTable) Get(from, to string) (time.Duration, bool) {
	if d, ok := t[from][to]; ok {
		return d, true
	}
	if d, ok := t[to][from]; ok {
		return d, true
	}
	return 0, from == to
}

// RegionRTT implements placement.RTTEstimator.
func (t RTTTable) RegionRTT(from, to string) (time.Duration, bool) { return t.Get(from, to) }

var _ placement.RTTEstimator = RTTTable(nil)

// Offer is one seller's bid on one item, as the buyer received it.
type Offer struct {
	// Seller is the seller's region.
	Seller string
	// Bid is the offer itself.
	Bid BidItem
}

// Outcome is the result of winner determination for one item.
type Outcome struct {
	// Item is the item ID.
	Item string
	// Winner is the winning offer; nil when no offer was feasible.
	Winner *Offer
	// Score is the winner's score.
	Score float64
	// Paid is the price the buyer pays, US dollars per node-hour, under the
	// pricing rule.
	Paid float64
	// Ranked are the feasible offers, best first (the winner is Ranked[0]).
	Ranked []RankedOffer
	// Rejected are the infeasible offers, with reasons.
	Rejected []RejectedOffer
}

// RankedOffer is a feasible offer with its score.
type RankedOffer struct {
	Offer
	// Score is the offer's score.
	Score float64
	// Components are the terms of the score, from placement's scorer.
	Components placement.Components
}

// RejectedOffer is an infeasible offer with the reason.
type RejectedOffer struct {
	Offer
	// Reason says which constraint the offer fails.
	Reason string
}

// WinnerParams are the fixed inputs of winner determination.
type WinnerParams struct {
	// Home is the buyer's region: the origin of items that name none.
	Home string
	// Rule is the pricing rule.
	Rule PricingRule
	// Score is placement's score configuration; nil means
	// DefaultScoreConfig.
	Score *placement.ScoreConfig
	// RTT gives the RTT from each item's origin to each seller.
	RTT RTTTable
	// Now is the buyer's clock at determination.
	Now time.Time
	// MinEscrowLeft is how long an escrow must still have to live for its
	// offer to be feasible: time to commit the award and deliver it.
	MinEscrowLeft time.Duration
}

// DetermineWinners picks, independently for each item, the feasible offer
// with the best score, and the price paid under p.Rule.
//
// Offers are judged by placement's pipeline, as nodes priced at their bid:
// an offer is feasible when the node has the item's GPU type, its price is
// at most the item's maximum, the RTT from the item's origin to the seller
// meets the item's SLO, and its compute covers the demand; and, for the
// market, when its escrow lives at least p.MinEscrowLeft longer. Feasible
// offers are scored by placement's scorer (E = C·D/c minus the RTT penalty
// by default) and ordered exactly as placement orders nodes: by score,
// highest first, scores within a relative 1e-9 being equal; equal scores go
// to the larger compute offered, then the lower price, then the offer's
// name "seller/node" in byte order. A job therefore meets the same
// tie-break whether it is placed at home or bought abroad. The result
// depends only on the inputs, not on their order. Outcomes follow the order
// of items.
func DetermineWinners(items []Item, offers []Offer, p WinnerParams) ([]Outcome, error) {
	cfg := DefaultScoreConfig
	if p.Score != nil {
		cfg = *p.Score
	}
	pipe, err := placement.NewPipeline(placement.Config{Score: cfg, RTT: p.RTT})
	if err != nil {
		return nil, fmt.Errorf("determine winners: %w", err)
	}
	index := make(map[string]int, len(items))
	perItem := make([][]Offer, len(items))
	out := make([]Outcome, len(items))
	for i, it := range items {
		index[it.ID] = i
		out[i].Item = it.ID
	}
	seen := make(map[[2]string]bool, len(offers))
	for _, o := range offers {
		i, ok := index[o.Bid.Item]
		if !ok {
			continue
		}
		key := [2]string{o.Seller, o.Bid.Item}
		if seen[key] {
			continue // a seller gets one offer per item; keep its first
		}
		seen[key] = true
		if !o.Bid.Expiry.After(p.Now.Add(p.MinEscrowLeft)) {
			out[i].Rejected = append(out[i].Rejected, RejectedOffer{Offer: o,
				Reason: fmt.Sprintf("escrow expires at %s, too soon to award", o.Bid.Expiry.UTC().Format(time.RFC3339Nano))})
			continue
		}
		perItem[i] = append(perItem[i], o)
	}
	var nodes []placement.Node
	for i, it := range items {
		os := perItem[i]
		if len(os) == 0 {
			continue
		}
		job := it.Job
		if job.OriginRegion == "" {
			job.OriginRegion = p.Home
		}
		nodes = nodes[:0]
		for _, o := range os {
			// The seller escrowed exactly the demand; only compute (C in the
			// score) is reported beyond it.
			r := job.Demand
			r.ComputePerHour = o.Bid.Compute
			nodes = append(nodes, placement.Node{ID: o.Seller + "/" + o.Bid.Node, Region: o.Seller,
				Total: r, Free: r, PricePerHour: o.Bid.Price, GPUType: o.Bid.GPUType})
		}
		dec, err := pipe.Rank(job, nodes)
		if err != nil {
			for _, o := range os {
				out[i].Rejected = append(out[i].Rejected, RejectedOffer{Offer: o, Reason: err.Error()})
			}
			continue
		}
		for _, c := range dec.Ranked() {
			out[i].Ranked = append(out[i].Ranked, RankedOffer{Offer: os[c.Index], Score: c.Score, Components: c.Components})
		}
		for _, r := range dec.Rejected() {
			out[i].Rejected = append(out[i].Rejected, RejectedOffer{Offer: os[r.Index], Reason: r.Reason()})
		}
		orderRanked(out[i].Ranked)
		r := out[i].Ranked
		if len(r) == 0 {
			continue
		}
		w := r[0]
		out[i].Winner = &Offer{Seller: w.Seller, Bid: w.Bid}
		out[i].Score = w.Score
		out[i].Paid = w.Bid.Price
		if p.Rule == SecondPrice && len(r) > 1 {
			out[i].Paid = secondScorePrice(scoreAtPrice(cfg, w), w.Bid.Price, r[1].Score, it.Job.MaxPricePerHour)
		}
	}
	return out, nil
}

// orderRanked orders offers by placement's rule (see the placement package
// documentation, "Tie-break"): score, highest first; scores within a
// relative 1e-9 of the first of their group are equal and ordered by larger
// compute, then lower price, then the offer's name seller/node in byte
// order, the node ID placement ranked it under (grouping from the top keeps
// the order strict although "equal within a tolerance" is not transitive).
// placement's Rank already returns this order; sorting again keeps the
// market's result independent of how placement breaks ties internally.
func orderRanked(r []RankedOffer) {
	slices.SortStableFunc(r, func(a, b RankedOffer) int { return cmp.Compare(b.Score, a.Score) })
	for i := 0; i < len(r); {
		j := i + 1
		for j < len(r) && scoresEqual(r[i].Score, r[j].Score) {
			j++
		}
		slices.SortFunc(r[i:j], func(a, b RankedOffer) int {
			if c := cmp.Compare(b.Bid.Compute, a.Bid.Compute); c != 0 {
				return c
			}
			if c := cmp.Compare(a.Bid.Price, b.Bid.Price); c != 0 {
				return c
			}
			return cmp.Compare(a.Seller+"/"+a.Bid.Node, b.Seller+"/"+b.Bid.Node)
		})
		i = j
	}
}

func scoresEqual(a, b float64) bool {
	return a == b || math.Abs(a-b) <= 1e-9*math.Max(math.Abs(a), math.Abs(b))
}

// scoreAtPrice returns the winner's score as a function of the price it is
// paid, all else equal, from the components placement scored it with.
func scoreAtPrice(cfg placement.ScoreConfig, w RankedOffer) func(float64) float64 {
	c, bid := w.Components, w.Bid.Price
	if cfg.Model == placement.ModelWeighted {
		return func(q float64) float64 { return c.Compute + c.Storage + c.Bandwidth - cfg.Lambda*q - c.Latency }
	}
	return func(q float64) float64 { return c.Compute*bid/q + c.Storage + c.Bandwidth - c.Latency }
}

// secondScorePrice returns the highest price at which the winner's score is
// still at least the runner-up's: the payment of a second-score auction. It
// is never below the winner's own bid, and never above maxPrice when the item
// sets one; without a maximum, a winner that no price would make lose is
// paid its own bid.
func secondScorePrice(at func(float64) float64, own, runnerUp, maxPrice float64) float64 {
	if at(own) <= runnerUp {
		return own // a tie (or rounding): no slack to pay for
	}
	hi := maxPrice
	if hi <= 0 || math.IsInf(hi, 0) {
		hi = own
		for range 64 {
			hi *= 2
			if at(hi) < runnerUp {
				break
			}
		}
		if at(hi) >= runnerUp {
			return own
		}
	} else if at(hi) >= runnerUp {
		return hi // even at the maximum the winner would still win
	}
	lo := own
	for range 200 {
		mid := lo + (hi-lo)/2
		if mid <= lo || mid >= hi {
			break
		}
		if at(mid) >= runnerUp {
			lo = mid
		} else {
			hi = mid
		}
	}
	return lo
}

// originRTT returns the RTT from the item's origin (home when the item names
// none) to seller.
func originRTT(it Item, home, seller string, rtt RTTTable) (time.Duration, bool) {
	origin := it.Job.OriginRegion
	if origin == "" {
		origin = home
	}
	return rtt.Get(origin, seller)
}
