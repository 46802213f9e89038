package auction

import (
	"errors"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/placement"
)

// flatPricing asks exactly the node's cost, so tests can predict prices.
func flatPricing(n placement.Node, _ float64) float64 { return n.PricePerHour }

func twoRegions(t *testing.T, cfg Config) *world {
	w := newWorld(t)
	w.addRegion("us-east-1", cfg, testNode("use1-a", 200, 1000))
	w.addRegion("eu-west-1", cfg, testNode("euw1-a", 200, 900))
	w.rtt.Set("us-east-1", "eu-west-1", 70*time.Millisecond)
	return w
}

func TestTwoRegionsTradeOneJob(t *testing.T) {
	w := twoRegions(t, Config{})
	item := w.job("us-east-1", "job-1", 100)
	w.start("us-east-1", "A1", []string{"eu-west-1"}, item)
	w.stabilize()

	if got := len(w.eventsOf(EventConfirmed)); got != 1 {
		t.Fatalf("confirmed events = %d, want 1\n%s", got, w.dumpTrace())
	}
	alloc := w.eventsOf(EventAllocated)[0]
	// DefaultPricing: cost 900 · 1.05 · (1 + 0.5·u²) with u = 100/200 after the hold.
	wantPrice := 900 * 1.05 * (1 + 0.5*0.25)
	if alloc.Seller != "eu-west-1" || alloc.Node != "euw1-a" || math.Abs(alloc.Price-wantPrice) > 1e-9 || alloc.Epoch != 1 {
		t.Errorf("allocated = %+v, want eu-west-1/euw1-a at %.4g epoch 1", alloc, wantPrice)
	}
	w.checkInvariants("us-east-1", "job-1")
	if st := w.regions["us-east-1"].m.Stats(); st != (Stats{}) {
		t.Errorf("buyer still tracks %+v after the trade", st)
	}
	if st := w.regions["eu-west-1"].m.Stats(); st != (Stats{}) {
		t.Errorf("seller still tracks %+v after the trade", st)
	}
	w.golden("two_regions_trade")
}

// threeSellers builds the competition: scores (equal RTTs) are
// B 200·100/1000 = 20, C 150·100/600 = 25, D 100·100/500 = 20.
func threeSellers(t *testing.T, rule PricingRule) *world {
	cfg := Config{Rule: rule, Price: flatPricing}
	w := newWorld(t)
	w.addRegion("buyer", cfg)
	w.addRegion("seller-b", cfg, testNode("b1", 200, 1000))
	w.addRegion("seller-c", cfg, testNode("c1", 150, 600))
	w.addRegion("seller-d", cfg, testNode("d1", 100, 500))
	for _, s := range []string{"seller-b", "seller-c", "seller-d"} {
		w.rtt.Set("buyer", s, 100*time.Millisecond)
	}
	return w
}

func TestThreeSellersCompete(t *testing.T) {
	for _, tc := range []struct {
		rule PricingRule
		max  float64
		paid float64
	}{
		// First price: the winner's own bid.
		{FirstPrice, 0, 600},
		// Second price: the price at which C's score falls to the
		// runner-up's (D, 20, cheaper than B at the same score):
		// 150·100/p = 20 → p = 750.
		{SecondPrice, 0, 750},
		// ... never above the job's maximum.
		{SecondPrice, 700, 700},
	} {
		t.Run(tc.rule.String(), func(t *testing.T) {
			w := threeSellers(t, tc.rule)
			item := w.job("buyer", "job-1", 100, maxPrice(tc.max))
			w.start("buyer", "A1", []string{"seller-b", "seller-c", "seller-d"}, item)
			w.stabilize()
			conf := w.eventsOf(EventConfirmed)
			if len(conf) != 1 {
				t.Fatalf("confirmed = %d, want 1\n%s", len(conf), w.dumpTrace())
			}
			if conf[0].Seller != "seller-c" || math.Abs(conf[0].Price-tc.paid) > 1e-6 {
				t.Errorf("winner %s paid %.6g, want seller-c paid %.6g", conf[0].Seller, conf[0].Price, tc.paid)
			}
			// The losers' escrows were released at once, not left to expire.
			for _, s := range []string{"seller-b", "seller-d"} {
				if e := w.regions[s].l.liveEscrows(w.now); len(e) != 0 {
					t.Errorf("%s still holds escrows %v", s, e)
				}
			}
			w.checkInvariants("buyer", "job-1")
			if tc.max == 0 {
				w.golden("three_sellers_" + strings.ReplaceAll(tc.rule.String(), "-", "_"))
			}
		})
	}
}

func TestBidAboveMaxPriceNeverWins(t *testing.T) {
	for _, rule := range []PricingRule{FirstPrice, SecondPrice} {
		t.Run(rule.String(), func(t *testing.T) {
			w := threeSellers(t, rule)
			// C (600) has the best score but the job pays at most 550: only D
			// (500) may win, even though B and C score higher or equal.
			item := w.job("buyer", "job-1", 100, maxPrice(550))
			w.start("buyer", "A1", []string{"seller-b", "seller-c", "seller-d"}, item)
			w.stabilize()
			conf := w.eventsOf(EventConfirmed)
			if len(conf) != 1 || conf[0].Seller != "seller-d" || conf[0].Price > 550 {
				t.Fatalf("confirmed = %+v, want seller-d at ≤ 550\n%s", conf, w.dumpTrace())
			}
			w.checkInvariants("buyer", "job-1")
		})
	}
	t.Run("no-seller-under-max", func(t *testing.T) {
		w := threeSellers(t, FirstPrice)
		item := w.job("buyer", "job-1", 100, maxPrice(100))
		w.start("buyer", "A1", []string{"seller-b", "seller-c", "seller-d"}, item)
		w.stabilize()
		if len(w.eventsOf(EventAllocated)) != 0 {
			t.Fatalf("an allocation above the maximum price happened\n%s", w.dumpTrace())
		}
		un := w.eventsOf(EventUnplaced)
		if len(un) != 1 || un[0].Epoch != 1 {
			t.Fatalf("unplaced = %+v, want one at epoch 1", un)
		}
		if got := w.regions["buyer"].l.epoch("job-1"); got != 1 {
			t.Errorf("job epoch = %d, want 1 (nothing was awarded)", got)
		}
	})
}

