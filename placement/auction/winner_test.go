package auction

import (
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/placement"
)

func offer(seller, node string, compute, price float64) Offer {
	return Offer{Seller: seller, Bid: BidItem{Item: "job", Node: node, Compute: compute, Price: price, Expiry: t0.Add(time.Minute)}}
}

func jobItem(d float64, opts ...func(*placement.Job)) Item {
	j := placement.Job{ID: "job", OriginRegion: "home", Demand: placement.Resources{ComputePerHour: d, StorageGB: 1}}
	for _, o := range opts {
		o(&j)
	}
	return Item{ID: "job", Kind: ItemJob, Job: j, Epoch: 1}
}

func params(rule PricingRule) WinnerParams {
	rtt := RTTTable{}
	for _, s := range []string{"a", "b", "c", "d"} {
		rtt.Set("home", s, 100*time.Millisecond)
	}
	return WinnerParams{Home: "home", Rule: rule, RTT: rtt, Now: t0, MinEscrowLeft: time.Second}
}

func decide1(t *testing.T, it Item, offers []Offer, p WinnerParams) Outcome {
	t.Helper()
	out, err := DetermineWinners([]Item{it}, offers, p)
	if err != nil {
		t.Fatal(err)
	}
	return out[0]
}

// The design's worked example as three sellers: E = 20, 18.75, 20.
func TestWorkedExampleAsOffers(t *testing.T) {
	offers := []Offer{offer("a", "node1", 200, 1000), offer("b", "node2", 150, 800), offer("c", "node3", 100, 500)}
	o := decide1(t, jobItem(100), offers, params(FirstPrice))
	var scores []float64
	for _, r := range o.Ranked {
		scores = append(scores, r.Score)
	}
	if len(scores) != 3 || scores[0] != 20 || scores[1] != 20 || scores[2] != 18.75 {
		t.Errorf("scores = %v, want [20 20 18.75]", scores)
	}
	// At equal efficiency the larger offer wins, as in local placement:
	// node1 (200 tasks/h) over node3 (100 tasks/h).
	if o.Winner.Bid.Node != "node1" || o.Paid != 1000 {
		t.Errorf("winner %s paid %v, want node1 at 1000", o.Winner.Bid.Node, o.Paid)
	}
	if o.Ranked[1].Bid.Node != "node3" || o.Ranked[2].Bid.Node != "node2" {
		t.Errorf("ranking = %s, %s, %s; want node1, node3, node2", o.Ranked[0].Bid.Node, o.Ranked[1].Bid.Node, o.Ranked[2].Bid.Node)
	}
}

func TestSecondPrice(t *testing.T) {
	for _, tc := range []struct {
		name   string
		offers []Offer
		max    float64
		winner string
		paid   float64
	}{
		{"same compute: the runner-up's price", []Offer{offer("a", "n", 100, 500), offer("b", "n", 100, 650), offer("c", "n", 100, 900)}, 0, "a", 650},
		{"second score: where the winner's score meets the runner-up's",
			// a: 150·100/600 = 25; b: 200·100/1000 = 20 → 150·100/p = 20 → p = 750
			[]Offer{offer("a", "n", 150, 600), offer("b", "n", 200, 1000)}, 0, "a", 750},
		{"capped by the maximum",
			// b: 100·100/700 = 14.3 → a would be paid 15000/14.3 = 1050 > 700.
			[]Offer{offer("a", "n", 150, 600), offer("b", "n", 100, 700)}, 700, "a", 700},
		{"alone: its own bid", []Offer{offer("a", "n", 100, 500)}, 900, "a", 500},
		{"tie: its own bid", []Offer{offer("a", "n", 100, 500), offer("b", "n", 100, 500)}, 0, "a", 500},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := decide1(t, jobItem(100, maxPrice(tc.max)), tc.offers, params(SecondPrice))
			if o.Winner == nil || o.Winner.Seller != tc.winner || math.Abs(o.Paid-tc.paid) > 1e-6 {
				t.Fatalf("winner %+v paid %v, want %s paid %v", o.Winner, o.Paid, tc.winner, tc.paid)
			}
			first := decide1(t, jobItem(100, maxPrice(tc.max)), tc.offers, params(FirstPrice))
			if first.Winner.Seller != o.Winner.Seller || first.Paid != first.Winner.Bid.Price {
				t.Errorf("first price: winner %s paid %v", first.Winner.Seller, first.Paid)
			}
			if o.Paid < o.Winner.Bid.Price {
				t.Errorf("second price %v below the winner's bid %v", o.Paid, o.Winner.Bid.Price)
			}
		})
	}
}

