package market

import (
	"context"
	"testing"
	"testing/synctest"
	"time"

	"github.com/meridian-mesh/meridian/consensus"
	"github.com/meridian-mesh/meridian/placement/auction"
)

// pollFast polls cond every millisecond of virtual time, to catch a
// protocol step (an award committed, an allocation made) before the next
// message arrives.
func pollFast(within time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(time.Millisecond)
	}
	return true
}

// tradeUntilPlaced offers a job from the current leader of region until it
// is traded and acknowledged (a failed or abandoned trade leaves it pending
// under a new epoch, and the agent would offer it again).
func (w *world) tradeUntilPlaced(region, jobID string, within time.Duration) bool {
	return waitFor(within, func() bool {
		l := w.leader(region)
		if l == nil {
			return false
		}
		j, _ := l.srv.Ledger().Job(jobID)
		if j.State == consensus.JobPending {
			_ = l.m.Trade(context.Background(), []consensus.Job{j})
			return false
		}
		tr, ok := l.srv.Ledger().Trade(remoteKey(j))
		return ok && tr.State == consensus.TradeAcked
	})
}

// awarded reports whether the buyer's ledger holds an award for the job.
func awarded(s *server, jobID string) bool {
	j, _ := s.srv.Ledger().Job(jobID)
	return j.State == consensus.JobTraded
}

// TestBuyerLeaderChangeAfterAward crashes the buyer's leader right after it
// committed the award: the new leader resends the award from the ledger,
// the seller's conversion is idempotent, and the job ends with one live
// allocation.
func TestBuyerLeaderChangeAfterAward(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := newWorld(t, twoRegions, nil)
		defer w.close()
		w.addRegion("home", 3, nodeSpec{compute: 10, price: 5})
		w.addRegion("far", 1, nodeSpec{compute: 200, price: 8})
		w.ready()
		old := w.leader("home")
		if err := old.m.Trade(context.Background(), w.submit("home", demandJob("job-1", 100))); err != nil {
			t.Fatal(err)
		}
		if !pollFast(10*time.Second, func() bool { return awarded(old, "job-1") }) {
			t.Fatal("no award")
		}
		w.net.Crash(old.name)
		if !waitFor(time.Minute, func() bool { l := w.leader("home"); return l != nil && l != old }) {
			t.Fatal("no new buyer leader")
		}
		if !w.tradeUntilPlaced("home", "job-1", time.Minute) {
			t.Fatalf("job not placed after the leader change: %+v", w.job("home", "job-1"))
		}
		w.net.Restart(old.name)
		w.checkSettled("home", "job-1")
		if !w.quietEscrows(time.Minute) {
			t.Fatal("escrows left")
		}
		// The award recorded by the old leader is the one that stands.
		if j := w.job("home", "job-1"); j.Attempts != 1 {
			t.Errorf("job = %+v; want the first award confirmed", j)
		}
		w.checkLedgers()
	})
}

// TestBuyerLeaderChangeWhileBidding crashes the buyer's leader while the
// auction is open: the seller's escrow expires by itself, the new leader
// trades the job again, and the job ends with one live allocation.
func TestBuyerLeaderChangeWhileBidding(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := newWorld(t, twoRegions, nil)
		defer w.close()
		w.addRegion("home", 3, nodeSpec{compute: 10, price: 5})
		w.addRegion("far", 1, nodeSpec{compute: 200, price: 8})
		w.ready()
		old := w.leader("home")
		seller := w.leader("far")
		if err := old.m.Trade(context.Background(), w.submit("home", demandJob("job-1", 100))); err != nil {
			t.Fatal(err)
		}
		// The seller escrowed its bid; the buyer dies before deciding.
		if !pollFast(10*time.Second, func() bool { return len(seller.srv.Ledger().Escrows()) > 0 }) {
			t.Fatal("no escrow at the seller")
		}
		w.net.Crash(old.name)
		if !waitFor(time.Minute, func() bool { l := w.leader("home"); return l != nil && l != old }) {
			t.Fatal("no new buyer leader")
		}
		if !w.tradeUntilPlaced("home", "job-1", 2*time.Minute) {
			t.Fatalf("job not placed after the leader change: %+v", w.job("home", "job-1"))
		}
		if !w.quietEscrows(time.Minute) {
			t.Fatalf("the dead leader's escrow outlived its expiry: %+v", seller.srv.Ledger().Escrows())
		}
		w.net.Restart(old.name)
		w.checkSettled("home", "job-1")
	})
}

