package consensus

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/meridian-mesh/meridian/placement"
)

// Ledger is one immutable version of a region's ledger: its nodes,
// allocations, jobs, escrows, leases and trades, as of a log index.
//
// A *Ledger never changes. Apply returns a new version that shares all
// unchanged structure with the old one (the tables are copy-on-write
// B-trees), so taking a version for a stale read or a snapshot costs
// nothing, and readers need no lock.
//
// Ledger is pure: it does no I/O and never reads the clock. The time it
// runs on is the time carried by the commands, and it only moves forward.
type Ledger struct {
	region string
	// index is the Raft index of the last entry applied.
	index uint64
	// now is the ledger's time: the latest command time seen.
	now time.Time
	// seq numbers the allocations and escrows the ledger creates.
	seq uint64
	t   *tables
}

// itemRef is what a seller's ledger knows about an auction item: the
// escrow held for it, or the allocation it was converted into.
type itemRef struct {
	escrowID string
	allocID  string
}

// key joins the parts of a composite key with NUL, which IDs never contain.
func key(parts ...string) string {
	if len(parts) == 2 {
		return parts[0] + "\x00" + parts[1]
	}
	return strings.Join(parts, "\x00")
}

// liveKey is the key of another region's job in the live index: the job
// ID first, so that keys differ in their first bytes (the table compares
// those without following the key's pointer), then the region that owns
// the job. The region's own jobs are not in the index: their live
// allocation is their record's AllocID.
func liveKey(jobID, jobRegion string) string { return key(jobID, jobRegion) }

// expiryKey orders by time first: the sign bit is flipped so that the
// big-endian bytes of UnixNano sort as the signed numbers do.
func expiryKey(t time.Time, id string) string {
	b := make([]byte, 0, 9+len(id))
	b = binary.BigEndian.AppendUint64(b, uint64(t.UnixNano())^(1<<63))
	b = append(b, 0)
	return string(append(b, id...))
}

func parseExpiryKey(k string) (time.Time, string, bool) {
	if len(k) < 9 {
		return time.Time{}, "", false
	}
	ns := int64(binary.BigEndian.Uint64([]byte(k[:8])) ^ (1 << 63))
	return time.Unix(0, ns).UTC(), k[9:], true
}

// NewLedger returns the empty ledger of a region.
func NewLedger(region string) *Ledger {
	return &Ledger{region: region, t: newTables()}
}

// Region is the region the ledger belongs to.
func (l *Ledger) Region() string { return l.region }

// Index is the Raft log index of the last entry applied to this version.
func (l *Ledger) Index() uint64 { return l.index }

// Now is the ledger's time: the latest command time applied. Escrows and
// leases have been expired up to it.
func (l *Ledger) Now() time.Time { return l.now }

// withIndex returns the version with its log index set.
func (l *Ledger) withIndex(i uint64) *Ledger {
	if l.index == i {
		return l
	}
	c := *l
	c.index = i
	return &c
}

func values[V any](t table[V]) []V {
	out := make([]V, 0, t.len())
	t.each(func(_ string, v V) bool { out = append(out, v); return true })
	return out
}

func derefAll[T any](ps []*T) []T {
	out := make([]T, len(ps))
	for i, p := range ps {
		out[i] = *p
	}
	return out
}

// Node returns the node with the ID.
func (l *Ledger) Node(id string) (Node, bool) {
	n, ok := l.t.nodes.get(id)
	if !ok {
		return Node{}, false
	}
	return l.t.node(n), true
}

// node returns the node record n with its Used, which the tables keep
// apart.
func (ts *tables) node(n *Node) Node {
	c := *n
	c.Used, _ = ts.used.get(n.ID)
	return c
}

// Nodes returns every node, by ID.
func (l *Ledger) Nodes() []Node {
	out := make([]Node, 0, l.t.nodes.len())
	l.t.nodes.each(func(_ string, n *Node) bool { out = append(out, l.t.node(n)); return true })
	return out
}

// PlacementNodes returns the ready nodes as placement sees them, with
// their free capacity: the input of a placement decision.
func (l *Ledger) PlacementNodes() []placement.Node {
	var out []placement.Node
	l.t.nodes.each(func(_ string, n *Node) bool {
		if n.State == NodeReady {
			out = append(out, l.t.node(n).Placement())
		}
		return true
	})
	return out
}

