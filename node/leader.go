package node

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/meridian-mesh/meridian/consensus"
	"github.com/meridian-mesh/meridian/gossip"
	"github.com/meridian-mesh/meridian/node/loop"
	"github.com/meridian-mesh/meridian/placement"
	"github.com/meridian-mesh/meridian/placement/auction"
)

// maxCommandsPerProposal keeps a batch of placements well inside one Raft
// entry (consensus caps an entry at 512 commands).
const maxCommandsPerProposal = 256

// leaderDuties is what the region's Raft leader does while it leads: keep
// the ledger's nodes in step with gossip (registering new nodes, marking
// failed ones down and freeing their allocations) and place pending jobs,
// locally or through the market. Every decision is committed in the ledger,
// so a new leader picks up exactly where the old one stopped.
func (a *Agent) leaderDuties(ctx context.Context) {
	// A new leader first applies everything earlier leaders committed;
	// deciding on a stale ledger could place a job twice.
	for backoff := 50 * time.Millisecond; ; backoff = min(2*backoff, 2*time.Second) {
		if _, err := a.server.ConsistentLedger(ctx); err == nil {
			break
		} else if ctx.Err() != nil {
			return
		} else {
			a.log.Debug("leader not ready for reads yet", "err", err)
		}
		if !sleepCtx(ctx, backoff) {
			return
		}
	}
	a.log.Info("leading region")
	var measuring sync.WaitGroup
	defer measuring.Wait()
	measuring.Add(1)
	go func() {
		defer measuring.Done()
		a.measureRegion(ctx)
	}()
	demand := a.startDemandLoop(time.Now())
	defer a.demand.Store(nil)
	place := time.NewTicker(a.cfg.Tuning.PlaceInterval)
	defer place.Stop()
	syncT := time.NewTicker(a.cfg.Tuning.SyncInterval)
	defer syncT.Stop()
	interval := 5 * time.Minute
	if demand != nil {
		interval = demand.c.Config().Interval
	}
	tick := time.NewTicker(interval)
	defer tick.Stop()
	a.syncNodes(ctx)
	a.placePending(ctx, demand)
	for {
		select {
		case <-ctx.Done():
			a.releaseWaiters()
			return
		case <-a.syncPoke:
			a.syncNodes(ctx)
		case <-syncT.C:
			a.syncNodes(ctx)
			demand.forget(a.server.Ledger())
		case <-a.placePoke:
			a.placePending(ctx, demand)
		case <-place.C:
			a.placePending(ctx, demand)
		case <-tick.C:
			demand.tick(ctx, a, time.Now())
		}
	}
}

// propose commits cmds in batches and returns the results in order. An
// error means the batch it names may or may not have been committed; the
// caller retries on its next pass, which the ledger makes safe (every
// command is checked against the state it finds).
func (a *Agent) propose(ctx context.Context, cmds []consensus.Command) ([]consensus.Result, error) {
	out := make([]consensus.Result, 0, len(cmds))
	for len(cmds) > 0 {
		n := min(len(cmds), maxCommandsPerProposal)
		res, err := a.server.Propose(ctx, cmds[:n]...)
		if err != nil {
			return out, err
		}
		out = append(out, res...)
		cmds = cmds[n:]
	}
	return out, nil
}

// memberGone reports whether gossip says a node is gone for good or
// failed. A node gossip has never heard of is not judged: a new leader may
// not have the whole view yet.
func memberGone(m gossip.Member, rec gossip.Record, hasRec bool) (gone bool, why string) {
	switch {
	case hasRec && rec.Leaving:
		return true, "node left the mesh"
	case m.State == gossip.StateLeft:
		return true, "node left the mesh"
	case m.State == gossip.StateFailed:
		return true, "gossip reports the node failed"
	}
	return false, ""
}

