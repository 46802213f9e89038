package market

import (
	"context"
	"errors"
	"math"
	"testing"
	"testing/synctest"
	"time"

	"github.com/meridian-mesh/meridian/consensus"
	"github.com/meridian-mesh/meridian/placement"
	"github.com/meridian-mesh/meridian/placement/auction"
)

const twoRegions = "home,home,2\nfar,far,2\nhome,far,80\n"

func demandJob(id string, compute float64) placement.Job {
	return placement.Job{ID: id, OriginRegion: "home", Demand: placement.Resources{ComputePerHour: compute, StorageGB: 10, BandwidthGBps: 1},
		Duration: time.Hour}
}

// TestTwoRegionsTradeOneJob is the whole trade over the simulated WAN:
// CallForBids, the seller's escrow, the buyer's award, the seller's
// allocation, the job traded in the buyer's ledger; then the seller's
// allocation completes and the report completes the job at home.
func TestTwoRegionsTradeOneJob(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := newWorld(t, twoRegions, nil)
		defer w.close()
		w.addRegion("home", 1, nodeSpec{compute: 10, price: 5})
		w.addRegion("far", 1, nodeSpec{compute: 200, price: 8})
		w.ready()
		buyer, seller := w.leader("home"), w.leader("far")

		jobs := w.submit("home", demandJob("job-1", 100))
		start := time.Now()
		if err := buyer.m.Trade(context.Background(), jobs); err != nil {
			t.Fatalf("Trade: %v", err)
		}
		if !waitFor(30*time.Second, func() bool {
			tr, ok := buyer.srv.Ledger().Trade(remoteKey(w.job("home", "job-1")))
			return ok && tr.State == consensus.TradeAcked
		}) {
			t.Fatalf("job not traded: %+v", w.job("home", "job-1"))
		}
		took := time.Since(start)
		j := w.job("home", "job-1")
		if j.State != consensus.JobTraded || j.Remote.Region != "far" || j.Epoch != 1 {
			t.Fatalf("job = %+v; want traded to far under epoch 1", j)
		}
		tr, _ := buyer.srv.Ledger().Trade(j.Remote.AuctionID, j.Remote.ItemID)
		if tr.PricePerHour != 8 || tr.SellerRegion != "far" || tr.NodeID != "far-0" || tr.Epoch != 1 {
			t.Fatalf("trade = %+v", tr)
		}
		a, ok := seller.srv.Ledger().JobAllocation("home", "job-1")
		if !ok || !a.Live() || a.Epoch != 1 || a.PricePerHour != 8 || a.Duration != time.Hour || a.NodeID != "far-0" {
			t.Fatalf("seller allocation = %+v, %v", a, ok)
		}
		if n, _ := seller.srv.Ledger().Node("far-0"); n.Used.ComputePerHour != 100 {
			t.Fatalf("seller node uses %v", n.Used)
		}
		if len(seller.srv.Ledger().Escrows()) != 0 {
			t.Fatalf("escrow left after the conversion: %+v", seller.srv.Ledger().Escrows())
		}
		// The lower bound is two round trips (80 ms) plus three commits, and
		// the auction waits for every invited seller, not the window.
		t.Logf("CallForBids to confirmed trade: %v", took)
		if took > 2*time.Second {
			t.Errorf("trade took %v", took)
		}
		w.checkSettled("home", "job-1")

		// The job completes at the seller: the report completes it at home.
		res, err := seller.srv.Propose(context.Background(), consensus.StopAllocation{AllocID: a.ID, Reason: consensus.StopCompleted, Message: "exit 0"})
		if err != nil || res[0].Err != nil {
			t.Fatal(err, res)
		}
		stopped, _ := seller.srv.Ledger().Allocation(a.ID)
		if err := seller.m.RemoteStopped(context.Background(), stopped); err != nil {
			t.Fatalf("RemoteStopped: %v", err)
		}
		if j := w.job("home", "job-1"); j.State != consensus.JobCompleted {
			t.Fatalf("job after the remote end = %+v", j)
		}
		if tr, _ := buyer.srv.Ledger().Trade(j.Remote.AuctionID, j.Remote.ItemID); tr.State != consensus.TradeEnded || tr.EndReason != consensus.StopCompleted {
			t.Fatalf("trade after the remote end = %+v", tr)
		}
		if a, _ := seller.srv.Ledger().Allocation(a.ID); !a.Reported {
			t.Fatalf("allocation not marked reported: %+v", a)
		}
		if st := buyer.m.Stats(); st.Bought != 1 || st.Offered != 1 || st.RemoteEnded != 1 {
			t.Errorf("buyer stats = %+v", st)
		}
		if st := seller.m.Stats(); st.Sold != 1 || st.ReportsAcked != 1 {
			t.Errorf("seller stats = %+v", st)
		}
	})
}

// remoteKey returns the trade key of a job's remote placement, or empty
// strings.
func remoteKey(j consensus.Job) (string, string) {
	if j.Remote == nil {
		return "", ""
	}
	return j.Remote.AuctionID, j.Remote.ItemID
}

