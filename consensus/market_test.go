package consensus

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"
)

// The market's commands: escrows that carry their terms, sold leases and the
// jobs drawn on them, the buyer's trade states, reports of remote ends.

const buyer = "us-east-1"

// roundTrip checks that the ledger survives Export/Import and a snapshot:
// both rebuild every index and check the records against each other
// (draws inside their leases, nodes' Used).
func roundTrip(t *testing.T, l *Ledger) {
	t.Helper()
	imported, err := Import(l.Export())
	if err != nil {
		t.Fatalf("Import(Export()): %v", err)
	}
	if !reflect.DeepEqual(imported.Export(), l.Export()) {
		t.Fatal("Import(Export()) changed the ledger")
	}
	var buf bytes.Buffer
	if err := WriteSnapshot(&buf, l); err != nil {
		t.Fatal(err)
	}
	restored, err := ReadSnapshot(&buf)
	if err != nil {
		t.Fatalf("ReadSnapshot: %v", err)
	}
	if !reflect.DeepEqual(restored.Export(), l.Export()) {
		t.Fatal("a snapshot changed the ledger")
	}
}

func hold(auction, item, jobID string, kind ItemKind, compute float64, d time.Duration) HoldEscrow {
	return HoldEscrow{NodeID: "n1", Resources: res(compute, 10, 1, 0), BuyerRegion: buyer, AuctionID: auction, ItemID: item,
		Expiry: t0.Add(time.Minute), ItemKind: kind, JobID: jobID, Duration: d, PricePerHour: 7}
}

func TestEscrowCarriesItsTerms(t *testing.T) {
	r := newRun(t)
	r.ok(gpuNode("n1"))
	h := hold("auc", "i", "rj", ItemJob, 30, 2*time.Hour)
	held := r.ok(h)
	if again := r.ok(h); !again.Existing || again.ID != held.ID {
		t.Fatalf("repeated hold = %+v", again)
	}
	other := h
	other.PricePerHour = 8
	r.fails(other, ErrConflict)
	self := h
	self.BuyerRegion, self.ItemID = "eu-west-1", "j"
	r.fails(self, ErrInvalid)
	bad := h
	bad.ItemID, bad.ItemKind = "k", 9
	r.fails(bad, ErrInvalid)
	e, _ := r.l.EscrowForItem("auc", "i")
	if e.Kind != ItemJob || e.JobID != "rj" || e.Duration != 2*time.Hour || e.PricePerHour != 7 {
		t.Fatalf("escrow = %+v", e)
	}
	// The escrow names the job: the conversion need not.
	c := r.ok(ConvertEscrow{AuctionID: "auc", ItemID: "i", JobRegion: buyer, Epoch: 4, PricePerHour: 6.5})
	a, _ := r.l.Allocation(c.ID)
	if a.JobID != "rj" || a.JobRegion != buyer || a.Epoch != 4 || a.PricePerHour != 6.5 || a.Duration != 2*time.Hour ||
		a.Kind != ItemJob || !a.Sold() || a.InLease != "" || !a.LeaseExpiry.IsZero() {
		t.Fatalf("allocation = %+v", a)
	}
	if again := r.ok(ConvertEscrow{AuctionID: "auc", ItemID: "i", JobRegion: buyer, Epoch: 4}); !again.Existing || again.ID != c.ID {
		t.Fatalf("repeated conversion = %+v", again)
	}
	r.fails(ConvertEscrow{AuctionID: "auc", ItemID: "i", JobID: "other", JobRegion: buyer, Epoch: 4}, ErrConflict)
	// An escrow without a job needs one from the conversion.
	r.ok(HoldEscrow{NodeID: "n1", Resources: res(10, 0, 0, 0), BuyerRegion: buyer, AuctionID: "auc", ItemID: "bare", Expiry: t0.Add(time.Minute)})
	r.fails(ConvertEscrow{AuctionID: "auc", ItemID: "bare", JobRegion: buyer, Epoch: 1}, ErrInvalid)
	roundTrip(t, r.l)
}

