package market

import (
	"context"
	"testing"
	"testing/synctest"
	"time"

	"github.com/meridian-mesh/meridian/consensus"
	"github.com/meridian-mesh/meridian/placement"
	"github.com/meridian-mesh/meridian/placement/auction"
)

// TestLeaseThenDraw: a busy region buys a capacity lease with the threshold
// trigger, then places a job into it without an auction; the seller runs
// the job inside the lease, counting the lease's capacity once.
func TestLeaseThenDraw(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := newWorld(t, twoRegions, func(region string, c *Config) {
			c.Lease = &auction.LeasePolicy{BuyAbove: 0.9, Duration: time.Hour,
				Amount: placement.Resources{ComputePerHour: 100, StorageGB: 100, BandwidthGBps: 1}}
			c.LeaseInterval = time.Hour // the test pulls the trigger
		})
		defer w.close()
		w.addRegion("home", 1, nodeSpec{compute: 100, price: 5})
		w.addRegion("far", 1, nodeSpec{compute: 300, price: 8})
		w.ready()
		buyer, seller := w.leader("home"), w.leader("far")
		ctx := context.Background()

		// Idle: no lease wanted.
		if id, err := buyer.m.BuyLeaseIfNeeded(ctx); err != nil || id != "" {
			t.Fatalf("idle region bought lease %q (%v)", id, err)
		}
		// 95% busy with a local job: the trigger buys one.
		w.submit("home", demandJob("local", 95))
		if r, err := buyer.srv.Propose(ctx, consensus.PlaceJob{JobID: "local", NodeID: "home-0"}); err != nil || r[0].Err != nil {
			t.Fatal(err, r)
		}
		id, err := buyer.m.BuyLeaseIfNeeded(ctx)
		if err != nil || id == "" {
			t.Fatalf("BuyLeaseIfNeeded = %q, %v; want an auction", id, err)
		}
		var held []auction.LeaseRecord
		if !waitFor(30*time.Second, func() bool {
			held, _ = buyer.m.Leases(ctx)
			return len(held) == 1
		}) {
			t.Fatal("no lease acquired")
		}
		lease := held[0]
		if lease.Seller != "far" || lease.Resources.ComputePerHour != 100 || lease.Price != 8 {
			t.Fatalf("lease = %+v", lease)
		}
		if _, ok := buyer.srv.Ledger().BoughtLease(lease.Trade.Auction, lease.Trade.Item); !ok {
			t.Fatal("the lease is not in the buyer's ledger")
		}
		sold, ok := seller.srv.Ledger().ItemAllocation(lease.Trade.Auction, lease.Trade.Item)
		if !ok || !sold.Live() || sold.Kind != consensus.ItemLease || sold.LeaseExpiry.IsZero() {
			t.Fatalf("seller's lease allocation = %+v, %v", sold, ok)
		}

		// A job goes into the lease: no auction, no new capacity at the
		// seller.
		// (A job fits a lease only if it ends before the lease does.)
		short := demandJob("job-1", 60)
		short.Duration = 20 * time.Minute
		if err := buyer.m.Trade(ctx, w.submit("home", short)); err != nil {
			t.Fatal(err)
		}
		var tr consensus.Trade
		if !waitFor(30*time.Second, func() bool {
			var ok bool
			tr, ok = buyer.srv.Ledger().Trade(remoteKey(w.job("home", "job-1")))
			return ok && tr.State == consensus.TradeAcked
		}) {
			t.Fatalf("job not placed in the lease: %+v", w.job("home", "job-1"))
		}
		if !tr.Draw() || tr.LeaseAuctionID != lease.Trade.Auction || tr.SellerRegion != "far" {
			t.Fatalf("trade = %+v; want a draw on the lease", tr)
		}
		draw, ok := seller.srv.Ledger().JobAllocation("home", "job-1")
		if !ok || draw.InLease != sold.ID {
			t.Fatalf("seller's allocation = %+v; want a draw on %s", draw, sold.ID)
		}
		if n, _ := seller.srv.Ledger().Node("far-0"); n.Used.ComputePerHour != 100 {
			t.Fatalf("seller node uses %v; want only the lease's 100", n.Used)
		}
		if ls, _ := buyer.srv.Ledger().BoughtLease(lease.Trade.Auction, lease.Trade.Item); ls.Used.ComputePerHour != 60 {
			t.Fatalf("bought lease used %v", ls.Used)
		}
		w.checkSettled("home", "job-1")

		// The job ends: its share of the lease comes back on both sides.
		if r, err := seller.srv.Propose(ctx, consensus.StopAllocation{AllocID: draw.ID, Reason: consensus.StopCompleted}); err != nil || r[0].Err != nil {
			t.Fatal(err, r)
		}
		if !waitFor(30*time.Second, func() bool { return w.job("home", "job-1").State == consensus.JobCompleted }) {
			t.Fatalf("job not completed by the seller's report: %+v", w.job("home", "job-1"))
		}
		if ls, _ := buyer.srv.Ledger().BoughtLease(lease.Trade.Auction, lease.Trade.Item); !ls.Used.IsZero() {
			t.Fatalf("bought lease used %v after the draw ended", ls.Used)
		}
		if l, _ := seller.srv.Ledger().Allocation(sold.ID); !l.LeaseUsed.IsZero() {
			t.Fatalf("sold lease used %v after the draw ended", l.LeaseUsed)
		}
		if st := buyer.m.Stats(); st.LeasesBought != 1 {
			t.Errorf("stats = %+v", st)
		}
		w.checkLedgers()
	})
}