// syncNodes reconciles the ledger's nodes with gossip: nodes that publish
// capacity are registered and kept up to date; nodes gossip declares failed
// or gone are marked down and their live allocations stopped as lost, which
// puts their jobs back in the pending queue for placePending.
func (a *Agent) syncNodes(ctx context.Context) {
	l := a.server.Ledger()
	members := map[string]gossip.Member{}
	for _, m := range a.gossip.RegionMembers(a.cfg.Region) {
		members[m.Name] = m
	}
	records := map[string]gossip.Record{}
	for _, r := range a.gossip.RegionRecords(a.cfg.Region) {
		records[r.Node] = r
	}
	var cmds []consensus.Command
	var lost []consensus.Allocation
	names := make([]string, 0, len(records))
	for name := range records {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		r := records[name]
		if r.Total.IsZero() {
			continue
		}
		m, known := members[name]
		gone, _ := memberGone(m, r, true)
		alive := known && !gone && (m.State == gossip.StateAlive || m.State == gossip.StateSuspect)
		n, ok := l.Node(name)
		switch {
		case !ok && alive:
			cmds = append(cmds, consensus.RegisterNode{ID: name, Region: a.cfg.Region, Total: r.Total,
				PricePerHour: r.PricePerHour, GPUType: r.GPUType})
		case ok && alive:
			if n.Total != r.Total || n.PricePerHour != r.PricePerHour || n.GPUType != r.GPUType {
				cmds = append(cmds, consensus.UpdateNode{ID: name, Total: r.Total, PricePerHour: r.PricePerHour, GPUType: r.GPUType})
			}
			// A draining node comes back only on a record issued after
			// it drained: a new leader may still hold the record the
			// node published before it withdrew its capacity.
			back := n.State == consensus.NodeDown || n.State == consensus.NodeDraining && r.UpdatedAt.After(n.Updated)
			if back {
				cmds = append(cmds, consensus.SetNodeState{ID: name, State: consensus.NodeReady, Reason: "gossip reports the node alive"})
			}
		}
	}
	for _, n := range l.Nodes() {
		m, known := members[n.ID]
		rec, hasRec := records[n.ID]
		if !known && !hasRec {
			continue
		}
		gone, why := memberGone(m, rec, hasRec)
		// A node that withdraws its capacity (it is leaving, and hands its
		// work over first) drains: its allocations move elsewhere.
		draining := !gone && hasRec && rec.Total.IsZero()
		switch {
		case gone && n.State != consensus.NodeDown:
			a.log.Info("node down; re-placing its allocations", "node", n.ID, "why", why)
			cmds = append(cmds, consensus.SetNodeState{ID: n.ID, State: consensus.NodeDown, Reason: why})
		case draining && n.State == consensus.NodeReady:
			why = "node withdrew its capacity (leaving)"
			a.log.Info("node draining; re-placing its allocations", "node", n.ID)
			cmds = append(cmds, consensus.SetNodeState{ID: n.ID, State: consensus.NodeDraining, Reason: why})
		default:
			continue
		}
		for _, al := range l.NodeAllocations(n.ID) {
			if !al.Live() {
				continue
			}
			reason := consensus.StopLost
			if draining || hasRec && rec.Leaving {
				reason = consensus.StopReplaced
			}
			cmds = append(cmds, consensus.StopAllocation{AllocID: al.ID, Reason: reason, Message: why})
			lost = append(lost, al)
		}
	}
	if len(cmds) == 0 {
		return
	}
	res, err := a.propose(ctx, cmds)
	if err != nil {
		if ctx.Err() == nil {
			a.log.Warn("node sync not committed; retrying", "err", err)
		}
		return
	}
	for i, r := range res {
		if r.Err != nil {
			a.log.Warn("node sync command rejected", "cmd", cmds[i].Kind(), "err", r.Err)
		}
	}
	a.notifyRemoteStops(ctx, lost)
	poke(a.placePoke)
}

// notifyRemoteStops tells other regions that allocations this region ran
// for their jobs have ended.
func (a *Agent) notifyRemoteStops(ctx context.Context, allocs []consensus.Allocation) {
	if a.desk == nil {
		return
	}
	for _, al := range allocs {
		if al.JobRegion == a.cfg.Region {
			continue
		}
		if stopped, ok := a.server.Ledger().Allocation(al.ID); ok {
			al = stopped
		}
		if err := a.desk.RemoteStopped(ctx, al); err != nil && ctx.Err() == nil {
			a.log.Warn("could not tell the home region an allocation ended", "alloc", al.ID, "home", al.JobRegion, "err", err)
		}
	}
}

