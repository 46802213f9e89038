package consensus

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/meridian-mesh/meridian/placement"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func res(c, s, b float64, g int) placement.Resources {
	return placement.Resources{ComputePerHour: c, StorageGB: s, BandwidthGBps: b, GPUs: g}
}

// ledgerRun applies commands one by one, failing the test on an unexpected
// outcome.
type ledgerRun struct {
	t   *testing.T
	l   *Ledger
	now time.Time
}

func newRun(t *testing.T) *ledgerRun {
	return &ledgerRun{t: t, l: NewLedger("eu-west-1"), now: t0}
}

func (r *ledgerRun) at(d time.Duration) *ledgerRun { r.now = t0.Add(d); return r }

func (r *ledgerRun) apply(c Command) Result {
	r.t.Helper()
	var out Result
	r.l, out = r.l.Apply(r.now, c)
	return out
}

func (r *ledgerRun) ok(c Command) Result {
	r.t.Helper()
	out := r.apply(c)
	if out.Err != nil {
		r.t.Fatalf("%s: unexpected error %v", c.Kind(), out.Err)
	}
	return out
}

func (r *ledgerRun) fails(c Command, want error) Result {
	r.t.Helper()
	before := r.l.Export()
	out := r.apply(c)
	if !errors.Is(out.Err, want) {
		r.t.Fatalf("%s: error %v, want %v", c.Kind(), out.Err, want)
	}
	var ce *CommandError
	if !errors.As(out.Err, &ce) {
		r.t.Fatalf("%s: error %T is not a *CommandError", c.Kind(), out.Err)
	}
	after := r.l.Export()
	after.Now = before.Now // time may advance; nothing else may change
	if !reflect.DeepEqual(before, after) {
		r.t.Fatalf("%s: a rejected command changed the ledger", c.Kind())
	}
	return out
}

func (r *ledgerRun) node(id string) Node {
	r.t.Helper()
	n, ok := r.l.Node(id)
	if !ok {
		r.t.Fatalf("node %q missing", id)
	}
	return n
}

func (r *ledgerRun) job(id string) Job {
	r.t.Helper()
	j, ok := r.l.Job(id)
	if !ok {
		r.t.Fatalf("job %q missing", id)
	}
	return j
}

func gpuNode(id string) RegisterNode {
	return RegisterNode{ID: id, Total: res(100, 1000, 10, 4), PricePerHour: 12, GPUType: "h100"}
}

func job(id string, compute float64, gpus int) placement.Job {
	return placement.Job{ID: id, OriginRegion: "eu-west-1", Demand: res(compute, 10, 1, gpus)}
}

func TestRegisterNodeIdempotentAndConflict(t *testing.T) {
	r := newRun(t)
	if got := r.ok(gpuNode("n1")); got.ID != "n1" || got.Existing {
		t.Fatalf("first registration = %+v", got)
	}
	if got := r.ok(gpuNode("n1")); !got.Existing {
		t.Fatalf("repeat registration = %+v, want Existing", got)
	}
	other := gpuNode("n1")
	other.PricePerHour = 13
	r.fails(other, ErrConflict)
	n := r.node("n1")
	if n.State != NodeReady || n.Region != "eu-west-1" || !n.Registered.Equal(t0) {
		t.Fatalf("node = %+v", n)
	}
	wrong := gpuNode("n2")
	wrong.Region = "us-east-1"
	r.fails(wrong, ErrInvalid)
}

