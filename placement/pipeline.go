package placement

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"time"
)

// Config configures a Pipeline.
type Config struct {
	// Score says how feasible nodes are scored. The zero value ranks by cost
	// efficiency E = C·D/c.
	Score ScoreConfig
	// RTT estimates region-to-region round-trip times for jobs with a
	// latency SLO. Nil knows no RTT at all, so such jobs fit nowhere (except
	// that nothing is looked up for jobs without an SLO).
	RTT RTTEstimator
}

// Pipeline places jobs on nodes: feasibility filters, then ranking by score
// with the tie-break rule, then selection of the best node (see the package
// documentation). A Pipeline holds no mutable state; it is safe to use from
// several goroutines at once if its RTTEstimator is.
type Pipeline struct {
	score ScoreConfig
	rtt   RTTEstimator
}

// NewPipeline builds the placement pipeline:
//
//	nodes ─▶ gpu-type ─▶ max-price ─▶ latency-slo ─▶ resources   (feasibility: first failure rejects)
//	      ─▶ score (cfg.Score: cost efficiency or weighted model, minus latency penalty)
//	      ─▶ order (score desc; equal within 1e-9 → total compute desc, price asc, node ID)
//	      ─▶ select the first
//
// It returns an error wrapping ErrInvalid if cfg.Score is not valid.
func NewPipeline(cfg Config) (*Pipeline, error) {
	if err := cfg.Score.Validate(); err != nil {
		return nil, fmt.Errorf("score config: %w", err)
	}
	return &Pipeline{score: cfg.Score, rtt: cfg.RTT}, nil
}

// ScoreConfig returns the configuration the pipeline scores with.
func (p *Pipeline) ScoreConfig() ScoreConfig { return p.score }

// Candidate is a feasible node and its score for a job.
type Candidate struct {
	// NodeID is the node.
	NodeID string `json:"node"`
	// Index is the node's position in the slice given to Rank.
	Index int `json:"-"`
	// Score is the node's score; higher is better.
	Score float64 `json:"score"`
	// Components are the terms Score adds up from.
	Components Components `json:"components"`
	// TotalCompute and PricePerHour are the node's figures the tie-break
	// uses, kept here so the decision can explain itself.
	TotalCompute float64 `json:"total_compute"`
	PricePerHour float64 `json:"price_per_hour"`
	// Tied reports that the score equals the winner's within the tolerance
	// (the winner itself included, when any other node ties with it): the
	// tie-break rule, not the score, ordered these nodes.
	Tied bool `json:"tied,omitempty"`
}

// Decision is the outcome of ranking the nodes for one job, with what is
// needed to explain it. The winner is found when the decision is made; the
// full ranking and the explanations are built the first time they are asked
// for, from the nodes given to Rank, which the decision keeps a reference
// to: do not modify that slice while the decision is in use. A Decision is
// safe to read from several goroutines.
type Decision struct {
	// JobID is the job the decision is for.
	JobID string

	nodes    []Node
	job      jobView
	score    *ScoreConfig
	winner   rankKey
	tied     int // size of the winner's tie group (0 or ≥ 2)
	ranking  *ranking
	rejected []rejectedKey
}

// ranking is the feasible nodes, put in order on first use.
type ranking struct {
	once sync.Once
	keys []rankKey
}

// ordered returns the feasible nodes' keys, best first.
func (d *Decision) ordered() []rankKey {
	r := d.ranking
	r.once.Do(func() { orderKeys(r.keys, d.nodes, d.score.Packing) })
	return r.keys
}

// NumRanked returns the number of feasible nodes.
func (d *Decision) NumRanked() int {
	if d.ranking == nil {
		return 0
	}
	return len(d.ranking.keys)
}

// NumRejected returns the number of infeasible nodes.
func (d *Decision) NumRejected() int { return len(d.rejected) }

// Candidate returns the feasible node ranked at position i, 0 ≤ i <
// NumRanked(); 0 is the winner.
func (d *Decision) Candidate(i int) Candidate {
	k := &d.winner
	if i != 0 {
		k = &d.ordered()[i]
	} else if d.NumRanked() == 0 {
		panic("placement: Decision.Candidate(0) with no feasible node")
	}
	n := &d.nodes[k.idx]
	return Candidate{
		NodeID:       n.ID,
		Index:        int(k.idx),
		Score:        k.score,
		Components:   d.score.components(d.job.demand, *d.score.basis(n, &n.Free), n.PricePerHour, k.rtt, d.job.hasLatency),
		TotalCompute: n.Total.ComputePerHour,
		PricePerHour: n.PricePerHour,
		Tied:         i < d.tied,
	}
}