// placePending places the region's pending jobs: packed onto the ledger's
// ready nodes in one batch, committed in the ledger, and the rest offered
// to the market (or left pending with the reason). It runs on the leader's
// duty goroutine only, so two passes never race for the same capacity.
func (a *Agent) placePending(ctx context.Context, demand *demandLoop) {
	l := a.server.Ledger()
	pending := l.PendingJobs()
	a.metrics.pending.Set(float64(len(pending)))
	if len(pending) == 0 {
		a.releaseWaiters()
		return
	}
	var nodes []placement.Node
	price := map[string]float64{}
	for _, n := range l.Nodes() {
		if n.State == consensus.NodeReady {
			nodes = append(nodes, n.Placement())
			price[n.ID] = n.PricePerHour
		}
	}
	jobs := make([]placement.Job, 0, len(pending))
	byID := make(map[string]consensus.Job, len(pending))
	for _, j := range pending {
		byID[j.ID] = j
		if a.desk != nil && a.desk.Trading(j.ID) {
			continue // its auction decides; placing it here too would race it
		}
		jobs = append(jobs, j.Spec)
	}
	plan, err := a.place.Pack(jobs, nodes)
	if err != nil {
		// A ledger whose contents placement refuses is a bug; say so
		// loudly but keep the region running.
		a.log.Error("placement refused the ledger's jobs or nodes", "err", err)
		return
	}
	offload, offloadWhy := a.offloadFirst(ctx, plan, byID, price, nodes)
	if len(offload) > 0 {
		// Pack again without them: the room they took may fit others.
		jobs = slices.DeleteFunc(jobs, func(j placement.Job) bool { _, off := offload[j.ID]; return off })
		if plan, err = a.place.Pack(jobs, nodes); err != nil {
			a.log.Error("placement refused the ledger's jobs or nodes", "err", err)
			return
		}
	}
	cmds := make([]consensus.Command, 0, len(plan.Placements))
	for _, p := range plan.Placements {
		j := byID[p.JobID]
		cmds = append(cmds, consensus.PlaceJob{JobID: j.ID, NodeID: p.NodeID, Resources: j.Spec.Demand, Epoch: j.Epoch + 1})
	}
	reasons := map[string]string{}
	if len(cmds) > 0 {
		res, err := a.propose(ctx, cmds)
		if err != nil && ctx.Err() == nil {
			a.log.Warn("placements not committed; retrying", "err", err)
		}
		for i, r := range res {
			pj := cmds[i].(consensus.PlaceJob)
			if r.Err != nil {
				if !errors.Is(r.Err, consensus.ErrDoubleAllocation) {
					reasons[pj.JobID] = "placement on " + pj.NodeID + " rejected: " + r.Err.Error()
				}
				continue
			}
			a.metrics.placed.WithLabelValues("local").Inc()
		}
	}
	unplaced := make([]consensus.Job, len(plan.Unplaced))
	for i, u := range plan.Unplaced {
		unplaced[i] = byID[u.JobID]
	}
	preempted, urgent := a.preemptFor(ctx, unplaced, func(id string) bool {
		a.mu.Lock()
		defer a.mu.Unlock()
		_, seen := a.tradedAt[id]
		return seen
	})
	now := time.Now()
	var toTrade []consensus.Job
	for id, homePrice := range offload {
		j := byID[id]
		if homePrice > 0 {
			if c := j.Spec.MaxPricePerHour; c == 0 || homePrice < c {
				j.Spec.MaxPricePerHour = homePrice
			}
		}
		toTrade = append(toTrade, j)
		reasons[id] = offloadWhy[id]
		a.mu.Lock()
		a.tradedAt[id] = now
		a.mu.Unlock()
	}
	for _, u := range plan.Unplaced {
		if preempted[u.JobID] {
			continue
		}
		j := byID[u.JobID]
		reason := u.Reason()
		if a.desk != nil {
			a.mu.Lock()
			last, seen := a.tradedAt[j.ID]
			if !seen || now.Sub(last) >= a.cfg.Tuning.TradeRetry {
				a.tradedAt[j.ID] = now
				toTrade = append(toTrade, j)
			}
			a.mu.Unlock()
			reason = "no local node fits (" + reason + "); offered to other regions"
		}
		reasons[j.ID] = reason
	}
	a.mu.Lock()
	for id := range a.reasons {
		if _, still := byID[id]; !still {
			delete(a.reasons, id)
		}
	}
	for id := range a.tradedAt {
		if _, still := byID[id]; !still {
			delete(a.tradedAt, id)
		}
	}
	for id := range a.offered {
		if _, still := byID[id]; !still {
			delete(a.offered, id)
		}
	}
	for id, r := range reasons {
		a.reasons[id] = r
	}
	a.mu.Unlock()
	traded := map[string]bool{}
	for _, j := range toTrade {
		traded[j.ID] = true
	}
	placed := preempted
	if placed == nil {
		placed = map[string]bool{}
	}
	for _, p := range plan.Placements {
		if _, failed := reasons[p.JobID]; !failed {
			placed[p.JobID] = true
		}
	}
	demand.admit(a, pending, func(id string) loop.Outcome {
		switch {
		case placed[id]:
			return loop.OutcomeLocal
		case traded[id]:
			return loop.OutcomeTraded
		}
		return loop.OutcomeUnplaced
	})
	if len(toTrade) > 0 {
		slices.SortFunc(toTrade, func(x, y consensus.Job) int { return cmp.Compare(x.ID, y.ID) })
		// Jobs that cannot go elsewhere and that home could not make room
		// for: sellers may make room (TradeUrgent).
		var plain, other []consensus.Job
		for _, j := range toTrade {
			if urgent[j.ID] {
				other = append(other, j)
			} else {
				plain = append(plain, j)
			}
		}
		a.trade(ctx, plain, a.desk.Trade)
		a.trade(ctx, other, a.desk.TradeUrgent)
	}
	a.releaseWaiters()
}