func TestSecondPriceWithLatencyPenalty(t *testing.T) {
	p := params(SecondPrice)
	p.RTT.Set("home", "far", 300*time.Millisecond)
	p.RTT.Set("home", "near", 20*time.Millisecond)
	// With an SLO the penalty applies: far loses 3, near 0.2.
	it := jobItem(100, slo(500*time.Millisecond))
	offers := []Offer{offer("far", "n", 200, 800), offer("near", "n", 200, 1000)}
	o := decide1(t, it, offers, p)
	// far: 25 − 3 = 22; near: 20 − 0.2 = 19.8 → far pays p with 20000/p − 3 = 19.8.
	want := 20000 / 22.8
	if o.Winner.Seller != "far" || math.Abs(o.Paid-want) > 1e-6 {
		t.Errorf("winner %s paid %v, want far paid %v", o.Winner.Seller, o.Paid, want)
	}
}

func TestInfeasibleOffersNeverWin(t *testing.T) {
	p := params(FirstPrice)
	p.RTT.Set("home", "far", 400*time.Millisecond)
	for _, tc := range []struct {
		name   string
		it     Item
		bad    Offer
		reason string
	}{
		{"above the maximum price", jobItem(100, maxPrice(600)), offer("a", "n", 400, 601), "price"},
		{"outside the SLO", jobItem(100, slo(200*time.Millisecond)), offer("far", "n", 400, 100), "RTT"},
		{"RTT unknown with an SLO", jobItem(100, slo(200*time.Millisecond)), offer("nowhere", "n", 400, 100), "RTT"},
		{"too small", jobItem(100), offer("a", "n", 50, 100), "compute"},
		{"wrong GPU", jobItem(100, func(j *placement.Job) { j.GPUType = "H100" }), offer("a", "n", 400, 100), "GPU"},
		{"escrow about to expire", jobItem(100), func() Offer {
			o := offer("a", "n", 400, 100)
			o.Bid.Expiry = t0.Add(500 * time.Millisecond)
			return o
		}(), "expires"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			good := offer("b", "n", 100, 500)
			if tc.it.Job.GPUType != "" {
				good.Bid.GPUType = tc.it.Job.GPUType
			}
			for _, rule := range []PricingRule{FirstPrice, SecondPrice} {
				p.Rule = rule
				o := decide1(t, tc.it, []Offer{tc.bad, good}, p)
				if o.Winner == nil || o.Winner.Seller != "b" {
					t.Fatalf("%s: winner %+v, want b", rule, o.Winner)
				}
				if tc.it.Job.MaxPricePerHour > 0 && o.Paid > tc.it.Job.MaxPricePerHour {
					t.Errorf("%s: paid %v above the maximum", rule, o.Paid)
				}
				if len(o.Rejected) != 1 || !strings.Contains(strings.ToLower(o.Rejected[0].Reason), strings.ToLower(tc.reason)) {
					t.Errorf("%s: rejected = %+v, want one naming %q", rule, o.Rejected, tc.reason)
				}
			}
		})
	}
}

func TestWinnersIndependentOfOfferOrder(t *testing.T) {
	offers := []Offer{offer("d", "n2", 100, 500), offer("a", "n1", 200, 1000), offer("c", "n", 100, 500), offer("b", "n", 150, 800), offer("d", "n1", 100, 500)}
	want := decide1(t, jobItem(100), offers, params(SecondPrice))
	for i := 0; i < len(offers); i++ {
		rot := append(append([]Offer{}, offers[i:]...), offers[:i]...)
		got := decide1(t, jobItem(100), rot, params(SecondPrice))
		if *got.Winner != *want.Winner || got.Paid != want.Paid {
			t.Errorf("rotation %d: winner %+v paid %v, want %+v paid %v", i, got.Winner, got.Paid, want.Winner, want.Paid)
		}
	}
	if want.Winner.Seller != "a" {
		t.Errorf("winner %s, want a (ties at 20 go to the larger compute)", want.Winner.Seller)
	}
}