// Allocation returns the allocation with the ID, live or stopped.
func (l *Ledger) Allocation(id string) (Allocation, bool) {
	a, ok := l.t.allocs.get(id)
	if !ok {
		return Allocation{}, false
	}
	return a.alloc(), true
}

// Allocations returns every allocation, live and stopped, by ID.
func (l *Ledger) Allocations() []Allocation {
	out := make([]Allocation, 0, l.t.allocs.len())
	l.t.allocs.each(func(_ string, a *allocRecord) bool { out = append(out, a.alloc()); return true })
	return out
}

// LiveAllocations returns the live allocations, by job ID (then, for a job
// ID that more than one region uses, this region's first, then the other
// regions by name).
func (l *Ledger) LiveAllocations() []Allocation {
	// The region's own jobs, in ID order, merged with the live index of
	// other regions' jobs, in job ID then region order.
	out := make([]Allocation, 0, l.t.ownLive+l.t.live.len())
	var others []Allocation
	l.t.live.each(func(_ string, id string) bool {
		if a, ok := l.t.allocs.get(id); ok {
			others = append(others, a.alloc())
		}
		return true
	})
	l.t.jobs.each(func(_ string, j *Job) bool {
		if j.AllocID == "" {
			return true
		}
		for len(others) > 0 && others[0].JobID < j.ID {
			out, others = append(out, others[0]), others[1:]
		}
		if a, ok := l.t.allocs.get(j.AllocID); ok {
			out = append(out, a.alloc())
		}
		return true
	})
	return append(out, others...)
}

// NodeAllocations returns the live allocations on a node.
func (l *Ledger) NodeAllocations(nodeID string) []Allocation {
	var out []Allocation
	p := key(nodeID, "")
	l.t.onNode.prefix(p, func(k string, _ struct{}) bool {
		if a, ok := l.t.allocs.get(k[len(p):]); ok {
			out = append(out, a.alloc())
		}
		return true
	})
	return out
}

// RunningJob returns the terms of the job live allocation a runs, for
// deciding whether it may be preempted and where else it could run: the
// region's own job as submitted, or for room sold to another region the
// buyer's terms that came with the escrow (demand: the allocation's
// resources). It reports false for a lease, a job drawn on one, or an own
// job whose current allocation a is not.
func (l *Ledger) RunningJob(a Allocation) (Job, bool) {
	if !a.Live() || a.Kind == ItemLease || a.InLease != "" {
		return Job{}, false
	}
	if a.Sold() {
		return Job{ID: a.JobID, Spec: placement.Job{
			ID: a.JobID, OriginRegion: cmp.Or(a.Origin, a.JobRegion), Demand: a.Resources,
			LatencySLO: a.LatencySLO, MaxPricePerHour: a.MaxPricePerHour, Priority: a.Priority,
		}}, true
	}
	j, ok := l.Job(a.JobID)
	if !ok || j.AllocID != a.ID {
		return Job{}, false
	}
	return j, true
}

// NodeEscrows returns the live escrows on a node.
func (l *Ledger) NodeEscrows(nodeID string) []Escrow {
	var out []Escrow
	p := key(nodeID, "")
	l.t.onNode.prefix(p, func(k string, _ struct{}) bool {
		if e, ok := l.t.escrows.get(k[len(p):]); ok {
			out = append(out, *e)
		}
		return true
	})
	return out
}

// JobAllocation returns the live allocation of a job; jobRegion is the
// region that owns the job (this ledger's region for its own jobs).
func (l *Ledger) JobAllocation(jobRegion, jobID string) (Allocation, bool) {
	return l.Allocation(liveAllocID(l.t, l.region, jobRegion, jobID))
}

// liveAllocID returns the ID of the live allocation that a job of
// jobRegion has in the ledger of region, or "" if it has none.
func liveAllocID(t *tables, region, jobRegion, jobID string) string {
	if jobRegion == region {
		if j, ok := t.jobs.get(jobID); ok {
			return j.AllocID
		}
		return ""
	}
	id, _ := t.live.get(liveKey(jobID, jobRegion))
	return id
}

