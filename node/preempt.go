package node

import (
	"cmp"
	"context"
	"errors"
	"slices"

	"github.com/meridian-mesh/meridian/consensus"
	"github.com/meridian-mesh/meridian/placement"
)

// Preemption moves work; it does not drop it.
//
// A region at its peak fills with work that could have gone elsewhere:
// batch jobs it placed while it had room, and other regions' jobs it sold
// room to. The interactive work that arrives next may only be served near
// its users, and finds no room. The leader then stops running allocations
// that yield to the waiting job and can move — of lower priority, or room
// it lent to another region at the same priority — and places the waiting
// job in their room, in one ledger command (consensus.PlaceJob.Preempt).
// A victim can move when gossip shows another region with room for its job
// within the job's latency SLO and price limit: its own jobs go back to
// pending and the next pass offers them to the market; other regions' jobs
// are placed again by their home regions, which learn of the stop as the
// end of the trade. Measured with exact knowledge on the world benchmark's
// day (docs/benchmark.md), this is what closes most of the gap between a
// greedy scheduler and the LP bound: work is placed as it arrives, and
// moved when something that cannot move needs its place.

// preemptible is a running allocation the leader may preempt.
type preemptible struct {
	allocID   string
	nodeID    string
	priority  int
	resources placement.Resources
	// lent marks room sold to another region: the region takes it back
	// for its own work of the same priority, not only of a higher one.
	lent bool
}

// yields reports whether r may be preempted for a job of priority p.
func (r preemptible) yields(p int) bool { return r.priority < p || r.lent && r.priority == p }

// preemption places a pending job on a node by stopping victims there.
type preemption struct {
	job     placement.Job
	nodeID  string
	victims []string
}

// planPreemptions chooses, for each of jobs (which no node has room for),
// a node and the fewest, least important allocations to stop there so the
// job fits: only allocations of lower priority than the job, or room lent
// to another region at the same priority (preemptible.yields), at most
// consensus.MaxPreempt per job. fits says whether the job may run on the
// node given the free resources (the placement pipeline's filters). Among
// nodes it prefers the one whose victims have the lowest top priority,
// then the least compute stopped, then the fewest victims, then the node
// ID. Jobs are taken by priority, highest first, then in the given order;
// each one's choice is counted against the next. Deterministic.
func planPreemptions(jobs []placement.Job, nodes []placement.Node, running []preemptible, fits func(placement.Job, placement.Node) bool) []preemption {
	if len(jobs) == 0 || len(running) == 0 {
		return nil
	}
	free := make(map[string]placement.Resources, len(nodes))
	for _, n := range nodes {
		free[n.ID] = n.Free
	}
	onNode := map[string][]preemptible{}
	for _, r := range running {
		onNode[r.nodeID] = append(onNode[r.nodeID], r)
	}
	order := make([]int, len(jobs))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return cmp.Compare(jobs[b].Priority, jobs[a].Priority) })
	var out []preemption
	for _, ji := range order {
		j := jobs[ji]
		var (
			best     *preemption
			bestCost victimCost
		)
		for _, n := range nodes {
			victims, cost, ok := chooseVictims(j, free[n.ID], onNode[n.ID])
			if !ok {
				continue
			}
			m := n
			m.Free = free[n.ID]
			for _, v := range victims {
				m.Free = m.Free.Add(v.resources)
			}
			if !fits(j, m) {
				continue
			}
			if best == nil || cost.less(bestCost) || !bestCost.less(cost) && n.ID < best.nodeID {
				ids := make([]string, len(victims))
				for i, v := range victims {
					ids[i] = v.allocID
				}
				best, bestCost = &preemption{job: j, nodeID: n.ID, victims: ids}, cost
			}
		}
		if best == nil {
			continue
		}
		out = append(out, *best)
		f := free[best.nodeID]
		kept := onNode[best.nodeID][:0:0]
		for _, r := range onNode[best.nodeID] {
			if slices.Contains(best.victims, r.allocID) {
				f = f.Add(r.resources)
			} else {
				kept = append(kept, r)
			}
		}
		free[best.nodeID] = f.Sub(j.Demand)
		onNode[best.nodeID] = kept
	}
	return out
}

