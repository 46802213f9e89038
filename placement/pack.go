package placement

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"strings"
)

// Placement assigns one job to one node.
type Placement struct {
	// JobID and JobIndex name the job and its position in Pack's input.
	JobID    string `json:"job"`
	JobIndex int    `json:"-"`
	// NodeID and NodeIndex name the node and its position in Pack's input.
	NodeID    string `json:"node"`
	NodeIndex int    `json:"-"`
	// Score and Components are the node's score for the job on the free
	// resources left when the job was placed.
	Score      float64    `json:"score"`
	Components Components `json:"components"`
	// Tied reports that other nodes had an equal score and the tie-break
	// chose this one.
	Tied bool `json:"tied,omitempty"`
}

// Unplaced is a job that no node could take.
type Unplaced struct {
	// JobID and JobIndex name the job and its position in Pack's input.
	JobID    string
	JobIndex int

	nodes   int
	counts  [numFilters]int
	samples [numFilters]Rejection
}

// RejectedBy returns how many nodes filter f rejected for the job.
func (u *Unplaced) RejectedBy(f Filter) int {
	if int(f) >= numFilters {
		return 0
	}
	return u.counts[f]
}

// Sample returns the first node, in region, GPU type and ID order, that filter f
// rejected for the job, and false if f rejected none.
func (u *Unplaced) Sample(f Filter) (Rejection, bool) {
	if int(f) >= numFilters || u.counts[f] == 0 {
		return Rejection{}, false
	}
	return u.samples[f], true
}

// Reason says why no node could take the job, filter by filter, with one
// example node for each.
func (u *Unplaced) Reason() string {
	if u.nodes == 0 {
		return "no nodes to place on"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "no feasible node among %d: ", u.nodes)
	first := true
	for f := FilterGPUType; int(f) < numFilters; f++ {
		if u.counts[f] == 0 {
			continue
		}
		if !first {
			b.WriteString("; ")
		}
		first = false
		s := &u.samples[f]
		fmt.Fprintf(&b, "%d rejected by %s (e.g. %s: %s)", u.counts[f], f, s.NodeID, s.Reason())
	}
	return b.String()
}

// Plan is the outcome of packing a batch of jobs.
type Plan struct {
	// Placements are the placed jobs, in the order they were packed.
	Placements []Placement
	// Unplaced are the jobs no node could take, in the order they were tried.
	Unplaced []Unplaced
	// Free is what each node has left after the plan, indexed like Pack's
	// nodes argument.
	Free []Resources
}

// Pack places a batch of jobs on nodes, never overcommitting any resource.
// Jobs are packed by priority (highest first), then compute demand (largest
// first), then ID; each goes to the best node by the pipeline's ranking on
// the free resources the jobs before it left. The plan depends on the sets
// of jobs and nodes only, not on their order in the slices.
//
// Pack returns an error wrapping ErrInvalid, and no plan, if a node or a job
// is not valid or two nodes or two jobs share an ID.
func (p *Pipeline) Pack(jobs []Job, nodes []Node) (Plan, error) {
	ps, err := newPackState(p, nodes)
	if err != nil {
		return Plan{}, err
	}
	order, err := jobOrder(jobs)
	if err != nil {
		return Plan{}, err
	}
	plan := Plan{Placements: make([]Placement, 0, len(jobs))}
	for _, ji := range order {
		ps.place(&jobs[ji], ji, &plan)
	}
	plan.Free = make([]Resources, len(nodes))
	for pos, i := range ps.input {
		plan.Free[i] = ps.free[pos]
	}
	return plan, nil
}

// jobOrder validates jobs and returns their indices in packing order.
func jobOrder(jobs []Job) ([]int, error) {
	seen := make(map[string]int, len(jobs))
	for i := range jobs {
		if err := jobs[i].Validate(); err != nil {
			return nil, fmt.Errorf("job %q (#%d): %w", jobs[i].ID, i, err)
		}
		if prev, dup := seen[jobs[i].ID]; dup {
			return nil, fmt.Errorf("job %q (#%d): %w", jobs[i].ID, i,
				&FieldError{Field: "id", Reason: fmt.Sprintf("duplicates job #%d", prev)})
		}
		seen[jobs[i].ID] = i
	}
	order := make([]int, len(jobs))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int {
		ja, jb := &jobs[a], &jobs[b]
		if c := cmp.Compare(jb.Priority, ja.Priority); c != 0 {
			return c
		}
		if c := cmp.Compare(jb.Demand.ComputePerHour, ja.Demand.ComputePerHour); c != 0 {
			return c
		}
		return strings.Compare(ja.ID, jb.ID)
	})
	return order, nil
}