// Ranked returns the feasible nodes, best first: Ranked()[0] is the winner.
func (d *Decision) Ranked() []Candidate {
	out := make([]Candidate, d.NumRanked())
	for i := range out {
		out[i] = d.Candidate(i)
	}
	return out
}

// Rejected returns the infeasible nodes, in input order, each with the
// filter that rejected it.
func (d *Decision) Rejected() []Rejection {
	out := make([]Rejection, len(d.rejected))
	for i, r := range d.rejected {
		out[i] = newRejection(r.v, int(r.idx), &d.nodes[r.idx], &d.job)
	}
	return out
}

// Winner returns the chosen node, or false when no node is feasible.
func (d *Decision) Winner() (Candidate, bool) {
	if d.NumRanked() == 0 {
		return Candidate{}, false
	}
	return d.Candidate(0), true
}

// Rank filters and orders nodes for job. It returns an error wrapping
// ErrInvalid if the job is not valid; a node it cannot score is rejected by
// FilterInvalidNode rather than failing the call. Node IDs should be unique:
// nodes that share an ID are ordered among themselves by input position.
func (p *Pipeline) Rank(job Job, nodes []Node) (Decision, error) {
	if err := job.Validate(); err != nil {
		return Decision{}, fmt.Errorf("job %q: %w", job.ID, err)
	}
	jv := newJobView(&job)
	sc := getRankScratch()
	defer putRankScratch(sc)

	// Filter and score in one pass, into compact keys that hold no
	// pointers: the garbage collector need not scan them, and the strings
	// of explanations are attached only when someone asks.
	lats := regionLatencies{est: p.rtt, origin: job.OriginRegion}
	var lat latency
	for i := range nodes {
		n := &nodes[i]
		if jv.hasLatency {
			lat = lats.get(n.Region)
		}
		v := jv.check(n, &n.Free, lat)
		if v.filter == 0 {
			s := p.score.score(jv.demand, *p.score.basis(n, &n.Free), n.PricePerHour, lat.rtt, jv.hasLatency)
			if !math.IsNaN(s) && !math.IsInf(s, 0) {
				sc.keys = append(sc.keys, rankKey{score: s, rtt: lat.rtt, idx: int32(i)})
				continue
			}
			v = verdict{filter: FilterInvalidNode, code: reasonBadScore, have: s}
		}
		sc.rejected = append(sc.rejected, rejectedKey{v: v, idx: int32(i)})
	}

	d := Decision{JobID: job.ID, nodes: nodes, job: jv, score: &p.score}
	if len(sc.keys) > 0 {
		d.ranking = &ranking{keys: slices.Clone(sc.keys)}
		d.winner, d.tied = selectWinner(d.ranking.keys, nodes, p.score.Packing)
	}
	if len(sc.rejected) > 0 {
		d.rejected = slices.Clone(sc.rejected)
	}
	return d, nil
}

// selectWinner returns the first key of the order orderKeys would give, and
// the size of its tie group if it has ties (else 0), in linear time: the
// group is every key whose score equals the highest within the tolerance.
func selectWinner(keys []rankKey, nodes []Node, packing Packing) (rankKey, int) {
	best := 0
	for i := range keys {
		if keys[i].score > keys[best].score {
			best = i
		}
	}
	top := keys[best].score
	// Scores further than 2·tolerance below the top cannot equal it; the
	// cheap test spares scoresEqual for almost every key.
	cut := top - 2*scoreTolerance*math.Abs(top)
	group := 0
	for i := range keys {
		if keys[i].score < cut || !scoresEqual(top, keys[i].score) {
			continue
		}
		group++
		if tieBreak(nodes, keys[i].idx, keys[best].idx, packing) < 0 {
			best = i
		}
	}
	if group < 2 {
		group = 0
	}
	return keys[best], group
}