// victimCost ranks a node's victims for one job.
type victimCost struct {
	topPriority int
	compute     float64
	count       int
}

func (c victimCost) less(o victimCost) bool {
	return cmp.Or(cmp.Compare(c.topPriority, o.topPriority), cmp.Compare(c.compute, o.compute), cmp.Compare(c.count, o.count)) < 0
}

// chooseVictims picks the allocations of running (one node's) to stop so
// that j fits in free plus what they hold, or reports false. One victim
// that suffices is best (the least important, then the smallest);
// otherwise the least important are taken, largest first, until j fits.
func chooseVictims(j placement.Job, free placement.Resources, running []preemptible) ([]preemptible, victimCost, bool) {
	if j.Demand.FitsIn(free) {
		return nil, victimCost{}, false // no preemption needed: Pack places it
	}
	cand := make([]preemptible, 0, len(running))
	for _, r := range running {
		if r.yields(j.Priority) {
			cand = append(cand, r)
		}
	}
	if len(cand) == 0 {
		return nil, victimCost{}, false
	}
	slices.SortFunc(cand, func(a, b preemptible) int {
		return cmp.Or(cmp.Compare(a.priority, b.priority), cmp.Compare(a.resources.ComputePerHour, b.resources.ComputePerHour), cmp.Compare(a.allocID, b.allocID))
	})
	var one *preemptible
	for i := range cand {
		if j.Demand.FitsIn(free.Add(cand[i].resources)) {
			if one == nil || cand[i].priority < one.priority ||
				cand[i].priority == one.priority && cand[i].resources.ComputePerHour < one.resources.ComputePerHour {
				one = &cand[i]
			}
		}
	}
	if one != nil {
		return []preemptible{*one}, victimCost{topPriority: one.priority, compute: one.resources.ComputePerHour, count: 1}, true
	}
	slices.SortStableFunc(cand, func(a, b preemptible) int {
		return cmp.Or(cmp.Compare(a.priority, b.priority), cmp.Compare(b.resources.ComputePerHour, a.resources.ComputePerHour))
	})
	var picked []preemptible
	cost := victimCost{}
	for _, c := range cand {
		if len(picked) == consensus.MaxPreempt {
			break
		}
		picked = append(picked, c)
		free = free.Add(c.resources)
		cost.topPriority = max(cost.topPriority, c.priority)
		cost.compute += c.resources.ComputePerHour
		cost.count++
		if j.Demand.FitsIn(free) {
			return picked, cost, true
		}
	}
	return nil, victimCost{}, false
}