func TestConvertSupersedesAnOlderEpoch(t *testing.T) {
	r := newRun(t)
	r.ok(gpuNode("n1"))
	for _, a := range []string{"a1", "a2", "a3"} {
		r.ok(hold(a, "i", "rj", ItemJob, 20, 0))
	}
	first := r.ok(ConvertEscrow{AuctionID: "a1", ItemID: "i", JobRegion: buyer, Epoch: 1})
	// The buyer abandoned a1 in a partition and placed the job again under
	// epoch 3: the old allocation is stale and goes.
	second := r.ok(ConvertEscrow{AuctionID: "a2", ItemID: "i", JobRegion: buyer, Epoch: 3})
	old, _ := r.l.Allocation(first.ID)
	if old.Live() || old.StopReason != StopCancelled || !strings.Contains(old.StopMessage, "superseded by epoch 3") {
		t.Fatalf("old allocation = %+v", old)
	}
	if live, _ := r.l.JobAllocation(buyer, "rj"); live.ID != second.ID {
		t.Fatalf("live allocation %s, want %s", live.ID, second.ID)
	}
	// An award for an older epoch cannot displace the newer one.
	r.fails(ConvertEscrow{AuctionID: "a3", ItemID: "i", JobRegion: buyer, Epoch: 2}, ErrDoubleAllocation)
	// Converting the cancelled one again is refused: it is gone.
	r.fails(ConvertEscrow{AuctionID: "a1", ItemID: "i", JobRegion: buyer, Epoch: 1}, ErrInvalidTransition)
	if n := r.node("n1"); n.Used.ComputePerHour != 40 { // a2's allocation and a3's escrow
		t.Fatalf("node Used = %v", fmtRes(n.Used))
	}
	roundTrip(t, r.l)
}

func TestSoldLeaseAndDraws(t *testing.T) {
	r := newRun(t)
	r.ok(gpuNode("n1"))
	r.ok(hold("L", "lease", "lease-1", ItemLease, 50, time.Hour))
	conv := r.at(time.Second).ok(ConvertEscrow{AuctionID: "L", ItemID: "lease", JobRegion: buyer})
	lease, _ := r.l.Allocation(conv.ID)
	if lease.Kind != ItemLease || !lease.LeaseExpiry.Equal(t0.Add(time.Second+time.Hour)) || lease.Duration != 0 {
		t.Fatalf("lease allocation = %+v", lease)
	}
	draw := func(item, jobID string, compute float64) DrawLease {
		return DrawLease{AuctionID: "D", ItemID: item, LeaseAuctionID: "L", LeaseItemID: "lease", JobRegion: buyer,
			JobID: jobID, Resources: res(compute, 5, 0, 0), Epoch: 1, PricePerHour: 7, Duration: time.Minute}
	}
	d1 := r.ok(draw("d1", "j1", 20))
	a, _ := r.l.Allocation(d1.ID)
	if a.InLease != lease.ID || a.NodeID != "n1" || a.Duration != time.Minute || !a.Live() {
		t.Fatalf("draw = %+v", a)
	}
	if again := r.ok(draw("d1", "j1", 20)); !again.Existing || again.ID != d1.ID {
		t.Fatalf("repeated draw = %+v", again)
	}
	// The node counts the lease once; the draw uses the lease.
	if n := r.node("n1"); n.Used.ComputePerHour != 50 {
		t.Fatalf("node Used %v, want the lease's 50", fmtRes(n.Used))
	}
	if l, _ := r.l.Allocation(lease.ID); l.LeaseUsed.ComputePerHour != 20 {
		t.Fatalf("lease used %v", fmtRes(l.LeaseUsed))
	}
	r.fails(draw("d2", "j2", 40), ErrOvercommit)
	other := draw("d2", "j2", 10)
	other.JobRegion = "ap-south-1"
	r.fails(other, ErrNotFound)
	missing := draw("d2", "j2", 10)
	missing.LeaseItemID = "nope"
	r.fails(missing, ErrNotFound)
	d2 := r.ok(draw("d2", "j2", 30))
	// The node cannot take what the lease holds, even though the draws
	// are not on it.
	r.ok(SubmitJob{Job: job("local", 60, 0)})
	r.fails(PlaceJob{JobID: "local", NodeID: "n1"}, ErrOvercommit)
	roundTrip(t, r.l)
	// A finished draw gives its share back to the lease.
	r.ok(StopAllocation{AllocID: d1.ID, Reason: StopCompleted})
	if l, _ := r.l.Allocation(lease.ID); l.LeaseUsed.ComputePerHour != 30 {
		t.Fatalf("lease used %v after a draw ended", fmtRes(l.LeaseUsed))
	}
	roundTrip(t, r.l)
	// The lease ends: its draws stop with it, and the node is free.
	out := r.at(2 * time.Hour).ok(Expire{})
	if len(out.Expired) != 1 || out.Expired[0] != lease.ID {
		t.Fatalf("expired %v", out.Expired)
	}
	if a, _ := r.l.Allocation(d2.ID); a.Live() || a.StopReason != StopExpired {
		t.Fatalf("draw after its lease ended = %+v", a)
	}
	if n := r.node("n1"); !n.Used.IsZero() {
		t.Fatalf("node Used %v after the lease ended", fmtRes(n.Used))
	}
	r.fails(draw("d3", "j3", 10), ErrNotFound)
	roundTrip(t, r.l)
}

