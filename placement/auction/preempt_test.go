package auction

import (
	"strings"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/placement"
)

func movable(alloc, node string, prio int, c float64) Movable {
	return Movable{AllocID: alloc, NodeID: node, Job: placement.Job{ID: "job-of-" + alloc, Priority: prio,
		Demand: placement.Resources{ComputePerHour: c, StorageGB: 10, BandwidthGBps: 1}}}
}

func urgentItem(id string, prio int, c float64, opts ...func(*placement.Job)) Item {
	it := jobItem(c, opts...)
	it.ID, it.Job.ID, it.Job.Priority, it.Preempt = id, id, prio, true
	return it
}

// TestQuotePreempting: a seller quotes an item that asks for preemption on
// the node whose movable work matters least, counting the room it makes,
// and never stops work of the item's priority or above.
func TestQuotePreempting(t *testing.T) {
	full := func(id string, price float64) placement.Node {
		n := testNode(id, 100, price)
		n.Free.ComputePerHour = 10
		return n
	}
	nodes := []placement.Node{full("n1", 300), full("n2", 300)}
	run := []Movable{movable("a-1", "n1", 2, 60), movable("a-2", "n2", 1, 60), movable("a-3", "n2", 1, 20)}
	items := []Item{urgentItem("u", 2, 50), jobItem(50)} // the plain item is not quoted by preemption
	quotes := QuotePreempting(items, nodes, run, flatPricing)
	if len(quotes) != 1 || quotes[0].Item.ID != "u" || quotes[0].Node.ID != "n2" || strings.Join(quotes[0].Preempt, ",") != "a-2" {
		t.Fatalf("quotes = %+v, want u on n2 stopping a-2 (priority 1; a-1 is u's own priority)", quotes)
	}
	if q := quotes[0]; q.Price != 300 || q.Node.Free.ComputePerHour != 70 {
		t.Errorf("quote = price %v, room %v; want the node's ask 300 and the room made, 10 + 60", q.Price, q.Node.Free.ComputePerHour)
	}
	// Two items: each victim is stopped for one item only.
	quotes = QuotePreempting([]Item{urgentItem("u1", 2, 50), urgentItem("u2", 2, 50)}, nodes, run, flatPricing)
	if len(quotes) != 1 {
		t.Errorf("quotes = %+v, want one: n2's movable work makes room for one item", quotes)
	}
	// A price limit below the node's cost, or nothing movable: no quote.
	if q := QuotePreempting([]Item{urgentItem("u", 2, 50, maxPrice(100))}, nodes, run, flatPricing); len(q) != 0 {
		t.Errorf("quoted above the price limit: %+v", q)
	}
	if q := QuotePreempting([]Item{urgentItem("u", 1, 50)}, nodes, run, flatPricing); len(q) != 0 {
		t.Errorf("quoted by stopping work of the same priority: %+v", q)
	}
}

// TestSellerPreemptsForUrgentItem: a full seller bids for an item that
// asks for preemption by holding escrow with the victims named, and only
// then; a seller configured not to preempt declines.
func TestSellerPreemptsForUrgentItem(t *testing.T) {
	for _, tc := range []struct {
		name      string
		preempt   bool
		noPreempt bool
		want      Kind
	}{
		{"urgent item", true, false, KindBid},
		{"plain item", false, false, KindNoBid},
		{"seller that does not preempt", true, true, KindNoBid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t)
			w.addRegion("buyer", Config{Price: flatPricing})
			w.addRegion("seller", Config{Price: flatPricing, NoPreempt: tc.noPreempt}, testNode("s1", 100, 300))
			w.rtt.Set("buyer", "seller", 50*time.Millisecond)
			item := w.job("buyer", "job-1", 50, func(j *placement.Job) { j.Priority = 2 })
			item.Preempt = tc.preempt
			w.start("buyer", "A1", []string{"seller"}, item)
			w.collect()
			cfb := w.queue[0]
			seller := w.regions["seller"]
			inv, _ := seller.l.Inventory(w.now)
			inv[0].Free.ComputePerHour = 10 // busy with the seller's own work
			in := Inbound{Request: 7, Env: cfb.env, Inventory: inv, Movable: []Movable{movable("a-batch", "s1", 1, 80)}}
			if err := seller.m.Receive(w.now, in); err != nil {
				t.Fatal(err)
			}
			rd := seller.m.Ready()
			if tc.want == KindNoBid {
				if len(rd.Proposals) != 0 || len(rd.Replies) != 1 || rd.Replies[0].Env.Kind != KindNoBid {
					t.Fatalf("ready = %+v, want a NoBid and no hold", rd)
				}
				return
			}
			if len(rd.Proposals) != 1 || len(rd.Proposals[0].Ops) != 1 {
				t.Fatalf("proposals = %+v, want one hold", rd.Proposals)
			}
			op := rd.Proposals[0].Ops[0]
			if op.Kind != OpHoldEscrow || strings.Join(op.Preempt, ",") != "a-batch" || op.Escrow.Priority != 2 {
				t.Fatalf("hold = %+v, want the escrow of priority 2 stopping a-batch", op)
			}
			res := make([]OpResult, 1)
			seller.m.Committed(w.now, rd.Proposals[0].ID, res, nil)
			rd = seller.m.Ready()
			if len(rd.Replies) != 1 || rd.Replies[0].Env.Kind != KindBid || rd.Replies[0].Env.Bid.Items[0].Compute != 90 {
				t.Fatalf("replies = %+v, want a bid on the 90 made free", rd.Replies)
			}
		})
	}
}

// TestSelectSellersForUrgentItem: an item that asks for preemption is
// offered to every region within its SLO and price limit, room or not.
func TestSelectSellersForUrgentItem(t *testing.T) {
	rtt := RTTTable{}
	rtt.Set("home", "near", 20*time.Millisecond)
	rtt.Set("home", "far", 300*time.Millisecond)
	regions := []RegionInfo{
		{Region: "near", Reachable: true},
		{Region: "far", Reachable: true},
	}
	it := urgentItem("u", 2, 100, slo(150*time.Millisecond))
	if got := SelectSellers("home", []Item{it}, regions, rtt, t0, 0); strings.Join(got, ",") != "near" {
		t.Errorf("SelectSellers = %v, want [near]: full, but within the SLO", got)
	}
	it.Preempt = false
	if got := SelectSellers("home", []Item{it}, regions, rtt, t0, 0); len(got) != 0 {
		t.Errorf("SelectSellers without preemption = %v, want none: no region has room", got)
	}
	lease := Item{ID: "l", Kind: ItemLease, Preempt: true, Job: placement.Job{ID: "l", Duration: time.Hour, Demand: placement.Resources{ComputePerHour: 1}}}
	if err := lease.Validate(""); err == nil || !strings.Contains(err.Error(), "preempt") {
		t.Errorf("a lease asking for preemption validates: %v", err)
	}
}
