package consensus

import (
	"strings"
	"testing"
	"time"
)

// prio is job with a priority.
func prio(id string, compute float64, priority int) SubmitJob {
	j := job(id, compute, 0)
	j.Priority = priority
	return SubmitJob{Job: j}
}

func TestPlaceJobPreempts(t *testing.T) {
	r := newRun(t)
	r.ok(gpuNode("n1"))
	r.ok(gpuNode("n2"))
	r.ok(prio("batch1", 40, 1))
	r.ok(prio("batch2", 30, 1))
	r.ok(prio("peer", 60, 2))
	r.ok(prio("urgent", 50, 2))
	b1 := r.ok(PlaceJob{JobID: "batch1", NodeID: "n1"})
	b2 := r.ok(PlaceJob{JobID: "batch2", NodeID: "n1"})
	r.ok(PlaceJob{JobID: "peer", NodeID: "n2"})
	// Another region's job of priority 1, sold on n1 through an escrow.
	r.ok(HoldEscrow{NodeID: "n1", Resources: res(20, 0, 0, 0), BuyerRegion: "us-east-1", AuctionID: "a1", ItemID: "i1",
		Expiry: t0.Add(time.Minute), JobID: "remote", Priority: 1, Origin: "us-west-2", LatencySLO: 120 * time.Millisecond, MaxPricePerHour: 40})
	sold := r.ok(ConvertEscrow{AuctionID: "a1", ItemID: "i1", JobRegion: "us-east-1", Epoch: 3})
	if a, _ := r.l.Allocation(sold.ID); a.Priority != 1 || a.Origin != "us-west-2" || a.LatencySLO != 120*time.Millisecond || a.MaxPricePerHour != 40 {
		t.Fatalf("sold allocation = %+v, want the escrow's job terms", a)
	}
	// n1: 40 + 30 + 20 used, 10 free; urgent needs 50.
	r.fails(PlaceJob{JobID: "urgent", NodeID: "n1"}, ErrOvercommit)

	// Each refusal stops nothing (fails checks that the ledger is unchanged).
	r.fails(PlaceJob{JobID: "urgent", NodeID: "n1", Preempt: []string{b2.ID}}, ErrOvercommit) // 10 + 30 < 50
	r.fails(PlaceJob{JobID: "urgent", NodeID: "n2", Preempt: []string{b1.ID}}, ErrInvalid)    // not on n2
	peerAlloc := r.job("peer").AllocID
	out := r.fails(PlaceJob{JobID: "urgent", NodeID: "n2", Preempt: []string{peerAlloc}}, ErrInvalid) // same priority
	if ce := out.Err.(*CommandError); ce.Subject != "preempt[0]" || !strings.Contains(ce.Error(), "priority 2") {
		t.Fatalf("same-priority refusal = %v (field %q)", out.Err, ce.Subject)
	}
	r.fails(PlaceJob{JobID: "urgent", NodeID: "n1", Preempt: []string{b1.ID, b1.ID}}, ErrInvalid)
	r.fails(PlaceJob{JobID: "urgent", NodeID: "n1", Preempt: []string{"nope"}}, ErrNotFound)
	many := make([]string, MaxPreempt+1)
	for i := range many {
		many[i] = b1.ID
	}
	r.fails(PlaceJob{JobID: "urgent", NodeID: "n1", Preempt: many}, ErrInvalid)

	// 10 free + 30 (batch2) + 20 (the sold one) = 60 >= 50.
	p := r.at(time.Second).ok(PlaceJob{JobID: "urgent", NodeID: "n1", Preempt: []string{b2.ID, sold.ID}})
	if j := r.job("urgent"); j.State != JobPlaced || j.AllocID != p.ID {
		t.Fatalf("urgent = %+v", j)
	}
	for _, id := range []string{b2.ID, sold.ID} {
		a, _ := r.l.Allocation(id)
		if a.Live() || a.StopReason != StopPreempted || !strings.Contains(a.StopMessage, "urgent") {
			t.Fatalf("victim %s = %+v", id, a)
		}
	}
	if j := r.job("batch2"); j.State != JobPending || j.AllocID != "" || !strings.Contains(j.Reason, "preempted") {
		t.Fatalf("preempted own job = %+v, want pending with the reason", j)
	}
	if j := r.job("batch1"); j.State != JobPlaced {
		t.Fatalf("untouched job = %+v", j)
	}
	if n := r.node("n1"); n.Used != res(90, 20, 2, 0) {
		t.Fatalf("n1 used = %+v", n.Used)
	}
	// Room sold to another region is taken back at the same priority.
	r.ok(gpuNode("n3"))
	r.ok(HoldEscrow{NodeID: "n3", Resources: res(80, 0, 0, 0), BuyerRegion: "us-east-1", AuctionID: "a2", ItemID: "i2",
		Expiry: t0.Add(2 * time.Minute), JobID: "remote-2", Priority: 2})
	lent := r.ok(ConvertEscrow{AuctionID: "a2", ItemID: "i2", JobRegion: "us-east-1", Epoch: 1})
	r.ok(prio("mine", 50, 2))
	r.ok(PlaceJob{JobID: "mine", NodeID: "n3", Preempt: []string{lent.ID}})
	if a, _ := r.l.Allocation(lent.ID); a.StopReason != StopPreempted {
		t.Fatalf("lent room = %+v, want preempted", a)
	}
	// Stopping a stopped victim again is refused.
	r.ok(prio("urgent2", 10, 3))
	r.fails(PlaceJob{JobID: "urgent2", NodeID: "n1", Preempt: []string{b2.ID}}, ErrInvalidTransition)
	// The buyer hears of the preemption as an end of the trade it may
	// report: EndTrade accepts the reason.
	if StopPreempted.String() != "preempted" {
		t.Fatalf("reason name %q", StopPreempted)
	}
}