func TestImportRefusesInconsistentDraws(t *testing.T) {
	r := newRun(t)
	r.ok(gpuNode("n1"))
	r.ok(hold("L", "lease", "lease-1", ItemLease, 50, time.Hour))
	conv := r.ok(ConvertEscrow{AuctionID: "L", ItemID: "lease", JobRegion: buyer})
	r.ok(DrawLease{AuctionID: "D", ItemID: "d", LeaseAuctionID: "L", LeaseItemID: "lease", JobRegion: buyer, JobID: "j", Resources: res(20, 0, 0, 0), Epoch: 1})
	st := r.l.Export()
	for i := range st.Allocations {
		if st.Allocations[i].ID == conv.ID {
			st.Allocations[i].LeaseUsed = res(5, 0, 0, 0)
		}
	}
	if _, err := Import(st); err == nil || !strings.Contains(err.Error(), "drawn") {
		t.Fatalf("Import of a lease whose draws do not add up: %v", err)
	}
}

func jobTrade(auction, jobID string, epoch uint64) RecordAward {
	return RecordAward{AuctionID: auction, ItemID: "i", JobID: jobID, SellerRegion: buyer, Resources: res(20, 10, 1, 0),
		PricePerHour: 9, Epoch: epoch, ItemKind: ItemJob, NodeID: "s1", GPUType: "h100", Duration: time.Hour, AwardedAt: t0}
}

func setTrade(auction string, s TradeState) SetTradeState {
	return SetTradeState{AuctionID: auction, ItemID: "i", State: s, Reason: "test"}
}