// trade offers jobs to the market with offer (the desk's Trade or
// TradeUrgent), logging what the market refused.
func (a *Agent) trade(ctx context.Context, jobs []consensus.Job, offer func(context.Context, []consensus.Job) error) {
	if len(jobs) == 0 {
		return
	}
	if err := offer(ctx, jobs); err != nil && ctx.Err() == nil {
		level := slog.LevelWarn
		if errors.Is(err, auction.ErrNoSellers) {
			// An ordinary outcome: no region has room within the jobs'
			// SLO. The jobs wait, with the reason on them.
			level = slog.LevelDebug
		}
		a.log.Log(ctx, level, "market did not take the jobs", "jobs", len(jobs), "err", err)
	}
}

// offloadFirst picks, of plan's placements, the jobs to offer to the
// market before placing them at home, with the price cap each one gets (0:
// its own) and why:
//
//   - a lease the region holds has room for it (desk.LeasesFit): the lease
//     is held whether used or not, so it is used before home capacity;
//   - another region asks clearly less (Tuning.OffloadMargin) than the node
//     home chose costs: capped at home's price per node-hour;
//   - placing it would leave less than Tuning.LocalReserve of the region's
//     compute free, and another region could serve it (its latency SLO and
//     price limit allow it): home keeps its last capacity for the work that
//     cannot leave, as the world benchmark measures (docs/benchmark.md).
//
// Placements are taken in the plan's (packing) order, each counted against
// the free compute the ones kept before it left. A job is offered so once:
// if no seller takes it, the next pass places it at home.
func (a *Agent) offloadFirst(ctx context.Context, plan placement.Plan, byID map[string]consensus.Job, price map[string]float64, nodes []placement.Node) (map[string]float64, map[string]string) {
	margin, reserve := a.cfg.Tuning.OffloadMargin, a.cfg.Tuning.LocalReserve
	if a.desk == nil || len(plan.Placements) == 0 {
		return nil, nil
	}
	var total, free float64
	for _, n := range nodes {
		total += n.Total.ComputePerHour
		free += n.Free.ComputePerHour
	}
	// Whether a lease the region holds would take each placed job (in plan
	// order, each counted against what the ones before took).
	jobs := make([]consensus.Job, len(plan.Placements))
	for i, p := range plan.Placements {
		jobs[i] = byID[p.JobID]
	}
	inLease := a.desk.LeasesFit(ctx, jobs)
	var out map[string]float64
	var why map[string]string
	// Whether another region could take each placed job, asked of gossip
	// once for the whole plan, when first needed.
	var servable map[string]bool
	elsewhere := func(id string) bool {
		if servable == nil {
			ok := a.desk.ServableElsewhere(jobs)
			servable = make(map[string]bool, len(jobs))
			for i, j := range jobs {
				servable[j.ID] = i < len(ok) && ok[i]
			}
		}
		return servable[id]
	}
	offer := func(id string, cap float64, reason string) {
		if out == nil {
			out, why = map[string]float64{}, map[string]string{}
		}
		out[id], why[id] = cap, reason
		a.mu.Lock()
		a.offered[id] = true
		a.mu.Unlock()
	}
	for i, p := range plan.Placements {
		a.mu.Lock()
		tried := a.offered[p.JobID]
		a.mu.Unlock()
		j := byID[p.JobID]
		left := free - j.Spec.Demand.ComputePerHour
		switch {
		case tried:
		case i < len(inLease) && inLease[i]:
			offer(j.ID, 0, "a lease the region holds has room for it; placed there first")
			continue
		case margin > 0 && a.desk.CheaperElsewhere(j, price[p.NodeID], margin):
			offer(j.ID, price[p.NodeID], fmt.Sprintf("another region asks clearly less than home's $%.2f/h; offered to the market first", price[p.NodeID]))
			continue
		case reserve > 0 && total > 0 && left/total < reserve && elsewhere(j.ID):
			offer(j.ID, 0, fmt.Sprintf("placing it would leave %.0f%% of the region's compute free, under the %.0f%% kept for work that cannot leave; offered to other regions first", 100*max(left, 0)/total, 100*reserve))
			continue
		}
		free = left
	}
	return out, why
}