func TestDeadlineWithMissingSeller(t *testing.T) {
	w := threeSellers(t, FirstPrice)
	// seller-c's ledger is slow: its hold commits after the deadline.
	w.holdProps["seller-c"] = true
	item := w.job("buyer", "job-1", 100)
	w.start("buyer", "A1", []string{"seller-b", "seller-c", "seller-d"}, item)
	w.advance(2 * time.Second) // the deadline
	conf := w.eventsOf(EventConfirmed)
	if len(conf) != 1 || conf[0].Seller == "seller-c" {
		t.Fatalf("confirmed = %+v, want one from an answering seller\n%s", conf, w.dumpTrace())
	}
	// seller-c's hold commits now; its late bid is released at once.
	w.releaseProps("seller-c")
	w.stabilize()
	if e := w.regions["seller-c"].l.liveEscrows(w.now); len(e) != 0 {
		t.Errorf("seller-c still holds %v after its late bid\n%s", e, w.dumpTrace())
	}
	w.checkInvariants("buyer", "job-1")
	w.golden("deadline_missing_seller")
}

func TestUnreachableSellerDoesNotDelayAuction(t *testing.T) {
	w := threeSellers(t, FirstPrice)
	w.partition("buyer", "seller-c")
	item := w.job("buyer", "job-1", 100)
	w.start("buyer", "A1", []string{"seller-b", "seller-c", "seller-d"}, item)
	w.stabilize() // no time passes: the failed call counts as an answer
	if conf := w.eventsOf(EventConfirmed); len(conf) != 1 {
		t.Fatalf("confirmed = %+v, want 1 without waiting for the deadline\n%s", conf, w.dumpTrace())
	}
	if w.now != t0 {
		t.Errorf("clock moved to %v", w.now.Sub(t0))
	}
}

func TestSellerEscrowFailureIsNoBid(t *testing.T) {
	w := twoRegions(t, Config{})
	seller := w.regions["eu-west-1"]
	w.holdProps["eu-west-1"] = true
	item := w.job("us-east-1", "job-1", 150)
	w.start("us-east-1", "A1", []string{"eu-west-1"}, item)
	w.stabilize()
	// Local placement takes the node between the quote and the commit.
	seller.l.addLocalAllocation("local-job", "euw1-a", placement.Resources{ComputePerHour: 100})
	w.releaseProps("eu-west-1")
	w.stabilize()
	if !strings.Contains(w.dumpTrace(), "NoBid A1") {
		t.Errorf("no NoBid in trace:\n%s", w.dumpTrace())
	}
	un := w.eventsOf(EventUnplaced)
	if len(un) != 1 || !strings.Contains(un[0].Reason, "no offers") {
		t.Errorf("unplaced = %+v, want one with no offers", un)
	}
	if e := seller.l.escrowRecords(); len(e) != 0 {
		t.Errorf("escrows left: %v", e)
	}
}

func TestCapacityIsNeverPromisedTwice(t *testing.T) {
	cfg := Config{Price: flatPricing}
	w := newWorld(t)
	w.addRegion("buyer-1", cfg)
	w.addRegion("buyer-2", cfg)
	w.addRegion("seller", cfg, testNode("s1", 200, 500))
	// Both buyers want 150 of the seller's 200 at once; the seller's ledger
	// is slow, so the second call arrives while the first hold is in flight.
	w.holdProps["seller"] = true
	j1 := w.job("buyer-1", "job-1", 150)
	j2 := w.job("buyer-2", "job-2", 150)
	w.start("buyer-1", "A1", []string{"seller"}, j1)
	w.start("buyer-2", "A2", []string{"seller"}, j2)
	w.stabilize()
	w.releaseProps("seller")
	w.stabilize()
	conf := w.eventsOf(EventConfirmed)
	if len(conf) != 1 || conf[0].JobID != "job-1" {
		t.Fatalf("confirmed = %+v, want only job-1\n%s", conf, w.dumpTrace())
	}
	if un := w.eventsOf(EventUnplaced); len(un) != 1 || un[0].JobID != "job-2" {
		t.Fatalf("unplaced = %+v, want job-2", un)
	}
	w.checkInvariants("buyer-1", "job-1")
}