func TestBuyerTradeStates(t *testing.T) {
	r := newRun(t)
	r.ok(SubmitJob{Job: job("j1", 20, 0)})
	r.ok(BumpEpoch{JobID: "j1"})
	rec := r.ok(jobTrade("a1", "j1", 1))
	if rec.Epoch != 1 {
		t.Fatalf("award = %+v", rec)
	}
	tr, _ := r.l.Trade("a1", "i")
	if tr.Kind != ItemJob || tr.NodeID != "s1" || tr.GPUType != "h100" || tr.Duration != time.Hour || !tr.AwardedAt.Equal(t0) || tr.State != TradeAwarded {
		t.Fatalf("trade = %+v", tr)
	}
	changed := jobTrade("a1", "j1", 1)
	changed.NodeID = "s2"
	r.fails(changed, ErrConflict)
	if ack := r.ok(setTrade("a1", TradeAcked)); ack.Epoch != 1 {
		t.Fatalf("ack = %+v", ack)
	}
	// The seller lost it: the job is placed again under a new epoch.
	failed := r.ok(setTrade("a1", TradeFailed))
	if failed.Epoch != 2 {
		t.Fatalf("failed = %+v, want the job at epoch 2", failed)
	}
	if j := r.job("j1"); j.State != JobPending || j.Remote != nil || j.Epoch != 2 || !strings.Contains(j.Reason, "failed") {
		t.Fatalf("job = %+v", j)
	}
	r.fails(setTrade("a1", TradeAcked), ErrStaleEpoch)
	r.fails(setTrade("a1", TradeAbandoned), ErrInvalidTransition)
	r.ok(setTrade("a1", TradeSettled))
	if again := r.ok(setTrade("a1", TradeSettled)); !again.Existing {
		t.Fatalf("repeated settle = %+v", again)
	}
	r.fails(SetTradeState{AuctionID: "a1", ItemID: "i", State: TradeEnded}, ErrInvalid)

	// In doubt too long: abandoned, placed again; a late ack is stale.
	r.ok(jobTrade("a2", "j1", 2))
	if ab := r.ok(setTrade("a2", TradeAbandoned)); ab.Epoch != 3 {
		t.Fatalf("abandon = %+v", ab)
	}
	r.fails(setTrade("a2", TradeAcked), ErrStaleEpoch)
	r.ok(setTrade("a2", TradeSettled))

	// A stale award is refused; the current one is taken.
	r.fails(jobTrade("a3", "j1", 2), ErrStaleEpoch)
	r.ok(jobTrade("a3", "j1", 3))
	// Acking after the client cancelled the job: the trade is acked, the
	// market then cancels the remote allocation.
	r.ok(SetJobState{JobID: "j1", State: JobCancelled})
	r.ok(setTrade("a3", TradeAcked))
	roundTrip(t, r.l)
}

func TestBoughtLeaseAndDraws(t *testing.T) {
	r := newRun(t)
	lease := RecordAward{AuctionID: "L", ItemID: "lease", JobID: "lease-1", SellerRegion: buyer, Resources: res(50, 100, 1, 0),
		PricePerHour: 4, ItemKind: ItemLease, NodeID: "s1", Duration: time.Hour, AwardedAt: t0}
	noDuration := lease
	noDuration.Duration = 0
	r.fails(noDuration, ErrInvalid)
	r.ok(lease)
	if got := r.l.Counts().Jobs; got != 0 {
		t.Fatalf("a lease created %d jobs", got)
	}
	if _, ok := r.l.BoughtLease("L", "lease"); ok {
		t.Fatal("a lease opened before the seller acknowledged it")
	}
	r.ok(SetTradeState{AuctionID: "L", ItemID: "lease", State: TradeAcked})
	ls, ok := r.l.BoughtLease("L", "lease")
	if !ok || ls.PeerRegion != buyer || !ls.End.Equal(t0.Add(time.Hour)) || ls.NodeID != "s1" || !ls.Used.IsZero() {
		t.Fatalf("bought lease = %+v, %v", ls, ok)
	}
	drawOn := func(auction, jobID string, compute float64) RecordAward {
		a := jobTrade(auction, jobID, 1)
		a.Resources = res(compute, 10, 0, 0)
		a.LeaseAuctionID, a.LeaseItemID = "L", "lease"
		return a
	}
	for _, id := range []string{"j1", "j2", "j3"} {
		r.ok(SubmitJob{Job: job(id, 30, 0)})
		r.ok(BumpEpoch{JobID: id})
	}
	r.ok(drawOn("d1", "j1", 30))
	if ls, _ := r.l.BoughtLease("L", "lease"); ls.Used.ComputePerHour != 30 {
		t.Fatalf("lease used %v", fmtRes(ls.Used))
	}
	r.fails(drawOn("d2", "j2", 30), ErrOvercommit)
	wrongSeller := drawOn("d2", "j2", 10)
	wrongSeller.SellerRegion = "ap-south-1"
	r.fails(wrongSeller, ErrConflict)
	unknown := drawOn("d2", "j2", 10)
	unknown.LeaseItemID = "nope"
	r.fails(unknown, ErrNotFound)
	r.ok(setTrade("d1", TradeFailed))
	if ls, _ := r.l.BoughtLease("L", "lease"); !ls.Used.IsZero() {
		t.Fatalf("lease used %v after its draw failed", fmtRes(ls.Used))
	}
	r.ok(drawOn("d2", "j2", 30))
	r.at(2*time.Hour).fails(drawOn("d3", "j3", 10), ErrExpired)
	roundTrip(t, r.l)
	// The seller lost the lease: it is closed.
	r.ok(SetTradeState{AuctionID: "L", ItemID: "lease", State: TradeAbandoned})
	if _, ok := r.l.BoughtLease("L", "lease"); ok {
		t.Fatal("an abandoned lease is still open")
	}
}