// packBucket is a run of nodes with one region and one GPU type, so that
// the latency and GPU-type filters are decided once per bucket rather than
// once per node.
type packBucket struct {
	region, gpuType      string
	firstBlock, endBlock int // the bucket's blocks: blocks[firstBlock:endBlock]
}

// packBlock is a run of at most packBlockSize nodes of one bucket, with the
// largest free amount of each resource among them: a job that needs more
// than that skips the block without looking at its nodes. As the cluster
// fills up, most blocks are skipped.
type packBlock struct {
	start, end int
	max        Resources
	// maxRatio is the largest free compute per dollar, freeC/c, and
	// minPrice the lowest price: with max they bound every score in the
	// block (see scoreBound).
	maxRatio, minPrice float64
	// maxTotal and maxTotalRatio are max and maxRatio of the nodes' total
	// capacity, which bound scores under bin packing; they never change.
	maxTotal      Resources
	maxTotalRatio float64
}

const packBlockSize = 16

// packState is the mutable state of one Pack call. Nodes are kept sorted by
// region, GPU type and ID, with the figures the packing loop reads stored
// column by column, so that the loop over a thousand nodes per job touches
// little memory.
type packState struct {
	p       *Pipeline
	nodes   []*Node     // by position
	input   []int       // position → index in Pack's nodes
	free    []Resources // by position; what is still free
	price   []float64   // by position
	blockOf []int32     // position → index in blocks
	buckets []packBucket
	blocks  []packBlock
	// latencies caches, per origin region, the latency to each bucket.
	latencies map[string][]latency
	scores    []float64       // scratch, by position
	feasible  []int32         // scratch: positions of nodes that may win
	eligible  []eligibleBlock // scratch: blocks a job may fit in
}

// eligibleBlock is a block that passed a job's bucket and block filters,
// with the bound on its scores for the job.
type eligibleBlock struct {
	bucket, block int32
	bound         float64
}

func newPackState(p *Pipeline, nodes []Node) (*packState, error) {
	order := make([]int, len(nodes))
	ids := make(map[string]int, len(nodes))
	for i := range nodes {
		if err := nodes[i].Validate(); err != nil {
			return nil, fmt.Errorf("node %q (#%d): %w", nodes[i].ID, i, err)
		}
		if prev, dup := ids[nodes[i].ID]; dup {
			return nil, fmt.Errorf("node %q (#%d): %w", nodes[i].ID, i,
				&FieldError{Field: "name", Reason: fmt.Sprintf("duplicates node #%d", prev)})
		}
		ids[nodes[i].ID] = i
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int {
		na, nb := &nodes[a], &nodes[b]
		if c := strings.Compare(na.Region, nb.Region); c != 0 {
			return c
		}
		if c := strings.Compare(na.GPUType, nb.GPUType); c != 0 {
			return c
		}
		return strings.Compare(na.ID, nb.ID)
	})
	ps := &packState{
		p:         p,
		nodes:     make([]*Node, len(nodes)),
		input:     order,
		free:      make([]Resources, len(nodes)),
		price:     make([]float64, len(nodes)),
		blockOf:   make([]int32, len(nodes)),
		latencies: make(map[string][]latency),
		scores:    make([]float64, len(nodes)),
		feasible:  make([]int32, 0, len(nodes)),
	}
	for pos, i := range order {
		n := &nodes[i]
		ps.nodes[pos], ps.free[pos], ps.price[pos] = n, n.Free, n.PricePerHour
		last := len(ps.buckets) - 1
		if last < 0 || ps.buckets[last].region != n.Region || ps.buckets[last].gpuType != n.GPUType {
			ps.buckets = append(ps.buckets, packBucket{region: n.Region, gpuType: n.GPUType, firstBlock: len(ps.blocks), endBlock: len(ps.blocks)})
			last++
		}
		bk := &ps.buckets[last]
		if bk.endBlock == bk.firstBlock || ps.blocks[bk.endBlock-1].end-ps.blocks[bk.endBlock-1].start == packBlockSize {
			ps.blocks = append(ps.blocks, packBlock{start: pos})
		}
		ps.blocks[len(ps.blocks)-1].end = pos + 1
		bk.endBlock = len(ps.blocks)
		ps.blockOf[pos] = int32(len(ps.blocks) - 1)
	}
	for b := range ps.blocks {
		ps.updateBlockMax(b)
		blk := &ps.blocks[b]
		for i := blk.start; i < blk.end; i++ {
			t := &ps.nodes[i].Total
			blk.maxTotal.ComputePerHour = max(blk.maxTotal.ComputePerHour, t.ComputePerHour)
			blk.maxTotal.StorageGB = max(blk.maxTotal.StorageGB, t.StorageGB)
			blk.maxTotal.BandwidthGBps = max(blk.maxTotal.BandwidthGBps, t.BandwidthGBps)
			blk.maxTotalRatio = max(blk.maxTotalRatio, t.ComputePerHour/ps.price[i])
		}
	}
	return ps, nil
}

