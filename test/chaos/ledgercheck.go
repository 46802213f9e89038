package chaos

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/meridian-mesh/meridian/consensus"
	"github.com/meridian-mesh/meridian/placement"
)

// Snapshot is one server's replica of its region's ledger at one virtual
// instant: the parts the checkers read.
type Snapshot struct {
	// At is the virtual time the snapshot was taken.
	At     time.Time `json:"at"`
	Server string    `json:"server"`
	Region string    `json:"region"`
	// LeaderSince is when this server became its region's leader, as far
	// as the snapshots saw it; zero when it is not the leader.
	LeaderSince time.Time `json:"leader_since,omitzero"`
	// Index and Now are the ledger's last applied log index and its time
	// (the latest command time).
	Index uint64           `json:"index"`
	Now   time.Time        `json:"now"`
	Nodes []consensus.Node `json:"nodes"`
	// Live are the live allocations (the region's own jobs' and those it
	// sold to other regions).
	Live    []consensus.Allocation `json:"live"`
	Escrows []consensus.Escrow     `json:"escrows"`
	// Jobs are the jobs the region owns; only final snapshots carry them.
	Jobs []consensus.Job `json:"jobs,omitempty"`
	// Unreported are the allocations this region sold that ended and whose
	// end the buyer has not acknowledged yet; only final snapshots carry
	// them.
	Unreported []consensus.Allocation `json:"unreported,omitempty"`
}

// TakeSnapshot reads a ledger replica. A final snapshot (final = true)
// adds the jobs table and takes the live allocations by scanning every
// allocation record rather than through the ledger's index of live ones,
// so that the final checks do not trust the index they check.
func TakeSnapshot(at time.Time, server string, leaderSince time.Time, l *consensus.Ledger, final bool) Snapshot {
	s := Snapshot{
		At: at, Server: server, Region: l.Region(), LeaderSince: leaderSince,
		Index: l.Index(), Now: l.Now(), Nodes: l.Nodes(), Escrows: l.Escrows(),
	}
	if !final {
		s.Live = l.LiveAllocations()
		return s
	}
	for _, a := range l.Allocations() {
		if a.Live() {
			s.Live = append(s.Live, a)
		}
	}
	s.Jobs = l.Jobs()
	s.Unreported = l.UnreportedSold()
	return s
}

// Violation is one broken invariant, with the evidence.
type Violation struct {
	// Check names the checker: overcommit, accounting, escrow-leak,
	// lost, duplicated, stale-allocation, replicas-disagree.
	Check string `json:"check"`
	// At is the virtual time of the snapshot that shows it.
	At     time.Time `json:"at"`
	Server string    `json:"server,omitempty"`
	Region string    `json:"region,omitempty"`
	// Subject is the node, escrow or job at fault.
	Subject string `json:"subject"`
	// Detail is the evidence, for a human.
	Detail string `json:"detail"`
}

// String renders the violation on one line.
func (v Violation) String() string {
	where := v.Region
	if v.Server != "" {
		where = v.Server
	}
	return fmt.Sprintf("%s: %s %s at %s: %s", v.Check, where, v.Subject, v.At.Format("15:04:05.000"), v.Detail)
}

func fmtRes(r placement.Resources) string {
	return fmt.Sprintf("{compute %g, storage %g, bandwidth %g, gpus %d}", r.ComputePerHour, r.StorageGB, r.BandwidthGBps, r.GPUs)
}