func TestEndTrade(t *testing.T) {
	r := newRun(t)
	for _, id := range []string{"done", "lost"} {
		r.ok(SubmitJob{Job: job(id, 20, 0)})
		r.ok(BumpEpoch{JobID: id})
	}
	r.ok(jobTrade("a1", "done", 1))
	r.ok(setTrade("a1", TradeAcked))
	r.fails(EndTrade{AuctionID: "a1", ItemID: "i", Epoch: 1, Outcome: 0}, ErrInvalid)
	r.fails(EndTrade{AuctionID: "zz", ItemID: "i", Epoch: 1, Outcome: StopCompleted}, ErrNotFound)
	// A report about another epoch changes nothing.
	if out := r.ok(EndTrade{AuctionID: "a1", ItemID: "i", Epoch: 7, Outcome: StopFailed}); !out.Existing {
		t.Fatalf("stale report = %+v", out)
	}
	r.ok(EndTrade{AuctionID: "a1", ItemID: "i", Epoch: 1, Outcome: StopCompleted, Message: "exit 0"})
	if j := r.job("done"); j.State != JobCompleted || j.Remote == nil || j.Reason != "exit 0" {
		t.Fatalf("job = %+v", j)
	}
	if tr, _ := r.l.Trade("a1", "i"); tr.State != TradeEnded || tr.EndReason != StopCompleted {
		t.Fatalf("trade = %+v", tr)
	}
	if again := r.ok(EndTrade{AuctionID: "a1", ItemID: "i", Epoch: 1, Outcome: StopCompleted}); !again.Existing {
		t.Fatalf("repeated report = %+v", again)
	}
	// A late ack of an ended trade is harmless; abandoning it is not allowed.
	if ack := r.ok(setTrade("a1", TradeAcked)); !ack.Existing {
		t.Fatalf("late ack = %+v", ack)
	}
	r.fails(setTrade("a1", TradeAbandoned), ErrInvalidTransition)

	// The seller's node died: the job is placed again, even before the
	// ack arrived.
	r.ok(jobTrade("a2", "lost", 1))
	out := r.ok(EndTrade{AuctionID: "a2", ItemID: "i", Epoch: 1, Outcome: StopLost, Message: "node s1 down"})
	if out.Epoch != 2 {
		t.Fatalf("report = %+v, want the job at epoch 2", out)
	}
	if j := r.job("lost"); j.State != JobPending || j.Remote != nil || j.Epoch != 2 || !strings.Contains(j.Reason, "lost: node s1 down") {
		t.Fatalf("job = %+v", j)
	}
	r.ok(PlaceJob{JobID: "lost", NodeID: "n1"}.withNode(r))
	roundTrip(t, r.l)
}