// TestSellerLeaderChangeBeforeAward crashes the seller's leader after it
// escrowed its bid: the award cannot be delivered, the buyer queries the
// seller's new leader, which knows the escrow from its ledger, and the award
// goes through.
func TestSellerLeaderChangeBeforeAward(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := newWorld(t, twoRegions, func(region string, c *Config) {
			c.Protocol.EscrowTTL = 30 * time.Second
			c.Protocol.InDoubtTimeout = 2 * time.Minute
		})
		defer w.close()
		w.addRegion("home", 1, nodeSpec{compute: 10, price: 5})
		w.addRegion("far", 3, nodeSpec{compute: 200, price: 8})
		w.ready()
		buyer := w.leader("home")
		old := w.leader("far")
		if err := buyer.m.Trade(context.Background(), w.submit("home", demandJob("job-1", 100))); err != nil {
			t.Fatal(err)
		}
		if !pollFast(10*time.Second, func() bool { return len(old.srv.Ledger().Escrows()) > 0 }) {
			t.Fatal("no escrow at the seller")
		}
		w.net.Crash(old.name)
		if !waitFor(time.Minute, func() bool { l := w.leader("far"); return l != nil && l != old }) {
			t.Fatal("no new seller leader")
		}
		if !w.tradeUntilPlaced("home", "job-1", 2*time.Minute) {
			t.Fatalf("job not placed after the seller's leader change: %+v", w.job("home", "job-1"))
		}
		w.net.Restart(old.name)
		w.checkSettled("home", "job-1")
		if !w.quietEscrows(time.Minute) {
			t.Fatal("escrows left")
		}
		if len(buyer.eventsOf(auction.EventConfirmed)) == 0 {
			t.Error("no confirmed trade event")
		}
		// The award made before the crash went through the new leader:
		// its escrow survived in the seller's ledger.
		if j := w.job("home", "job-1"); j.Attempts != 1 || len(buyer.eventsOf(auction.EventFailed)) != 0 {
			t.Errorf("job = %+v, failed trades %d; want the first award confirmed", j, len(buyer.eventsOf(auction.EventFailed)))
		}
	})
}

// TestPartitionBetweenAwardAndAck cuts the seller off right after it
// allocated the job, before its acknowledgment arrives. The buyer's award
// stays in doubt, is abandoned, and the job is placed again (under a new
// epoch) in another region. When the partition heals, the buyer reconciles:
// the seller's stale allocation is cancelled. No job runs twice, no escrow
// is leaked, and the job has exactly the live allocation its home ledger
// names.
func TestPartitionBetweenAwardAndAck(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := newWorld(t, "home,home,2\nfar,far,2\nalt,alt,2\nhome,far,80\nhome,alt,150\nfar,alt,100\n", func(region string, c *Config) {
			c.Protocol.InDoubtTimeout = 10 * time.Second
		})
		defer w.close()
		w.addRegion("home", 1, nodeSpec{compute: 10, price: 5})
		w.addRegion("far", 1, nodeSpec{compute: 200, price: 8}) // the better offer
		w.addRegion("alt", 1, nodeSpec{compute: 200, price: 20})
		w.ready()
		buyer, far := w.leader("home"), w.leader("far")
		if err := buyer.m.Trade(context.Background(), w.submit("home", demandJob("job-1", 100))); err != nil {
			t.Fatal(err)
		}
		if !pollFast(10*time.Second, func() bool { _, ok := far.srv.Ledger().JobAllocation("home", "job-1"); return ok }) {
			t.Fatal("far never allocated the job")
		}
		w.net.Partition([]string{"far"})
		first := w.job("home", "job-1")
		if first.State != consensus.JobTraded || first.Remote.Region != "far" {
			t.Fatalf("job = %+v; want awarded to far", first)
		}
		// In doubt, abandoned, placed again elsewhere.
		if !w.tradeUntilPlaced("home", "job-1", 2*time.Minute) {
			t.Fatalf("job not placed again: %+v", w.job("home", "job-1"))
		}
		again := w.job("home", "job-1")
		if again.Remote.Region != "alt" || again.Epoch <= first.Epoch {
			t.Fatalf("job = %+v; want it placed in alt under a newer epoch than %d", again, first.Epoch)
		}
		if tr, _ := buyer.srv.Ledger().Trade(first.Remote.AuctionID, first.Remote.ItemID); tr.State != consensus.TradeAbandoned {
			t.Fatalf("the first trade is %s; want abandoned until the seller is reached", tr.State)
		}
		// Both sides hold a live allocation while the partition lasts;
		// only alt's is the job's current one.
		if n := len(w.liveAllocations("home", "job-1")); n != 2 {
			t.Logf("%d live allocations during the partition", n)
		}
		w.net.Heal()
		if !waitFor(3*time.Minute, func() bool {
			tr, _ := buyer.srv.Ledger().Trade(first.Remote.AuctionID, first.Remote.ItemID)
			_, stale := far.srv.Ledger().JobAllocation("home", "job-1")
			return tr.State == consensus.TradeSettled && !stale
		}) {
			tr, _ := buyer.srv.Ledger().Trade(first.Remote.AuctionID, first.Remote.ItemID)
			a, _ := far.srv.Ledger().JobAllocation("home", "job-1")
			t.Fatalf("not reconciled after the heal: first trade %s, far's allocation %+v", tr.State, a)
		}
		stale, _ := far.srv.Ledger().ItemAllocation(first.Remote.AuctionID, first.Remote.ItemID)
		if stale.Live() || stale.StopReason != consensus.StopCancelled {
			t.Fatalf("far's allocation = %+v; want cancelled", stale)
		}
		w.checkSettled("home", "job-1")
		if !w.quietEscrows(time.Minute) {
			t.Fatal("escrows left")
		}
		if len(buyer.eventsOf(auction.EventAbandoned)) != 1 || len(buyer.eventsOf(auction.EventSettled)) != 1 {
			t.Errorf("abandoned %d, settled %d; want 1 each", len(buyer.eventsOf(auction.EventAbandoned)), len(buyer.eventsOf(auction.EventSettled)))
		}
	})
}
