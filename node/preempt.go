package node

import (
	"cmp"
	"context"
	"errors"
	"slices"

	"github.com/meridian-mesh/meridian/consensus"
	"github.com/meridian-mesh/meridian/node/api"
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

// preemptFor places, by preemption, those of jobs (pending, and no node has
// room for them) that cannot go elsewhere now: gossip knows no other region
// with room for them, or the market had them and no region took them
// (retried reports which). It reads the ledger as the passes before it
// left it, commits the placements, tells other regions of the allocations
// of theirs it stopped, and returns the IDs of the jobs it placed, and of
// those it could not place that cannot go elsewhere (urgent: the market
// may ask sellers to make room for them, TradeUrgent).
func (a *Agent) preemptFor(ctx context.Context, jobs []consensus.Job, retried func(id string) bool) (placed, urgent map[string]bool) {
	if a.desk == nil || a.cfg.Tuning.NoPreempt || len(jobs) == 0 {
		return nil, nil
	}
	elsewhere := a.desk.ServableElsewhere(jobs)
	var want []consensus.Job
	urgent = map[string]bool{}
	for i, j := range jobs {
		if retried(j.ID) || i < len(elsewhere) && !elsewhere[i] {
			want = append(want, j)
			// A seller could make room only by stopping work of lower
			// priority; below the lowest there is none, and asking every
			// region would only collect refusals.
			if j.Spec.Priority > api.MinPriority {
				urgent[j.ID] = true
			}
		}
	}
	if len(want) == 0 {
		return nil, nil
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
			j, ok := l.RunningJob(al)
			if !ok {
				continue
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
	var running []placement.Preemptible
	victimJob := map[string]consensus.Job{}
	if len(cand) > 0 {
		movable := a.desk.ServableElsewhere(cand)
		for i, j := range cand {
			if i < len(movable) && movable[i] {
				al := candAllocs[i]
				running = append(running, placement.Preemptible{AllocID: al.ID, NodeID: al.NodeID, Priority: j.Spec.Priority, Resources: al.Resources, Lent: al.Sold()})
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
	plan := placement.PlanPreemptions(specs, nodes, running, consensus.MaxPreempt, func(j placement.Job, n placement.Node) bool {
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
		for _, id := range p.Victims {
			victims = append(victims, victimJob[id])
		}
	}
	fit := a.desk.FitElsewhere(victims)
	kept, k := plan[:0], 0
	for _, p := range plan {
		ok := true
		for range p.Victims {
			ok = ok && k < len(fit) && fit[k]
			k++
		}
		if ok {
			kept = append(kept, p)
		}
	}
	plan = kept
	if len(plan) == 0 {
		return nil, urgent
	}
	cmds := make([]consensus.Command, len(plan))
	for i, p := range plan {
		j := byID[p.Job.ID]
		cmds[i] = consensus.PlaceJob{JobID: j.ID, NodeID: p.NodeID, Resources: j.Spec.Demand, Epoch: j.Epoch + 1, Preempt: p.Victims}
	}
	res, err := a.propose(ctx, cmds)
	if err != nil && ctx.Err() == nil {
		a.log.Warn("preemptions not committed; retrying", "err", err)
	}
	placed = map[string]bool{}
	var stopped []consensus.Allocation
	for i, r := range res {
		p := plan[i]
		if r.Err != nil {
			if !errors.Is(r.Err, consensus.ErrDoubleAllocation) {
				a.log.Info("preemption rejected", "job", p.Job.ID, "node", p.NodeID, "err", r.Err)
			}
			continue
		}
		placed[p.Job.ID] = true
		delete(urgent, p.Job.ID)
		a.metrics.placed.WithLabelValues("preempt").Inc()
		for _, id := range p.Victims {
			if al, ok := a.server.Ledger().Allocation(id); ok {
				stopped = append(stopped, al)
			}
		}
		a.log.Info("job placed by preemption", "job", p.Job.ID, "node", p.NodeID, "preempted", p.Victims)
	}
	a.notifyRemoteStops(ctx, stopped)
	if len(stopped) > 0 {
		poke(a.placePoke)
	}
	return placed, urgent
}