// withNode registers the placement's node first, for brevity.
func (p PlaceJob) withNode(r *ledgerRun) PlaceJob {
	r.ok(gpuNode(p.NodeID))
	return p
}

func TestMarkReported(t *testing.T) {
	r := newRun(t)
	r.ok(gpuNode("n1"))
	for _, a := range []string{"a1", "a2"} {
		r.ok(hold(a, "i", "rj-"+a, ItemJob, 10, 0))
	}
	done := r.ok(ConvertEscrow{AuctionID: "a1", ItemID: "i", JobRegion: buyer, Epoch: 1})
	cancelled := r.ok(ConvertEscrow{AuctionID: "a2", ItemID: "i", JobRegion: buyer, Epoch: 1})
	r.fails(MarkReported{AllocID: done.ID}, ErrInvalidTransition) // still live
	r.ok(StopAllocation{AllocID: done.ID, Reason: StopCompleted})
	r.ok(StopAllocation{AllocID: cancelled.ID, Reason: StopCancelled})
	un := r.l.UnreportedSold()
	if len(un) != 1 || un[0].ID != done.ID {
		t.Fatalf("unreported = %+v, want only %s (the buyer cancelled the other)", un, done.ID)
	}
	r.ok(MarkReported{AllocID: done.ID})
	if again := r.ok(MarkReported{AllocID: done.ID}); !again.Existing {
		t.Fatalf("repeated mark = %+v", again)
	}
	if un := r.l.UnreportedSold(); len(un) != 0 {
		t.Fatalf("unreported after the mark = %+v", un)
	}
	r.fails(MarkReported{AllocID: "a-999"}, ErrNotFound)
	r.ok(SubmitJob{Job: job("mine", 10, 0)})
	p := r.ok(PlaceJob{JobID: "mine", NodeID: "n1"})
	r.ok(StopAllocation{AllocID: p.ID, Reason: StopCompleted})
	r.fails(MarkReported{AllocID: p.ID}, ErrInvalidTransition)
}

func TestPendingJobRecordsWhy(t *testing.T) {
	r := newRun(t)
	r.ok(SubmitJob{Job: job("j1", 10, 0)})
	if out := r.ok(SetJobState{JobID: "j1", State: JobPending, Reason: "no seller: no offers"}); out.Existing {
		t.Fatalf("new reason = %+v", out)
	}
	if j := r.job("j1"); j.Reason != "no seller: no offers" {
		t.Fatalf("job = %+v", j)
	}
	if out := r.ok(SetJobState{JobID: "j1", State: JobPending, Reason: "no seller: no offers"}); !out.Existing {
		t.Fatalf("same reason = %+v", out)
	}
	r.ok(SetJobState{JobID: "j1", State: JobCancelled})
	r.fails(SetJobState{JobID: "j1", State: JobPending, Reason: "x"}, ErrInvalidTransition)
}

func TestPruneForgetsClosedTrades(t *testing.T) {
	r := newRun(t)
	r.ok(SubmitJob{Job: job("j1", 20, 0)})
	r.ok(BumpEpoch{JobID: "j1"})
	r.ok(jobTrade("a1", "j1", 1))
	r.ok(setTrade("a1", TradeFailed))
	r.ok(jobTrade("a2", "j1", 2))
	r.ok(setTrade("a2", TradeAbandoned))
	out := r.at(time.Hour).ok(Prune{Before: t0.Add(time.Minute)})
	if _, ok := r.l.Trade("a1", "i"); ok || out.Pruned != 1 {
		t.Fatalf("pruned %d; failed trade still there: %v", out.Pruned, ok)
	}
	if _, ok := r.l.Trade("a2", "i"); !ok {
		t.Fatal("an abandoned trade, still to reconcile, was pruned")
	}
}