func TestDuplicateCallGetsSameBid(t *testing.T) {
	w := twoRegions(t, Config{})
	item := w.job("us-east-1", "job-1", 100)
	w.start("us-east-1", "A1", []string{"eu-west-1"}, item)
	w.collect()
	cfb := w.queue[0]
	seller := w.regions["eu-west-1"]
	inv, _ := seller.l.Inventory(w.now)
	w.holdProps["eu-west-1"] = true
	for req := uint64(1001); req <= 1002; req++ {
		if err := seller.m.Receive(w.now, Inbound{Request: req, Env: cfb.env, Inventory: inv}); err != nil {
			t.Fatalf("Receive: %v", err)
		}
	}
	rd := seller.m.Ready()
	if len(rd.Proposals) != 1 {
		t.Fatalf("proposals = %d, want 1 hold for a duplicated call", len(rd.Proposals))
	}
	res, _ := seller.l.apply(rd.Proposals[0].Ops)
	seller.m.Committed(w.now, rd.Proposals[0].ID, res, nil)
	rd = seller.m.Ready()
	if len(rd.Replies) != 2 || rd.Replies[0].Env != rd.Replies[1].Env || rd.Replies[0].Env.Kind != KindBid {
		t.Fatalf("replies = %+v, want the same Bid twice", rd.Replies)
	}
	// A third copy after the answer gets it at once.
	if err := seller.m.Receive(w.now, Inbound{Request: 1003, Env: cfb.env, Inventory: inv}); err != nil {
		t.Fatal(err)
	}
	rd = seller.m.Ready()
	if len(rd.Replies) != 1 || rd.Replies[0].Env.Kind != KindBid || len(rd.Proposals) != 0 {
		t.Fatalf("third copy: %+v", rd)
	}
	if n := len(seller.l.escrowRecords()); n != 1 {
		t.Errorf("escrows = %d, want 1", n)
	}
}

func TestBuyerLeaderChangeDuringBidding(t *testing.T) {
	w := twoRegions(t, Config{})
	item := w.job("us-east-1", "job-1", 100)
	w.start("us-east-1", "A1", []string{"eu-west-1"}, item)
	w.collect()
	w.deliver() // the seller gets the call and holds
	w.stepDown("us-east-1")
	w.stabilize()
	w.elect("us-east-1")
	w.stabilize()
	if n := len(w.eventsOf(EventAllocated)); n != 0 {
		t.Fatalf("an award happened without a buyer leader")
	}
	// The orphaned escrow expires by itself.
	w.advance(15 * time.Second)
	if e := w.regions["eu-west-1"].l.escrowRecords(); len(e) != 0 {
		t.Fatalf("escrow outlived its expiry: %+v\n%s", e, w.dumpTrace())
	}
	if rel := w.eventsOf(EventEscrowReleased); len(rel) != 1 || rel[0].Reason != "expired" {
		t.Errorf("released = %+v, want one expiry", rel)
	}
	// The new leader auctions the job again and it lands once.
	w.start("us-east-1", "A2", []string{"eu-west-1"}, item)
	w.stabilize()
	w.checkInvariants("us-east-1", "job-1")
	w.golden("buyer_leader_change_bidding")
}

func TestBuyerLeaderChangeAfterAwardCommit(t *testing.T) {
	w := twoRegions(t, Config{})
	item := w.job("us-east-1", "job-1", 100)
	w.start("us-east-1", "A1", []string{"eu-west-1"}, item)
	w.collect()
	w.deliver()   // call
	w.collect()   // hold committed, bid replied, award committed; Award queued
	w.queue = nil // ... and lost as the buyer leader crashes
	w.stepDown("us-east-1")
	w.elect("us-east-1") // resumes from the ledger: the award is re-sent
	w.stabilize()
	if n := len(w.eventsOf(EventConfirmed)); n != 1 {
		t.Fatalf("confirmed = %d, want 1\n%s", n, w.dumpTrace())
	}
	w.checkInvariants("us-east-1", "job-1")
	w.golden("buyer_leader_change_after_award")
}

func TestSellerLeaderChangeMidAuction(t *testing.T) {
	t.Run("before-hold-commits", func(t *testing.T) {
		w := threeSellers(t, FirstPrice)
		w.holdProps["seller-c"] = true
		item := w.job("buyer", "job-1", 100)
		w.start("buyer", "A1", []string{"seller-b", "seller-c", "seller-d"}, item)
		w.stabilize()
		c := w.regions["seller-c"]
		// The hold commits in the Raft log, but the leader that proposed
		// it steps down before hearing so; the next leader finds it.
		held := c.held
		w.holdProps["seller-c"] = false
		w.stepDown("seller-c")
		for _, p := range held {
			c.l.apply(p.Ops)
		}
		w.elect("seller-c")
		w.stabilize()
		conf := w.eventsOf(EventConfirmed)
		if len(conf) != 1 || conf[0].Seller == "seller-c" {
			t.Fatalf("confirmed = %+v\n%s", conf, w.dumpTrace())
		}
		// The buyer's blind release reached the new leader.
		if e := c.l.escrowRecords(); len(e) != 0 {
			t.Errorf("seller-c escrows = %+v, want released\n%s", e, w.dumpTrace())
		}
		w.checkInvariants("buyer", "job-1")
	})
	t.Run("between-bid-and-award", func(t *testing.T) {
		w := twoRegions(t, Config{})
		item := w.job("us-east-1", "job-1", 100)
		w.start("us-east-1", "A1", []string{"eu-west-1"}, item)
		w.collect()
		w.deliver() // call; the seller holds and bids
		w.collect() // the bid arrives, the award is committed and queued
		w.stepDown("eu-west-1")
		w.elect("eu-west-1") // restores the escrow; the Award goes to it
		w.stabilize()
		if n := len(w.eventsOf(EventConfirmed)); n != 1 {
			t.Fatalf("confirmed = %d, want 1\n%s", n, w.dumpTrace())
		}
		w.checkInvariants("us-east-1", "job-1")
	})
}