// CheckOvercommit checks checker 1 on one snapshot: on every node, the
// live allocations plus the escrows the replica holds fit the node's
// capacity. The sum is recomputed from the records, not taken from the
// node's Used (which is checked against it separately, as "accounting"),
// so a ledger that miscounts cannot hide an overcommit. Jobs drawn on a
// lease this region sold count against the lease, which must hold them, and
// the lease against its node, as the ledger counts them. Capacity held on a
// node the ledger does not know is a violation too.
func CheckOvercommit(s Snapshot) []Violation {
	var out []Violation
	held := map[string]placement.Resources{}
	what := map[string][]string{}
	drawn := map[string]placement.Resources{} // lease allocation → its draws
	for _, a := range s.Live {
		if a.InLease != "" {
			// A job drawn on a lease this region sold uses the lease's
			// capacity, which its node already counts.
			drawn[a.InLease] = drawn[a.InLease].Add(a.Resources)
			continue
		}
		held[a.NodeID] = held[a.NodeID].Add(a.Resources)
		what[a.NodeID] = append(what[a.NodeID], fmt.Sprintf("alloc %s (%s %s/%s) %s", a.ID, a.Kind, a.JobRegion, a.JobID, fmtRes(a.Resources)))
	}
	for _, e := range s.Escrows {
		held[e.NodeID] = held[e.NodeID].Add(e.Resources)
		what[e.NodeID] = append(what[e.NodeID], fmt.Sprintf("escrow %s (for %s) %s", e.ID, e.BuyerRegion, fmtRes(e.Resources)))
	}
	leases := map[string]consensus.Allocation{}
	for _, a := range s.Live {
		if a.Kind == consensus.ItemLease {
			leases[a.ID] = a
		}
	}
	var drawnOn []string
	for id := range drawn {
		drawnOn = append(drawnOn, id)
	}
	slices.Sort(drawnOn)
	for _, id := range drawnOn {
		l, ok := leases[id]
		switch {
		case !ok:
			out = append(out, Violation{Check: "overcommit", At: s.At, Server: s.Server, Region: s.Region, Subject: "lease " + id,
				Detail: fmt.Sprintf("draws of %s hold capacity on a lease that is not live", fmtRes(drawn[id]))})
		case !drawn[id].FitsIn(l.Resources):
			out = append(out, Violation{Check: "overcommit", At: s.At, Server: s.Server, Region: s.Region, Subject: "lease " + id,
				Detail: fmt.Sprintf("draws hold %s of the lease's %s", fmtRes(drawn[id]), fmtRes(l.Resources))})
		}
	}
	known := map[string]bool{}
	for _, n := range s.Nodes {
		known[n.ID] = true
		sum := held[n.ID]
		if !sum.FitsIn(n.Total) {
			out = append(out, Violation{Check: "overcommit", At: s.At, Server: s.Server, Region: s.Region, Subject: "node " + n.ID,
				Detail: fmt.Sprintf("holds %s of capacity %s: %s", fmtRes(sum), fmtRes(n.Total), strings.Join(what[n.ID], ", "))})
		}
		if !n.Used.FitsIn(n.Total) {
			out = append(out, Violation{Check: "overcommit", At: s.At, Server: s.Server, Region: s.Region, Subject: "node " + n.ID,
				Detail: fmt.Sprintf("records Used %s above capacity %s", fmtRes(n.Used), fmtRes(n.Total))})
		}
		if !approxEqual(n.Used, sum) {
			out = append(out, Violation{Check: "accounting", At: s.At, Server: s.Server, Region: s.Region, Subject: "node " + n.ID,
				Detail: fmt.Sprintf("records Used %s but holds %s", fmtRes(n.Used), fmtRes(sum))})
		}
	}
	var unknown []string
	for id := range held {
		if !known[id] {
			unknown = append(unknown, id)
		}
	}
	slices.Sort(unknown)
	for _, id := range unknown {
		out = append(out, Violation{Check: "overcommit", At: s.At, Server: s.Server, Region: s.Region, Subject: "node " + id,
			Detail: "capacity held on a node the ledger does not know: " + strings.Join(what[id], ", ")})
	}
	return out
}

// approxEqual compares resources with the relative tolerance the ledger
// itself allows for floating-point drift in Used.
func approxEqual(a, b placement.Resources) bool {
	near := func(x, y float64) bool {
		d, m := x-y, max(1, abs(x), abs(y))
		return abs(d) <= 1e-6*m
	}
	return a.GPUs == b.GPUs && near(a.ComputePerHour, b.ComputePerHour) &&
		near(a.StorageGB, b.StorageGB) && near(a.BandwidthGBps, b.BandwidthGBps)
}

func abs(x float64) float64 {
	if x < 0 {
		return -x
	}
	return x
}