// tieBreak orders nodes[a] and nodes[b], of equal score, by the rule of
// compareTieBreak, then (for duplicate IDs) input position.
func tieBreak(nodes []Node, a, b int32, packing Packing) int {
	na, nb := &nodes[a], &nodes[b]
	if c := compareTieBreak(na, nb, na.Free.ComputePerHour, nb.Free.ComputePerHour, packing); c != 0 {
		return c
	}
	return cmp.Compare(a, b)
}

// compareTieBreak orders two nodes of equal score, with free compute
// freeA and freeB: larger total compute, then lower price, then, when bin
// packing, less free compute (the best fit), then node ID.
func compareTieBreak(a, b *Node, freeA, freeB float64, packing Packing) int {
	if a.Total.ComputePerHour != b.Total.ComputePerHour {
		if a.Total.ComputePerHour > b.Total.ComputePerHour {
			return -1
		}
		return 1
	}
	if a.PricePerHour != b.PricePerHour {
		if a.PricePerHour < b.PricePerHour {
			return -1
		}
		return 1
	}
	if packing == PackBinpack && freeA != freeB {
		if freeA < freeB {
			return -1
		}
		return 1
	}
	return strings.Compare(a.ID, b.ID)
}

// rankKey is what ordering a candidate needs, in a compact form: the
// tie-break reads the rest from the node, which it rarely needs.
type rankKey struct {
	score float64
	rtt   time.Duration
	idx   int32 // position in Rank's nodes
}

// rejectedKey is a rejection before its strings are attached.
type rejectedKey struct {
	v   verdict
	idx int32
}

// rankScratch is Rank's working memory, pooled: at ten thousand nodes per
// call it would otherwise be most of what Rank allocates.
type rankScratch struct {
	keys     []rankKey
	rejected []rejectedKey
}

var rankScratchPool = sync.Pool{New: func() any { return new(rankScratch) }}

func getRankScratch() *rankScratch { return rankScratchPool.Get().(*rankScratch) }

func putRankScratch(sc *rankScratch) {
	// Keep the buffers of ordinary calls; let an outsized one go.
	if cap(sc.keys) > 1<<20 || cap(sc.rejected) > 1<<20 {
		return
	}
	sc.keys, sc.rejected = sc.keys[:0], sc.rejected[:0]
	rankScratchPool.Put(sc)
}

// regionLatencies memoizes an RTTEstimator for one origin over one call, so
// ten thousand nodes in a handful of regions cost a handful of look-ups. A
// small direct-mapped table in front of the map answers most look-ups with
// one string comparison.
type regionLatencies struct {
	est    RTTEstimator
	origin string
	table  [64]regionEntry
	seen   map[string]latency
}

type regionEntry struct {
	region string
	lat    latency
	set    bool
}

func (r *regionLatencies) get(region string) latency {
	// Region names differ at the start ("us-", "eu-"), the end ("-1",
	// "-2") or in length; mix those bytes, and look in two slots.
	var h uint
	if n := len(region); n > 0 {
		h = uint(n)*0x9e37 ^ uint(region[0])*0x1f1f ^ uint(region[1%n])*0x3b ^
			uint(region[n/2])*0x2d1 ^ uint(region[max(n-2, 0)])*0x61 ^ uint(region[n-1])
		h ^= h >> 7
	}
	for _, slot := range [2]uint{h & 63, (h + 1) & 63} {
		if e := &r.table[slot]; e.set && e.region == region {
			return e.lat
		}
	}
	l, ok := r.seen[region]
	if !ok {
		if r.est != nil {
			l.rtt, l.known = r.est.RegionRTT(r.origin, region)
		}
		if r.seen == nil {
			r.seen = make(map[string]latency)
		}
		r.seen[region] = l
	}
	slot := h & 63
	if r.table[slot].set {
		slot = (h + 1) & 63
	}
	r.table[slot] = regionEntry{region: region, lat: l, set: true}
	return l
}