func (ps *packState) updateBlockMax(b int) {
	blk := &ps.blocks[b]
	var m Resources
	ratio, minPrice := 0.0, math.Inf(1)
	for i := blk.start; i < blk.end; i++ {
		f := &ps.free[i]
		m.ComputePerHour = max(m.ComputePerHour, f.ComputePerHour)
		m.StorageGB = max(m.StorageGB, f.StorageGB)
		m.BandwidthGBps = max(m.BandwidthGBps, f.BandwidthGBps)
		m.GPUs = max(m.GPUs, f.GPUs)
		ratio = max(ratio, f.ComputePerHour/ps.price[i])
		minPrice = min(minPrice, ps.price[i])
	}
	blk.max, blk.maxRatio, blk.minPrice = m, ratio, minPrice
}

// scoreBound returns a number no score of a node in blk can exceed for
// demand d, latency aside: every term of both models grows with the
// capacity scored (free, or total when bin packing) and shrinks with
// price, and weights are not negative.
func (c *ScoreConfig) scoreBound(d *Resources, blk *packBlock) float64 {
	m, ratio := &blk.max, blk.maxRatio
	if c.Packing == PackBinpack {
		m, ratio = &blk.maxTotal, blk.maxTotalRatio
	}
	if c.Model == ModelWeighted {
		return c.Compute.Weight*c.Compute.Efficiency.term(d.ComputePerHour, m.ComputePerHour) +
			c.Storage.Weight*c.Storage.Efficiency.term(d.StorageGB, m.StorageGB) +
			c.Bandwidth.Weight*c.Bandwidth.Efficiency.term(d.BandwidthGBps, m.BandwidthGBps) -
			c.Lambda*blk.minPrice
	}
	return d.ComputePerHour * ratio
}

// belowThreshold reports whether bound, give or take rounding, is below
// threshold, so that nothing it bounds can matter.
func belowThreshold(bound, threshold float64) bool {
	return bound+1e-12*math.Abs(bound) < threshold
}

// fits reports whether demand d fits in free, with FitsIn's tolerance; it
// is the resources filter of check, written out for the packing loop.
func fits(d, free *Resources) bool {
	return leq(d.ComputePerHour, free.ComputePerHour) && leq(d.StorageGB, free.StorageGB) &&
		leq(d.BandwidthGBps, free.BandwidthGBps) && d.GPUs <= free.GPUs
}

// latenciesFrom returns the latency from origin to every bucket.
func (ps *packState) latenciesFrom(origin string) []latency {
	if l, ok := ps.latencies[origin]; ok {
		return l
	}
	l := make([]latency, len(ps.buckets))
	if ps.p.rtt != nil {
		for b := range ps.buckets {
			if b > 0 && ps.buckets[b-1].region == ps.buckets[b].region {
				l[b] = l[b-1]
				continue
			}
			l[b].rtt, l[b].known = ps.p.rtt.RegionRTT(origin, ps.buckets[b].region)
		}
	}
	ps.latencies[origin] = l
	return l
}

