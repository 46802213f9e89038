package market

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/meridian-mesh/meridian/consensus"
	"github.com/meridian-mesh/meridian/placement"
	"github.com/meridian-mesh/meridian/placement/auction"
)

// TestLedgerOps checks the auction's ledger operations, as committed in a
// real region ledger, against the semantics placement/auction documents
// (and its reference in-memory ledger implements): idempotence by trade,
// expiry judged at the operation's time, epochs, and the seller-side
// statuses.
func TestLedgerOps(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := newWorld(t, twoRegions, nil)
		defer w.close()
		w.addRegion("home", 1, nodeSpec{compute: 200, price: 8})
		w.ready()
		s := w.leader("home")
		rl := s.m.led
		ctx := context.Background()
		ref := func(item string) auction.TradeRef {
			return auction.TradeRef{Buyer: "far", Auction: "far/1/1", Item: item}
		}
		demand := placement.Resources{ComputePerHour: 100, StorageGB: 10}
		hold := func(item string, compute float64, expiry time.Time) auction.LedgerOp {
			r := demand
			r.ComputePerHour = compute
			return auction.LedgerOp{Kind: auction.OpHoldEscrow, Now: time.Now(), Trade: ref(item), Escrow: &auction.EscrowRecord{
				Trade: ref(item), Kind: auction.ItemJob, JobID: item, Node: "home-0", Resources: r, Duration: time.Hour, Price: 8, Expiry: expiry}}
		}
		op := func(kind auction.OpKind, item string, epoch uint64) auction.LedgerOp {
			return auction.LedgerOp{Kind: kind, Now: time.Now(), Trade: ref(item), Epoch: epoch, Price: 8}
		}
		propose := func(ops ...auction.LedgerOp) []auction.OpResult {
			t.Helper()
			res, err := rl.Propose(ctx, ops)
			if err != nil || len(res) != len(ops) {
				t.Fatalf("Propose: %v (%d results for %d ops)", err, len(res), len(ops))
			}
			return res
		}
		soon := time.Now().Add(time.Minute)

		// One batch, in order: hold, read, convert, read.
		res := propose(hold("a", 100, soon), op(auction.OpLookupTrade, "a", 0), op(auction.OpConvertEscrow, "a", 3), op(auction.OpLookupTrade, "a", 0))
		if res[0].Err != nil || res[1].Status != auction.StatusHeld || res[2].Err != nil || res[2].Status != auction.StatusAllocated ||
			res[2].Epoch != 3 || res[3].Status != auction.StatusAllocated || res[3].Epoch != 3 {
			t.Fatalf("hold/lookup/convert/lookup = %+v", res)
		}
		// Idempotent by trade.
		res = propose(hold("a", 100, soon), op(auction.OpConvertEscrow, "a", 3))
		if res[0].Err != nil || res[1].Err != nil || res[1].Epoch != 3 {
			t.Fatalf("repeated hold and convert = %+v", res)
		}
		// No room left for a second 150; an expiry in the past is gone.
		res = propose(hold("b", 150, soon), hold("c", 10, time.Now().Add(-time.Second)))
		if !errors.Is(res[0].Err, auction.ErrInsufficientCapacity) || !errors.Is(res[1].Err, auction.ErrEscrowGone) {
			t.Fatalf("holds = %+v", res)
		}
		// Converting what was never held, or released, fails as gone.
		res = propose(hold("d", 10, soon), op(auction.OpReleaseEscrow, "d", 0), op(auction.OpConvertEscrow, "d", 1), op(auction.OpReleaseEscrow, "zz", 0))
		if res[1].Err != nil || !errors.Is(res[2].Err, auction.ErrEscrowGone) || res[2].Status != auction.StatusReleased || res[3].Err != nil {
			t.Fatalf("release/convert = %+v", res)
		}
		// Cancel leaves another epoch's allocation alone, cancels its own.
		res = propose(op(auction.OpCancelTrade, "a", 2))
		if res[0].Status != auction.StatusAllocated || res[0].Epoch != 3 {
			t.Fatalf("cancel of another epoch = %+v", res)
		}
		res = propose(op(auction.OpCancelTrade, "a", 3), op(auction.OpLookupTrade, "a", 0), op(auction.OpConvertEscrow, "a", 3))
		if res[0].Status != auction.StatusCancelled || res[1].Status != auction.StatusCancelled ||
			!errors.Is(res[2].Err, auction.ErrEscrowGone) || res[2].Status != auction.StatusCancelled {
			t.Fatalf("cancel/lookup/convert = %+v", res)
		}
		if res := propose(op(auction.OpLookupTrade, "never", 0)); res[0].Status != auction.StatusUnknown {
			t.Fatalf("lookup of an unknown trade = %+v", res)
		}
		// An expired hold counts as free in the inventory before the ledger
		// releases it.
		propose(hold("e", 150, time.Now().Add(time.Second)))
		inv, _ := rl.Inventory(time.Now())
		if inv[0].Free.ComputePerHour != 50 {
			t.Fatalf("inventory with a live hold: %+v", inv)
		}
		inv, _ = rl.Inventory(time.Now().Add(2 * time.Second))
		if inv[0].Free.ComputePerHour != 200 {
			t.Fatalf("inventory once the hold expired: %+v", inv)
		}
		snap, _ := rl.MarketSnapshot()
		if len(snap.Escrows) != 1 || snap.Escrows[0].Trade != ref("e") || snap.Escrows[0].JobID != "e" || snap.Escrows[0].Price != 8 {
			t.Fatalf("snapshot escrows = %+v", snap.Escrows)
		}

		// The buyer's side, on its own jobs.
		w.submit("home", demandJob("j1", 10))
		if r, err := s.srv.Propose(ctx, consensus.BumpEpoch{JobID: "j1"}); err != nil || r[0].Err != nil {
			t.Fatal(err, r)
		}
		bref := func(item string) auction.TradeRef {
			return auction.TradeRef{Buyer: "home", Auction: "home/1/1", Item: item}
		}
		award := func(item string, epoch uint64) auction.LedgerOp {
			return auction.LedgerOp{Kind: auction.OpRecordAward, Now: time.Now(), Trade: bref(item), Award: &auction.AwardRecord{
				Trade: bref(item), Kind: auction.ItemJob, JobID: "j1", Epoch: epoch, Seller: "far", Node: "far-0", Price: 8,
				Resources: demand, Duration: time.Hour, AwardedAt: time.Now()}}
		}
		state := func(item string, st auction.TradeState, epoch uint64) auction.LedgerOp {
			return auction.LedgerOp{Kind: auction.OpSetTradeState, Now: time.Now(), Trade: bref(item), State: st, Epoch: epoch}
		}
		res = propose(award("j1", 0), award("j1", 1), award("j1", 1))
		if !errors.Is(res[0].Err, auction.ErrStaleEpoch) || res[1].Err != nil || res[2].Err != nil || res[1].Epoch != 1 {
			t.Fatalf("awards = %+v", res)
		}
		snap, _ = rl.MarketSnapshot()
		if len(snap.Trades) != 1 || snap.Trades[0].State != auction.TradeAwarded || snap.Trades[0].Node != "far-0" || snap.Trades[0].Trade != bref("j1") {
			t.Fatalf("snapshot trades = %+v", snap.Trades)
		}
		res = propose(state("j1", auction.TradeAbandoned, 1), state("j1", auction.TradeConfirmed, 1), state("zz", auction.TradeFailed, 1))
		if res[0].Err != nil || res[0].Epoch != 2 || !errors.Is(res[1].Err, auction.ErrStaleEpoch) || !errors.Is(res[2].Err, auction.ErrUnknownTrade) {
			t.Fatalf("states = %+v", res)
		}
		snap, _ = rl.MarketSnapshot()
		if len(snap.Trades) != 1 || snap.Trades[0].State != auction.TradeAbandoned {
			t.Fatalf("snapshot after abandon = %+v", snap.Trades)
		}
		if res := propose(state("j1", auction.TradeSettled, 1)); res[0].Err != nil {
			t.Fatalf("settle = %+v", res)
		}
		if snap, _ = rl.MarketSnapshot(); len(snap.Trades) != 0 {
			t.Fatalf("a settled trade is still open: %+v", snap.Trades)
		}
		if j, _ := s.srv.Ledger().Job("j1"); j.State != consensus.JobPending || j.Epoch != 2 {
			t.Fatalf("job = %+v", j)
		}
	})
}