func TestSellerLeaderChangeBetweenAwardAndAck(t *testing.T) {
	w := twoRegions(t, Config{})
	item := w.job("us-east-1", "job-1", 100)
	w.start("us-east-1", "A1", []string{"eu-west-1"}, item)
	w.collect()
	w.deliver() // call
	w.collect() // bid; award committed and queued
	seller := w.regions["eu-west-1"]
	w.holdProps["eu-west-1"] = true
	w.deliver() // the Award arrives; the conversion is proposed
	// The conversion commits, but its leader steps down before replying.
	held := seller.held
	w.holdProps["eu-west-1"] = false
	w.stepDown("eu-west-1")
	for _, p := range held {
		seller.l.apply(p.Ops)
	}
	w.elect("eu-west-1")
	w.advance(5 * time.Second)
	if n := len(w.eventsOf(EventConfirmed)); n != 1 {
		t.Fatalf("confirmed = %d, want 1\n%s", n, w.dumpTrace())
	}
	w.checkInvariants("us-east-1", "job-1")
	w.golden("seller_leader_change_award_ack")
}

func TestBatchAuctionSplitsAcrossSellers(t *testing.T) {
	cfg := Config{Price: flatPricing}
	w := newWorld(t)
	w.addRegion("home", cfg)
	w.addRegion("s1", cfg, testNode("a", 200, 400)) // room for two jobs of 100
	w.addRegion("s2", cfg, testNode("b", 300, 900)) // three
	var items []Item
	var ids []string
	for i := range 6 {
		id := "job-" + string(rune('a'+i))
		items = append(items, w.job("home", id, 100))
		ids = append(ids, id)
	}
	w.start("home", "A1", []string{"s1", "s2"}, items...)
	w.stabilize()
	conf := w.eventsOf(EventConfirmed)
	perSeller := map[string]int{}
	for _, e := range conf {
		perSeller[e.Seller]++
	}
	if len(conf) != 5 || perSeller["s1"] != 2 || perSeller["s2"] != 3 {
		t.Fatalf("confirmed per seller = %v, want s1:2 s2:3\n%s", perSeller, w.dumpTrace())
	}
	if un := w.eventsOf(EventUnplaced); len(un) != 1 {
		t.Errorf("unplaced = %+v, want the sixth job", un)
	}
	// Both sellers bid on the first items; s2 could not bid on d and e
	// until the buyer released its losing escrows on a and b: a second
	// round, whose call carries the release, places them. One message per
	// seller per step, whatever the number of items.
	trace := w.dumpTrace()
	if n, m := strings.Count(trace, "Award A1 "), strings.Count(trace, "Award A1#2 "); n != 2 || m != 1 {
		t.Errorf("%d round-1 and %d round-2 Award messages, want 2 and 1", n, m)
	}
	placed := []string{}
	for _, e := range conf {
		placed = append(placed, e.JobID)
	}
	w.checkInvariants("home", placed...)
	if e := w.regions["s2"].l.liveEscrows(w.now); len(e) != 0 {
		t.Errorf("s2 still holds %v", e)
	}
	_ = ids
	w.golden("batch_two_rounds")
}

func TestBuyerLedgerUnavailableAtAward(t *testing.T) {
	w := twoRegions(t, Config{})
	buyer := w.regions["us-east-1"]
	item := w.job("us-east-1", "job-1", 100)
	w.start("us-east-1", "A1", []string{"eu-west-1"}, item)
	w.collect()
	w.deliver() // call
	buyer.l.setUnavailable(errNoQuorum)
	w.collect() // bid arrives; the award's commit fails, and so does the abort
	w.advance(3 * time.Second)
	if n := len(w.eventsOf(EventAllocated)); n != 0 {
		t.Fatalf("allocated without a committed award")
	}
	buyer.l.setUnavailable(nil)
	w.advance(5 * time.Second)
	un := w.eventsOf(EventUnplaced)
	if len(un) != 1 || un[0].JobID != "job-1" {
		t.Fatalf("unplaced = %+v, want job-1 once the ledger answers\n%s", un, w.dumpTrace())
	}
	if e := w.regions["eu-west-1"].l.escrowRecords(); len(e) != 0 {
		t.Errorf("escrow left at the seller: %+v", e)
	}
	if got := buyer.l.epoch("job-1"); got != 1 {
		t.Errorf("job epoch = %d, want 1 (the award never committed)", got)
	}
}

func TestPartitionBetweenAwardAndAck(t *testing.T) {
	w := twoRegions(t, Config{})
	item := w.job("us-east-1", "job-1", 100)
	w.start("us-east-1", "A1", []string{"eu-west-1"}, item)
	w.collect()
	w.deliver() // call
	w.collect() // bid, award committed, Award queued
	w.loseReply[[2]string{"eu-west-1", "us-east-1"}] = true
	w.deliver() // Award arrives; the seller allocates; the Ack is lost
	w.collect()
	w.partition("us-east-1", "eu-west-1")
	w.advance(20 * time.Second) // status queries fail while cut
	if n := len(w.eventsOf(EventConfirmed)); n != 0 {
		t.Fatalf("confirmed during the partition")
	}
	w.heal()
	w.advance(30 * time.Second)
	if n := len(w.eventsOf(EventConfirmed)); n != 1 {
		t.Fatalf("confirmed = %d after heal, want 1\n%s", n, w.dumpTrace())
	}
	if n := len(w.eventsOf(EventAbandoned)); n != 0 {
		t.Errorf("abandoned = %d, want 0 (healed before the in-doubt timeout)", n)
	}
	w.checkInvariants("us-east-1", "job-1")
	w.golden("partition_award_ack")
}

