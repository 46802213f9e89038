package bench

import (
	"cmp"
	"container/heap"
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/meridian-mesh/meridian/placement"
)

// The baselines are deterministic discrete-event simulations over the
// World's nodes. Each job is decided when it arrives, with full and exact
// knowledge of every node's free capacity at that instant (allocations of
// jobs that ended by then are released first); a job that fits nowhere it
// may go is not placed — there is no queue, as an interactive request
// cannot wait for capacity to free up. Within a region the node is the one
// Meridian's placement pipeline ranks first (cost efficiency E = C·D/c on
// free compute, with its filters for latency SLO, price limit and free
// resources), so the baselines differ from each other and from the mesh
// only in which regions they consider, and in what order.

// LocalOnly places every job in its origin region or not at all: the mesh
// without a market.
func LocalOnly() Scheduler {
	return &baseline{
		name: "local-only",
		order: func(w *World, j *Job, _ map[string]float64) []string {
			return []string{j.Origin}
		},
		latency: func(w *World, j *Job, r string) time.Duration {
			// Client to the region's leader, and one Raft commit.
			return 2 * w.RTT(j.Origin, j.Origin)
		},
		note: func(*World) string {
			return "placement latency modelled as client→leader and one Raft commit"
		},
	}
}

// NearestFirst places a job in the nearest region (by measured RTT from its
// origin, the origin first) that has a node with room for it within its SLO
// and price limit.
func NearestFirst() Scheduler {
	return &baseline{
		name: "nearest-first",
		order: func(w *World, j *Job, _ map[string]float64) []string {
			rs := w.Regions()
			slices.SortStableFunc(rs, func(a, b string) int {
				return cmp.Compare(w.RTT(j.Origin, a), w.RTT(j.Origin, b))
			})
			return rs
		},
		latency: peerLatency,
		note: func(*World) string {
			return "placement latency modelled as client→leader, a reservation committed in the serving region, and the origin's commit"
		},
	}
}

// CentralCheapest is one global scheduler with full, instantaneous
// knowledge of every node, as a cross-cloud broker: it places each job in
// the cheapest region that can take it within its SLO and price limit
// (ties: nearer first). It is greedy in time — it does not know future
// arrivals, which the LP bound does.
func CentralCheapest() Scheduler {
	return &baseline{
		name: "central-cheapest",
		order: func(w *World, j *Job, _ map[string]float64) []string {
			rs := w.Regions()
			slices.SortStableFunc(rs, func(a, b string) int {
				return cmp.Or(cmp.Compare(w.Price(a), w.Price(b)), cmp.Compare(w.RTT(j.Origin, a), w.RTT(j.Origin, b)))
			})
			return rs
		},
		latency: func(w *World, j *Job, r string) time.Duration {
			// Client to the broker, broker to the serving region, one
			// Raft commit there; the broker's decision itself is free.
			b := brokerRegion(w)
			return w.RTT(j.Origin, b) + w.RTT(b, r) + w.RTT(r, r)
		},
		note: func(w *World) string {
			return fmt.Sprintf("broker in %s; placement latency modelled as RTT(origin, broker) + RTT(broker, region) + one Raft commit", brokerRegion(w))
		},
	}
}

// peerLatency models a placement decided by the origin region's leader:
// client to leader, then, for another region, a reservation committed
// there, then the origin's own commit.
func peerLatency(w *World, j *Job, r string) time.Duration {
	o := j.Origin
	if r == o {
		return 2 * w.RTT(o, o)
	}
	return w.RTT(o, o) + w.RTT(o, r) + w.RTT(r, r) + w.RTT(o, o)
}

// brokerRegion is where the central scheduler runs: the region with the
// least mean RTT to every region of the run (ties: first by name).
func brokerRegion(w *World) string {
	best, bestSum := "", time.Duration(-1)
	for _, b := range w.regions {
		var sum time.Duration
		for _, r := range w.regions {
			sum += w.RTT(r, b)
		}
		if bestSum < 0 || sum < bestSum {
			best, bestSum = b, sum
		}
	}
	return best
}