// TestTieBreakMatchesPlacement checks that the market breaks ties exactly as
// placement's pipeline ranks nodes: score within 1e-9, then larger compute,
// then lower price, then the name seller/node in byte order.
func TestTieBreakMatchesPlacement(t *testing.T) {
	for _, tc := range []struct {
		name   string
		offers []Offer
		want   []string // seller/node, best first
	}{
		{"larger compute first", []Offer{offer("a", "n", 100, 500), offer("b", "n", 200, 1000)}, []string{"b/n", "a/n"}},
		{"then lower price", []Offer{
			// Equal within 1e-9: 100·100/500 = 20 and 100·100/(500·(1+1e-12)).
			offer("a", "n", 100, 500*(1+1e-12)), offer("b", "n", 100, 500)}, []string{"b/n", "a/n"}},
		{"then the name in byte order", []Offer{offer("us", "n", 100, 500), offer("us-east", "n", 100, 500)}, []string{"us-east/n", "us/n"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := decide1(t, jobItem(100), tc.offers, params(FirstPrice))
			var got []string
			for _, r := range o.Ranked {
				got = append(got, r.Seller+"/"+r.Bid.Node)
			}
			if strings.Join(got, ",") != strings.Join(tc.want, ",") {
				t.Fatalf("ranking = %v; want %v", got, tc.want)
			}
			// placement ranks the same offers, as nodes, the same way.
			var nodes []placement.Node
			for _, of := range tc.offers {
				r := placement.Resources{ComputePerHour: of.Bid.Compute, StorageGB: 1}
				nodes = append(nodes, placement.Node{ID: of.Seller + "/" + of.Bid.Node, Region: of.Seller, Total: r, Free: r, PricePerHour: of.Bid.Price})
			}
			pipe, err := placement.NewPipeline(placement.Config{Score: DefaultScoreConfig})
			if err != nil {
				t.Fatal(err)
			}
			dec, err := pipe.Rank(jobItem(100).Job, nodes)
			if err != nil {
				t.Fatal(err)
			}
			var pl []string
			for _, c := range dec.Ranked() {
				pl = append(pl, c.NodeID)
			}
			if strings.Join(pl, ",") != strings.Join(tc.want, ",") {
				t.Fatalf("placement ranks %v; the market %v", pl, got)
			}
		})
	}
}

func TestQuoteItems(t *testing.T) {
	nodes := []placement.Node{
		testNode("big", 400, 1000),
		testNode("cheap", 100, 300),
		{ID: "gpu", Total: placement.Resources{ComputePerHour: 200, StorageGB: 100, BandwidthGBps: 1, GPUs: 4},
			Free: placement.Resources{ComputePerHour: 200, StorageGB: 100, BandwidthGBps: 1, GPUs: 4}, PricePerHour: 2000, GPUType: "A100"},
	}
	items := []Item{
		jobItem(80),
		{ID: "j2", Kind: ItemJob, Job: placement.Job{ID: "j2", Demand: placement.Resources{ComputePerHour: 80}}},
		{ID: "g", Kind: ItemJob, Job: placement.Job{ID: "g", Demand: placement.Resources{ComputePerHour: 10, GPUs: 2}, GPUType: "A100"}},
		{ID: "huge", Kind: ItemJob, Job: placement.Job{ID: "huge", Demand: placement.Resources{ComputePerHour: 5000}}},
		{ID: "stingy", Kind: ItemJob, Job: placement.Job{ID: "stingy", Demand: placement.Resources{ComputePerHour: 10}, MaxPricePerHour: 50}},
	}
	quotes, declines := QuoteItems(items, nodes, nil, flatPricing)
	got := map[string]string{}
	for _, q := range quotes {
		got[q.Item.ID] = q.Node.ID
	}
	// "cheap" gives 100·80/300 = 26.7 against big's 400·80/1000 = 32: big,
	// for both jobs, since the machines are scored (bin packing), not what
	// is left of them.
	if got["job"] != "big" || got["j2"] != "big" || got["g"] != "gpu" {
		t.Errorf("quotes = %v", got)
	}
	if len(declines) != 2 || declines[0].Item != "huge" || declines[1].Item != "stingy" || !strings.Contains(declines[1].Reason, "maximum") {
		t.Errorf("declines = %+v", declines)
	}
	// Of identical nodes the best fit is quoted: the one with least room
	// that still fits, so the other stays whole for a larger item.
	a, b := testNode("a", 100, 300), testNode("b", 100, 300)
	a.Free.ComputePerHour = 50
	quotes, _ = QuoteItems([]Item{jobItem(40)}, []placement.Node{b, a}, nil, flatPricing)
	if len(quotes) != 1 || quotes[0].Node.ID != "a" {
		t.Errorf("identical nodes: quotes = %+v; want the best fit, a", quotes)
	}
	// Reserved capacity (holds in flight) is not offered again.
	quotes, _ = QuoteItems([]Item{jobItem(80)}, nodes[:1], map[string]placement.Resources{"big": {ComputePerHour: 350}}, flatPricing)
	if len(quotes) != 0 {
		t.Errorf("quoted reserved capacity: %+v", quotes)
	}
}

