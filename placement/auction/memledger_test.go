package auction

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/meridian-mesh/meridian/placement"
)

// memLedger is an honest in-memory region ledger for tests: it applies the
// market's operations exactly as the LedgerOp docs say (capacity checks,
// expiry judged at op.Now, epochs, idempotence) and checks after every
// operation that no node is overcommitted. It plays both roles, buyer and
// seller, like a real region ledger.
type memLedger struct {
	mu     sync.Mutex
	region string
	nodes  map[string]placement.Node // Total, price and GPU type; Free is derived

	escrows   map[TradeRef]*EscrowRecord
	allocs    map[TradeRef]*memAlloc
	tombs     map[TradeRef]TradeStatus
	allocUsed map[string]placement.Resources // node → live allocations (outside leases)
	escrowsOn map[string]map[TradeRef]*EscrowRecord
	leaseRefs map[TradeRef]bool // allocations that are leases

	jobs   map[string]uint64 // job → current placement epoch
	trades map[TradeRef]*AwardRecord
	leases map[TradeRef]*LeaseRecord

	// commitDelay models a Raft commit in Propose (virtual time under
	// synctest).
	commitDelay time.Duration
	// unavailable makes Propose fail as a whole, like a lost quorum.
	unavailable error
	applied     int
	violations  []string
}

type memAlloc struct {
	rec       EscrowRecord // Node, Resources, Kind, JobID, Duration
	epoch     uint64
	price     float64
	start     time.Time
	cancelled bool
	inLease   *TradeRef           // a draw inside a lease: uses the lease's capacity, not the node's
	leaseUsed placement.Resources // for a lease allocation: what draws use
}

func newMemLedger(region string, nodes ...placement.Node) *memLedger {
	l := &memLedger{
		region: region, nodes: make(map[string]placement.Node),
		escrows: make(map[TradeRef]*EscrowRecord), allocs: make(map[TradeRef]*memAlloc),
		tombs: make(map[TradeRef]TradeStatus), jobs: make(map[string]uint64),
		allocUsed: make(map[string]placement.Resources), leaseRefs: make(map[TradeRef]bool),
		escrowsOn: make(map[string]map[TradeRef]*EscrowRecord),
		trades:    make(map[TradeRef]*AwardRecord), leases: make(map[TradeRef]*LeaseRecord),
	}
	for _, n := range nodes {
		n.Region = region
		l.nodes[n.ID] = n
	}
	return l
}

func testNode(id string, compute, price float64) placement.Node {
	r := placement.Resources{ComputePerHour: compute, StorageGB: 1000, BandwidthGBps: 10}
	return placement.Node{ID: id, Total: r, Free: r, PricePerHour: price}
}

// addJob registers a job of the home region at epoch.
func (l *memLedger) addJob(id string, epoch uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.jobs[id] = epoch
}

func (l *memLedger) epoch(job string) uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.jobs[job]
}

// Propose implements Ledger.
func (l *memLedger) Propose(ctx context.Context, ops []LedgerOp) ([]OpResult, error) {
	if l.commitDelay > 0 {
		t := time.NewTimer(l.commitDelay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		}
	}
	return l.apply(ops)
}

// Inventory implements Ledger.
func (l *memLedger) Inventory(now time.Time) ([]placement.Node, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.inventoryLocked(now), nil
}

// MarketSnapshot implements Ledger.
func (l *memLedger) MarketSnapshot() (MarketSnapshot, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var s MarketSnapshot
	for _, ref := range sortedRefs(l.trades) {
		if tr := l.trades[ref]; tr.State == TradeAwarded || tr.State == TradeAbandoned {
			s.Trades = append(s.Trades, *tr)
		}
	}
	for _, ref := range sortedRefs(l.escrows) {
		s.Escrows = append(s.Escrows, *l.escrows[ref])
	}
	for _, ref := range sortedRefs(l.leases) {
		s.Leases = append(s.Leases, *l.leases[ref])
	}
	return s, nil
}

func (l *memLedger) apply(ops []LedgerOp) ([]OpResult, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.unavailable != nil {
		return nil, l.unavailable
	}
	res := make([]OpResult, len(ops))
	for i, op := range ops {
		res[i] = l.applyOne(op)
		l.applied++
		// Only holds and local placements add to a node's use.
		if op.Kind == OpHoldEscrow && op.Escrow != nil {
			l.checkNodeLocked(op.Escrow.Node, op.Now)
		}
	}
	return res, nil
}

func (l *memLedger) inventoryLocked(now time.Time) []placement.Node {
	used := l.usedLocked(now)
	ids := sortedKeys(l.nodes)
	out := make([]placement.Node, 0, len(ids))
	for _, id := range ids {
		n := l.nodes[id]
		n.Free = n.Total.Sub(used[id])
		if n.Free.ComputePerHour < 0 {
			n.Free.ComputePerHour = 0
		}
		out = append(out, n)
	}
	return out
}