func TestInDoubtTimeoutReplacesUnderNewEpochAndHealCancelsStale(t *testing.T) {
	cfg := Config{Price: flatPricing, InDoubtTimeout: 30 * time.Second}
	w := newWorld(t)
	w.addRegion("home", cfg)
	w.addRegion("far", cfg, testNode("f1", 200, 500))
	w.addRegion("near", cfg, testNode("n1", 200, 800))
	w.rtt.Set("home", "far", 100*time.Millisecond)
	w.rtt.Set("home", "near", 100*time.Millisecond)
	item := w.job("home", "job-1", 100)
	w.start("home", "A1", []string{"far", "near"}, item)
	w.collect()
	w.deliver() // calls
	w.collect() // bids; far wins; the award is committed and queued
	w.loseReply[[2]string{"far", "home"}] = true
	w.deliver() // far allocates epoch 1; its Ack is lost
	w.collect()
	w.partition("home", "far")
	w.advance(31 * time.Second)

	ab := w.eventsOf(EventAbandoned)
	if len(ab) != 1 || ab[0].Epoch != 2 {
		t.Fatalf("abandoned = %+v, want one with new epoch 2\n%s", ab, w.dumpTrace())
	}
	if got := w.regions["home"].l.epoch("job-1"); got != 2 {
		t.Fatalf("job epoch = %d, want 2", got)
	}
	// node/ re-places the job under epoch 2: here, a new auction.
	item.Epoch = 2
	w.start("home", "A2", []string{"near"}, item)
	w.stabilize()
	if conf := w.eventsOf(EventConfirmed); len(conf) != 1 || conf[0].Seller != "near" || conf[0].Epoch != 2 {
		t.Fatalf("confirmed = %+v, want near at epoch 2", conf)
	}
	// During the partition the job has two allocations (far's stale one,
	// near's live one); the heal cancels far's.
	w.heal()
	w.advance(time.Minute)
	if n := len(w.eventsOf(EventSettled)); n != 1 {
		t.Fatalf("settled = %d, want 1\n%s", n, w.dumpTrace())
	}
	if n := len(w.eventsOf(EventAllocationCancelled)); n != 1 {
		t.Errorf("cancelled at far = %d, want 1", n)
	}
	w.checkInvariants("home", "job-1")
	if st := w.regions["home"].m.Stats(); st.Trades != 0 {
		t.Errorf("buyer still tracks %d trades", st.Trades)
	}
	w.golden("in_doubt_replace_heal")
}

func TestLateAckForAbandonedTradeIsCancelled(t *testing.T) {
	cfg := Config{Price: flatPricing, InDoubtTimeout: 10 * time.Second}
	w := newWorld(t)
	w.addRegion("home", cfg)
	w.addRegion("far", cfg, testNode("f1", 200, 500))
	item := w.job("home", "job-1", 100)
	w.start("home", "A1", []string{"far"}, item)
	w.collect()
	w.deliver()
	w.collect() // award committed and queued
	// The seller's ledger stalls: the conversion commits only after the
	// buyer abandoned the trade.
	w.holdProps["far"] = true
	w.deliver()
	w.advance(11 * time.Second)
	if n := len(w.eventsOf(EventAbandoned)); n != 1 {
		t.Fatalf("abandoned = %d, want 1\n%s", n, w.dumpTrace())
	}
	w.releaseProps("far") // the late conversion; its Ack may arrive now
	w.advance(time.Minute)
	if n := len(w.eventsOf(EventSettled)); n != 1 {
		t.Fatalf("settled = %d, want 1\n%s", n, w.dumpTrace())
	}
	if live := w.regions["far"].l.liveAllocations("home", "job-1"); len(live) != 0 {
		t.Errorf("stale allocations left: %v", live)
	}
}

func TestEscrowExpiresWithoutAward(t *testing.T) {
	w := twoRegions(t, Config{EscrowTTL: 5 * time.Second})
	item := w.job("us-east-1", "job-1", 100)
	w.start("us-east-1", "A1", []string{"eu-west-1"}, item)
	w.collect()
	w.deliver()
	w.partition("us-east-1", "eu-west-1") // the bid is lost, and so is any release
	w.advance(7*time.Second - time.Millisecond)
	if e := w.regions["eu-west-1"].l.liveEscrows(w.now); len(e) != 1 {
		t.Fatalf("live escrows before expiry = %v, want 1", e)
	}
	w.advance(time.Millisecond) // deadline 2 s + TTL 5 s
	if e := w.regions["eu-west-1"].l.escrowRecords(); len(e) != 0 {
		t.Fatalf("escrow outlived its expiry: %+v", e)
	}
}