func TestValidationNamesTheField(t *testing.T) {
	r := newRun(t)
	r.ok(gpuNode("n1"))
	r.ok(SubmitJob{Job: job("j1", 10, 1)})
	for _, tc := range []struct {
		cmd   Command
		field string
	}{
		{RegisterNode{ID: "", Total: res(1, 1, 1, 0), PricePerHour: 1}, "id"},
		{RegisterNode{ID: "n\x00x", Total: res(1, 1, 1, 0), PricePerHour: 1}, "id"},
		{RegisterNode{ID: strings.Repeat("x", 300), Total: res(1, 1, 1, 0), PricePerHour: 1}, "id"},
		{RegisterNode{ID: "n9", Total: res(-1, 1, 1, 0), PricePerHour: 1}, "total.compute"},
		{RegisterNode{ID: "n9", Total: res(1, 1, 1, 0), PricePerHour: 0}, "price_per_hour"},
		{SubmitJob{Job: placement.Job{ID: "j2"}}, "job.demand.compute"},
		{PlaceJob{JobID: "j1", NodeID: "n1", Resources: res(-1, 0, 0, 0)}, "resources.compute"},
		{PlaceJob{JobID: "j1", NodeID: "n1", LeaseExpiry: t0.Add(-time.Hour)}, "lease_expiry"},
		{HoldEscrow{NodeID: "n1", Resources: res(1, 0, 0, 0), BuyerRegion: "us-east-1", AuctionID: "a", ItemID: "i"}, "expiry"},
		{StopAllocation{AllocID: "a-1", Reason: StopExpired}, "reason"},
		{SetJobState{JobID: "j1", State: 99}, "state"},
		{AddLease{Lease: Lease{ID: "l", Direction: LeaseBought, PeerRegion: "us-east-1", Start: t0, End: t0}}, "lease.end"},
		{Prune{Before: t0.Add(time.Hour)}, "before"},
	} {
		out := r.fails(tc.cmd, ErrInvalid)
		var ce *CommandError
		errors.As(out.Err, &ce)
		if ce.Subject != tc.field || !strings.Contains(ce.Message, tc.field) {
			t.Errorf("%s: subject %q message %q, want field %q", tc.cmd.Kind(), ce.Subject, ce.Message, tc.field)
		}
	}
}

func TestSubmitJobIdempotency(t *testing.T) {
	r := newRun(t)
	r.ok(SubmitJob{Job: job("j1", 10, 1)})
	if got := r.ok(SubmitJob{Job: job("j1", 10, 1)}); !got.Existing || got.ID != "j1" {
		t.Fatalf("resubmission = %+v, want Existing", got)
	}
	r.fails(SubmitJob{Job: job("j1", 11, 1)}, ErrConflict)
	j := r.job("j1")
	if j.State != JobPending || j.Epoch != 0 || j.Attempts != 0 {
		t.Fatalf("job = %+v", j)
	}
}

func TestPlaceJobOvercommitAndDoubleAllocation(t *testing.T) {
	r := newRun(t)
	r.ok(gpuNode("n1"))
	r.ok(SubmitJob{Job: job("j1", 60, 2)})
	r.ok(SubmitJob{Job: job("j2", 60, 2)})
	r.ok(SubmitJob{Job: job("j3", 40, 2)})
	p := r.ok(PlaceJob{JobID: "j1", NodeID: "n1"})
	if p.Epoch != 1 || p.ID == "" {
		t.Fatalf("place = %+v", p)
	}
	a, ok := r.l.Allocation(p.ID)
	if !ok || !a.Live() || a.Resources != res(60, 10, 1, 2) || a.Epoch != 1 || !a.Start.Equal(t0) {
		t.Fatalf("allocation = %+v", a)
	}
	if j := r.job("j1"); j.State != JobPlaced || j.AllocID != p.ID || j.Epoch != 1 || j.Attempts != 1 {
		t.Fatalf("job = %+v", j)
	}
	// A second live allocation of the same job is refused, on any node.
	r.ok(RegisterNode{ID: "n2", Total: res(500, 1000, 10, 8), PricePerHour: 20, GPUType: "h100"})
	r.fails(PlaceJob{JobID: "j1", NodeID: "n2"}, ErrDoubleAllocation)
	// 60 + 60 compute > 100.
	out := r.fails(PlaceJob{JobID: "j2", NodeID: "n1"}, ErrOvercommit)
	if out.Err.(*CommandError).Subject != "n1" {
		t.Fatalf("overcommit subject = %q, want the node", out.Err.(*CommandError).Subject)
	}
	// Exactly filling the node is fine.
	r.ok(PlaceJob{JobID: "j3", NodeID: "n1"})
	if n := r.node("n1"); n.Free() != res(0, 980, 8, 0) {
		t.Fatalf("free = %+v", n.Free())
	}
	// Stale epoch: j2 is at 0, so the next placement is 1.
	r.fails(PlaceJob{JobID: "j2", NodeID: "n2", Epoch: 2}, ErrStaleEpoch)
	r.ok(PlaceJob{JobID: "j2", NodeID: "n2", Epoch: 1})
	r.fails(PlaceJob{JobID: "nope", NodeID: "n2"}, ErrNotFound)
	r.ok(SubmitJob{Job: job("j4", 1, 0)})
	r.fails(PlaceJob{JobID: "j4", NodeID: "nope"}, ErrNotFound)
	r.ok(SetNodeState{ID: "n2", State: NodeDraining, Reason: "maintenance"})
	r.fails(PlaceJob{JobID: "j4", NodeID: "n2"}, ErrNodeNotReady)
	// Only j4 still waits for a node.
	if p := r.l.PendingJobs(); len(p) != 1 || p[0].ID != "j4" {
		t.Fatalf("pending jobs = %+v, want j4 alone", p)
	}
}