func TestUtilizationPricingRisesWithLoad(t *testing.T) {
	n := testNode("n", 100, 1000)
	idle, half, full := DefaultPricing(n, 0), DefaultPricing(n, 0.5), DefaultPricing(n, 1)
	if math.Abs(idle-1050) > 1e-9 || math.Abs(half-1181.25) > 1e-9 || math.Abs(full-1575) > 1e-9 {
		t.Errorf("prices = %v %v %v, want 1050 1181.25 1575", idle, half, full)
	}
}

func TestSelectSellers(t *testing.T) {
	rtt := RTTTable{}
	rtt.Set("home", "near", 20*time.Millisecond)
	rtt.Set("home", "mid", 90*time.Millisecond)
	rtt.Set("home", "far", 300*time.Millisecond)
	rtt.Set("home", "small", 10*time.Millisecond)
	big := placement.Resources{ComputePerHour: 1000, StorageGB: 1000, BandwidthGBps: 100}
	regions := []RegionInfo{
		{Region: "far", Surplus: big, Reachable: true},
		{Region: "mid", Surplus: big, Reachable: true, Ask: &Ask{MinPrice: 5000, Expires: t0.Add(time.Minute)}},
		{Region: "near", Surplus: big, Reachable: true},
		{Region: "small", Surplus: placement.Resources{ComputePerHour: 10}, Reachable: true},
		{Region: "down", Surplus: big},
		{Region: "home", Surplus: big, Reachable: true},
	}
	it := jobItem(100, slo(150*time.Millisecond), maxPrice(1000))
	got := SelectSellers("home", []Item{it}, regions, rtt, t0, 0)
	if strings.Join(got, ",") != "near" {
		t.Errorf("SelectSellers = %v, want [near] (mid asks too much, far is out of SLO, small too small)", got)
	}
	// An expired ask no longer excludes mid.
	got = SelectSellers("home", []Item{it}, regions, rtt, t0.Add(2*time.Minute), 0)
	if strings.Join(got, ",") != "near,mid" {
		t.Errorf("SelectSellers after the ask expired = %v, want [near mid]", got)
	}
	got = SelectSellers("home", []Item{jobItem(100)}, regions, rtt, t0, 2)
	if strings.Join(got, ",") != "near,mid" {
		t.Errorf("SelectSellers without SLO, max 2 = %v, want nearest two", got)
	}
}