// TestPreemptNeverLeases: a lease is capacity another region holds whether
// it runs anything or not; it is not preempted piecemeal.
func TestPreemptNeverLeases(t *testing.T) {
	r := newRun(t)
	r.ok(gpuNode("n1"))
	r.ok(HoldEscrow{NodeID: "n1", Resources: res(90, 0, 0, 0), BuyerRegion: "us-east-1", AuctionID: "a1", ItemID: "l1",
		Expiry: t0.Add(time.Minute), ItemKind: ItemLease, JobID: "lease-1", Duration: time.Hour})
	lease := r.ok(ConvertEscrow{AuctionID: "a1", ItemID: "l1", JobRegion: "us-east-1", Epoch: 1})
	r.ok(prio("urgent", 50, 100))
	r.fails(PlaceJob{JobID: "urgent", NodeID: "n1", Preempt: []string{lease.ID}}, ErrInvalid)
}

// TestHoldEscrowPreempts: a seller makes room for a buyer's job by
// stopping its lower-priority work, all or nothing, and never for a lease.
func TestHoldEscrowPreempts(t *testing.T) {
	r := newRun(t)
	r.ok(gpuNode("n1"))
	r.ok(prio("batch", 50, 1))
	r.ok(prio("peer", 40, 2))
	batch := r.ok(PlaceJob{JobID: "batch", NodeID: "n1"})
	peer := r.ok(PlaceJob{JobID: "peer", NodeID: "n1"})
	hold := func(item string, prio int, preempt ...string) HoldEscrow {
		return HoldEscrow{NodeID: "n1", Resources: res(50, 0, 0, 0), BuyerRegion: "us-east-1", AuctionID: "a1", ItemID: item,
			Expiry: t0.Add(time.Minute), JobID: "remote-" + item, Priority: prio, Origin: "us-east-1", Preempt: preempt}
	}
	// n1: 90 of 100 used; the buyer's 50 needs a victim.
	r.fails(hold("i1", 2), ErrOvercommit)
	out := r.fails(hold("i1", 2, peer.ID), ErrInvalid) // same priority: a seller takes room back only for itself
	if ce := out.Err.(*CommandError); ce.Subject != "preempt[0]" {
		t.Fatalf("same-priority refusal names %q: %v", ce.Subject, out.Err)
	}
	r.fails(hold("i1", 1, batch.ID), ErrInvalid) // equal priority, not lower
	lease := hold("l1", 2, batch.ID)
	lease.ItemKind, lease.Duration = ItemLease, time.Hour
	r.fails(lease, ErrInvalid)
	r.fails(hold("i1", 2, batch.ID, "nope"), ErrNotFound) // all or nothing: batch still runs
	if a, _ := r.l.Allocation(batch.ID); !a.Live() {
		t.Fatalf("a refused hold stopped %+v", a)
	}

	e := r.at(time.Second).ok(hold("i1", 2, batch.ID))
	if a, _ := r.l.Allocation(batch.ID); a.Live() || a.StopReason != StopPreempted || !strings.Contains(a.StopMessage, "us-east-1") {
		t.Fatalf("victim = %+v, want preempted for the buyer", a)
	}
	if j := r.job("batch"); j.State != JobPending || j.AllocID != "" {
		t.Fatalf("preempted own job = %+v, want pending", j)
	}
	if n := r.node("n1"); n.Used.ComputePerHour != 90 {
		t.Fatalf("n1 used = %+v, want the peer's 40 and the hold's 50", n.Used)
	}
	// A repeated hold is the same hold; it stops nothing more.
	again := r.ok(hold("i1", 2, batch.ID))
	if again.ID != e.ID || !again.Existing {
		t.Fatalf("repeated hold = %+v, want %s existing", again, e.ID)
	}
	if a, _ := r.l.Allocation(peer.ID); !a.Live() {
		t.Fatalf("bystander stopped: %+v", a)
	}
}
