package auction

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"
)

// Over netsim's world topology (real libp2p, Noise, yamux on the simulated
// WAN): an award whose acknowledgment is cut off by a partition stays in
// doubt, is abandoned after InDoubtTimeout, the job is bought again under a
// new epoch from another region, and when the partition heals the stale
// allocation is cancelled. Afterwards the job has exactly one live
// allocation, the one its home ledger names, and no escrow is left.
func TestDriversInDoubtReplaceAndHealOverNetsim(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newNetsimMesh(t, nil)
		defer s.close()
		cfg := DriverConfig{Market: Config{InDoubtTimeout: 20 * time.Second, RequestTimeout: 2 * time.Second, Price: flatPricing}}
		const commit = 10 * time.Millisecond
		home := s.addRegion("us-east-1", cfg, commit)
		cheap := s.addRegion("eu-west-1", cfg, commit, testNode("euw1-a", 200, 500))
		dear := s.addRegion("us-west-2", cfg, commit, testNode("usw2-a", 200, 900))
		s.link("us-east-1", "eu-west-1", 0)
		s.link("us-east-1", "us-west-2", 0)
		home.ledger.addJob("job-1", 1)
		item := Item{ID: "job-1", Kind: ItemJob, Epoch: 1, Job: jobSpec("job-1", "us-east-1", 100)}
		if _, err := home.drv.Buy(context.Background(), []Item{item}); err != nil {
			t.Fatal(err)
		}
		// eu-west-1 (cheaper) wins; partition it from the buyer while it
		// commits the allocation, so the Ack is lost.
		waitFor(t, "eu-west-1's allocation", 10*time.Second, func() bool {
			return len(cheap.ledger.liveAllocations("us-east-1", "job-1")) == 1
		})
		s.net.Partition([]string{"eu-west-1"})
		ab := home.waitEvent(t, EventAbandoned, 1, time.Minute)[0]
		if ab.Epoch != 2 || home.ledger.epoch("job-1") != 2 {
			t.Fatalf("abandoned at epoch %d, ledger at %d; want 2", ab.Epoch, home.ledger.epoch("job-1"))
		}
		// node/ places the job again under epoch 2; eu-west-1 is
		// unreachable, so us-west-2 gets it.
		s.g.mu.Lock()
		delete(s.g.leader, "eu-west-1")
		s.g.mu.Unlock()
		item.Epoch = 2
		if _, err := home.drv.Buy(context.Background(), []Item{item}); err != nil {
			t.Fatal(err)
		}
		conf := home.waitEvent(t, EventConfirmed, 1, time.Minute)[0]
		if conf.Seller != "us-west-2" || conf.Epoch != 2 {
			t.Fatalf("confirmed %+v, want us-west-2 at epoch 2", conf)
		}
		// Heal: reconciliation cancels eu-west-1's stale allocation.
		s.net.Heal()
		s.g.setLeader("eu-west-1", cheap.host.ID(), 1)
		healed := time.Now()
		if err := home.drv.RegionReachable(context.Background(), "eu-west-1"); err != nil {
			t.Fatal(err)
		}
		settled := home.waitEvent(t, EventSettled, 1, 2*time.Minute)[0]
		// Settled within a few round trips of the heal, not at the next
		// backoff: cancel + reconnect handshakes to eu-west-1.
		if d := settled.At.Sub(healed); d > 2*time.Second {
			t.Errorf("settled %v after the heal", d)
		}
		if live := cheap.ledger.liveAllocations("us-east-1", "job-1"); len(live) != 0 {
			t.Errorf("stale allocation at eu-west-1: %v", live)
		}
		live := dear.ledger.liveAllocations("us-east-1", "job-1")
		named, ok := home.ledger.confirmedTrade("job-1")
		if len(live) != 1 || !ok || named.Seller != "us-west-2" || live[0] != named.Trade {
			t.Errorf("live %v, home ledger names %+v", live, named)
		}
		time.Sleep(time.Minute) // past every escrow's expiry
		for _, r := range []*meshRegion{home, cheap, dear} {
			if e := r.ledger.escrowRecords(); len(e) != 0 {
				t.Errorf("%s: escrows left %+v", r.name, e)
			}
			if v := r.ledger.violationsList(); len(v) != 0 {
				t.Errorf("%s: %v", r.name, v)
			}
		}
	})
}

// A leader change in the buyer region while bids are out: the new leader
// resumes from the ledger and the job is traded once.
func TestDriverBuyerLeaderChange(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newSimMesh(t)
		defer s.close()
		buyer := s.addRegion("us-east-1", DriverConfig{}, 50*time.Millisecond)
		seller := s.addRegion("eu-west-1", DriverConfig{}, 50*time.Millisecond, testNode("euw1-a", 200, 900))
		s.link("us-east-1", "eu-west-1", 70*time.Millisecond)
		buyer.ledger.addJob("job-1", 1)
		item := Item{ID: "job-1", Kind: ItemJob, Epoch: 1, Job: jobSpec("job-1", "us-east-1", 100)}
		ctx := context.Background()
		if _, err := buyer.drv.Buy(ctx, []Item{item}); err != nil {
			t.Fatal(err)
		}
		// Lose and regain leadership while the award is being committed.
		waitFor(t, "the award", 10*time.Second, func() bool {
			_, ok := buyer.ledger.trade(TradeRef{Buyer: "us-east-1", Auction: "us-east-1/1/1", Item: "job-1"})
			return ok
		})
		if err := buyer.drv.SetLeadership(ctx, 1, false); err != nil {
			t.Fatal(err)
		}
		if _, err := buyer.drv.Buy(ctx, []Item{item}); !errors.Is(err, ErrNotLeader) {
			t.Errorf("Buy on a follower = %v, want ErrNotLeader", err)
		}
		s.g.setLeader("us-east-1", buyer.host.ID(), 2)
		if err := buyer.drv.SetLeadership(ctx, 2, true); err != nil {
			t.Fatal(err)
		}
		buyer.waitEvent(t, EventConfirmed, 1, time.Minute)
		if live := seller.ledger.liveAllocations("us-east-1", "job-1"); len(live) != 1 {
			t.Errorf("live allocations %v", live)
		}
		st, _ := buyer.drv.Stats(ctx)
		if st.Trades != 0 || st.Auctions != 0 {
			t.Errorf("buyer stats %+v", st)
		}
	})
}

func TestDriverErrors(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newSimMesh(t)
		defer s.close()
		buyer := s.addRegion("us-east-1", DriverConfig{}, 0)
		ctx := context.Background()
		item := Item{ID: "job-1", Kind: ItemJob, Epoch: 1, Job: jobSpec("job-1", "us-east-1", 100)}
		if _, err := buyer.drv.Buy(ctx, []Item{item}); !errors.Is(err, ErrNoSellers) {
			t.Errorf("Buy with no other region = %v, want ErrNoSellers", err)
		}
		if _, err := buyer.drv.PlaceInLease(ctx, item); !errors.Is(err, ErrNoLease) {
			t.Errorf("PlaceInLease without a lease = %v, want ErrNoLease", err)
		}
		if _, err := NewDriver(DriverConfig{Market: Config{Region: "x"}}); err == nil {
			t.Errorf("NewDriver without a ledger succeeded")
		}
	})
}
