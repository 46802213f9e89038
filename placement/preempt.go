package placement

import (
	"cmp"
	"slices"
)

// Preemption moves work; it does not drop it. A region at its peak fills
// with work that could run elsewhere; the work that arrives next and may
// run only near its users then finds no room. Stopping running work that
// yields to it, and can move, makes room. The region's leader plans this
// for its own waiting jobs (node/), and a seller plans it for a buyer's job
// no region had room for (placement/auction); the ledger stops the victims
// and places the job in one command, all or nothing.

// Preemptible is a running allocation a planner may stop: the caller has
// already checked that its work can move (another region has room for it
// within its limits).
type Preemptible struct {
	// AllocID and NodeID name the allocation and the node it runs on.
	AllocID, NodeID string
	// Priority is the priority of the job it runs.
	Priority int
	// Resources is what stopping it frees.
	Resources Resources
	// Lent marks room sold to another region: the region takes it back
	// for its own work of the same priority, not only of a higher one.
	Lent bool
}

// Yields reports whether r may be stopped for a job of priority p: it
// runs lower-priority work, or room lent to another region at p.
func (r Preemptible) Yields(p int) bool { return r.Priority < p || r.Lent && r.Priority == p }

// Preemption places a job on a node by stopping victims there.
type Preemption struct {
	// Job is the job placed.
	Job Job
	// NodeID is the node it goes on.
	NodeID string
	// Victims are the allocations to stop first, by ID.
	Victims []string
}

// PlanPreemptions chooses, for each of jobs (which no node has room for),
// a node and the fewest, least important allocations to stop there so the
// job fits: only allocations that yield to it (Preemptible.Yields), at most
// maxVictims per job. fits says whether the job may run on the node given
// the free resources (the placement pipeline's filters, or a seller's price
// limit). Among nodes it prefers the one whose victims have the lowest top
// priority, then the least compute stopped, then the fewest victims, then
// the node ID. Jobs are taken by priority, highest first, then in the given
// order; each one's choice is counted against the next. Deterministic.
func PlanPreemptions(jobs []Job, nodes []Node, running []Preemptible, maxVictims int, fits func(Job, Node) bool) []Preemption {
	if len(jobs) == 0 || len(running) == 0 {
		return nil
	}
	free := make(map[string]Resources, len(nodes))
	for _, n := range nodes {
		free[n.ID] = n.Free
	}
	onNode := map[string][]Preemptible{}
	for _, r := range running {
		onNode[r.NodeID] = append(onNode[r.NodeID], r)
	}
	order := make([]int, len(jobs))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return cmp.Compare(jobs[b].Priority, jobs[a].Priority) })
	var out []Preemption
	for _, ji := range order {
		j := jobs[ji]
		var (
			best     *Preemption
			bestCost victimCost
		)
		for _, n := range nodes {
			victims, cost, ok := chooseVictims(j, free[n.ID], onNode[n.ID], maxVictims)
			if !ok {
				continue
			}
			m := n
			m.Free = free[n.ID]
			for _, v := range victims {
				m.Free = m.Free.Add(v.Resources)
			}
			if !fits(j, m) {
				continue
			}
			if best == nil || cost.less(bestCost) || !bestCost.less(cost) && n.ID < best.NodeID {
				ids := make([]string, len(victims))
				for i, v := range victims {
					ids[i] = v.AllocID
				}
				best, bestCost = &Preemption{Job: j, NodeID: n.ID, Victims: ids}, cost
			}
		}
		if best == nil {
			continue
		}
		out = append(out, *best)
		f := free[best.NodeID]
		kept := onNode[best.NodeID][:0:0]
		for _, r := range onNode[best.NodeID] {
			if slices.Contains(best.Victims, r.AllocID) {
				f = f.Add(r.Resources)
			} else {
				kept = append(kept, r)
			}
		}
		free[best.NodeID] = f.Sub(j.Demand)
		onNode[best.NodeID] = kept
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
func chooseVictims(j Job, free Resources, running []Preemptible, maxVictims int) ([]Preemptible, victimCost, bool) {
	if j.Demand.FitsIn(free) {
		return nil, victimCost{}, false // no preemption needed: Pack places it
	}
	cand := make([]Preemptible, 0, len(running))
	for _, r := range running {
		if r.Yields(j.Priority) {
			cand = append(cand, r)
		}
	}
	if len(cand) == 0 {
		return nil, victimCost{}, false
	}
	slices.SortFunc(cand, func(a, b Preemptible) int {
		return cmp.Or(cmp.Compare(a.Priority, b.Priority), cmp.Compare(a.Resources.ComputePerHour, b.Resources.ComputePerHour), cmp.Compare(a.AllocID, b.AllocID))
	})
	var one *Preemptible
	for i := range cand {
		if j.Demand.FitsIn(free.Add(cand[i].Resources)) {
			if one == nil || cand[i].Priority < one.Priority ||
				cand[i].Priority == one.Priority && cand[i].Resources.ComputePerHour < one.Resources.ComputePerHour {
				one = &cand[i]
			}
		}
	}
	if one != nil {
		return []Preemptible{*one}, victimCost{topPriority: one.Priority, compute: one.Resources.ComputePerHour, count: 1}, true
	}
	slices.SortStableFunc(cand, func(a, b Preemptible) int {
		return cmp.Or(cmp.Compare(a.Priority, b.Priority), cmp.Compare(b.Resources.ComputePerHour, a.Resources.ComputePerHour))
	})
	var picked []Preemptible
	cost := victimCost{}
	for _, c := range cand {
		if len(picked) == maxVictims {
			break
		}
		picked = append(picked, c)
		free = free.Add(c.Resources)
		cost.topPriority = max(cost.topPriority, c.Priority)
		cost.compute += c.Resources.ComputePerHour
		cost.count++
		if j.Demand.FitsIn(free) {
			return picked, cost, true
		}
	}
	return nil, victimCost{}, false
}