// baseline is a scheduler that tries regions in a fixed order per job.
type baseline struct {
	name string
	// order lists the regions to try for j, best first, given each
	// region's free compute now; infeasible ones are skipped.
	order func(w *World, j *Job, free map[string]float64) []string
	// packing is how a region's pipeline spreads jobs over its nodes.
	packing placement.Packing
	// latency models the time from arrival to a committed placement in r.
	latency func(w *World, j *Job, r string) time.Duration
	// note says how, for the report.
	note func(w *World) string
	// preempt, for the placement-policy study only, gives the model the
	// mesh's preemption (node/preempt.go) with exact knowledge: a job that
	// fits nowhere it may go may take a node of its origin region from a
	// running job of lower priority, or of the same priority from another
	// region, if that job fits now on a node of another region it may be
	// served from; the moved job continues there.
	// The published baselines never preempt.
	preempt bool
	// lowerOnly limits preemption to jobs of lower priority: the model
	// does not take back room lent to other regions' jobs of the same
	// priority, as the mesh does.
	lowerOnly bool
	// sellers adds preemption by sellers: a job its origin region could
	// not make room for takes, in another region it may be served from
	// (nearest first), the room of a running job of lower priority that
	// fits now elsewhere (the mesh's market.TradeUrgent with exact
	// knowledge).
	sellers bool
}

// Name implements Scheduler.
func (b *baseline) Name() string { return b.name }

// Run implements Scheduler: the discrete-event simulation described above.
func (b *baseline) Run(ctx context.Context, w *World, jobs []Job) (Outcome, error) {
	pipe, err := placement.NewPipeline(placement.Config{RTT: w.RTTs(), Score: placement.ScoreConfig{Packing: b.packing}})
	if err != nil {
		return Outcome{}, fmt.Errorf("%s: %w", b.name, err)
	}
	nodes := w.Nodes()
	span := regionSpans(nodes)
	out := Outcome{Jobs: make([]JobResult, len(jobs))}
	var running endHeap
	// where is the node each running job is on (-1 once it ended), and
	// onNode the running jobs of each node, for preemption.
	where := make([]int, len(jobs))
	onNode := make([][]int, len(nodes))
	// rank returns the node of region r the pipeline ranks first for job
	// j, other than skip, or -1.
	rank := func(j *Job, r string, skip int) (int, error) {
		s := span[r]
		dec, err := pipe.Rank(j.PlacementJob(), nodes[s[0]:s[1]])
		if err != nil {
			return -1, fmt.Errorf("%s: job %s: %w", b.name, j.ID, err)
		}
		for _, c := range dec.Ranked() {
			if k := s[0] + c.Index; k != skip {
				return k, nil
			}
		}
		return -1, nil
	}
	place := func(i, k int, at time.Time) {
		j := &jobs[i]
		nodes[k].Free = nodes[k].Free.Sub(j.Demand)
		where[i] = k
		onNode[k] = append(onNode[k], i)
		seg := Segment{Region: nodes[k].Region, Node: nodes[k].ID, Start: at, End: j.End(), CostPerHour: nodes[k].CostPerHour(j.Demand)}
		res := &out.Jobs[i]
		if res.Placed {
			res.Segments[len(res.Segments)-1].End = at
			res.Segments = append(res.Segments, seg)
		} else {
			*res = JobResult{Placed: true, Start: at, PlacementLatency: b.latency(w, j, seg.Region), Segments: []Segment{seg}}
		}
		res.Region, res.Node, res.CostPerHour = seg.Region, seg.Node, seg.CostPerHour
		res.Traded = res.Traded || seg.Region != j.Origin
	}
	unplace := func(i int) {
		k := where[i]
		nodes[k].Free = nodes[k].Free.Add(jobs[i].Demand)
		onNode[k] = slices.DeleteFunc(onNode[k], func(x int) bool { return x == i })
		where[i] = -1
	}
	for i := range jobs {
		if i%1024 == 0 && ctx.Err() != nil {
			return Outcome{}, fmt.Errorf("%s: %w", b.name, ctx.Err())
		}
		j := &jobs[i]
		for len(running) > 0 && !running[0].end.After(j.At) {
			unplace(heap.Pop(&running).(ending).job)
		}
		free := make(map[string]float64, len(span))
		for _, n := range nodes {
			free[n.Region] += n.Free.ComputePerHour
		}
		tried := 0
		for _, r := range b.order(w, j, free) {
			if !w.feasible(j, r) {
				continue
			}
			tried++
			k, err := rank(j, r, -1)
			if err != nil {
				return Outcome{}, err
			}
			if k >= 0 {
				place(i, k, j.At)
				break
			}
		}
		if !out.Jobs[i].Placed && b.preempt {
			if err := b.preemptFor(w, i, jobs, nodes, span[j.Origin], b.lowerOnly, onNode, free, rank, place, unplace); err != nil {
				return Outcome{}, err
			}
			for _, r := range b.order(w, j, free) {
				if !b.sellers || out.Jobs[i].Placed {
					break
				}
				if r == j.Origin || !w.feasible(j, r) {
					continue
				}
				if err := b.preemptFor(w, i, jobs, nodes, span[r], true, onNode, free, rank, place, unplace); err != nil {
					return Outcome{}, err
				}
			}
		}
		if out.Jobs[i].Placed {
			heap.Push(&running, ending{end: j.End(), job: i})
		} else {
			out.Jobs[i].Reason = unplacedReason(tried)
		}
	}
	for i := range out.Jobs {
		// A job that never moved is one allocation: no segments, as the
		// published baselines report it.
		if res := &out.Jobs[i]; len(res.Segments) == 1 {
			res.Segments = nil
		}
	}
	out.Notes = append(out.Notes, b.note(w))
	return out, nil
}