func TestRefusedMessages(t *testing.T) {
	w := twoRegions(t, Config{})
	seller := w.regions["eu-west-1"]
	item := w.job("us-east-1", "job-1", 100)
	base := func() *Envelope {
		return &Envelope{Version: Version, Kind: KindCallForBids, Auction: "A1", From: "us-east-1", To: "eu-west-1",
			Term: 5, Sent: w.now, CallForBids: &CallForBids{Items: []Item{item}, Deadline: w.now.Add(time.Second)}}
	}
	inv, _ := seller.l.Inventory(w.now)
	if err := seller.m.Receive(w.now, Inbound{Request: 1, Env: base(), Inventory: inv}); err != nil {
		t.Fatalf("valid call refused: %v", err)
	}
	for _, tc := range []struct {
		name string
		mut  func(*Envelope)
		want error
	}{
		{"old term replayed", func(e *Envelope) { e.Term = 4; e.Auction = "A0" }, ErrRefused},
		{"another region's message", func(e *Envelope) { e.To = "ap-south-1" }, ErrRefused},
		{"stale sent time", func(e *Envelope) { e.Sent = w.now.Add(-time.Hour) }, ErrRefused},
		{"far future sent time", func(e *Envelope) { e.Sent = w.now.Add(time.Hour) }, ErrRefused},
		{"reply kind as a request", func(e *Envelope) {
			e.Kind, e.CallForBids, e.Bid = KindBid, nil, &Bid{Items: []BidItem{{Item: "x", Node: "n", Compute: 1, Price: 1, Expiry: w.now}}}
		}, ErrRefused},
		{"malformed body", func(e *Envelope) { e.CallForBids.Items = nil }, ErrMalformed},
		{"unknown version", func(e *Envelope) { e.Version = 9 }, ErrVersion},
		{"ask over the stream", func(e *Envelope) {
			e.Kind, e.CallForBids, e.Ask = KindAsk, nil, &Ask{MinPrice: 1, Expires: w.now}
		}, ErrRefused},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := base()
			tc.mut(env)
			err := seller.m.Receive(w.now, Inbound{Request: 99, Env: env, Inventory: inv})
			if !errors.Is(err, tc.want) {
				t.Errorf("Receive = %v, want %v", err, tc.want)
			}
		})
	}
	seller.m.StepDown()
	if err := seller.m.Receive(w.now, Inbound{Request: 100, Env: base()}); !errors.Is(err, ErrNotLeader) {
		t.Errorf("Receive as follower = %v, want ErrNotLeader", err)
	}
}

func TestReplyChecks(t *testing.T) {
	w := twoRegions(t, Config{})
	w.addRegion("ap-south-1", Config{}, testNode("aps1-a", 200, 700))
	buyer := w.regions["us-east-1"]
	item := w.job("us-east-1", "job-1", 100)
	w.start("us-east-1", "A1", []string{"eu-west-1"}, item)
	rd := buyer.m.Ready()
	id := rd.Messages[0].ID
	// A reply from another region than the one asked is refused, and the
	// request counts as failed.
	forged := &Envelope{Version: Version, Kind: KindNoBid, Auction: "A1", From: "ap-south-1", To: "us-east-1",
		Term: 1, Sent: w.now, NoBid: &NoBid{Reason: "x"}}
	if err := buyer.m.HandleReply(w.now, id, forged); !errors.Is(err, ErrRefused) {
		t.Fatalf("forged reply = %v, want ErrRefused", err)
	}
	// A second reply to the same request is refused.
	ok := &Envelope{Version: Version, Kind: KindNoBid, Auction: "A1", From: "eu-west-1", To: "us-east-1",
		Term: 1, Sent: w.now, NoBid: &NoBid{Reason: "x"}}
	if err := buyer.m.HandleReply(w.now, id, ok); !errors.Is(err, ErrRefused) {
		t.Fatalf("reply to a closed request = %v, want ErrRefused", err)
	}
	w.stabilize()
	if un := w.eventsOf(EventUnplaced); len(un) != 1 {
		t.Errorf("unplaced = %+v, want 1 (the only seller failed)", un)
	}
}

// A bid must name the escrow the award and a release will name (the trade
// reference): an offer whose escrow has another ID is not taken, and the
// item is released at the seller at once.
func TestBidNamingAnotherEscrowIsNotTaken(t *testing.T) {
	bid := func(w *world, escrow string) *Envelope {
		return &Envelope{Version: Version, Kind: KindBid, Auction: "A1", From: "eu-west-1", To: "us-east-1",
			Term: 1, Sent: w.now, Bid: &Bid{Items: []BidItem{{Item: "job-1", Node: "euw1-a", Compute: 200, Price: 900,
				Expiry: w.now.Add(time.Minute), Escrow: escrow}}}}
	}
	awarded := func(w *world) bool {
		return slices.ContainsFunc(w.trace, func(l string) bool { return strings.Contains(l, "us-east-1 commit RecordAward(job-1)") })
	}
	for _, tc := range []struct {
		escrow string
		taken  bool
	}{
		{"us-east-1/A1/job-1", true},
		{"eu-west-1/A1/job-1", false},
		{"us-east-1/A1/job-2", false},
	} {
		t.Run(tc.escrow, func(t *testing.T) {
			w := twoRegions(t, Config{})
			buyer := w.regions["us-east-1"]
			w.start("us-east-1", "A1", []string{"eu-west-1"}, w.job("us-east-1", "job-1", 100))
			id := buyer.m.Ready().Messages[0].ID // the call is never delivered
			if err := buyer.m.HandleReply(w.now, id, bid(w, tc.escrow)); err != nil {
				t.Fatalf("HandleReply: %v", err)
			}
			w.collect()
			if got := awarded(w); got != tc.taken {
				t.Fatalf("awarded = %v, want %v:\n%s", got, tc.taken, w.dumpTrace())
			}
			if tc.taken {
				return
			}
			var released []string
			for _, f := range w.queue {
				if f.env.Kind == KindRelease && f.to == "eu-west-1" {
					released = append(released, f.env.Release.Items...)
				}
			}
			if !slices.Equal(released, []string{"job-1"}) {
				t.Errorf("released %v at the seller, want [job-1]", released)
			}
			if un := w.eventsOf(EventUnplaced); len(un) != 1 {
				t.Errorf("unplaced = %+v, want 1 (the only offer named another escrow)", un)
			}
		})
	}
}

