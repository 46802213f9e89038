package chaos

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/consensus"
	"github.com/meridian-mesh/meridian/placement"
)

var t0 = time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)

func res(c float64, g int) placement.Resources {
	return placement.Resources{ComputePerHour: c, StorageGB: 10 * c, BandwidthGBps: c / 10, GPUs: g}
}

// ledgerRun applies real commands to a real ledger.
type ledgerRun struct {
	t   *testing.T
	l   *consensus.Ledger
	now time.Time
}

func newLedgerRun(t *testing.T, region string) *ledgerRun {
	return &ledgerRun{t: t, l: consensus.NewLedger(region), now: t0}
}

func (r *ledgerRun) do(c consensus.Command) consensus.Result {
	r.t.Helper()
	var out consensus.Result
	r.now = r.now.Add(time.Second)
	r.l, out = r.l.Apply(r.now, c)
	if out.Err != nil {
		r.t.Fatalf("%s on %s: %v", c.Kind(), r.l.Region(), out.Err)
	}
	return out
}

const (
	buyer  = "eu-west-1"
	seller = "us-east-1"
)

// twoRegions builds a healthy pair of ledgers: the buyer places j1 at home
// and buys a node of the seller for j2; the seller holds one more escrow
// for an auction in flight (j3). Both snapshots are final ones.
func twoRegions(t *testing.T) (b, s Snapshot) {
	t.Helper()
	br, sr := newLedgerRun(t, buyer), newLedgerRun(t, seller)
	br.do(consensus.RegisterNode{ID: "b1", Total: res(100, 8), PricePerHour: 30})
	sr.do(consensus.RegisterNode{ID: "s1", Total: res(100, 8), PricePerHour: 20})
	job := func(id string, c float64) placement.Job {
		return placement.Job{ID: id, OriginRegion: buyer, Demand: res(c, 2), Priority: 50}
	}
	for _, j := range []placement.Job{job("j1", 50), job("j2", 40), job("j3", 40), job("j4", 10)} {
		br.do(consensus.SubmitJob{Job: j})
	}
	br.do(consensus.PlaceJob{JobID: "j1", NodeID: "b1"})
	e := br.do(consensus.BumpEpoch{JobID: "j2"}).Epoch
	sr.do(consensus.HoldEscrow{NodeID: "s1", Resources: res(40, 2), BuyerRegion: buyer, AuctionID: "au1", ItemID: "i1",
		Expiry: sr.now.Add(30 * time.Second), JobID: "j2"})
	br.do(consensus.RecordAward{AuctionID: "au1", ItemID: "i1", JobID: "j2", SellerRegion: seller, Resources: res(40, 2),
		PricePerHour: 22, Epoch: e, NodeID: "s1", AwardedAt: br.now})
	alloc := sr.do(consensus.ConvertEscrow{AuctionID: "au1", ItemID: "i1", JobID: "j2", JobRegion: buyer, Epoch: e})
	br.do(consensus.SetTradeState{AuctionID: "au1", ItemID: "i1", State: consensus.TradeAcked, SellerAllocID: alloc.ID})
	sr.do(consensus.HoldEscrow{NodeID: "s1", Resources: res(40, 2), BuyerRegion: buyer, AuctionID: "au2", ItemID: "i1",
		Expiry: sr.now.Add(30 * time.Second), JobID: "j3"})
	br.do(consensus.PlaceJob{JobID: "j4", NodeID: "b1"})
	br.do(consensus.SetJobState{JobID: "j4", State: consensus.JobCompleted})
	at := sr.now.Add(5 * time.Second)
	b, s = TakeSnapshot(at, buyer+"-0", t0, br.l, true), TakeSnapshot(at, seller+"-0", t0, sr.l, true)
	// Outside Raft the ledgers stay at index 0; give them the indexes a
	// replica would have.
	b.Index, s.Index = 100, 50
	return b, s
}

var acked = map[string]string{"j1": buyer, "j2": buyer, "j3": buyer, "j4": buyer}