// preemptFor places job i on a node of the region whose nodes span names
// by moving the least important single running job that yields to it
// (lower priority, or unless lowerOnly another region's at the same
// priority), frees enough there and fits now on a node of another region
// it may be served from (the mesh's rule, node/preempt.go, with exact
// knowledge).
func (b *baseline) preemptFor(w *World, i int, jobs []Job, nodes []placement.Node, span [2]int, lowerOnly bool, onNode [][]int, free map[string]float64,
	rank func(j *Job, r string, skip int) (int, error), place func(i, k int, at time.Time), unplace func(i int)) error {
	j := &jobs[i]
	if span[1] <= span[0] || !w.feasible(j, nodes[span[0]].Region) {
		return nil
	}
	for k := span[0]; k < span[1]; k++ {
		victims := slices.Clone(onNode[k])
		slices.SortFunc(victims, func(x, y int) int {
			return cmp.Or(cmp.Compare(jobs[x].Priority, jobs[y].Priority), cmp.Compare(jobs[x].Demand.ComputePerHour, jobs[y].Demand.ComputePerHour), cmp.Compare(x, y))
		})
		for _, v := range victims {
			vj := &jobs[v]
			// Lower priority, or room lent to another region's job at the
			// same priority (preemptible.yields in node/preempt.go).
			yields := vj.Priority < j.Priority || !lowerOnly && vj.Priority == j.Priority && vj.Origin != nodes[k].Region
			if !yields || !j.Demand.FitsIn(nodes[k].Free.Add(vj.Demand)) {
				continue
			}
			for _, r := range b.order(w, vj, free) {
				if r == nodes[k].Region || !w.feasible(vj, r) {
					continue
				}
				k2, err := rank(vj, r, k)
				if err != nil {
					return err
				}
				if k2 < 0 {
					continue
				}
				unplace(v)
				place(v, k2, j.At)
				place(i, k, j.At)
				return nil
			}
		}
	}
	return nil
}

// regionSpans maps each region to its nodes' positions [first, end) in
// nodes, which World.Nodes lists region by region.
func regionSpans(nodes []placement.Node) map[string][2]int {
	span := map[string][2]int{}
	for i, n := range nodes {
		s, ok := span[n.Region]
		if !ok {
			s[0] = i
		}
		s[1] = i + 1
		span[n.Region] = s
	}
	return span
}

func unplacedReason(tried int) string {
	if tried == 0 {
		return "no region it may be served from (latency SLO, price limit)"
	}
	return fmt.Sprintf("no node with room in the %d region%s it may be served from", tried, strings.Repeat("s", min(1, tried-1)))
}

// ending is a running job's end, for the event queue.
type ending struct {
	end time.Time
	job int
}

// endHeap orders endings by time, then job index, so releases are
// deterministic.
type endHeap []ending

func (h endHeap) Len() int { return len(h) }
func (h endHeap) Less(a, b int) bool {
	if c := h[a].end.Compare(h[b].end); c != 0 {
		return c < 0
	}
	return h[a].job < h[b].job
}
func (h endHeap) Swap(a, b int) { h[a], h[b] = h[b], h[a] }

// Push implements heap.Interface.
func (h *endHeap) Push(x any) { *h = append(*h, x.(ending)) }

// Pop implements heap.Interface.
func (h *endHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	*h = old[:len(old)-1]
	return e
}