// place puts job on the best feasible node, or records why there is none.
// It applies the same filters and score as Rank (check and
// ScoreConfig.score), rearranged for speed: whole buckets are skipped on GPU
// type and latency, whole blocks on resources, and nodes validated up front
// need no invalid-node check. The tests hold it to Rank's choice.
func (ps *packState) place(job *Job, jobIdx int, plan *Plan) {
	jv := newJobView(job)
	cfg := &ps.p.score
	var lats []latency
	if jv.hasLatency {
		lats = ps.latenciesFrom(job.OriginRegion)
	}
	d := &jv.demand
	costEff := cfg.Model == ModelCostEfficiency
	ps.feasible = ps.feasible[:0]
	// threshold is 2·tolerance below the highest score so far: a node
	// below it can neither be the highest nor tie with it in the end (the
	// highest only grows), so it need not be looked at. Whole blocks whose
	// score bound is below it are skipped, best bound first.
	maxScore, threshold, anyFeasible := math.Inf(-1), math.Inf(-1), false
	visit := func(bi int, lat latency) {
		penalty := 0.0
		if jv.hasLatency {
			penalty = cfg.latencyPenalty(lat.rtt)
		}
		blk := &ps.blocks[bi]
		for i := blk.start; i < blk.end; i++ {
			price := ps.price[i]
			if jv.maxPrice > 0 && price > jv.maxPrice {
				continue
			}
			f := &ps.free[i]
			b := cfg.basis(ps.nodes[i], f)
			var s float64
			if costEff {
				// ScoreConfig.score, written out for the common model.
				s = costEfficiency(b.ComputePerHour, d.ComputePerHour, price)
				if jv.hasLatency {
					s -= penalty
				}
			} else {
				s = cfg.score(*d, *b, price, lat.rtt, jv.hasLatency)
			}
			if s < threshold || !fits(d, f) || math.IsNaN(s) || math.IsInf(s, 0) {
				continue
			}
			anyFeasible = true
			if s > maxScore {
				maxScore = s
				threshold = maxScore - 2*scoreTolerance*math.Abs(maxScore)
			}
			if s >= threshold {
				ps.scores[i] = s
				ps.feasible = append(ps.feasible, int32(i))
			}
		}
	}
	// First the eligible blocks and their bounds; the best is visited first
	// so that the threshold rises early, then the others, skipping those
	// whose bound is below it.
	ps.eligible = ps.eligible[:0]
	bestBlock, bestBound := -1, math.Inf(-1)
	for b := range ps.buckets {
		bk := &ps.buckets[b]
		if jv.gpuType != "" && bk.gpuType != jv.gpuType {
			continue
		}
		penalty := 0.0
		if jv.hasLatency {
			lat := lats[b]
			if !lat.known || lat.rtt > jv.slo {
				continue
			}
			penalty = cfg.latencyPenalty(lat.rtt)
		}
		for bi := bk.firstBlock; bi < bk.endBlock; bi++ {
			blk := &ps.blocks[bi]
			if !fits(d, &blk.max) || (jv.maxPrice > 0 && blk.minPrice > jv.maxPrice) {
				continue
			}
			bound := cfg.scoreBound(d, blk) - penalty
			ps.eligible = append(ps.eligible, eligibleBlock{bucket: int32(b), block: int32(bi), bound: bound})
			if bestBlock < 0 || bound > bestBound {
				bestBlock, bestBound = len(ps.eligible)-1, bound
			}
		}
	}
	latOf := func(b int32) latency {
		if jv.hasLatency {
			return lats[b]
		}
		return latency{}
	}
	if bestBlock >= 0 {
		e := ps.eligible[bestBlock]
		visit(int(e.block), latOf(e.bucket))
	}
	for k, e := range ps.eligible {
		if k == bestBlock || belowThreshold(e.bound, threshold) {
			continue
		}
		visit(int(e.block), latOf(e.bucket))
	}
	if !anyFeasible {
		plan.Unplaced = append(plan.Unplaced, ps.explainUnplaced(&jv, jobIdx, lats))
		return
	}
	// Select: among the scores equal to the highest within the tolerance,
	// the tie-break decides, exactly as Rank orders them.
	best, tied := int32(-1), false
	for _, i := range ps.feasible {
		if !scoresEqual(maxScore, ps.scores[i]) {
			continue
		}
		if best < 0 {
			best = i
			continue
		}
		tied = true
		if compareTieBreak(ps.nodes[i], ps.nodes[best], ps.free[i].ComputePerHour, ps.free[best].ComputePerHour, cfg.Packing) < 0 {
			best = i
		}
	}
	n := ps.nodes[best]
	var lat latency
	if jv.hasLatency {
		lat = lats[ps.bucketOf(int(ps.blockOf[best]))]
	}
	c := cfg.components(*d, *cfg.basis(n, &ps.free[best]), n.PricePerHour, lat.rtt, jv.hasLatency)
	plan.Placements = append(plan.Placements, Placement{
		JobID: job.ID, JobIndex: jobIdx, NodeID: n.ID, NodeIndex: ps.input[best],
		Score: ps.scores[best], Components: c, Tied: tied,
	})
	ps.free[best] = clampedSub(ps.free[best], *d)
	ps.updateBlockMax(int(ps.blockOf[best]))
}