func TestStopAllocationUpdatesJob(t *testing.T) {
	r := newRun(t)
	r.ok(gpuNode("n1"))
	r.ok(SubmitJob{Job: job("j1", 60, 2)})
	p := r.ok(PlaceJob{JobID: "j1", NodeID: "n1"})
	r.ok(SetJobState{JobID: "j1", State: JobRunning})
	r.at(time.Minute).ok(StopAllocation{AllocID: p.ID, Reason: StopFailed, Message: "exit 1"})
	j := r.job("j1")
	if j.State != JobPending || j.AllocID != "" || !strings.Contains(j.Reason, "failed: exit 1") {
		t.Fatalf("job after failure = %+v", j)
	}
	if n := r.node("n1"); !n.Used.IsZero() {
		t.Fatalf("used after stop = %+v", n.Used)
	}
	if again := r.ok(StopAllocation{AllocID: p.ID, Reason: StopFailed}); !again.Existing {
		t.Fatalf("second stop = %+v, want Existing", again)
	}
	p2 := r.ok(PlaceJob{JobID: "j1", NodeID: "n1"})
	if p2.Epoch != 2 || r.job("j1").Attempts != 2 {
		t.Fatalf("re-placement = %+v, job %+v", p2, r.job("j1"))
	}
	r.ok(StopAllocation{AllocID: p2.ID, Reason: StopCompleted})
	if j := r.job("j1"); j.State != JobCompleted {
		t.Fatalf("job after completion = %+v", j)
	}
	r.fails(PlaceJob{JobID: "j1", NodeID: "n1"}, ErrInvalidTransition)
	r.fails(SetJobState{JobID: "j1", State: JobRunning}, ErrInvalidTransition)
	if got := r.ok(SetJobState{JobID: "j1", State: JobCompleted}); !got.Existing {
		t.Fatalf("repeat terminal state = %+v", got)
	}
}

func TestReplaceAllocationSameNodeCountsFreedCapacity(t *testing.T) {
	r := newRun(t)
	r.ok(gpuNode("n1"))
	r.ok(RegisterNode{ID: "n2", Total: res(100, 1000, 10, 4), PricePerHour: 9})
	r.ok(SubmitJob{Job: job("j1", 80, 0)})
	p := r.ok(PlaceJob{JobID: "j1", NodeID: "n1"})
	// 80 + 80 > 100 unless the old allocation's share is freed first.
	q := r.ok(ReplaceAllocation{JobID: "j1", NodeID: "n1", Reason: "bin-pack"})
	if q.Epoch != 2 || q.ID == p.ID {
		t.Fatalf("replace = %+v", q)
	}
	old, _ := r.l.Allocation(p.ID)
	if old.Live() || old.StopReason != StopReplaced {
		t.Fatalf("old allocation = %+v", old)
	}
	if n := r.node("n1"); n.Used != res(80, 10, 1, 0) {
		t.Fatalf("used = %+v", n.Used)
	}
	r.ok(SetNodeState{ID: "n1", State: NodeDown})
	q2 := r.ok(ReplaceAllocation{JobID: "j1", NodeID: "n2", Epoch: 3})
	if j := r.job("j1"); j.AllocID != q2.ID || j.Epoch != 3 || j.State != JobPlaced {
		t.Fatalf("job = %+v", j)
	}
	if n := r.node("n1"); !n.Used.IsZero() {
		t.Fatalf("n1 used = %+v", n.Used)
	}
	// Replacing onto a node without room leaves everything as it was.
	r.ok(SetNodeState{ID: "n1", State: NodeReady})
	r.ok(SubmitJob{Job: job("j2", 50, 0)})
	r.ok(PlaceJob{JobID: "j2", NodeID: "n1"})
	r.fails(ReplaceAllocation{JobID: "j1", NodeID: "n1"}, ErrOvercommit)
}