// TestMarketCommandProperties applies random sequences of market commands
// (holds, conversions, draws, stops, expiries, trade states, reports) to two
// replicas: they must agree, every version must pass Import's consistency
// checks (no node or lease overcommitted, draws inside live leases), and at
// most one allocation per job may be live.
func TestMarketCommandProperties(t *testing.T) {
	seeds := 30
	if testing.Short() {
		seeds = 8
	}
	for seed := range seeds {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			rnd := rand.New(rand.NewPCG(uint64(seed), 11))
			pick := func(p string, n int) string { return fmt.Sprintf("%s%d", p, rnd.IntN(n)) }
			now := t0
			a, b := NewLedger("eu-west-1"), NewLedger("eu-west-1")
			var ra, rb Result
			for _, c := range []Command{gpuNode("n0"), gpuNode("n1")} {
				a, _ = a.Apply(now, c)
				b, _ = b.Apply(now, c)
			}
			for step := range 300 {
				now = now.Add(time.Duration(rnd.IntN(30)) * time.Second)
				var c Command
				switch rnd.IntN(12) {
				case 0, 1:
					kind := ItemJob
					if rnd.IntN(3) == 0 {
						kind = ItemLease
					}
					c = HoldEscrow{NodeID: pick("n", 2), Resources: res(float64(10*(1+rnd.IntN(5))), 10, 0, 0), BuyerRegion: buyer,
						AuctionID: pick("a", 6), ItemID: pick("i", 2), Expiry: now.Add(time.Duration(1+rnd.IntN(90)) * time.Second),
						ItemKind: kind, JobID: pick("rj", 5), Duration: time.Duration(1+rnd.IntN(10)) * time.Minute}
				case 2, 3:
					c = ConvertEscrow{AuctionID: pick("a", 6), ItemID: pick("i", 2), JobRegion: buyer, Epoch: uint64(rnd.IntN(5))}
				case 4, 5:
					c = DrawLease{AuctionID: pick("d", 8), ItemID: "i", LeaseAuctionID: pick("a", 6), LeaseItemID: pick("i", 2),
						JobRegion: buyer, JobID: pick("rj", 5), Resources: res(float64(5*(1+rnd.IntN(6))), 0, 0, 0), Epoch: uint64(rnd.IntN(5))}
				case 6:
					c = StopAllocation{AllocID: pick("a-", 60), Reason: StopReason(1 + rnd.IntN(5))}
				case 7:
					c = ReleaseEscrow{AuctionID: pick("a", 6), ItemID: pick("i", 2)}
				case 8:
					c = MarkReported{AllocID: pick("a-", 60)}
				case 9:
					c = SetNodeState{ID: pick("n", 2), State: NodeState(1 + rnd.IntN(3))}
				case 10:
					c = Prune{Before: now.Add(-time.Duration(rnd.IntN(600)) * time.Second)}
				default:
					c = Expire{}
				}
				a, ra = a.Apply(now, c)
				b, rb = b.Apply(now, c)
				if resultKey(ra) != resultKey(rb) {
					t.Fatalf("step %d %s: replicas disagree: %s vs %s", step, c.Kind(), resultKey(ra), resultKey(rb))
				}
				if !reflect.DeepEqual(a.Export(), b.Export()) {
					t.Fatalf("step %d %s: replicas diverged", step, c.Kind())
				}
				if _, err := Import(a.Export()); err != nil {
					t.Fatalf("step %d %s (%+v): %v", step, c.Kind(), c, err)
				}
				live := map[string]bool{}
				for _, al := range a.LiveAllocations() {
					if k := al.JobRegion + "/" + al.JobID; live[k] {
						t.Fatalf("step %d: job %s has two live allocations", step, k)
					} else {
						live[k] = true
					}
				}
			}
		})
	}
}