func checks(vs []Violation) []string {
	var out []string
	for _, v := range vs {
		out = append(out, v.Check)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

func TestHealthyLedgersPass(t *testing.T) {
	b, s := twoRegions(t)
	for _, snap := range []Snapshot{b, s} {
		if vs := CheckOvercommit(snap); len(vs) > 0 {
			t.Errorf("CheckOvercommit(%s) = %v", snap.Region, vs)
		}
		if vs := CheckEscrows(snap, 10*time.Second); len(vs) > 0 {
			t.Errorf("CheckEscrows(%s) = %v", snap.Region, vs)
		}
	}
	if vs := CheckFinalEscrows([]Snapshot{b, s}, 10*time.Second); len(vs) > 0 {
		t.Errorf("CheckFinalEscrows = %v", vs)
	}
	v := CheckJobs([]Snapshot{b, s}, acked)
	if len(v.Violations) > 0 || len(v.Lost)+len(v.Duplicated)+len(v.Stale) > 0 {
		t.Errorf("CheckJobs = %+v", v)
	}
	// A second replica at the same index agrees.
	b2 := b
	b2.Server, b2.LeaderSince = buyer+"-1", time.Time{}
	if v := CheckJobs([]Snapshot{b2, b, s}, acked); len(v.Violations) > 0 {
		t.Errorf("CheckJobs with two agreeing replicas = %+v", v)
	}
	// A traded job that completed keeps naming where it ran, and its
	// seller holds nothing for it any more.
	done, sold := b, s
	done.Jobs = slices.Clone(b.Jobs)
	for i := range done.Jobs {
		if done.Jobs[i].ID == "j2" {
			done.Jobs[i].State = consensus.JobCompleted
		}
	}
	sold.Live = nil
	if v := CheckJobs([]Snapshot{done, sold}, acked); len(v.Violations) > 0 {
		t.Errorf("CheckJobs with a completed traded job = %+v", v)
	}
	// ... but if the seller still runs it, that allocation is stale.
	if v := CheckJobs([]Snapshot{done, s}, acked); !slices.Equal(v.Stale, []string{"j2"}) {
		t.Errorf("completed traded job still running at the seller: %+v", v)
	}
	// A periodic (non-final) snapshot of the same ledgers passes too.
	if len(b.Live) != 1 || len(s.Live) != 1 || len(s.Escrows) != 1 || len(b.Jobs) != 4 {
		t.Fatalf("fixture: buyer live %d jobs %d, seller live %d escrows %d", len(b.Live), len(b.Jobs), len(s.Live), len(s.Escrows))
	}
}

func TestCheckOvercommitCatches(t *testing.T) {
	b, s := twoRegions(t)
	extra := consensus.Allocation{ID: "a-x", JobID: "jx", JobRegion: buyer, NodeID: "b1", Resources: res(60, 2), State: consensus.AllocLive}

	over := b
	over.Live = append(slices.Clone(b.Live), extra) // 50 + 60 > 100
	if got := checks(CheckOvercommit(over)); !slices.Equal(got, []string{"accounting", "overcommit"}) {
		t.Errorf("allocation beyond capacity: %v; want overcommit (and accounting, Used was not updated)", got)
	}
	// Even with Used made to agree, the recomputed sum catches it.
	over.Nodes = slices.Clone(b.Nodes)
	over.Nodes[0].Used = over.Nodes[0].Used.Add(extra.Resources)
	vs := CheckOvercommit(over)
	if got := checks(vs); !slices.Equal(got, []string{"overcommit"}) || !strings.Contains(vs[0].Detail, "a-x") {
		t.Errorf("allocation beyond capacity with Used updated: %v", vs)
	}

	// An escrow that does not fit on top of the allocation.
	esc := s
	esc.Escrows = append(slices.Clone(s.Escrows), consensus.Escrow{ID: "e-x", NodeID: "s1", Resources: res(30, 1), BuyerRegion: buyer,
		AuctionID: "au9", ItemID: "i1", Expiry: s.At.Add(time.Minute)})
	esc.Nodes = slices.Clone(s.Nodes)
	esc.Nodes[0].Used = esc.Nodes[0].Used.Add(res(30, 1)) // 40 + 40 + 30 > 100
	if got := checks(CheckOvercommit(esc)); !slices.Equal(got, []string{"overcommit"}) {
		t.Errorf("escrow beyond capacity: %v", got)
	}

	// GPUs count on their own.
	gpu := b
	gpu.Live = append(slices.Clone(b.Live), consensus.Allocation{ID: "a-g", JobID: "jg", JobRegion: buyer, NodeID: "b1",
		Resources: placement.Resources{ComputePerHour: 1, GPUs: 7}, State: consensus.AllocLive})
	if got := checks(CheckOvercommit(gpu)); !slices.Contains(got, "overcommit") {
		t.Errorf("GPUs beyond capacity: %v", got)
	}

	// Capacity on a node the ledger does not know.
	ghost := b
	ghost.Live = append(slices.Clone(b.Live), consensus.Allocation{ID: "a-y", JobID: "jy", JobRegion: buyer, NodeID: "b9",
		Resources: res(1, 0), State: consensus.AllocLive})
	vs = CheckOvercommit(ghost)
	if len(vs) != 1 || vs[0].Subject != "node b9" {
		t.Errorf("allocation on an unknown node: %v", vs)
	}

	// Draws on a sold lease count against the lease, not the node.
	lease := consensus.Allocation{ID: "a-l", JobID: "lease1", JobRegion: buyer, NodeID: "s1", Resources: res(40, 2),
		State: consensus.AllocLive, Kind: consensus.ItemLease, AuctionID: "au5", ItemID: "i1"}
	draw := func(id string, c float64) consensus.Allocation {
		return consensus.Allocation{ID: id, JobID: "jd" + id, JobRegion: buyer, NodeID: "s1", Resources: res(c, 0),
			State: consensus.AllocLive, InLease: "a-l", AuctionID: "au6" + id, ItemID: "i1"}
	}
	leased := s
	leased.Escrows = nil
	leased.Nodes = slices.Clone(s.Nodes)
	leased.Nodes[0].Used = res(80, 4) // j2's 40 and the lease's 40
	leased.Live = append(slices.Clone(s.Live), lease, draw("d1", 20), draw("d2", 20))
	if vs := CheckOvercommit(leased); len(vs) > 0 {
		t.Errorf("draws within their lease: %v", vs)
	}
	leased.Live = append(leased.Live, draw("d3", 1))
	if vs := CheckOvercommit(leased); len(vs) != 1 || vs[0].Subject != "lease a-l" {
		t.Errorf("draws beyond their lease: %v", vs)
	}
}

func TestCheckEscrowsCatches(t *testing.T) {
	_, s := twoRegions(t)
	e := s.Escrows[0]
	grace := 10 * time.Second

	// By the ledger's own time: any replica, leader or not.
	stale := s
	stale.LeaderSince = time.Time{}
	stale.Now = e.Expiry.Add(time.Millisecond)
	if vs := CheckEscrows(stale, grace); len(vs) != 1 || vs[0].Check != "escrow-leak" {
		t.Errorf("escrow past the ledger's own time: %v", vs)
	}

	late := s
	late.At = e.Expiry.Add(grace + time.Second)
	late.LeaderSince = late.At.Add(-time.Minute)
	if vs := CheckEscrows(late, grace); len(vs) != 1 || !strings.Contains(vs[0].Detail, "leader") {
		t.Errorf("escrow held by a long-standing leader past expiry + grace: %v", vs)
	}
	within := late
	within.At = e.Expiry.Add(grace - time.Second)
	if vs := CheckEscrows(within, grace); len(vs) > 0 {
		t.Errorf("escrow within grace: %v", vs)
	}
	follower := late
	follower.LeaderSince = time.Time{}
	if vs := CheckEscrows(follower, grace); len(vs) > 0 {
		t.Errorf("escrow on a follower (which cannot expire it): %v", vs)
	}
	newLeader := late
	newLeader.LeaderSince = late.At.Add(-time.Second)
	if vs := CheckEscrows(newLeader, grace); len(vs) > 0 {
		t.Errorf("escrow on a leader of one second: %v", vs)
	}

	// After settling, every replica is held to it.
	if vs := CheckFinalEscrows([]Snapshot{follower}, grace); len(vs) != 1 {
		t.Errorf("final snapshot with a leaked escrow: %v", vs)
	}
	if vs := CheckFinalEscrows([]Snapshot{within}, grace); len(vs) > 0 {
		t.Errorf("final snapshot with an escrow within grace: %v", vs)
	}
}

func TestCheckJobsCatches(t *testing.T) {
	b, s := twoRegions(t)
	jobIndex := func(snap Snapshot, id string) int {
		return slices.IndexFunc(snap.Jobs, func(j consensus.Job) bool { return j.ID == id })
	}
	liveIndex := func(snap Snapshot, job string) int {
		return slices.IndexFunc(snap.Live, func(a consensus.Allocation) bool { return a.JobID == job })
	}
	cases := []struct {
		name       string
		mut        func(b, s *Snapshot) map[string]string
		lost, dup  []string
		stale      []string
		violations []string
	}{
		{"an acknowledged job is missing", func(b, s *Snapshot) map[string]string {
			b.Jobs = slices.Delete(slices.Clone(b.Jobs), jobIndex(*b, "j1"), jobIndex(*b, "j1")+1)
			b.Live = nil // its allocation would be an orphan otherwise
			return acked
		}, []string{"j1"}, nil, nil, []string{"lost"}},
		{"a job never heard of", func(b, s *Snapshot) map[string]string {
			m := map[string]string{"j9": buyer}
			for k, v := range acked {
				m[k] = v
			}
			return m
		}, []string{"j9"}, nil, nil, []string{"lost"}},
		{"a job runs in two regions", func(b, s *Snapshot) map[string]string {
			dup := b.Live[liveIndex(*b, "j1")]
			dup.ID, dup.NodeID = "a-99", "s1"
			s.Live = append(slices.Clone(s.Live), dup)
			return acked
		}, nil, []string{"j1"}, nil, []string{"duplicated"}},
		{"a job owned by two ledgers", func(b, s *Snapshot) map[string]string {
			s.Jobs = append(slices.Clone(s.Jobs), b.Jobs[jobIndex(*b, "j4")])
			return acked
		}, nil, []string{"j4"}, nil, []string{"duplicated"}},
		{"a traded job whose seller holds nothing", func(b, s *Snapshot) map[string]string {
			s.Live = nil
			return acked
		}, []string{"j2"}, nil, nil, []string{"lost"}},
		{"a traded job whose seller ended it and is reporting the end", func(b, s *Snapshot) map[string]string {
			ended := s.Live[0]
			ended.State = consensus.AllocStopped
			s.Unreported = []consensus.Allocation{ended}
			s.Live = nil
			return acked
		}, nil, nil, nil, nil},
		{"a traded job whose seller reports another item's end", func(b, s *Snapshot) map[string]string {
			ended := s.Live[0]
			ended.State, ended.ItemID = consensus.AllocStopped, "other"
			s.Unreported = []consensus.Allocation{ended}
			s.Live = nil
			return acked
		}, []string{"j2"}, nil, nil, []string{"lost"}},
		{"a placed job whose allocation is gone", func(b, s *Snapshot) map[string]string {
			b.Live = nil
			return acked
		}, []string{"j1"}, nil, nil, []string{"lost"}},
		{"an ended job still holds an allocation", func(b, s *Snapshot) map[string]string {
			b.Live = append(slices.Clone(b.Live), consensus.Allocation{ID: "a-77", JobID: "j4", JobRegion: buyer, NodeID: "b1",
				Epoch: 1, State: consensus.AllocLive})
			return acked
		}, nil, nil, []string{"j4"}, []string{"stale-allocation"}},
		{"a placed job's allocation is of an older epoch", func(b, s *Snapshot) map[string]string {
			b.Live = slices.Clone(b.Live)
			b.Live[0].Epoch--
			return acked
		}, nil, nil, []string{"j1"}, []string{"stale-allocation"}},
		{"the seller runs another auction's item for a traded job", func(b, s *Snapshot) map[string]string {
			s.Live = slices.Clone(s.Live)
			s.Live[0].AuctionID = "au0"
			return acked
		}, nil, nil, []string{"j2"}, []string{"stale-allocation"}},
		{"an allocation of a job no ledger owns", func(b, s *Snapshot) map[string]string {
			s.Live = append(slices.Clone(s.Live), consensus.Allocation{ID: "a-55", JobID: "ghost", JobRegion: buyer, NodeID: "s1",
				State: consensus.AllocLive, AuctionID: "au3", ItemID: "i1"})
			return acked
		}, nil, nil, []string{"ghost"}, []string{"stale-allocation"}},
	}
	for _, c := range cases {
		bb, ss := b, s
		a := c.mut(&bb, &ss)
		v := CheckJobs([]Snapshot{bb, ss}, a)
		if !slices.Equal(v.Lost, c.lost) || !slices.Equal(v.Duplicated, c.dup) || !slices.Equal(v.Stale, c.stale) {
			t.Errorf("%s: lost %v dup %v stale %v; want %v %v %v\n%v", c.name, v.Lost, v.Duplicated, v.Stale, c.lost, c.dup, c.stale, v.Violations)
		}
		if got := checks(v.Violations); !slices.Equal(got, c.violations) {
			t.Errorf("%s: violations %v; want %v", c.name, v.Violations, c.violations)
		}
	}
}

func TestCheckJobsReplicas(t *testing.T) {
	b, s := twoRegions(t)
	other := b
	other.Server, other.LeaderSince = buyer+"-1", time.Time{}
	other.Jobs = slices.Clone(b.Jobs)
	other.Jobs[0].State = consensus.JobFailed
	v := CheckJobs([]Snapshot{b, other, s}, acked)
	if got := checks(v.Violations); !slices.Equal(got, []string{"replicas-disagree"}) || !strings.Contains(v.Violations[0].Detail, "failed") {
		t.Errorf("replicas disagreeing at one index: %v", v.Violations)
	}
	behind := other
	behind.Jobs = b.Jobs
	behind.Index--
	v = CheckJobs([]Snapshot{behind, b, s}, acked)
	if got := checks(v.Violations); !slices.Equal(got, []string{"replicas-disagree"}) || v.Violations[0].Subject != "index" {
		t.Errorf("a replica behind: %v", v.Violations)
	}
	// Without a leader, the replica with the highest index is the reference.
	behind.LeaderSince, b.LeaderSince = time.Time{}, time.Time{}
	v = CheckJobs([]Snapshot{behind, b, s}, acked)
	if len(v.Violations) != 1 || v.Violations[0].Server != behind.Server {
		t.Errorf("reference without a leader: %v", v.Violations)
	}
	// No replica of the home region at all.
	v = CheckJobs([]Snapshot{s}, acked)
	if len(v.Lost) != len(acked) {
		t.Errorf("home region missing: lost %v", v.Lost)
	}
}