func TestEscrowLifecycle(t *testing.T) {
	r := newRun(t)
	r.ok(gpuNode("n1"))
	hold := HoldEscrow{NodeID: "n1", Resources: res(70, 0, 0, 2), BuyerRegion: "us-east-1",
		AuctionID: "auc1", ItemID: "it1", Expiry: t0.Add(time.Minute)}
	h := r.ok(hold)
	if again := r.ok(hold); !again.Existing || again.ID != h.ID {
		t.Fatalf("repeat hold = %+v", again)
	}
	changed := hold
	changed.Resources = res(71, 0, 0, 2)
	r.fails(changed, ErrConflict)
	// The escrow counts against capacity like an allocation.
	r.ok(SubmitJob{Job: job("j1", 40, 0)})
	r.fails(PlaceJob{JobID: "j1", NodeID: "n1"}, ErrOvercommit)
	// Conversion into the buyer's allocation keeps the capacity used.
	conv := ConvertEscrow{AuctionID: "auc1", ItemID: "it1", JobID: "remote-job", JobRegion: "us-east-1", Epoch: 4}
	c := r.at(30 * time.Second).ok(conv)
	a, _ := r.l.Allocation(c.ID)
	if !a.Live() || a.JobRegion != "us-east-1" || a.Epoch != 4 || a.AuctionID != "auc1" || a.Resources != hold.Resources {
		t.Fatalf("converted allocation = %+v", a)
	}
	if again := r.ok(conv); !again.Existing || again.ID != c.ID {
		t.Fatalf("repeat conversion = %+v", again)
	}
	if len(r.l.Escrows()) != 0 || r.node("n1").Used != hold.Resources {
		t.Fatalf("escrows %v, used %+v", r.l.Escrows(), r.node("n1").Used)
	}
	// Converting a second item for the same remote job is a double allocation.
	hold2 := hold
	hold2.ItemID, hold2.Resources = "it2", res(10, 0, 0, 0)
	r.ok(hold2)
	conv2 := conv
	conv2.ItemID = "it2"
	r.fails(conv2, ErrDoubleAllocation)
	// Release is idempotent.
	if rel := r.ok(ReleaseEscrow{AuctionID: "auc1", ItemID: "it2"}); rel.Existing {
		t.Fatalf("release = %+v", rel)
	}
	if rel := r.ok(ReleaseEscrow{AuctionID: "auc1", ItemID: "it2"}); !rel.Existing {
		t.Fatalf("second release = %+v", rel)
	}
	r.fails(conv2, ErrNotFound)
}

func TestEscrowsExpireByCommandTime(t *testing.T) {
	r := newRun(t)
	r.ok(gpuNode("n1"))
	h := r.ok(HoldEscrow{NodeID: "n1", Resources: res(50, 0, 0, 0), BuyerRegion: "us-east-1",
		AuctionID: "auc", ItemID: "i", Expiry: t0.Add(time.Minute)})
	if next, ok := r.l.NextExpiry(); !ok || !next.Equal(t0.Add(time.Minute)) {
		t.Fatalf("NextExpiry = %v %v", next, ok)
	}
	// Just before the expiry the escrow holds.
	if out := r.at(time.Minute - time.Nanosecond).ok(Expire{}); len(out.Expired) != 0 {
		t.Fatalf("expired early: %v", out.Expired)
	}
	// Any command at or after the expiry releases it first.
	r.ok(SubmitJob{Job: job("j1", 60, 0)})
	out := r.at(time.Minute).ok(PlaceJob{JobID: "j1", NodeID: "n1"})
	if len(out.Expired) != 1 || out.Expired[0] != h.ID {
		t.Fatalf("Expired = %v, want [%s]", out.Expired, h.ID)
	}
	if _, ok := r.l.Escrow(h.ID); ok {
		t.Fatal("escrow outlived its expiry")
	}
	// Conversion after expiry fails.
	r.fails(ConvertEscrow{AuctionID: "auc", ItemID: "i", JobID: "x", JobRegion: "us-east-1"}, ErrNotFound)
	// Time never goes back: a command stamped earlier runs at ledger time.
	r.at(0).ok(Expire{})
	if !r.l.Now().Equal(t0.Add(time.Minute)) {
		t.Fatalf("ledger time went back to %v", r.l.Now())
	}
}