// CheckEscrows checks checker 3 on one snapshot. Two rules:
//
//   - in any replica, an escrow is never past its expiry by the ledger's
//     own time (Now, the latest command time): the ledger releases expired
//     escrows before it applies anything, so such a record is a bug;
//   - a replica that has led its region for at least grace holds no escrow
//     that expired more than grace ago. Only a leader can commit the
//     Expire command, and it checks every ExpireInterval (1 s), so grace
//     is that interval plus slack for the commit and for the snapshot
//     interval. A region without a leader cannot expire anything, and is
//     not held to the second rule until it has one (the final check, after
//     settling, holds every replica to it).
func CheckEscrows(s Snapshot, grace time.Duration) []Violation {
	var out []Violation
	leaderLongEnough := !s.LeaderSince.IsZero() && s.At.Sub(s.LeaderSince) >= grace
	for _, e := range s.Escrows {
		switch {
		case !s.Now.IsZero() && !e.Expiry.After(s.Now):
			out = append(out, Violation{Check: "escrow-leak", At: s.At, Server: s.Server, Region: s.Region, Subject: "escrow " + e.ID,
				Detail: fmt.Sprintf("expired at %s, before the ledger's own time %s (for %s, auction %s item %s)",
					e.Expiry.Format("15:04:05.000"), s.Now.Format("15:04:05.000"), e.BuyerRegion, e.AuctionID, e.ItemID)})
		case leaderLongEnough && s.At.Sub(e.Expiry) > grace:
			out = append(out, Violation{Check: "escrow-leak", At: s.At, Server: s.Server, Region: s.Region, Subject: "escrow " + e.ID,
				Detail: fmt.Sprintf("expired at %s, %v before this snapshot of a leader of %v (for %s, auction %s item %s, on %s)",
					e.Expiry.Format("15:04:05.000"), s.At.Sub(e.Expiry).Round(time.Millisecond), s.At.Sub(s.LeaderSince).Round(time.Millisecond),
					e.BuyerRegion, e.AuctionID, e.ItemID, e.NodeID)})
		}
	}
	return out
}

// CheckFinalEscrows holds every replica of a final snapshot, taken after
// the mesh healed and settled, to the escrow expiry: none may hold an
// escrow that expired more than grace before the snapshot.
func CheckFinalEscrows(final []Snapshot, grace time.Duration) []Violation {
	var out []Violation
	for _, s := range final {
		for _, e := range s.Escrows {
			if s.At.Sub(e.Expiry) > grace {
				out = append(out, Violation{Check: "escrow-leak", At: s.At, Server: s.Server, Region: s.Region, Subject: "escrow " + e.ID,
					Detail: fmt.Sprintf("expired at %s, %v before the final snapshot (for %s, auction %s item %s)",
						e.Expiry.Format("15:04:05.000"), s.At.Sub(e.Expiry).Round(time.Millisecond), e.BuyerRegion, e.AuctionID, e.ItemID)})
			}
		}
	}
	return out
}

// JobsVerdict is the outcome of checker 2.
type JobsVerdict struct {
	// Lost are acknowledged jobs missing from their home ledger, or whose
	// home ledger names a placement no ledger holds.
	Lost []string `json:"lost,omitempty"`
	// Duplicated are jobs with two or more live allocations across all
	// ledgers, or owned by two regions' ledgers.
	Duplicated []string `json:"duplicated,omitempty"`
	// Stale are jobs with a live allocation their home ledger does not
	// name (and no second one: those are Duplicated).
	Stale []string `json:"stale,omitempty"`
	// Violations carry the evidence, and replicas that disagree.
	Violations []Violation `json:"violations,omitempty"`
}