// usedLocked sums, per node, live allocations and escrows that have not
// expired at now.
func (l *memLedger) usedLocked(now time.Time) map[string]placement.Resources {
	used := make(map[string]placement.Resources, len(l.allocUsed))
	for n, r := range l.allocUsed {
		used[n] = r
	}
	for _, e := range l.escrows {
		if e.Expiry.After(now) {
			used[e.Node] = used[e.Node].Add(e.Resources)
		}
	}
	return used
}

func (l *memLedger) checkNodeLocked(id string, now time.Time) {
	if u := l.usedOnLocked(id, now); !u.FitsIn(l.nodes[id].Total) {
		l.violations = append(l.violations, fmt.Sprintf("%s: node %q overcommitted at %s: %+v > %+v", l.region, id, now.Format(time.RFC3339Nano), u, l.nodes[id].Total))
	}
}

// usedOnLocked is what node id has allocated or escrowed (unexpired at now).
func (l *memLedger) usedOnLocked(id string, now time.Time) placement.Resources {
	u := l.allocUsed[id]
	for _, e := range l.escrowsOn[id] {
		if e.Expiry.After(now) {
			u = u.Add(e.Resources)
		}
	}
	return u
}

// putEscrow and dropEscrow keep the per-node escrow index in step.
func (l *memLedger) putEscrow(e *EscrowRecord) {
	l.escrows[e.Trade] = e
	m := l.escrowsOn[e.Node]
	if m == nil {
		m = make(map[TradeRef]*EscrowRecord)
		l.escrowsOn[e.Node] = m
	}
	m[e.Trade] = e
}

func (l *memLedger) dropEscrow(ref TradeRef) {
	if e, ok := l.escrows[ref]; ok {
		delete(l.escrowsOn[e.Node], ref)
		delete(l.escrows, ref)
	}
}

func (l *memLedger) statusLocked(ref TradeRef, now time.Time) OpResult {
	if a, ok := l.allocs[ref]; ok {
		if a.cancelled {
			return OpResult{Status: StatusCancelled, Epoch: a.epoch}
		}
		return OpResult{Status: StatusAllocated, Epoch: a.epoch}
	}
	if e, ok := l.escrows[ref]; ok {
		if e.Expiry.After(now) {
			return OpResult{Status: StatusHeld}
		}
		return OpResult{Status: StatusReleased}
	}
	if st, ok := l.tombs[ref]; ok {
		return OpResult{Status: st}
	}
	return OpResult{Status: StatusUnknown}
}