// Job returns the job with the ID.
func (l *Ledger) Job(id string) (Job, bool) {
	j, ok := l.t.jobs.get(id)
	if !ok {
		return Job{}, false
	}
	return copyJob(j), true
}

// Jobs returns every job this region owns, by ID.
func (l *Ledger) Jobs() []Job {
	out := make([]Job, 0, l.t.jobs.len())
	l.t.jobs.each(func(_ string, j *Job) bool { out = append(out, copyJob(j)); return true })
	return out
}

// PendingJobs returns the jobs waiting for a placement, by ID. A leader
// looks for them on every placement pass; an index of them keeps a pass
// cheap however many finished jobs the ledger holds.
func (l *Ledger) PendingJobs() []Job {
	var out []Job
	l.t.pending.each(func(id string, _ struct{}) bool {
		if j, ok := l.t.jobs.get(id); ok {
			out = append(out, copyJob(j))
		}
		return true
	})
	return out
}

func copyJob(j *Job) Job {
	c := *j
	if j.Remote != nil {
		r := *j.Remote
		c.Remote = &r
	}
	return c
}

// Escrow returns the escrow with the ID.
func (l *Ledger) Escrow(id string) (Escrow, bool) {
	e, ok := l.t.escrows.get(id)
	if !ok {
		return Escrow{}, false
	}
	return *e, true
}

// EscrowForItem returns the live escrow held for an auction item.
func (l *Ledger) EscrowForItem(auctionID, itemID string) (Escrow, bool) {
	ref, ok := l.t.items.get(key(auctionID, itemID))
	if !ok || ref.escrowID == "" {
		return Escrow{}, false
	}
	return l.Escrow(ref.escrowID)
}

// ItemAllocation returns the allocation an auction item's escrow was
// converted into, live or stopped.
func (l *Ledger) ItemAllocation(auctionID, itemID string) (Allocation, bool) {
	ref, ok := l.t.items.get(key(auctionID, itemID))
	if !ok || ref.allocID == "" {
		return Allocation{}, false
	}
	return l.Allocation(ref.allocID)
}

// Escrows returns the live escrows, by ID.
func (l *Ledger) Escrows() []Escrow { return derefAll(values(l.t.escrows)) }

// Lease returns the lease with the ID.
func (l *Ledger) Lease(id string) (Lease, bool) {
	ls, ok := l.t.leases.get(id)
	if !ok {
		return Lease{}, false
	}
	return *ls, true
}

// Leases returns every lease, by ID.
func (l *Ledger) Leases() []Lease { return derefAll(values(l.t.leases)) }

// Trade returns the trade of an auction item.
func (l *Ledger) Trade(auctionID, itemID string) (Trade, bool) {
	t, ok := l.t.trades.get(key(auctionID, itemID))
	if !ok {
		return Trade{}, false
	}
	return *t, true
}

// Trades returns every trade, by auction and item.
func (l *Ledger) Trades() []Trade { return derefAll(values(l.t.trades)) }

// UnreportedSold returns the stopped allocations this region ran for other
// regions whose end the buyer has not yet acknowledged (MarkReported),
// except those the buyer cancelled itself, by ID. The seller's market
// reports them until they are acknowledged.
func (l *Ledger) UnreportedSold() []Allocation {
	var out []Allocation
	l.t.allocs.each(func(_ string, a *allocRecord) bool {
		if t := a.terms; t != nil && t.auctionID != "" && !a.live() && !t.reported && a.stopReason != StopCancelled {
			out = append(out, a.alloc())
		}
		return true
	})
	return out
}

// BoughtLease returns the lease this region bought in an auction item.
func (l *Ledger) BoughtLease(auctionID, itemID string) (Lease, bool) {
	var found Lease
	ok := false
	l.t.leases.each(func(_ string, ls *Lease) bool {
		if ls.Direction == LeaseBought && ls.AuctionID == auctionID && ls.ItemID == itemID {
			found, ok = *ls, true
			return false
		}
		return true
	})
	return found, ok
}

// NextExpiry returns the earliest escrow expiry or allocation lease expiry
// in the ledger, if there is one.
func (l *Ledger) NextExpiry() (time.Time, bool) {
	k, _, ok := l.t.expiry.first()
	if !ok {
		return time.Time{}, false
	}
	t, _, ok := parseExpiryKey(k)
	return t, ok
}