// TestCheaperSeller checks when a job home could serve is offered abroad:
// only to a region whose ask, raised by the margin, beats home's price, and
// that could serve it (room, SLO, cap, a live ask).
func TestCheaperSeller(t *testing.T) {
	rtt := RTTTable{}
	rtt.Set("home", "near", 20*time.Millisecond)
	rtt.Set("home", "mid", 90*time.Millisecond)
	rtt.Set("home", "far", 300*time.Millisecond)
	rtt.Set("home", "twin", 90*time.Millisecond)
	big := placement.Resources{ComputePerHour: 1000, StorageGB: 1000, BandwidthGBps: 100}
	ask := func(p float64) *Ask { return &Ask{MinPrice: p, Expires: t0.Add(time.Minute)} }
	regions := []RegionInfo{
		{Region: "near", Surplus: big, Reachable: true, Ask: ask(95)}, // cheaper, but not clearly
		{Region: "mid", Surplus: big, Reachable: true, Ask: ask(80)},  // clearly cheaper
		{Region: "twin", Surplus: big, Reachable: true, Ask: ask(80)}, // as cheap, as near: the name decides
		{Region: "far", Surplus: big, Reachable: true, Ask: ask(50)},  // cheapest, out of SLO
		{Region: "quiet", Surplus: big, Reachable: true},              // no ask: no price to compare
		{Region: "down", Surplus: big, Ask: ask(10)},                  // no live leader
		{Region: "home", Surplus: big, Reachable: true, Ask: ask(1)},  // home itself
	}
	it := jobItem(100, slo(150*time.Millisecond))
	for _, tc := range []struct {
		name   string
		it     Item
		local  float64
		margin float64
		at     time.Time
		want   string
	}{
		{"clearly cheaper within SLO", it, 100, 0.1, t0, "mid"},
		{"no SLO: the cheapest anywhere", jobItem(100), 100, 0.1, t0, "far"},
		{"a small margin lets near in, but mid is cheaper", it, 100, 0.01, t0, "mid"},
		{"home as cheap as everyone", it, 85, 0.1, t0, ""},
		{"asks expired", it, 100, 0.1, t0.Add(2 * time.Minute), ""},
		{"over the job's price cap", jobItem(100, slo(150*time.Millisecond), maxPrice(70)), 100, 0.1, t0, ""},
		{"too big for any node", jobItem(2000, slo(150*time.Millisecond)), 100, 0.1, t0, ""},
		{"negative margin disables", it, 100, -1, t0, ""},
		{"no local price", it, 0, 0.1, t0, ""},
	} {
		got, ok := CheaperSeller("home", tc.it, tc.local, tc.margin, regions, rtt, tc.at)
		if got != tc.want || ok != (tc.want != "") {
			t.Errorf("%s: CheaperSeller = %q, %v; want %q", tc.name, got, ok, tc.want)
		}
	}
}

// TestServableElsewhere: a job may leave home when some reachable region
// other than home has room within its SLO and price limit, per gossip.
func TestServableElsewhere(t *testing.T) {
	rtt := RTTTable{}
	rtt.Set("home", "near", 20*time.Millisecond)
	rtt.Set("home", "far", 300*time.Millisecond)
	big := placement.Resources{ComputePerHour: 1000, StorageGB: 1000, BandwidthGBps: 100}
	small := placement.Resources{ComputePerHour: 50, StorageGB: 1000, BandwidthGBps: 100}
	ask := &Ask{MinPrice: 120, MinCost: 90, Expires: t0.Add(time.Minute)}
	regions := []RegionInfo{
		{Region: "home", Surplus: big, Reachable: true},
		{Region: "near", Surplus: small, Reachable: true, Ask: ask},
		{Region: "far", Surplus: big, Reachable: true, Ask: ask},
		{Region: "down", Surplus: big},
	}
	for _, tc := range []struct {
		name string
		it   Item
		want bool
	}{
		{"batch: anywhere with room", jobItem(100), true},
		{"SLO excludes far, near is too small", jobItem(100, slo(50*time.Millisecond)), false},
		{"small enough for near", jobItem(40, slo(50*time.Millisecond)), true},
		{"limit between the seller's cost and its ask", jobItem(100, maxPrice(100)), true},
		{"limit under the seller's cost", jobItem(100, maxPrice(80)), false},
	} {
		if got := ServableElsewhere("home", tc.it, regions, rtt, t0); got != tc.want {
			t.Errorf("%s: ServableElsewhere = %v; want %v", tc.name, got, tc.want)
		}
	}
	if ServableElsewhere("home", jobItem(100), regions[:1], rtt, t0) {
		t.Error("servable elsewhere with home the only region")
	}
}