func TestAllocationLeaseExpiry(t *testing.T) {
	r := newRun(t)
	r.ok(gpuNode("n1"))
	r.ok(SubmitJob{Job: job("j1", 60, 0)})
	p := r.ok(PlaceJob{JobID: "j1", NodeID: "n1", LeaseExpiry: t0.Add(time.Hour)})
	r.at(30 * time.Minute).ok(RenewAllocation{AllocID: p.ID, LeaseExpiry: t0.Add(2 * time.Hour)})
	if out := r.at(90 * time.Minute).ok(Expire{}); len(out.Expired) != 0 {
		t.Fatalf("renewed lease expired: %v", out.Expired)
	}
	out := r.at(2 * time.Hour).ok(Expire{})
	if len(out.Expired) != 1 {
		t.Fatalf("Expired = %v", out.Expired)
	}
	a, _ := r.l.Allocation(p.ID)
	if a.Live() || a.StopReason != StopExpired {
		t.Fatalf("allocation = %+v", a)
	}
	if j := r.job("j1"); j.State != JobPending || j.AllocID != "" {
		t.Fatalf("job = %+v", j)
	}
	r.fails(RenewAllocation{AllocID: p.ID, LeaseExpiry: t0.Add(3 * time.Hour)}, ErrInvalidTransition)
}

func TestTradeLifecycle(t *testing.T) {
	r := newRun(t)
	r.ok(SubmitJob{Job: job("j1", 60, 0)})
	b := r.ok(BumpEpoch{JobID: "j1", Reason: "auction auc1"})
	if b.Epoch != 1 {
		t.Fatalf("bump = %+v", b)
	}
	award := RecordAward{AuctionID: "auc1", ItemID: "i1", JobID: "j1", SellerRegion: "us-east-1",
		Resources: res(60, 10, 1, 0), PricePerHour: 3, Epoch: 0}
	r.fails(award, ErrStaleEpoch)
	award.Epoch = 1
	r.ok(award)
	if again := r.ok(award); !again.Existing {
		t.Fatalf("repeat award = %+v", again)
	}
	j := r.job("j1")
	if j.State != JobTraded || j.Remote == nil || j.Remote.Region != "us-east-1" || j.Attempts != 1 {
		t.Fatalf("job = %+v", j)
	}
	// A traded job cannot also be placed locally or bumped.
	r.ok(gpuNode("n1"))
	r.fails(PlaceJob{JobID: "j1", NodeID: "n1"}, ErrDoubleAllocation)
	r.fails(BumpEpoch{JobID: "j1"}, ErrInvalidTransition)
	r.fails(RecordAward{AuctionID: "auc1", ItemID: "i2", JobID: "j1", SellerRegion: "ap-south-1", Epoch: 1}, ErrDoubleAllocation)
	r.ok(SetTradeState{AuctionID: "auc1", ItemID: "i1", State: TradeInDoubt, Reason: "no ack"})
	r.fails(SetTradeState{AuctionID: "auc1", ItemID: "i1", State: TradeAwarded}, ErrInvalidTransition)
	r.ok(SetTradeState{AuctionID: "auc1", ItemID: "i1", State: TradeCancelled, Reason: "seller lost it"})
	j = r.job("j1")
	if j.State != JobPending || j.Remote != nil || !strings.Contains(j.Reason, "seller lost it") {
		t.Fatalf("job after cancel = %+v", j)
	}
	r.fails(SetTradeState{AuctionID: "auc1", ItemID: "i1", State: TradeAcked}, ErrInvalidTransition)
	// Now it may be placed locally, under a new epoch.
	if p := r.ok(PlaceJob{JobID: "j1", NodeID: "n1"}); p.Epoch != 2 {
		t.Fatalf("place after trade = %+v", p)
	}
}