// Counts is the size of each table.
type Counts struct {
	Nodes, Jobs, Allocations, LiveAllocations, Escrows, Leases, Trades int
}

// Counts returns the size of each table, in constant time.
func (l *Ledger) Counts() Counts {
	return Counts{
		Nodes: l.t.nodes.len(), Jobs: l.t.jobs.len(), Allocations: l.t.allocs.len(),
		LiveAllocations: l.t.ownLive + l.t.live.len(), Escrows: l.t.escrows.len(), Leases: l.t.leases.len(),
		Trades: l.t.trades.len(),
	}
}

// State is a ledger written out in full, every table sorted by key: what a
// snapshot holds, and a form two ledgers can be compared in with
// reflect.DeepEqual.
type State struct {
	Region      string       `msgpack:"region"`
	Index       uint64       `msgpack:"index"`
	Now         time.Time    `msgpack:"now"`
	Seq         uint64       `msgpack:"seq"`
	Nodes       []Node       `msgpack:"nodes"`
	Allocations []Allocation `msgpack:"allocs"`
	Jobs        []Job        `msgpack:"jobs"`
	Escrows     []Escrow     `msgpack:"escrows"`
	Leases      []Lease      `msgpack:"leases"`
	Trades      []Trade      `msgpack:"trades"`
}

// Export writes the ledger out in full.
func (l *Ledger) Export() State {
	return State{
		Region: l.region, Index: l.index, Now: l.now, Seq: l.seq,
		Nodes: l.Nodes(), Allocations: l.Allocations(), Jobs: l.Jobs(),
		Escrows: l.Escrows(), Leases: l.Leases(), Trades: l.Trades(),
	}
}

// ledgerBuilder rebuilds a ledger record by record (from a snapshot or a
// State), recomputing every index, and checks that the records agree with
// each other before the ledger is used.
type ledgerBuilder struct {
	l *Ledger
}

func newLedgerBuilder(region string, index, seq uint64, now time.Time) *ledgerBuilder {
	return &ledgerBuilder{l: &Ledger{region: region, index: index, seq: seq, now: canon(now), t: newTables()}}
}

func insertNew[V any](t table[V], k string, v V, what, id string) error {
	if _, exists := t.set(k, v); exists {
		return fmt.Errorf("duplicate %s %q", what, id)
	}
	return nil
}

func (b *ledgerBuilder) addNode(n Node) error {
	if n.ID == "" || !n.State.valid() {
		return fmt.Errorf("node %q: empty ID or invalid state %d", n.ID, n.State)
	}
	used := n.Used
	n.Used = placement.Resources{}
	if err := insertNew(b.l.t.nodes, n.ID, &n, "node", n.ID); err != nil {
		return err
	}
	if !used.IsZero() {
		b.l.t.used.set(n.ID, used)
	}
	return nil
}

func (b *ledgerBuilder) addJob(j Job) error {
	if j.ID == "" || !j.State.valid() {
		return fmt.Errorf("job %q: empty ID or invalid state %d", j.ID, j.State)
	}
	if err := insertNew(b.l.t.jobs, j.ID, &j, "job", j.ID); err != nil {
		return err
	}
	if j.State == JobPending {
		b.l.t.pending.set(j.ID, struct{}{})
	}
	return nil
}

func (b *ledgerBuilder) addAlloc(a Allocation) error {
	t := b.l.t
	if a.ID == "" || (a.State != AllocLive && a.State != AllocStopped) {
		return fmt.Errorf("allocation %q: empty ID or invalid state %d", a.ID, a.State)
	}
	var onNodeKey string
	if a.Live() {
		// The ID as the tail of the index key, as nextIDOn makes them.
		onNodeKey = key(a.NodeID, a.ID)
		a.ID = onNodeKey[len(a.NodeID)+1:]
	}
	if err := insertNew(t.allocs, a.ID, packAlloc(&a), "allocation", a.ID); err != nil {
		return err
	}
	if a.AuctionID != "" {
		if err := insertNew(t.items, key(a.AuctionID, a.ItemID), itemRef{allocID: a.ID}, "auction item", a.AuctionID+"/"+a.ItemID); err != nil {
			return err
		}
	}
	if !a.Live() {
		return nil
	}
	if a.JobRegion == b.l.region {
		// finish checks that it is its job's AllocID, which no second
		// live allocation of the job can also be.
		t.ownLive++
	} else if err := insertNew(t.live, liveKey(a.JobID, a.JobRegion), a.ID, "live allocation of job", a.JobRegion+"/"+a.JobID); err != nil {
		return err
	}
	t.onNode.set(onNodeKey, struct{}{})
	if !a.LeaseExpiry.IsZero() {
		t.expiry.set(expiryKey(a.LeaseExpiry, a.ID), struct{}{})
	}
	return nil
}