func (l *memLedger) applyOne(op LedgerOp) OpResult {
	ref := op.Trade
	switch op.Kind {
	case OpHoldEscrow:
		e := op.Escrow
		if e == nil || e.Trade != ref {
			return OpResult{Err: fmt.Errorf("hold %s: escrow record missing or for another trade", ref)}
		}
		if _, ok := l.allocs[ref]; ok {
			return OpResult{Status: StatusAllocated}
		}
		if _, ok := l.escrows[ref]; ok {
			return OpResult{Status: StatusHeld}
		}
		if _, ok := l.tombs[ref]; ok {
			return OpResult{Err: fmt.Errorf("hold %s: %w", ref, ErrEscrowGone)}
		}
		n, ok := l.nodes[e.Node]
		if !ok {
			return OpResult{Err: fmt.Errorf("hold %s: node %q: %w", ref, e.Node, ErrInsufficientCapacity)}
		}
		if !e.Expiry.After(op.Now) {
			return OpResult{Err: fmt.Errorf("hold %s: expiry not after now: %w", ref, ErrEscrowGone)}
		}
		if !l.usedOnLocked(e.Node, op.Now).Add(e.Resources).FitsIn(n.Total) {
			return OpResult{Err: fmt.Errorf("hold %s on %s: %w", ref, e.Node, ErrInsufficientCapacity)}
		}
		cp := *e
		l.putEscrow(&cp)
		return OpResult{Status: StatusHeld}

	case OpConvertEscrow:
		if a, ok := l.allocs[ref]; ok {
			if a.cancelled {
				return OpResult{Err: fmt.Errorf("convert %s: cancelled: %w", ref, ErrEscrowGone), Status: StatusCancelled}
			}
			return OpResult{Status: StatusAllocated, Epoch: a.epoch}
		}
		e, ok := l.escrows[ref]
		if !ok || !e.Expiry.After(op.Now) {
			st := l.statusLocked(ref, op.Now).Status
			if ok {
				l.dropEscrow(ref)
				l.tombs[ref] = StatusReleased
				st = StatusReleased
			}
			return OpResult{Err: fmt.Errorf("convert %s: %w", ref, ErrEscrowGone), Status: st}
		}
		l.dropEscrow(ref)
		l.allocs[ref] = &memAlloc{rec: *e, epoch: op.Epoch, price: op.Price, start: op.Now}
		l.allocUsed[e.Node] = l.allocUsed[e.Node].Add(e.Resources)
		if e.Kind == ItemLease {
			l.leaseRefs[ref] = true
		}
		return OpResult{Status: StatusAllocated, Epoch: op.Epoch}

	case OpReleaseEscrow:
		if _, ok := l.escrows[ref]; ok {
			l.dropEscrow(ref)
			l.tombs[ref] = StatusReleased
		}
		return l.statusLocked(ref, op.Now)

	case OpCancelTrade:
		if a, ok := l.allocs[ref]; ok {
			if !a.cancelled && a.epoch == op.Epoch {
				a.cancelled = true
				if a.inLease != nil {
					if la := l.allocs[*a.inLease]; la != nil {
						la.leaseUsed = la.leaseUsed.Sub(a.rec.Resources)
					}
				} else {
					l.allocUsed[a.rec.Node] = l.allocUsed[a.rec.Node].Sub(a.rec.Resources)
				}
				delete(l.leaseRefs, ref)
			}
			return l.statusLocked(ref, op.Now)
		}
		if _, ok := l.escrows[ref]; ok {
			l.dropEscrow(ref)
			l.tombs[ref] = StatusReleased
		}
		return l.statusLocked(ref, op.Now)

	case OpDrawLease:
		if a, ok := l.allocs[ref]; ok {
			if a.cancelled {
				return OpResult{Err: fmt.Errorf("draw %s: cancelled: %w", ref, ErrEscrowGone), Status: StatusCancelled}
			}
			return OpResult{Status: StatusAllocated, Epoch: a.epoch}
		}
		if op.Lease == nil || op.Job == nil {
			return OpResult{Err: fmt.Errorf("draw %s: lease or job missing", ref)}
		}
		la, ok := l.allocs[*op.Lease]
		if !ok || la.cancelled || la.rec.Kind != ItemLease || op.Lease.Buyer != ref.Buyer ||
			!op.Now.Before(la.start.Add(la.rec.Duration)) {
			return OpResult{Err: fmt.Errorf("draw %s on lease %s: %w", ref, *op.Lease, ErrEscrowGone), Status: StatusUnknown}
		}
		if !la.leaseUsed.Add(op.Job.Demand).FitsIn(la.rec.Resources) {
			return OpResult{Err: fmt.Errorf("draw %s on lease %s: %w", ref, *op.Lease, ErrInsufficientCapacity), Status: StatusUnknown}
		}
		la.leaseUsed = la.leaseUsed.Add(op.Job.Demand)
		if !la.leaseUsed.FitsIn(la.rec.Resources) {
			l.violations = append(l.violations, fmt.Sprintf("%s: lease %s overcommitted", l.region, *op.Lease))
		}
		lease := *op.Lease
		l.allocs[ref] = &memAlloc{
			rec:   EscrowRecord{Trade: ref, Kind: ItemJob, JobID: op.Job.ID, Node: la.rec.Node, Resources: op.Job.Demand, Duration: op.Job.Duration},
			epoch: op.Epoch, price: op.Price, start: op.Now, inLease: &lease,
		}
		return OpResult{Status: StatusAllocated, Epoch: op.Epoch}

	case OpLookupTrade:
		return l.statusLocked(ref, op.Now)

	case OpRecordAward:
		aw := op.Award
		if aw == nil || aw.Trade != ref || ref.Buyer != l.region {
			return OpResult{Err: fmt.Errorf("record award %s: award missing, for another trade or another buyer", ref)}
		}
		if tr, ok := l.trades[ref]; ok {
			return OpResult{Epoch: tr.Epoch}
		}
		if aw.Kind == ItemJob {
			cur, ok := l.jobs[aw.JobID]
			if !ok || cur != aw.Epoch {
				return OpResult{Err: fmt.Errorf("record award %s: job %q at epoch %d, award for %d: %w", ref, aw.JobID, cur, aw.Epoch, ErrStaleEpoch), Epoch: cur}
			}
		}
		if aw.Lease != nil {
			lr, ok := l.leases[*aw.Lease]
			if !ok || !lr.Used.Add(aw.Resources).FitsIn(lr.Resources) {
				return OpResult{Err: fmt.Errorf("record award %s on lease %s: %w", ref, *aw.Lease, ErrInsufficientCapacity)}
			}
			lr.Used = lr.Used.Add(aw.Resources)
		}
		cp := *aw
		cp.State = TradeAwarded
		l.trades[ref] = &cp
		return OpResult{Epoch: aw.Epoch}

	case OpSetTradeState:
		tr, ok := l.trades[ref]
		if !ok {
			return OpResult{Err: fmt.Errorf("set state of %s: %w", ref, ErrUnknownTrade)}
		}
		cur := l.jobs[tr.JobID]
		if tr.State == op.State {
			return OpResult{Epoch: cur}
		}
		switch op.State {
		case TradeConfirmed:
			if tr.State != TradeAwarded || (tr.Kind == ItemJob && cur != tr.Epoch) {
				return OpResult{Err: fmt.Errorf("confirm %s (%s, epoch %d, job at %d): %w", ref, tr.State, tr.Epoch, cur, ErrStaleEpoch), Epoch: cur}
			}
			tr.State = TradeConfirmed
			if tr.Kind == ItemLease {
				l.leases[ref] = &LeaseRecord{Trade: ref, Seller: tr.Seller, Node: tr.Node, GPUType: tr.GPUType,
					Resources: tr.Resources, Price: tr.Price, End: tr.AwardedAt.Add(tr.Duration)}
			}
		case TradeFailed, TradeAbandoned:
			if tr.State != TradeAwarded && tr.State != TradeConfirmed {
				return OpResult{Err: fmt.Errorf("set %s to %s from %s: not allowed", ref, op.State, tr.State), Epoch: cur}
			}
			tr.State = op.State
			if tr.Kind == ItemJob && cur == tr.Epoch {
				l.jobs[tr.JobID] = cur + 1
			}
			if tr.Lease != nil {
				if lr := l.leases[*tr.Lease]; lr != nil {
					lr.Used = lr.Used.Sub(tr.Resources)
				}
			}
		case TradeSettled:
			if tr.State != TradeAbandoned && tr.State != TradeFailed {
				return OpResult{Err: fmt.Errorf("settle %s from %s: not allowed", ref, tr.State), Epoch: cur}
			}
			tr.State = TradeSettled
		default:
			return OpResult{Err: fmt.Errorf("set %s to %s: not allowed", ref, op.State)}
		}
		return OpResult{Epoch: l.jobs[tr.JobID]}
	}
	return OpResult{Err: fmt.Errorf("unknown op kind %d", op.Kind)}
}