func TestLeasesAndRemoveNode(t *testing.T) {
	r := newRun(t)
	l := Lease{ID: "L1", Direction: LeaseBought, PeerRegion: "us-east-1", Resources: res(10, 0, 0, 0),
		Start: t0, End: t0.Add(time.Hour), PricePerHour: 2}
	r.ok(AddLease{Lease: l})
	if again := r.at(time.Minute).ok(AddLease{Lease: l}); !again.Existing {
		t.Fatalf("repeat lease = %+v", again)
	}
	l.PricePerHour = 3
	r.fails(AddLease{Lease: l}, ErrConflict)
	r.ok(RemoveLease{ID: "L1"})
	if again := r.ok(RemoveLease{ID: "L1"}); !again.Existing {
		t.Fatalf("repeat remove = %+v", again)
	}
	r.ok(gpuNode("n1"))
	r.ok(SubmitJob{Job: job("j1", 10, 0)})
	p := r.ok(PlaceJob{JobID: "j1", NodeID: "n1"})
	r.fails(RemoveNode{ID: "n1"}, ErrConflict)
	r.fails(UpdateNode{ID: "n1", Total: res(5, 1000, 10, 4), PricePerHour: 12, GPUType: "h100"}, ErrOvercommit)
	r.ok(StopAllocation{AllocID: p.ID, Reason: StopCancelled})
	r.ok(RemoveNode{ID: "n1"})
	if again := r.ok(RemoveNode{ID: "n1"}); !again.Existing {
		t.Fatalf("repeat remove = %+v", again)
	}
}

func TestPruneDeletesOnlyOldHistory(t *testing.T) {
	r := newRun(t)
	r.ok(gpuNode("n1"))
	r.ok(SubmitJob{Job: job("done", 10, 0)})
	r.ok(SubmitJob{Job: job("live", 10, 0)})
	p := r.ok(PlaceJob{JobID: "done", NodeID: "n1"})
	r.ok(PlaceJob{JobID: "live", NodeID: "n1"})
	r.ok(StopAllocation{AllocID: p.ID, Reason: StopCompleted})
	r.ok(AddLease{Lease: Lease{ID: "old", Direction: LeaseSold, PeerRegion: "us-east-1", Start: t0, End: t0.Add(time.Hour)}})
	out := r.at(48 * time.Hour).ok(Prune{Before: t0.Add(24 * time.Hour)})
	if out.Pruned != 3 { // the completed job, its allocation, the ended lease
		t.Fatalf("pruned %d, want 3", out.Pruned)
	}
	if _, ok := r.l.Job("done"); ok {
		t.Fatal("completed job survived")
	}
	if j := r.job("live"); j.State != JobPlaced {
		t.Fatalf("live job = %+v", j)
	}
	// The pruned ID may be submitted again as a new job.
	if s := r.ok(SubmitJob{Job: job("done", 10, 0)}); s.Existing {
		t.Fatalf("resubmission after prune = %+v", s)
	}
}

func TestUnknownCommandsAreCleanErrors(t *testing.T) {
	l := NewLedger("r")
	_, out := l.ApplyEnvelope(Envelope{Version: CommandVersion, Kind: 200, Now: t0})
	if !errors.Is(out.Err, ErrUnsupported) {
		t.Fatalf("unknown kind: %v", out.Err)
	}
	_, out = l.ApplyEnvelope(Envelope{Version: 9, Kind: KindExpire, Now: t0})
	if !errors.Is(out.Err, ErrUnsupported) {
		t.Fatalf("unknown version: %v", out.Err)
	}
	_, out = l.ApplyEnvelope(Envelope{Version: CommandVersion, Kind: KindPlaceJob, Body: []byte{0xc1}})
	if !errors.Is(out.Err, ErrMalformed) {
		t.Fatalf("bad body: %v", out.Err)
	}
	_, out = l.Apply(t0, nil)
	if !errors.Is(out.Err, ErrInvalid) {
		t.Fatalf("nil command: %v", out.Err)
	}
}