func (b *ledgerBuilder) addEscrow(e Escrow) error {
	t := b.l.t
	if e.ID == "" || e.Expiry.IsZero() {
		return fmt.Errorf("escrow %q: empty ID or no expiry", e.ID)
	}
	onNodeKey := key(e.NodeID, e.ID)
	e.ID = onNodeKey[len(e.NodeID)+1:] // as nextIDOn makes them
	if err := insertNew(t.escrows, e.ID, &e, "escrow", e.ID); err != nil {
		return err
	}
	if err := insertNew(t.items, key(e.AuctionID, e.ItemID), itemRef{escrowID: e.ID}, "auction item", e.AuctionID+"/"+e.ItemID); err != nil {
		return err
	}
	t.onNode.set(onNodeKey, struct{}{})
	t.expiry.set(expiryKey(e.Expiry, e.ID), struct{}{})
	return nil
}

func (b *ledgerBuilder) addLease(ls Lease) error {
	if ls.ID == "" {
		return fmt.Errorf("lease with an empty ID")
	}
	return insertNew(b.l.t.leases, ls.ID, &ls, "lease", ls.ID)
}

func (b *ledgerBuilder) addTrade(tr Trade) error {
	tr.AwardedAt = canon(tr.AwardedAt)
	if tr.AuctionID == "" {
		return fmt.Errorf("trade with an empty auction ID")
	}
	return insertNew(b.l.t.trades, key(tr.AuctionID, tr.ItemID), &tr, "trade", tr.AuctionID+"/"+tr.ItemID)
}