func TestStartAuctionValidation(t *testing.T) {
	w := twoRegions(t, Config{})
	m := w.regions["us-east-1"].m
	item := w.job("us-east-1", "job-1", 100)
	ok := AuctionSpec{ID: "A", Items: []Item{item}, Sellers: []string{"eu-west-1"}, Deadline: w.now.Add(time.Second)}
	for _, tc := range []struct {
		name string
		mut  func(*AuctionSpec)
	}{
		{"no id", func(s *AuctionSpec) { s.ID = "" }},
		{"no items", func(s *AuctionSpec) { s.Items = nil }},
		{"duplicate items", func(s *AuctionSpec) { s.Items = []Item{item, item} }},
		{"invalid item", func(s *AuctionSpec) { bad := item; bad.Job.Demand.ComputePerHour = math.NaN(); s.Items = []Item{bad} }},
		{"no sellers", func(s *AuctionSpec) { s.Sellers = nil }},
		{"self as seller", func(s *AuctionSpec) { s.Sellers = []string{"us-east-1"} }},
		{"deadline passed", func(s *AuctionSpec) { s.Deadline = w.now }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := ok
			tc.mut(&s)
			if err := m.StartAuction(w.now, s); err == nil {
				t.Errorf("StartAuction accepted %+v", s)
			}
		})
	}
	if err := m.StartAuction(w.now, ok); err != nil {
		t.Fatal(err)
	}
	if err := m.StartAuction(w.now, ok); !errors.Is(err, ErrDuplicate) {
		t.Errorf("second StartAuction = %v, want ErrDuplicate", err)
	}
}

func TestCapacityLeaseThenPlaceWithoutAuction(t *testing.T) {
	cfg := Config{Price: flatPricing}
	w := newWorld(t)
	w.addRegion("home", cfg)
	w.addRegion("seller", cfg, testNode("s1", 400, 600))
	w.rtt.Set("home", "seller", 60*time.Millisecond)
	pol := LeasePolicy{BuyAbove: 0.8, Amount: placement.Resources{ComputePerHour: 200, StorageGB: 100, BandwidthGBps: 2}, Duration: time.Hour}
	if err := pol.Validate(); err != nil {
		t.Fatal(err)
	}
	busy := []placement.Node{{ID: "h1", Total: placement.Resources{ComputePerHour: 100}, Free: placement.Resources{ComputePerHour: 10}, PricePerHour: 1}}
	lease, ok := pol.Want("home", "lease-1", busy, nil, w.now)
	if !ok {
		t.Fatal("policy does not want a lease at 90% utilization")
	}
	w.start("home", "L1", []string{"seller"}, lease)
	w.stabilize()
	if n := len(w.eventsOf(EventLeaseAcquired)); n != 1 {
		t.Fatalf("lease acquired = %d\n%s", n, w.dumpTrace())
	}
	home := w.regions["home"]
	if _, again := pol.Want("home", "lease-2", busy, home.m.Leases(), w.now); again {
		t.Errorf("policy wants another lease while 200 are unused")
	}
	// Two jobs go into the lease without an auction; a third does not fit.
	for i, id := range []string{"job-1", "job-2"} {
		it := w.job("home", id, 100)
		if _, err := home.m.PlaceInLease(w.now, "D"+id, it, w.rtt); err != nil {
			t.Fatalf("PlaceInLease(%s): %v", id, err)
		}
		w.stabilize()
		if n := len(w.eventsOf(EventConfirmed)); n != i+2 {
			t.Fatalf("confirmed = %d after %s\n%s", n, id, w.dumpTrace())
		}
	}
	if strings.Count(w.dumpTrace(), "CallForBids") != 1 {
		t.Errorf("draws ran auctions:\n%s", w.dumpTrace())
	}
	it3 := w.job("home", "job-3", 50)
	if _, err := home.m.PlaceInLease(w.now, "Djob-3", it3, w.rtt); !errors.Is(err, ErrNoLease) {
		t.Errorf("PlaceInLease over the lease = %v, want ErrNoLease", err)
	}
	w.checkInvariants("home", "job-1", "job-2")
	// The seller's ledger holds the lease's 200 on s1, once: the draws run
	// inside it.
	inv, _ := w.regions["seller"].l.Inventory(w.now)
	if inv[0].Free.ComputePerHour != 200 {
		t.Errorf("seller free = %v, want 200", inv[0].Free.ComputePerHour)
	}
	w.golden("lease_and_draws")
}

func TestNextTimeoutIsHonoured(t *testing.T) {
	// A Market must never ask to be woken at a time at which Tick would do
	// nothing: otherwise its driver spins.
	w := twoRegions(t, Config{})
	item := w.job("us-east-1", "job-1", 100)
	w.start("us-east-1", "A1", []string{"eu-west-1"}, item)
	w.collect()
	w.deliver()
	w.partition("us-east-1", "eu-west-1")
	for i := 0; i < 200; i++ {
		w.stabilize()
		next, ok := earliest(w)
		if !ok {
			return
		}
		if next.Before(w.now) {
			t.Fatalf("NextTimeout %v is in the past (now %v)", next.Sub(t0), w.now.Sub(t0))
		}
		w.now = next
		for _, n := range w.names {
			w.regions[n].m.Tick(w.now)
		}
		w.stabilize()
		if again, ok := earliest(w); ok && !again.After(w.now) {
			t.Fatalf("after Tick at %v, NextTimeout is still %v\n%s", w.now.Sub(t0), again.Sub(t0), w.dumpTrace())
		}
	}
	t.Fatalf("timers never quiet down\n%s", w.dumpTrace())
}

