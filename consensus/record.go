package consensus

import (
	"time"

	"github.com/meridian-mesh/meridian/placement"
)

// The ledger stores its allocations in a compact form, and hands out
// Allocation values built from it. A region at its target rate holds
// hundreds of thousands of allocations, and the garbage collector traces
// every pointer in every one at each cycle: that marking, on the same cores
// as the Raft group, is what lengthened the tail of the commit latency (see
// docs/consensus.md, "Where the tail comes from"). An Allocation carries
// three time.Time values (a location pointer each) and the terms of market
// allocations, which the region's own allocations, nearly all of them,
// leave empty; allocRecord keeps its pointers together at the front (the
// collector scans an object only up to its last pointer), its times as
// seconds and nanoseconds, and the market terms behind one pointer that is
// nil for a local allocation.

// stamp is a time as the ledger stores it: the UTC instant, without the
// location pointer of a time.Time. Every time.Time round-trips, the zero
// time included, to its UTC form; the ledger's times are all UTC.
type stamp struct {
	sec  int64
	nsec int32
}

func stampOf(t time.Time) stamp { return stamp{sec: t.Unix(), nsec: int32(t.Nanosecond())} }

func (s stamp) time() time.Time { return time.Unix(s.sec, int64(s.nsec)).UTC() }

func (s stamp) before(u stamp) bool { return s.sec < u.sec || s.sec == u.sec && s.nsec < u.nsec }

// allocRecord is an Allocation as the allocations table holds it.
type allocRecord struct {
	id, jobID, jobRegion, nodeID string
	// terms is nil for an allocation whose market fields are all zero.
	terms *allocTerms

	res                         placement.Resources
	epoch                       uint64
	start, leaseExpiry, stopped stamp
	state                       AllocState
	stopReason                  StopReason
}

// allocTerms holds the fields of an Allocation that only allocations made
// through the market, or stopped with a message, set.
type allocTerms struct {
	stopMessage, auctionID, itemID, inLease, origin string
	task                                            *TaskSpec

	duration        time.Duration
	kind            ItemKind
	pricePerHour    float64
	leaseUsed       placement.Resources
	priority        int
	latencySLO      time.Duration
	maxPricePerHour float64
	reported        bool
}

func packAlloc(a *Allocation) *allocRecord {
	r := &allocRecord{
		id: a.ID, jobID: a.JobID, jobRegion: a.JobRegion, nodeID: a.NodeID,
		res: a.Resources, epoch: a.Epoch,
		start: stampOf(a.Start), leaseExpiry: stampOf(a.LeaseExpiry), stopped: stampOf(a.Stopped),
		state: a.State, stopReason: a.StopReason,
	}
	t := allocTerms{
		stopMessage: a.StopMessage, auctionID: a.AuctionID, itemID: a.ItemID, inLease: a.InLease, origin: a.Origin,
		task: a.Task, duration: a.Duration, kind: a.Kind, pricePerHour: a.PricePerHour, leaseUsed: a.LeaseUsed,
		priority: a.Priority, latencySLO: a.LatencySLO, maxPricePerHour: a.MaxPricePerHour, reported: a.Reported,
	}
	if t != (allocTerms{}) {
		c := t // so that t stays on the stack when there are no terms
		r.terms = &c
	}
	return r
}

// alloc returns the Allocation the record stores, as a value the caller
// owns.
func (r *allocRecord) alloc() Allocation {
	a := Allocation{
		ID: r.id, JobID: r.jobID, JobRegion: r.jobRegion, NodeID: r.nodeID,
		Resources: r.res, Epoch: r.epoch,
		Start: r.start.time(), LeaseExpiry: r.leaseExpiry.time(), Stopped: r.stopped.time(),
		State: r.state, StopReason: r.stopReason,
	}
	if t := r.terms; t != nil {
		a.StopMessage, a.AuctionID, a.ItemID, a.InLease, a.Origin = t.stopMessage, t.auctionID, t.itemID, t.inLease, t.origin
		a.Task, a.Duration, a.Kind, a.PricePerHour, a.LeaseUsed = t.task, t.duration, t.kind, t.pricePerHour, t.leaseUsed
		a.Priority, a.LatencySLO, a.MaxPricePerHour, a.Reported = t.priority, t.latencySLO, t.maxPricePerHour, t.reported
	}
	return a
}

// The few questions asked of every allocation in a scan are answered from
// the record, without building the Allocation.

func (r *allocRecord) live() bool { return r.state == AllocLive }

func (r *allocRecord) inLease() string {
	if r.terms == nil {
		return ""
	}
	return r.terms.inLease
}

func (r *allocRecord) kind() ItemKind {
	if r.terms == nil {
		return 0
	}
	return r.terms.kind
}