// orderKeys sorts keys by the documented rule: score descending, with
// scores equal within scoreTolerance ordered by the tie-break. Groups of
// equal scores are formed from the top (each around the highest score not
// yet grouped), which keeps the order strict although "equal within a
// tolerance" is not transitive, and independent of the input order.
func orderKeys(keys []rankKey, nodes []Node, packing Packing) {
	if len(keys) < 2 {
		return
	}
	// Sort by score alone; exact ties are left in any order, since the
	// grouping below re-sorts every group by the tie-break.
	sortByScoreDesc(keys)
	for start := 0; start < len(keys); {
		end := start + 1
		for end < len(keys) && scoresEqual(keys[start].score, keys[end].score) {
			end++
		}
		if end-start > 1 {
			slices.SortFunc(keys[start:end], func(a, b rankKey) int { return tieBreak(nodes, a.idx, b.idx, packing) })
		}
		start = end
	}
}

// radixItem pairs a score, as bits that sort like the score descending,
// with the position of its key.
type radixItem struct {
	bits uint64
	pos  int32
}

// sortByScoreDesc sorts keys by score, highest first: an LSD radix sort
// over 11-bit digits of the scores' bits, linear in the number of keys.
func sortByScoreDesc(keys []rankKey) {
	n := len(keys)
	if n < 256 {
		slices.SortFunc(keys, func(a, b rankKey) int { return cmp.Compare(b.score, a.score) })
		return
	}
	items := make([]radixItem, n)
	tmp := make([]radixItem, n)
	for i := range keys {
		items[i] = radixItem{bits: descendingBits(keys[i].score), pos: int32(i)}
	}
	const digitBits = 11
	const digitMask = 1<<digitBits - 1
	var counts [1 << digitBits]int32
	for shift := uint(0); shift < 64; shift += digitBits {
		clear(counts[:])
		for i := range items {
			counts[(items[i].bits>>shift)&digitMask]++
		}
		if counts[(items[0].bits>>shift)&digitMask] == int32(n) {
			continue // every item has this digit: the pass would not move anything
		}
		var sum int32
		for d := range counts {
			c := counts[d]
			counts[d] = sum
			sum += c
		}
		for i := range items {
			d := (items[i].bits >> shift) & digitMask
			tmp[counts[d]] = items[i]
			counts[d]++
		}
		items, tmp = tmp, items
	}
	sorted := make([]rankKey, n)
	for i := range items {
		sorted[i] = keys[items[i].pos]
	}
	copy(keys, sorted)
}

// descendingBits maps a finite float64 to a uint64 whose ascending order is
// the float's descending order.
func descendingBits(f float64) uint64 {
	b := math.Float64bits(f)
	if b>>63 == 1 {
		b = ^b // negative: larger magnitude sorts lower
	} else {
		b |= 1 << 63
	}
	return ^b
}

// tieBreakReason says which rule of the tie-break put w before l.
func tieBreakReason(w, l *Candidate) (won, lost string) {
	switch {
	case w.TotalCompute != l.TotalCompute:
		return fmt.Sprintf("larger total compute (%s > %s tasks/h)", formatNumber(w.TotalCompute), formatNumber(l.TotalCompute)),
			fmt.Sprintf("smaller total compute (%s < %s tasks/h)", formatNumber(l.TotalCompute), formatNumber(w.TotalCompute))
	case w.PricePerHour != l.PricePerHour:
		return fmt.Sprintf("lower price ($%s < $%s/h)", formatNumber(w.PricePerHour), formatNumber(l.PricePerHour)),
			fmt.Sprintf("higher price ($%s > $%s/h)", formatNumber(l.PricePerHour), formatNumber(w.PricePerHour))
	default:
		return fmt.Sprintf("node ID (%q before %q)", w.NodeID, l.NodeID),
			fmt.Sprintf("node ID (%q after %q)", l.NodeID, w.NodeID)
	}
}

// WinnerReason says why the winner won, or why there is none.
func (d *Decision) WinnerReason() string {
	w, ok := d.Winner()
	if !ok {
		return d.noWinnerReason()
	}
	if d.NumRanked() == 1 {
		if len(d.rejected) == 0 {
			return fmt.Sprintf("the only node (score %s)", formatNumber(w.Score))
		}
		return fmt.Sprintf("the only feasible node (score %s; %d rejected)", formatNumber(w.Score), len(d.rejected))
	}
	next := d.Candidate(1)
	if next.Tied {
		won, _ := tieBreakReason(&w, &next)
		others := ""
		if n := d.tied - 2; n > 0 {
			others = fmt.Sprintf(" and %d more", n)
		}
		return fmt.Sprintf("highest score %s, tied with %s%s; won the tie-break on %s",
			formatNumber(w.Score), next.NodeID, others, won)
	}
	return fmt.Sprintf("highest score %s (next: %s at %s)", formatNumber(w.Score), next.NodeID, formatNumber(next.Score))
}