// bucketOf returns the bucket that holds block b.
func (ps *packState) bucketOf(b int) int {
	i, _ := slices.BinarySearchFunc(ps.buckets, b, func(bk packBucket, b int) int {
		switch {
		case b < bk.firstBlock:
			return 1
		case b >= bk.endBlock:
			return -1
		}
		return 0
	})
	return i
}

// explainUnplaced counts, for a job no node can take, the nodes each filter
// rejects: the first filter each node fails, as check would say. Where a
// bucket or a block settles the answer for all its nodes, they are counted
// at once; the example for each filter is the first node, in position
// order, that it rejects.
func (ps *packState) explainUnplaced(jv *jobView, jobIdx int, lats []latency) Unplaced {
	u := Unplaced{JobID: jv.id, JobIndex: jobIdx, nodes: len(ps.nodes)}
	var lat latency
	count := func(f Filter, i, n int) {
		if u.counts[f] == 0 {
			node := ps.nodes[i]
			v := jv.check(node, &ps.free[i], lat)
			if f == FilterInvalidNode {
				s := ps.p.score.score(jv.demand, *ps.p.score.basis(node, &ps.free[i]), node.PricePerHour, lat.rtt, jv.hasLatency)
				v = verdict{filter: FilterInvalidNode, code: reasonBadScore, have: s}
			}
			u.samples[f] = newRejection(v, ps.input[i], node, jv)
		}
		u.counts[f] += n
	}
	for b := range ps.buckets {
		bk := &ps.buckets[b]
		lat = latency{}
		if jv.hasLatency {
			lat = lats[b]
		}
		latencyFails := jv.hasLatency && (!lat.known || lat.rtt > jv.slo)
		for bi := bk.firstBlock; bi < bk.endBlock; bi++ {
			blk := &ps.blocks[bi]
			n := blk.end - blk.start
			// The filters in order: GPU type, price, latency, resources.
			switch {
			case jv.gpuType != "" && bk.gpuType != jv.gpuType:
				count(FilterGPUType, blk.start, n)
				continue
			case jv.maxPrice > 0 && blk.minPrice > jv.maxPrice:
				count(FilterMaxPrice, blk.start, n)
				continue
			case jv.maxPrice <= 0 && latencyFails:
				count(FilterLatencySLO, blk.start, n)
				continue
			}
			blockShort := !fits(&jv.demand, &blk.max)
			for i := blk.start; i < blk.end; i++ {
				switch {
				case jv.maxPrice > 0 && ps.price[i] > jv.maxPrice:
					count(FilterMaxPrice, i, 1)
				case latencyFails:
					count(FilterLatencySLO, i, 1)
				case blockShort || !fits(&jv.demand, &ps.free[i]):
					count(FilterResources, i, 1)
				default:
					// Every filter passes, so the score was not finite.
					count(FilterInvalidNode, i, 1)
				}
			}
		}
	}
	return u
}

// clampedSub returns free − d, with the rounding dust that FitsIn's
// tolerance lets through clamped to zero rather than left negative.
func clampedSub(free, d Resources) Resources {
	r := free.Sub(d)
	r.ComputePerHour = math.Max(r.ComputePerHour, 0)
	r.StorageGB = math.Max(r.StorageGB, 0)
	r.BandwidthGBps = math.Max(r.BandwidthGBps, 0)
	return r
}