// preemptFor places, by preemption, those of jobs (pending, and no node has
// room for them) that cannot go elsewhere now: gossip knows no other region
// with room for them, or the market had them and no region took them
// (retried reports which). It reads the ledger as the passes before it
// left it, commits the placements, tells other regions of the allocations
// of theirs it stopped, and returns the IDs of the jobs it placed.
func (a *Agent) preemptFor(ctx context.Context, jobs []consensus.Job, retried func(id string) bool) map[string]bool {
	if a.desk == nil || a.cfg.Tuning.NoPreempt || len(jobs) == 0 {
		return nil
	}
	elsewhere := a.desk.ServableElsewhere(jobs)
	var want []consensus.Job
	for i, j := range jobs {
		if retried(j.ID) || i < len(elsewhere) && !elsewhere[i] {
			want = append(want, j)
		}
	}
	if len(want) == 0 {
		return nil
	}
	l := a.server.Ledger()
	var nodes []placement.Node
	// The allocations that could be victims, with their jobs' terms.
	var cand []consensus.Job
	var candAllocs []consensus.Allocation
	// Only allocations below the most important waiting job's priority
	// (or at it, for room lent to other regions) can be victims.
	top := slices.MaxFunc(want, func(x, y consensus.Job) int { return cmp.Compare(x.Spec.Priority, y.Spec.Priority) }).Spec.Priority
	for _, n := range l.Nodes() {
		if n.State != consensus.NodeReady {
			continue
		}
		nodes = append(nodes, n.Placement())
		for _, al := range l.NodeAllocations(n.ID) {
			if !al.Live() || al.Kind == consensus.ItemLease || al.InLease != "" {
				continue
			}
			var j consensus.Job
			if al.Sold() {
				// Another region's job: its terms came with its escrow.
				j = consensus.Job{ID: al.JobID, Spec: placement.Job{
					ID: al.JobID, OriginRegion: cmp.Or(al.Origin, al.JobRegion), Demand: al.Resources,
					LatencySLO: al.LatencySLO, MaxPricePerHour: al.MaxPricePerHour, Priority: al.Priority,
				}}
			} else {
				own, ok := l.Job(al.JobID)
				if !ok || own.AllocID != al.ID {
					continue
				}
				j = own
			}
			if j.Spec.Priority < top || al.Sold() && j.Spec.Priority == top {
				cand = append(cand, j)
				candAllocs = append(candAllocs, al)
			}
		}
	}
	// A victim must be able to move: gossip must show another region with
	// room for its job, within its latency SLO and price limit. Preempting
	// work that cannot go anywhere would only trade one unplaced job for
	// another, and work that must wait to move is unserved meanwhile.
	var running []preemptible
	victimJob := map[string]consensus.Job{}
	if len(cand) > 0 {
		movable := a.desk.ServableElsewhere(cand)
		for i, j := range cand {
			if i < len(movable) && movable[i] {
				al := candAllocs[i]
				running = append(running, preemptible{allocID: al.ID, nodeID: al.NodeID, priority: j.Spec.Priority, resources: al.Resources, lent: al.Sold()})
				victimJob[al.ID] = j
			}
		}
	}
	specs := make([]placement.Job, len(want))
	byID := make(map[string]consensus.Job, len(want))
	for i, j := range want {
		specs[i] = j.Spec
		byID[j.ID] = j
	}
	plan := planPreemptions(specs, nodes, running, func(j placement.Job, n placement.Node) bool {
		dec, err := a.place.Rank(j, []placement.Node{n})
		if err != nil {
			return false
		}
		_, ok := dec.Winner()
		return ok
	})
	// Each victim was judged movable alone; moved together, they must all
	// find room. A preemption whose victims would not is dropped: its job
	// waits rather than leave moved work with nowhere to go.
	var victims []consensus.Job
	for _, p := range plan {
		for _, id := range p.victims {
			victims = append(victims, victimJob[id])
		}
	}
	fit := a.desk.FitElsewhere(victims)
	kept, k := plan[:0], 0
	for _, p := range plan {
		ok := true
		for range p.victims {
			ok = ok && k < len(fit) && fit[k]
			k++
		}
		if ok {
			kept = append(kept, p)
		}
	}
	plan = kept
	if len(plan) == 0 {
		return nil
	}
	cmds := make([]consensus.Command, len(plan))
	for i, p := range plan {
		j := byID[p.job.ID]
		cmds[i] = consensus.PlaceJob{JobID: j.ID, NodeID: p.nodeID, Resources: j.Spec.Demand, Epoch: j.Epoch + 1, Preempt: p.victims}
	}
	res, err := a.propose(ctx, cmds)
	if err != nil && ctx.Err() == nil {
		a.log.Warn("preemptions not committed; retrying", "err", err)
	}
	placed := map[string]bool{}
	var stopped []consensus.Allocation
	for i, r := range res {
		p := plan[i]
		if r.Err != nil {
			if !errors.Is(r.Err, consensus.ErrDoubleAllocation) {
				a.log.Info("preemption rejected", "job", p.job.ID, "node", p.nodeID, "err", r.Err)
			}
			continue
		}
		placed[p.job.ID] = true
		a.metrics.placed.WithLabelValues("preempt").Inc()
		for _, id := range p.victims {
			if al, ok := a.server.Ledger().Allocation(id); ok {
				stopped = append(stopped, al)
			}
		}
		a.log.Info("job placed by preemption", "job", p.job.ID, "node", p.nodeID, "preempted", p.victims)
	}
	a.notifyRemoteStops(ctx, stopped)
	if len(stopped) > 0 {
		poke(a.placePoke)
	}
	return placed
}