// finish checks the cross references and returns the ledger.
func (b *ledgerBuilder) finish() (*Ledger, error) {
	t := b.l.t
	var errs []string
	// Everything that holds capacity must sit on a known node, and each
	// node's Used must agree with what it holds and fit its capacity.
	t.onNode.each(func(k string, _ struct{}) bool {
		nodeID, _, _ := strings.Cut(k, "\x00")
		if !t.nodes.has(nodeID) {
			errs = append(errs, fmt.Sprintf("capacity held on unknown node %q", nodeID))
			return false
		}
		return true
	})
	sums := map[string]placement.Resources{}
	drawn := map[string]placement.Resources{} // lease allocation → its live draws
	t.allocs.each(func(_ string, r *allocRecord) bool {
		if !r.live() {
			return true
		}
		a := r.alloc()
		if a.InLease != "" {
			// A draw uses its lease's capacity, which the node already
			// counts.
			drawn[a.InLease] = drawn[a.InLease].Add(a.Resources)
			if l, ok := t.allocs.get(a.InLease); !ok || !l.live() || l.kind() != ItemLease || l.nodeID != a.NodeID {
				errs = append(errs, fmt.Sprintf("live draw %q is not on a live lease %q of its node", a.ID, a.InLease))
			}
			return true
		}
		sums[a.NodeID] = sums[a.NodeID].Add(a.Resources)
		if !a.LeaseExpiry.IsZero() && !a.LeaseExpiry.After(b.l.now) {
			errs = append(errs, fmt.Sprintf("live allocation %q is past its lease", a.ID))
		}
		if a.JobRegion == b.l.region {
			if j, ok := t.jobs.get(a.JobID); !ok || j.AllocID != a.ID {
				errs = append(errs, fmt.Sprintf("live allocation %q is not the allocation of its job %q", a.ID, a.JobID))
			}
		}
		return true
	})
	t.allocs.each(func(_ string, r *allocRecord) bool {
		if r.live() && r.kind() == ItemLease {
			a := r.alloc()
			if !approxEqual(a.LeaseUsed, drawn[a.ID]) || !a.LeaseUsed.FitsIn(a.Resources) {
				errs = append(errs, fmt.Sprintf("lease %q records %s drawn of %s, its draws hold %s",
					a.ID, fmtRes(a.LeaseUsed), fmtRes(a.Resources), fmtRes(drawn[a.ID])))
			}
		}
		return true
	})
	t.escrows.each(func(_ string, e *Escrow) bool {
		sums[e.NodeID] = sums[e.NodeID].Add(e.Resources)
		if !e.Expiry.After(b.l.now) {
			errs = append(errs, fmt.Sprintf("escrow %q is past its expiry", e.ID))
		}
		return true
	})
	t.nodes.each(func(_ string, rec *Node) bool {
		n := t.node(rec)
		if !n.Used.FitsIn(n.Total) {
			errs = append(errs, fmt.Sprintf("node %q uses %s of %s", n.ID, fmtRes(n.Used), fmtRes(n.Total)))
		}
		// Used is stored as computed incrementally; a sum in another order
		// may differ in the last bits, never by more than this.
		if !approxEqual(n.Used, sums[n.ID]) {
			errs = append(errs, fmt.Sprintf("node %q records Used %s but holds %s", n.ID, fmtRes(n.Used), fmtRes(sums[n.ID])))
		}
		return true
	})
	t.jobs.each(func(_ string, j *Job) bool {
		if j.AllocID == "" {
			return true
		}
		if a, ok := t.allocs.get(j.AllocID); !ok || !a.live() || a.jobRegion != b.l.region || a.jobID != j.ID {
			errs = append(errs, fmt.Sprintf("job %q names live allocation %q that is not live", j.ID, j.AllocID))
		}
		if j.Remote != nil || j.State.Terminal() {
			errs = append(errs, fmt.Sprintf("job %q (%s) holds allocation %q", j.ID, j.State, j.AllocID))
		}
		return true
	})
	if len(errs) > 0 {
		if len(errs) > 10 {
			errs = append(errs[:10], fmt.Sprintf("and %d more", len(errs)-10))
		}
		return nil, fmt.Errorf("inconsistent ledger: %s", strings.Join(errs, "; "))
	}
	return b.l, nil
}

// Import rebuilds a ledger from its State, recomputing the indexes and
// checking that the records agree with each other.
func Import(s State) (*Ledger, error) {
	b := newLedgerBuilder(s.Region, s.Index, s.Seq, s.Now)
	for _, n := range s.Nodes {
		if err := b.addNode(n); err != nil {
			return nil, err
		}
	}
	for _, j := range s.Jobs {
		if err := b.addJob(copyJob(&j)); err != nil {
			return nil, err
		}
	}
	for _, a := range s.Allocations {
		if err := b.addAlloc(a); err != nil {
			return nil, err
		}
	}
	for _, e := range s.Escrows {
		if err := b.addEscrow(e); err != nil {
			return nil, err
		}
	}
	for _, ls := range s.Leases {
		if err := b.addLease(ls); err != nil {
			return nil, err
		}
	}
	for _, tr := range s.Trades {
		if err := b.addTrade(tr); err != nil {
			return nil, err
		}
	}
	return b.finish()
}

// fmtRes formats resources compactly for error messages.
func fmtRes(r placement.Resources) string {
	return fmt.Sprintf("{compute %g/h, storage %g GB, bandwidth %g GB/s, gpus %d}",
		r.ComputePerHour, r.StorageGB, r.BandwidthGBps, r.GPUs)
}

// approxEqual compares resources with a relative tolerance of 1e-6.
func approxEqual(a, b placement.Resources) bool {
	near := func(x, y float64) bool {
		return math.Abs(x-y) <= 1e-6*math.Max(1, math.Max(math.Abs(x), math.Abs(y)))
	}
	return a.GPUs == b.GPUs && near(a.ComputePerHour, b.ComputePerHour) &&
		near(a.StorageGB, b.StorageGB) && near(a.BandwidthGBps, b.BandwidthGBps)
}