func earliest(w *world) (time.Time, bool) {
	var t time.Time
	ok := false
	for _, n := range w.names {
		if c, has := w.regions[n].m.NextTimeout(); has && (!ok || c.Before(t)) {
			t, ok = c, true
		}
	}
	return t, ok
}

// TestLeasesFitAgreesWithPlaceInLease checks LeasesFit against the draws
// PlaceInLease then makes: each job counted against the room the ones
// before it took, an SLO the lease's region misses and a job past the
// lease's end excluded, and nothing changed by asking.
func TestLeasesFitAgreesWithPlaceInLease(t *testing.T) {
	cfg := Config{Price: flatPricing}
	w := newWorld(t)
	w.addRegion("home", cfg)
	w.addRegion("seller", cfg, testNode("s1", 400, 600))
	w.rtt.Set("home", "seller", 60*time.Millisecond)
	lease := Item{ID: "lease-1", Kind: ItemLease, Job: placement.Job{ID: "lease-1", OriginRegion: "home",
		Demand: placement.Resources{ComputePerHour: 200, StorageGB: 100, BandwidthGBps: 2}, Duration: time.Hour}}
	home := w.regions["home"]
	if got := home.m.LeasesFit(w.now, []Item{w.job("home", "job-0", 100)}, w.rtt); got[0] {
		t.Fatal("LeasesFit = true with no lease held")
	}
	w.start("home", "L1", []string{"seller"}, lease)
	w.stabilize()
	if n := len(w.eventsOf(EventLeaseAcquired)); n != 1 {
		t.Fatalf("lease acquired = %d\n%s", n, w.dumpTrace())
	}
	near := w.job("home", "job-1", 120)
	strict := w.job("home", "job-2", 50)
	strict.Job.LatencySLO = 50 * time.Millisecond // the seller is 60 ms away
	second := w.job("home", "job-3", 80)
	over := w.job("home", "job-4", 10) // 120 + 80 + 10 > 200
	long := w.job("home", "job-5", 10)
	long.Job.Duration = 2 * time.Hour // past the lease's end
	items := []Item{near, strict, second, over, long}
	got := home.m.LeasesFit(w.now, items, w.rtt)
	want := []bool{true, false, true, false, false}
	if !slices.Equal(got, want) {
		t.Fatalf("LeasesFit = %v, want %v", got, want)
	}
	if again := home.m.LeasesFit(w.now, items, w.rtt); !slices.Equal(again, want) {
		t.Fatalf("asking twice gave %v, then %v: LeasesFit changed something", got, again)
	}
	for i, it := range items {
		_, err := home.m.PlaceInLease(w.now, "D"+it.ID, it, w.rtt)
		if (err == nil) != want[i] {
			t.Errorf("PlaceInLease(%s) = %v; LeasesFit said %v", it.ID, err, want[i])
		}
	}
}

// TestSellerKeepsLeaseRoom checks Config.LeaseRoom: a lease item beyond the
// room the seller's own forecast leaves is declined with the reason, while
// a job item in the same call is quoted.
func TestSellerKeepsLeaseRoom(t *testing.T) {
	room := 150.0
	cfg := Config{Price: flatPricing}
	w := newWorld(t)
	w.addRegion("home", cfg)
	sellerCfg := cfg
	sellerCfg.LeaseRoom = func(time.Time) float64 { return room }
	w.addRegion("seller", sellerCfg, testNode("s1", 400, 600))
	w.rtt.Set("home", "seller", 60*time.Millisecond)
	lease := Item{ID: "lease-1", Kind: ItemLease, Job: placement.Job{ID: "lease-1", OriginRegion: "home",
		Demand: placement.Resources{ComputePerHour: 200, StorageGB: 100, BandwidthGBps: 2}, Duration: time.Hour}}
	job := w.job("home", "job-1", 100)
	seller := w.regions["seller"].m
	items, declines := seller.leaseGuard(w.now, []Item{lease, job})
	if len(items) != 1 || items[0].ID != "job-1" || len(declines) != 1 || declines[0].Item != "lease-1" ||
		!strings.Contains(declines[0].Reason, "its own forecast demand") {
		t.Fatalf("leaseGuard = %v, %v; want job-1 kept and lease-1 declined for the forecast", items, declines)
	}
	// Through an auction: the lease is not sold; with room, it is.
	w.start("home", "L1", []string{"seller"}, lease)
	w.stabilize()
	if n := len(w.eventsOf(EventLeaseAcquired)); n != 0 {
		t.Fatalf("lease acquired beyond the seller's lease room\n%s", w.dumpTrace())
	}
	room = 250
	lease2 := lease
	lease2.ID, lease2.Job.ID = "lease-2", "lease-2"
	w.start("home", "L2", []string{"seller"}, lease2)
	w.stabilize()
	if n := len(w.eventsOf(EventLeaseAcquired)); n != 1 {
		t.Fatalf("lease acquired = %d with room for it\n%s", n, w.dumpTrace())
	}
}