func TestAskPolicy(t *testing.T) {
	nodes := []placement.Node{testNode("a", 100, 500), testNode("b", 300, 900)}
	nodes[1].Free.ComputePerHour = 100
	a, ok := AskPolicy{SellBelow: 0.7, TTL: 30 * time.Second}.MakeAsk(nodes, flatPricing, t0)
	if !ok || a.Surplus.ComputePerHour != 200 || a.LargestNode.ComputePerHour != 100 || a.MinPrice != 500 || !a.Expires.Equal(t0.Add(30*time.Second)) {
		t.Errorf("MakeAsk = %+v, %v", a, ok)
	}
	if _, ok := (AskPolicy{SellBelow: 0.4}).MakeAsk(nodes, flatPricing, t0); ok {
		t.Errorf("asked at 50%% utilization with SellBelow 0.4")
	}
	// With a markup the ask is above cost; the floor it sells down to is
	// the cheapest free node's cost.
	a, ok = AskPolicy{SellBelow: 0.7, TTL: time.Minute}.MakeAsk(nodes, DefaultPricing, t0)
	if !ok || a.MinCost != 500 || !(a.MinPrice > 500) || a.Floor() != 500 {
		t.Errorf("MakeAsk with DefaultPricing = %+v (floor %v), %v; want min cost 500 under the min price", a, a.Floor(), ok)
	}
}

// TestQuoteSellsDownToLimit: a buyer whose price limit lies between a
// node's cost and the seller's ask is quoted its limit; one below the
// cost is declined; a bid is never above the limit.
func TestQuoteSellsDownToLimit(t *testing.T) {
	nodes := []placement.Node{testNode("n", 100, 400)}
	item := func(id string, limit float64) Item {
		return Item{ID: id, Kind: ItemJob, Job: placement.Job{ID: id, Demand: placement.Resources{ComputePerHour: 10}, MaxPricePerHour: limit}}
	}
	quotes, declines := QuoteItems([]Item{item("between", 420), item("under", 399), item("above", 1000)}, nodes, nil, DefaultPricing)
	got := map[string]float64{}
	for _, q := range quotes {
		got[q.Item.ID] = q.Price
	}
	if got["between"] != 420 || len(declines) != 1 || declines[0].Item != "under" {
		t.Errorf("quotes %v, declines %+v; want between at its limit 420 and under declined", got, declines)
	}
	// "between" holds 10 of 100, "under" none: "above" is asked at 20 %.
	if p, ok := got["above"]; !ok || math.Abs(p-DefaultPricing(nodes[0], 0.2)) > 1e-9 {
		t.Errorf("above: quoted %v; want the seller's own ask at 20%% utilization, %v", p, DefaultPricing(nodes[0], 0.2))
	}
}

// TestFitElsewhere: jobs moved together are counted into the room the ones
// before them took; each goes where the most room is.
func TestFitElsewhere(t *testing.T) {
	rtt := RTTTable{}
	for _, r := range []string{"home", "a", "b"} {
		rtt.Set("home", r, 10*time.Millisecond)
	}
	room := func(region string, c float64) RegionInfo {
		r := placement.Resources{ComputePerHour: c, StorageGB: 100}
		return RegionInfo{Region: region, Reachable: true, Surplus: r, LargestNode: r}
	}
	regions := []RegionInfo{room("home", 1000), room("a", 100), room("b", 150)}
	// 90 goes to b (most room), leaving 60; 80 then to a (100), leaving
	// 20; a second 80 finds no region with room; 50 fits b's 60.
	items := []Item{jobItem(90), jobItem(80), jobItem(80), jobItem(50)}
	got := FitElsewhere("home", items, regions, rtt, t0)
	if want := []bool{true, true, false, true}; !slices.Equal(got, want) {
		t.Fatalf("FitElsewhere = %v; want %v", got, want)
	}
	// Each alone fits somewhere.
	for _, it := range items {
		if !ServableElsewhere("home", it, regions, rtt, t0) {
			t.Fatalf("%v alone: not servable", it.Job.Demand)
		}
	}
	if regions[1].Surplus.ComputePerHour != 100 {
		t.Fatalf("FitElsewhere changed its argument: %+v", regions[1])
	}
}