// CheckJobs checks checker 2 on the final snapshots, taken after heal and
// settle: every acknowledged job (acked: job → home region) exists in its
// home region's ledger, in one state that every replica agrees on, and has
// at most one live allocation across all regions' ledgers — the one its
// home ledger names, at the job's current epoch: a local allocation for a
// placed or running job, the seller's allocation of the named auction
// item for a traded one, none for a pending or ended one.
//
// Each region is judged by its reference replica (the leader's, else the
// one with the highest index); the other replicas must agree with it on
// every job's state and epoch when they have applied the same index, and
// a replica behind it is reported as such.
func CheckJobs(final []Snapshot, acked map[string]string) JobsVerdict {
	var v JobsVerdict
	ref := map[string]Snapshot{}
	for _, s := range final {
		cur, ok := ref[s.Region]
		if !ok || (!s.LeaderSince.IsZero() && cur.LeaderSince.IsZero()) ||
			(s.LeaderSince.IsZero() == cur.LeaderSince.IsZero() && s.Index > cur.Index) {
			ref[s.Region] = s
		}
	}
	regions := make([]string, 0, len(ref))
	for r := range ref {
		regions = append(regions, r)
	}
	slices.Sort(regions)

	// Replicas agree with the reference.
	for _, s := range final {
		r := ref[s.Region]
		if s.Server == r.Server {
			continue
		}
		if s.Index != r.Index {
			v.Violations = append(v.Violations, Violation{Check: "replicas-disagree", At: s.At, Server: s.Server, Region: s.Region,
				Subject: "index", Detail: fmt.Sprintf("replica at index %d, %s at %d after settling", s.Index, r.Server, r.Index)})
			continue
		}
		theirs := map[string]consensus.Job{}
		for _, j := range s.Jobs {
			theirs[j.ID] = j
		}
		for _, j := range r.Jobs {
			o, ok := theirs[j.ID]
			if !ok || o.State != j.State || o.Epoch != j.Epoch || o.AllocID != j.AllocID {
				v.Violations = append(v.Violations, Violation{Check: "replicas-disagree", At: s.At, Server: s.Server, Region: s.Region,
					Subject: "job " + j.ID, Detail: fmt.Sprintf("%s says %s e%d alloc %q, %s says %s e%d alloc %q (present %v) at the same index %d",
						r.Server, j.State, j.Epoch, j.AllocID, s.Server, o.State, o.Epoch, o.AllocID, ok, s.Index)})
			}
		}
		if len(theirs) != len(r.Jobs) {
			v.Violations = append(v.Violations, Violation{Check: "replicas-disagree", At: s.At, Server: s.Server, Region: s.Region,
				Subject: "jobs", Detail: fmt.Sprintf("%d jobs, %s has %d, at the same index %d", len(theirs), r.Server, len(r.Jobs), s.Index)})
		}
	}

	type jobKey struct{ region, id string }
	owners := map[string][]string{} // job → regions owning it
	jobs := map[jobKey]consensus.Job{}
	live := map[jobKey][]liveAlloc{}
	for _, region := range regions {
		s := ref[region]
		for _, j := range s.Jobs {
			owners[j.ID] = append(owners[j.ID], region)
			jobs[jobKey{region, j.ID}] = j
		}
		for _, a := range s.Live {
			if a.Kind == consensus.ItemLease {
				continue // capacity sold as a lease, not a job
			}
			k := jobKey{a.JobRegion, a.JobID}
			live[k] = append(live[k], liveAlloc{region: region, a: a})
		}
	}
	lost, dup, stale := map[string]bool{}, map[string]bool{}, map[string]bool{}
	at := func(region string) time.Time { return ref[region].At }
	bad := func(set map[string]bool, check, region, job, format string, args ...any) {
		set[job] = true
		v.Violations = append(v.Violations, Violation{Check: check, At: at(region), Region: region, Subject: "job " + job, Detail: fmt.Sprintf(format, args...)})
	}

	ackedIDs := make([]string, 0, len(acked))
	for id := range acked {
		ackedIDs = append(ackedIDs, id)
	}
	slices.Sort(ackedIDs)
	for _, id := range ackedIDs {
		home := acked[id]
		if _, ok := ref[home]; !ok {
			bad(lost, "lost", home, id, "acknowledged, but no replica of its home region %s was there to ask", home)
			continue
		}
		if _, ok := jobs[jobKey{home, id}]; !ok {
			bad(lost, "lost", home, id, "acknowledged, but missing from its home region %s's ledger (index %d)", home, ref[home].Index)
		}
	}
	ownedIDs := make([]string, 0, len(owners))
	for id := range owners {
		ownedIDs = append(ownedIDs, id)
	}
	slices.Sort(ownedIDs)
	for _, id := range ownedIDs {
		if rs := owners[id]; len(rs) > 1 {
			bad(dup, "duplicated", rs[0], id, "owned by the ledgers of %v", rs)
		}
	}

	// Every job a ledger owns: its live allocations against what it names.
	keys := make([]jobKey, 0, len(jobs))
	for k := range jobs {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b jobKey) int { return strings.Compare(a.region+"/"+a.id, b.region+"/"+b.id) })
	for _, k := range keys {
		j := jobs[k]
		ls := live[k]
		delete(live, k)
		if len(ls) > 1 {
			bad(dup, "duplicated", k.region, k.id, "%s e%d has %d live allocations: %s", j.State, j.Epoch, len(ls), describeLive(ls))
			continue
		}
		holds := j.State == consensus.JobPlaced || j.State == consensus.JobTraded || j.State == consensus.JobRunning
		switch {
		case !holds:
			// Pending or ended: nothing may run for it. (An ended job keeps
			// Remote as the record of where it ran.)
			if len(ls) > 0 {
				bad(stale, "stale-allocation", k.region, k.id, "%s e%d holds no placement, but has %s", j.State, j.Epoch, describeLive(ls))
			}
		case j.AllocID != "" && j.Remote != nil:
			bad(stale, "stale-allocation", k.region, k.id, "%s names both local allocation %s and a trade in %s", j.State, j.AllocID, j.Remote.Region)
		case j.AllocID != "":
			if len(ls) == 0 {
				bad(lost, "lost", k.region, k.id, "%s e%d names allocation %s, which is not live", j.State, j.Epoch, j.AllocID)
				continue
			}
			a := ls[0]
			if a.region != k.region || a.a.ID != j.AllocID || a.a.Epoch != j.Epoch {
				bad(stale, "stale-allocation", k.region, k.id, "%s e%d names allocation %s, but the live one is %s", j.State, j.Epoch, j.AllocID, describeLive(ls))
			}
		case j.Remote != nil:
			if len(ls) == 0 && reporting(ref[j.Remote.Region], j.Remote.AuctionID, j.Remote.ItemID) {
				// The seller ended it and is telling the buyer: the
				// snapshots caught the report in flight (jobs keep
				// finishing while the final reads run).
				continue
			}
			if len(ls) == 0 {
				bad(lost, "lost", k.region, k.id, "%s e%d names auction %s item %s in %s, where nothing of it is live",
					j.State, j.Epoch, j.Remote.AuctionID, j.Remote.ItemID, j.Remote.Region)
				continue
			}
			a := ls[0]
			if a.region != j.Remote.Region || a.a.AuctionID != j.Remote.AuctionID || a.a.ItemID != j.Remote.ItemID || a.a.Epoch != j.Epoch {
				bad(stale, "stale-allocation", k.region, k.id, "%s e%d names auction %s item %s in %s, but the live one is %s",
					j.State, j.Epoch, j.Remote.AuctionID, j.Remote.ItemID, j.Remote.Region, describeLive(ls))
			}
		default:
			bad(lost, "lost", k.region, k.id, "%s e%d names no placement at all", j.State, j.Epoch)
		}
	}
	// Live allocations of jobs no ledger owns.
	orphans := make([]jobKey, 0, len(live))
	for k := range live {
		orphans = append(orphans, k)
	}
	slices.SortFunc(orphans, func(a, b jobKey) int { return strings.Compare(a.region+"/"+a.id, b.region+"/"+b.id) })
	for _, k := range orphans {
		ls := live[k]
		region := ls[0].region
		if len(ls) > 1 {
			bad(dup, "duplicated", region, k.id, "job of %s, which its ledger does not own, has %d live allocations: %s", k.region, len(ls), describeLive(ls))
		} else {
			bad(stale, "stale-allocation", region, k.id, "job of %s, which its ledger does not own, has %s", k.region, describeLive(ls))
		}
	}
	for id := range dup {
		delete(stale, id)
	}
	v.Lost, v.Duplicated, v.Stale = sortedKeys(lost), sortedKeys(dup), sortedKeys(stale)
	return v
}

type liveAlloc struct {
	region string
	a      consensus.Allocation
}

func describeLive(ls []liveAlloc) string {
	parts := make([]string, len(ls))
	for i, l := range ls {
		p := fmt.Sprintf("%s:%s on %s e%d", l.region, l.a.ID, l.a.NodeID, l.a.Epoch)
		if l.a.AuctionID != "" {
			p += fmt.Sprintf(" (auction %s item %s)", l.a.AuctionID, l.a.ItemID)
		}
		parts[i] = p
	}
	return strings.Join(parts, ", ")
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// reporting reports whether the seller's final snapshot shows the
// allocation of an auction item ended and its end not yet acknowledged by
// the buyer: the seller's market keeps reporting it until it is.
func reporting(seller Snapshot, auctionID, itemID string) bool {
	for _, a := range seller.Unreported {
		if a.AuctionID == auctionID && a.ItemID == itemID {
			return true
		}
	}
	return false
}