func (d *Decision) noWinnerReason() string {
	if len(d.rejected) == 0 {
		return "no nodes to choose from"
	}
	var counts [numFilters]int
	for _, r := range d.rejected {
		counts[r.v.filter]++
	}
	return "no feasible node: " + summarizeCounts(counts)
}

func summarizeCounts(counts [numFilters]int) string {
	var b strings.Builder
	for f := FilterGPUType; int(f) < numFilters; f++ {
		if counts[f] == 0 {
			continue
		}
		if b.Len() > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%d rejected by %s", counts[f], f)
	}
	return b.String()
}

// LossReason says why the ranked candidate at position i (i ≥ 1) lost to
// the winner.
func (d *Decision) LossReason(i int) string {
	if i <= 0 || i >= d.NumRanked() {
		return ""
	}
	w, c := d.Candidate(0), d.Candidate(i)
	if c.Tied {
		_, lost := tieBreakReason(&w, &c)
		return fmt.Sprintf("score %s ties with %s; lost the tie-break on %s", formatNumber(c.Score), w.NodeID, lost)
	}
	return fmt.Sprintf("score %s < %s of %s", formatNumber(c.Score), formatNumber(w.Score), w.NodeID)
}

// Outcome is what a decision did with a node.
type Outcome uint8

const (
	// OutcomeChosen marks the winner.
	OutcomeChosen Outcome = iota + 1
	// OutcomeOutranked marks a feasible node that scored lower or lost the tie-break.
	OutcomeOutranked
	// OutcomeRejected marks a node a filter rejected.
	OutcomeRejected
)

// String returns "chosen", "outranked" or "rejected".
func (o Outcome) String() string {
	switch o {
	case OutcomeChosen:
		return "chosen"
	case OutcomeOutranked:
		return "outranked"
	case OutcomeRejected:
		return "rejected"
	}
	return fmt.Sprintf("Outcome(%d)", uint8(o))
}

// MarshalText encodes the outcome as its name.
func (o Outcome) MarshalText() ([]byte, error) { return []byte(o.String()), nil }

// Explanation is one node's part in a decision, in words.
type Explanation struct {
	// NodeID is the node.
	NodeID string `json:"node"`
	// Index is the node's position in the slice given to Rank.
	Index int `json:"-"`
	// Rank is the node's 1-based position in the ranking; 0 if rejected.
	Rank int `json:"rank,omitempty"`
	// Outcome is what happened to the node.
	Outcome Outcome `json:"decision"`
	// Score and Components are set for ranked nodes only.
	Score      *float64    `json:"score,omitempty"`
	Components *Components `json:"components,omitempty"`
	// Filter is the filter that rejected the node, for rejected nodes.
	Filter Filter `json:"filter,omitempty"`
	// Reason says why the node won, lost or was rejected.
	Reason string `json:"reason"`
}

// Explain returns one explanation per node: the ranked nodes best first,
// then the rejected ones in input order. It formats every reason, so call it
// when someone will read them, not on the hot path.
func (d *Decision) Explain() []Explanation {
	ranked := d.Ranked()
	out := make([]Explanation, 0, len(ranked)+len(d.rejected))
	for i := range ranked {
		c := &ranked[i]
		e := Explanation{NodeID: c.NodeID, Index: c.Index, Rank: i + 1, Score: &c.Score, Components: &c.Components}
		if i == 0 {
			e.Outcome, e.Reason = OutcomeChosen, d.WinnerReason()
		} else {
			e.Outcome, e.Reason = OutcomeOutranked, d.LossReason(i)
		}
		out = append(out, e)
	}
	for _, r := range d.Rejected() {
		out = append(out, Explanation{NodeID: r.NodeID, Index: r.Index, Outcome: OutcomeRejected, Filter: r.Filter, Reason: r.Reason()})
	}
	return out
}

// TieBreakRule states the ranking rule, for output that shows a ranking.
const TieBreakRule = "higher score first; scores equal within a relative 1e-9 are ordered by larger total compute, then lower price, then node ID"