func TestCommandRoundTrip(t *testing.T) {
	cmds := []Command{
		gpuNode("n1"),
		SubmitJob{Job: placement.Job{ID: "j", OriginRegion: "x", Demand: res(1, 2, 3, 4), LatencySLO: time.Second, Priority: 3}},
		PlaceJob{JobID: "j", NodeID: "n", Epoch: 7, LeaseExpiry: t0},
		HoldEscrow{NodeID: "n", Resources: res(1, 0, 0, 0), BuyerRegion: "b", AuctionID: "a", ItemID: "i", Expiry: t0},
		AddLease{Lease: Lease{ID: "l", Direction: LeaseSold, PeerRegion: "p", Start: t0, End: t0.Add(time.Hour)}},
		Expire{},
		Prune{Before: t0},
	}
	for _, c := range cmds {
		env, err := EncodeCommand(c)
		if err != nil {
			t.Fatalf("encode %s: %v", c.Kind(), err)
		}
		env.Now = t0
		data, err := encodeEntry([]Envelope{env})
		if err != nil {
			t.Fatal(err)
		}
		envs, err := decodeEntry(data)
		if err != nil || len(envs) != 1 || !envs[0].Now.Equal(t0) {
			t.Fatalf("decode entry of %s: %v %v", c.Kind(), envs, err)
		}
		back, err := DecodeCommand(envs[0])
		if err != nil {
			t.Fatalf("decode %s: %v", c.Kind(), err)
		}
		if !commandsEqual(back, c) {
			t.Errorf("%s round trip: got %+v, want %+v", c.Kind(), back, c)
		}
	}
}

// commandsEqual compares commands with time fields compared as instants.
func commandsEqual(a, b Command) bool {
	ea, _ := EncodeCommand(a)
	eb, _ := EncodeCommand(b)
	return ea.Kind == eb.Kind && string(ea.Body) == string(eb.Body)
}

// TestLedgerVersionsAreSafeToShare applies commands to one published
// version from several goroutines, and reads it, while the state machine
// goes on writing (run with -race).
func TestLedgerVersionsAreSafeToShare(t *testing.T) {
	f := NewFSM("eu-west-1")
	var index uint64
	entry := func(cmds ...Command) *raft.Log {
		envs := make([]Envelope, len(cmds))
		for i, c := range cmds {
			envs[i], _ = EncodeCommand(c)
			envs[i].Now = t0
		}
		data, err := encodeEntry(envs)
		if err != nil {
			t.Fatal(err)
		}
		index++
		return &raft.Log{Index: index, Type: raft.LogCommand, Data: data}
	}
	f.Apply(entry(RegisterNode{ID: "n1", Total: res(1e6, 1e6, 1e6, 0), PricePerHour: 1}))
	shared := f.Ledger()
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 {
				id := fmt.Sprintf("g%d-%d", g, i)
				next, r := shared.Apply(t0, SubmitJob{Job: job(id, 1, 0)})
				if r.Err != nil {
					t.Error(r.Err)
					return
				}
				if _, ok := next.Job(id); !ok || len(shared.Jobs()) != 0 {
					t.Error("a version changed under a reader")
					return
				}
			}
		}()
	}
	for i := range 200 {
		f.Apply(entry(SubmitJob{Job: job(fmt.Sprintf("fsm-%d", i), 1, 0)}))
		if i%10 == 0 {
			_ = f.Ledger().Counts()
		}
	}
	wg.Wait()
	if n := f.Ledger().Counts().Jobs; n != 200 {
		t.Fatalf("FSM holds %d jobs, want 200", n)
	}
}

// TestSubmitJobCreatedAcrossRetries: a repeat of a submission (same
// Submission token) reports Created, so a retry whose first attempt
// committed still tells its caller it created the job; another submission,
// or one without a token, finds the job.
func TestSubmitJobCreatedAcrossRetries(t *testing.T) {
	r := newRun(t)
	first := r.ok(SubmitJob{Job: job("j1", 10, 1), Submission: "s-1"})
	if !first.Created || first.Existing {
		t.Fatalf("first = %+v, want Created", first)
	}
	if retry := r.ok(SubmitJob{Job: job("j1", 10, 1), Submission: "s-1"}); !retry.Created || !retry.Existing {
		t.Fatalf("retry of the same submission = %+v, want Created and Existing", retry)
	}
	for _, other := range []string{"s-2", ""} {
		if got := r.ok(SubmitJob{Job: job("j1", 10, 1), Submission: other}); got.Created || !got.Existing {
			t.Fatalf("submission %q = %+v, want Existing only", other, got)
		}
	}
	r.fails(SubmitJob{Job: job("j2", 10, 1), Submission: "bad\x00token"}, ErrInvalid)
}