// addLocalAllocation records a local placement (not from the market) of r
// on node: capacity the market no longer sees.
func (l *memLedger) addLocalAllocation(job, node string, r placement.Resources) {
	l.mu.Lock()
	defer l.mu.Unlock()
	ref := TradeRef{Buyer: l.region, Auction: "local", Item: job}
	l.allocs[ref] = &memAlloc{rec: EscrowRecord{Trade: ref, Kind: ItemJob, JobID: job, Node: node, Resources: r}, epoch: 1}
	l.allocUsed[node] = l.allocUsed[node].Add(r)
	l.checkNodeLocked(node, time.Time{})
}

// liveAllocations returns the trades allocated here and not cancelled, for
// buyer's job.
func (l *memLedger) liveAllocations(buyer, job string) []TradeRef {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []TradeRef
	for ref, a := range l.allocs {
		if ref.Buyer == buyer && a.rec.JobID == job && !a.cancelled {
			out = append(out, ref)
		}
	}
	slices.SortFunc(out, compareRefs)
	return out
}

// liveEscrows returns the escrows still held at now (not expired).
func (l *memLedger) liveEscrows(now time.Time) []TradeRef {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []TradeRef
	for ref, e := range l.escrows {
		if e.Expiry.After(now) {
			out = append(out, ref)
		}
	}
	sort.Slice(out, func(i, j int) bool { return compareRefs(out[i], out[j]) < 0 })
	return out
}

// escrowRecords returns every escrow record, expired or not.
func (l *memLedger) escrowRecords() []EscrowRecord {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []EscrowRecord
	for _, ref := range sortedRefs(l.escrows) {
		out = append(out, *l.escrows[ref])
	}
	return out
}

// confirmedTrade returns the buyer trade confirmed for job at its current
// epoch, if any.
func (l *memLedger) confirmedTrade(job string) (AwardRecord, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	cur := l.jobs[job]
	for _, ref := range sortedRefs(l.trades) {
		tr := l.trades[ref]
		if tr.JobID == job && tr.State == TradeConfirmed && tr.Epoch == cur {
			return *tr, true
		}
	}
	return AwardRecord{}, false
}

func (l *memLedger) trade(ref TradeRef) (AwardRecord, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	tr, ok := l.trades[ref]
	if !ok {
		return AwardRecord{}, false
	}
	return *tr, true
}

func (l *memLedger) setUnavailable(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.unavailable = err
}

func (l *memLedger) violationsList() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.violations)
}

var errNoQuorum = errors.New("no quorum")