// releaseWaiters wakes every submitter waiting for a placement pass.
func (a *Agent) releaseWaiters() {
	a.mu.Lock()
	defer a.mu.Unlock()
	for id, ws := range a.waiters {
		for _, w := range ws {
			close(w)
		}
		delete(a.waiters, id)
	}
}

// pendingReason is why the leader could not place a pending job on its last
// pass, if it tried.
func (a *Agent) pendingReason(id string) string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.reasons[id]
}

// regionRTT adapts gossip's RTT estimates for placement. Within a region
// the estimate needs two measured nodes; a lone node is its own region and
// sits at distance zero from it.
type regionRTT struct {
	g      *gossip.Agent
	region string
}

func (r regionRTT) RegionRTT(from, to string) (time.Duration, bool) {
	if from == to && from == r.region {
		// Network coordinates are poor at short distances: the height
		// each node carries for its access link dominates a distance of a
		// millisecond or two. Within its own region a node has measured
		// its peers directly, so it uses the median of those.
		var rtts []time.Duration
		for _, m := range r.g.Members() {
			if m.Region != r.region || m.State != gossip.StateAlive {
				continue
			}
			if d, ok := r.g.RTT(m.Name); ok {
				rtts = append(rtts, d)
			}
		}
		if len(rtts) > 0 {
			slices.Sort(rtts)
			return rtts[len(rtts)/2], true
		}
	}
	d, ok := r.g.RegionRTT(from, to)
	if !ok && from == to {
		return 0, true
	}
	return d, ok
}

// applyReport commits what a node reports of one of its tasks (on the
// leader). It returns an error when the report could not be committed, so
// the node keeps it and retries.
func (a *Agent) applyReport(ctx context.Context, rep taskReport) error {
	l := a.server.Ledger()
	al, ok := l.Allocation(rep.AllocID)
	if !ok {
		// Pruned, or from another region's ledger: nothing to record.
		return nil
	}
	home := al.JobRegion == a.cfg.Region
	var cmds []consensus.Command
	switch rep.State {
	case reportRunning:
		if !al.Live() || !home {
			return nil
		}
		j, ok := l.Job(al.JobID)
		if !ok || j.AllocID != al.ID || j.State != consensus.JobPlaced {
			return nil
		}
		cmds = append(cmds, consensus.SetJobState{JobID: j.ID, State: consensus.JobRunning})
	case reportCompleted:
		if !al.Live() {
			return nil
		}
		cmds = append(cmds, consensus.StopAllocation{AllocID: al.ID, Reason: consensus.StopCompleted, Message: rep.message()})
	case reportFailed:
		if !al.Live() {
			return nil
		}
		if j, ok := l.Job(al.JobID); ok && home && j.AllocID == al.ID && j.Attempts >= a.cfg.Tuning.MaxAttempts {
			cmds = append(cmds, consensus.SetJobState{JobID: j.ID, State: consensus.JobFailed,
				Reason: fmt.Sprintf("%s (attempt %d of %d)", rep.message(), j.Attempts, a.cfg.Tuning.MaxAttempts)})
		} else {
			cmds = append(cmds, consensus.StopAllocation{AllocID: al.ID, Reason: consensus.StopFailed, Message: rep.message()})
		}
	default:
		return nil
	}
	res, err := a.propose(ctx, cmds)
	if err != nil {
		return err
	}
	if res[0].Err != nil && !errors.Is(res[0].Err, consensus.ErrInvalidTransition) {
		a.log.Warn("task report rejected", "alloc", rep.AllocID, "state", rep.State, "err", res[0].Err)
	}
	if rep.State != reportRunning {
		a.notifyRemoteStops(ctx, []consensus.Allocation{al})
		poke(a.placePoke)
	}
	return nil
}

// measureRegion probes the region's members directly, at once and then
// every minute: the latency SLO of a job whose users are in this region is
// judged against these RTTs (see regionRTT).
func (a *Agent) measureRegion(ctx context.Context) {
	for {
		for _, m := range a.gossip.Members() {
			if ctx.Err() != nil {
				return
			}
			if m.Region != a.cfg.Region || m.Name == a.cfg.Name || m.State != gossip.StateAlive {
				continue
			}
			if _, err := a.gossip.Ping(m.Name); err != nil {
				a.log.Debug("region probe failed", "member", m.Name, "err", err)
			}
		}
		if !sleepCtx(ctx, time.Minute) {
			return
		}
	}
}