// TestBestScoreWins runs three sellers against one buyer under each
// pricing rule: the best cost-efficiency score wins (E = C·D/price, no RTT
// penalty without an SLO), the price paid follows the rule, and a seller
// whose price is above a job's maximum never wins it.
func TestBestScoreWins(t *testing.T) {
	// s1: 200 tasks/h at 800 (E = 25 for D = 100); s2: 150 at 650 (23.08);
	// s3: 100 at 500 (20).
	for _, tc := range []struct {
		rule        string
		second      bool
		paid1       float64 // job-1: s1 wins
		paid2       float64 // job-2 (max 700): s1 is over the maximum, s2 wins
		description string
	}{
		{"first-price", false, 800, 650, "each winner pays its bid"},
		{"second-price", true, 20000 / (15000.0 / 650), 700, "s1 pays what brings it to s2's score; s2 pays what brings it to s3's, capped at the maximum"},
	} {
		t.Run(tc.rule, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				w := newWorld(t, "home,home,2\ns1,s1,2\ns2,s2,2\ns3,s3,2\nhome,s1,60\nhome,s2,90\nhome,s3,120\ns1,s2,50\ns1,s3,50\ns2,s3,50\n",
					func(region string, c *Config) { c.SecondPrice = tc.second })
				defer w.close()
				w.addRegion("home", 1, nodeSpec{compute: 10, price: 5})
				w.addRegion("s1", 1, nodeSpec{compute: 200, price: 800})
				w.addRegion("s2", 1, nodeSpec{compute: 150, price: 650})
				w.addRegion("s3", 1, nodeSpec{compute: 100, price: 500})
				w.ready()
				buyer := w.leader("home")
				trade := func(j placement.Job) consensus.Trade {
					t.Helper()
					if err := buyer.m.Trade(context.Background(), w.submit("home", j)); err != nil {
						t.Fatalf("Trade(%s): %v", j.ID, err)
					}
					var tr consensus.Trade
					if !waitFor(30*time.Second, func() bool {
						var ok bool
						tr, ok = buyer.srv.Ledger().Trade(remoteKey(w.job("home", j.ID)))
						return ok && tr.State == consensus.TradeAcked
					}) {
						t.Fatalf("%s not traded: %+v", j.ID, w.job("home", j.ID))
					}
					w.checkSettled("home", j.ID)
					return tr
				}
				t1 := trade(demandJob("job-1", 100))
				if t1.SellerRegion != "s1" || math.Abs(t1.PricePerHour-tc.paid1) > 1e-6 {
					t.Errorf("job-1 went to %s at %v; want s1 at %v (%s)", t1.SellerRegion, t1.PricePerHour, tc.paid1, tc.description)
				}
				// The ledger keeps the winner's score, at its bid: E = 200·100/800.
				if math.Abs(t1.Score-25) > 1e-6 {
					t.Errorf("job-1's trade has score %v; want 25", t1.Score)
				}
				j2 := demandJob("job-2", 100)
				j2.MaxPricePerHour = 700
				t2 := trade(j2)
				if t2.SellerRegion != "s2" || math.Abs(t2.PricePerHour-tc.paid2) > 1e-6 || t2.PricePerHour > 700 {
					t.Errorf("job-2 went to %s at %v; want s2 at %v, within the maximum 700", t2.SellerRegion, t2.PricePerHour, tc.paid2)
				}
				if math.Abs(t2.Score-15000.0/650) > 1e-6 {
					t.Errorf("job-2's trade has score %v; want %v", t2.Score, 15000.0/650)
				}
				// s1 declined job-2 itself: its price is over the maximum.
				if len(w.leader("s1").srv.Ledger().UnreportedSold()) != 0 {
					t.Error("s1 holds a stopped sale")
				}
				if a, ok := w.leader("s1").srv.Ledger().JobAllocation("home", "job-2"); ok {
					t.Errorf("s1 allocated job-2 above its maximum price: %+v", a)
				}
				if !w.quietEscrows(30 * time.Second) {
					t.Error("escrows of the losing bids were not released")
				}
			})
		})
	}
}

// TestNoSellerLeavesTheJobPendingWithAReason: a job no region can serve
// stays pending, and its reason says why.
func TestNoSellerLeavesTheJobPendingWithAReason(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := newWorld(t, twoRegions, nil)
		defer w.close()
		w.addRegion("home", 1, nodeSpec{compute: 10, price: 5})
		w.addRegion("far", 1, nodeSpec{compute: 200, price: 8})
		w.ready()
		buyer := w.leader("home")
		// Too big for any node: gossip says no region could serve it.
		err := buyer.m.Trade(context.Background(), w.submit("home", demandJob("huge", 1000)))
		if !errors.Is(err, auction.ErrNoSellers) {
			t.Fatalf("Trade(huge) = %v; want ErrNoSellers", err)
		}
		if j := w.job("home", "huge"); j.State != consensus.JobPending || j.Reason == "" {
			t.Fatalf("job = %+v; want pending with a reason", j)
		}
		// Over every seller's price: far declines, the job stays pending.
		cheap := demandJob("cheap", 100)
		cheap.MaxPricePerHour = 1
		if err := buyer.m.Trade(context.Background(), w.submit("home", cheap)); err != nil {
			t.Fatalf("Trade(cheap): %v", err)
		}
		if !waitFor(30*time.Second, func() bool {
			j := w.job("home", "cheap")
			return j.State == consensus.JobPending && len(j.Reason) > len("no region took it") && j.Reason[:17] == "no region took it"
		}) {
			t.Fatalf("job = %+v; want pending with the auction's reason", w.job("home", "cheap"))
		}
		// Backed off: offering it again at once does nothing.
		if err := buyer.m.Trade(context.Background(), []consensus.Job{w.job("home", "cheap")}); err != nil {
			t.Fatal(err)
		}
		if st := buyer.m.Stats(); st.Offered != 1 || st.Unplaced != 1 {
			t.Fatalf("stats = %+v", st)
		}
		w.checkLedgers()
	})
}
