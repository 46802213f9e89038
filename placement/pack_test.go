package placement

import (
	"errors"
	"fmt"
	"math"
	"testing"
	"time"
)

type placed struct{ job, node string }

func placements(p Plan) []placed {
	out := make([]placed, len(p.Placements))
	for i, pl := range p.Placements {
		out[i] = placed{pl.JobID, pl.NodeID}
	}
	return out
}

func unplacedIDs(p Plan) []string {
	out := make([]string, len(p.Unplaced))
	for i, u := range p.Unplaced {
		out[i] = u.JobID
	}
	return out
}

func TestPack(t *testing.T) {
	tests := []struct {
		name     string
		packing  Packing
		nodes    []Node
		jobs     []Job
		want     []placed
		unplaced []string
	}{
		{
			name:  "worked example: one job goes to node1",
			nodes: ExampleNodes(),
			jobs:  []Job{computeJob("j", 100)},
			want:  []placed{{"j", "node1"}},
		},
		{
			// j1: node1 and node3 tie at E=20, node1 wins. j2: node1 has 100
			// free left (E=10), node3 20 wins. j3: node2 18.75 wins over
			// node1's 10. j4: node2 has 50 left, too little; node1 takes it.
			name:    "spread: each job is ranked on the free resources the previous ones left",
			packing: PackSpread,
			nodes:   ExampleNodes(),
			jobs:    []Job{computeJob("j1", 100), computeJob("j2", 100), computeJob("j3", 100), computeJob("j4", 100)},
			want:    []placed{{"j1", "node1"}, {"j2", "node3"}, {"j3", "node2"}, {"j4", "node1"}},
		},
		{
			// Bin packing scores the machines (E = 20, 18.75, 20), so node1
			// (the tie-break's larger node) takes jobs until it is full,
			// then node3, then node2.
			name:  "binpack: a node fills up before the next equally efficient one is used",
			nodes: ExampleNodes(),
			jobs:  []Job{computeJob("j1", 100), computeJob("j2", 100), computeJob("j3", 100), computeJob("j4", 100)},
			want:  []placed{{"j1", "node1"}, {"j2", "node1"}, {"j3", "node3"}, {"j4", "node2"}},
		},
		{
			// Identical nodes: the best fit among them takes the job, so a
			// whole node stays free for the large job that follows.
			name: "binpack: best fit among identical nodes keeps a whole node free",
			nodes: func() []Node {
				a, b := node("a", 100, 100, 10, 100), node("b", 100, 100, 10, 100)
				a.Free.ComputePerHour = 60
				return []Node{a, b}
			}(),
			jobs: []Job{computeJob("j1", 50), computeJob("j2", 40)},
			want: []placed{{"j1", "a"}, {"j2", "b"}},
		},
		{
			name:     "jobs that fit nowhere are reported, the rest still placed",
			nodes:    ExampleNodes(),
			jobs:     []Job{computeJob("huge", 500), computeJob("small", 10)},
			want:     []placed{{"small", "node1"}},
			unplaced: []string{"huge"},
		},
		{
			name:  "larger demand first at equal priority",
			nodes: []Node{node("only", 100, 100, 10, 100)},
			jobs:  []Job{computeJob("a-small", 40), computeJob("b-big", 70)},
			want:  []placed{{"b-big", "only"}},
			// 30 left: not enough for a-small's 40.
			unplaced: []string{"a-small"},
		},
		{
			name:  "higher priority first, even if smaller",
			nodes: []Node{node("only", 100, 100, 10, 100)},
			jobs: []Job{computeJob("big", 70), func() Job {
				j := computeJob("urgent", 40)
				j.Priority = 5
				return j
			}()},
			want:     []placed{{"urgent", "only"}},
			unplaced: []string{"big"},
		},
		{
			name:  "ID breaks equal priority and demand",
			nodes: []Node{node("only", 100, 100, 10, 100)},
			jobs:  []Job{computeJob("b", 60), computeJob("a", 60)},
			want:  []placed{{"a", "only"}},
			// b is tried second and finds 40 left.
			unplaced: []string{"b"},
		},
		{
			name: "storage and GPUs run out as well as compute",
			nodes: []Node{func() Node {
				n := node("gpu", 1000, 100, 10, 100)
				n.GPUType, n.Total.GPUs, n.Free.GPUs = "H100", 2, 2
				return n
			}()},
			jobs: []Job{
				{ID: "g1", GPUType: "H100", Demand: Resources{ComputePerHour: 1, GPUs: 1}},
				{ID: "g2", GPUType: "H100", Demand: Resources{ComputePerHour: 1, GPUs: 1}},
				{ID: "g3", GPUType: "H100", Demand: Resources{ComputePerHour: 1, GPUs: 1}},
				{ID: "s1", Demand: Resources{ComputePerHour: 1, StorageGB: 60}},
				{ID: "s2", Demand: Resources{ComputePerHour: 1, StorageGB: 60}},
			},
			want:     []placed{{"g1", "gpu"}, {"g2", "gpu"}, {"s1", "gpu"}},
			unplaced: []string{"g3", "s2"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newTestPipeline(t, Config{Score: ScoreConfig{Packing: tt.packing}})
			plan, err := p.Pack(tt.jobs, tt.nodes)
			if err != nil {
				t.Fatal(err)
			}
			if got := placements(plan); fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("placements = %v; want %v", got, tt.want)
			}
			if got := unplacedIDs(plan); fmt.Sprint(got) != fmt.Sprint(tt.unplaced) && !(len(got) == 0 && len(tt.unplaced) == 0) {
				t.Errorf("unplaced = %v; want %v", got, tt.unplaced)
			}
		})
	}
}

func TestPackFree(t *testing.T) {
	p := newTestPipeline(t, Config{})
	nodes := ExampleNodes()
	plan, err := p.Pack([]Job{{ID: "j", Demand: Resources{ComputePerHour: 100, StorageGB: 50, BandwidthGBps: 1}}}, nodes)
	if err != nil {
		t.Fatal(err)
	}
	want := []Resources{
		{ComputePerHour: 100, StorageGB: 450, BandwidthGBps: 9},
		nodes[1].Free, nodes[2].Free,
	}
	for i := range want {
		if plan.Free[i] != want[i] {
			t.Errorf("Free[%d] = %+v; want %+v", i, plan.Free[i], want[i])
		}
	}
	if nodes[0].Free != nodes[0].Total {
		t.Error("Pack changed its input nodes")
	}
	pl := plan.Placements[0]
	if pl.NodeIndex != 0 || pl.JobIndex != 0 || pl.Score != 20 || pl.Components.Compute != 20 || !pl.Tied {
		t.Errorf("placement = %+v; want node #0, score 20, tied with node3", pl)
	}
}

func TestPackUnplacedReason(t *testing.T) {
	rtt := NewRTTMatrix()
	mustSet(rtt, "eu", "us", 90*time.Millisecond)
	a := node("a", 100, 100, 10, 100)
	a.Region = "us" // too far
	b := node("b", 10, 100, 10, 100)
	b.Region = "eu" // too small
	c := node("c", 100, 100, 10, 900)
	c.Region = "eu" // too dear
	d := node("d", 100, 100, 10, 100)
	d.Region = "ap" // unknown RTT
	job := Job{ID: "j", OriginRegion: "eu", LatencySLO: 50 * time.Millisecond, MaxPricePerHour: 500, Demand: Resources{ComputePerHour: 50}}

	p := newTestPipeline(t, Config{RTT: rtt})
	plan, err := p.Pack([]Job{job}, []Node{a, b, c, d})
	if err != nil {
		t.Fatal(err)
	}
	if len(plan.Unplaced) != 1 || len(plan.Placements) != 0 {
		t.Fatalf("plan = %+v; want j unplaced", plan)
	}
	u := plan.Unplaced[0]
	for f, want := range map[Filter]int{FilterGPUType: 0, FilterMaxPrice: 1, FilterLatencySLO: 2, FilterResources: 1} {
		if got := u.RejectedBy(f); got != want {
			t.Errorf("RejectedBy(%v) = %d; want %d", f, got, want)
		}
	}
	if s, ok := u.Sample(FilterLatencySLO); !ok || s.NodeID != "d" {
		// Nodes are visited by region then ID: ap (d) before us (a).
		t.Errorf("Sample(latency-slo) = %v, %v; want d", s, ok)
	}
	want := "no feasible node among 4: " +
		"1 rejected by max-price (e.g. c: price $900/h exceeds the job's maximum $500/h); " +
		"2 rejected by latency-slo (e.g. d: no RTT estimate from eu to ap); " +
		"1 rejected by resources (e.g. b: needs 50 tasks/h of compute, 10 free)"
	if got := u.Reason(); got != want {
		t.Errorf("Reason() =\n%s\nwant\n%s", got, want)
	}

	none, err := p.Pack([]Job{job}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := none.Unplaced[0].Reason(); got != "no nodes to place on" {
		t.Errorf("Reason() with no nodes = %q", got)
	}
}

func TestPackErrors(t *testing.T) {
	p := newTestPipeline(t, Config{})
	dupNodes := append(ExampleNodes(), ExampleNodes()[0])
	dupNodes[3].Region = "elsewhere" // same ID in another region is still a duplicate
	badNode := ExampleNodes()
	badNode[1].PricePerHour = math.NaN()
	overFree := ExampleNodes()
	overFree[2].Free.ComputePerHour = 1000
	tests := []struct {
		name  string
		jobs  []Job
		nodes []Node
		want  string
	}{
		{"duplicate node", []Job{computeJob("j", 1)}, dupNodes, `node "node1" (#3): field "name": duplicates node #0`},
		{"invalid node", []Job{computeJob("j", 1)}, badNode, `node "node2" (#1): field "price_per_hour": must be a finite number, got NaN`},
		{"free above total", []Job{computeJob("j", 1)}, overFree, `node "node3" (#2): field "free": exceeds total`},
		{"duplicate job", []Job{computeJob("j", 1), computeJob("k", 1), computeJob("j", 2)}, ExampleNodes(), `job "j" (#2): field "id": duplicates job #0`},
		{"invalid job", []Job{computeJob("j", 0)}, ExampleNodes(), `job "j" (#0): field "demand.compute": must be greater than zero, got 0`},
	}
	for _, tt := range tests {
		_, err := p.Pack(tt.jobs, tt.nodes)
		if !errors.Is(err, ErrInvalid) || err.Error() != tt.want {
			t.Errorf("%s: Pack error = %v; want %q (ErrInvalid)", tt.name, err, tt.want)
		}
	}
}

// TestPackLatencyRegions: the region shortcut of Pack agrees with the
// per-node filter of Rank, penalties included.
func TestPackLatencyRegions(t *testing.T) {
	rtt := NewRTTMatrix()
	mustSet(rtt, "eu", "eu", 2*time.Millisecond)
	mustSet(rtt, "eu", "us", 80*time.Millisecond)
	mustSet(rtt, "eu", "ap", 200*time.Millisecond)
	var nodes []Node
	for i, region := range []string{"ap", "us", "eu", "us", "ap", "eu"} {
		n := node(fmt.Sprintf("%s-%d", region, i), 100+float64(i)*10, 100, 10, 100)
		n.Region = region
		nodes = append(nodes, n)
	}
	jobs := []Job{
		{ID: "eu-tight", OriginRegion: "eu", LatencySLO: 10 * time.Millisecond, Demand: Resources{ComputePerHour: 100}},
		{ID: "eu-loose", OriginRegion: "eu", LatencySLO: 100 * time.Millisecond, Demand: Resources{ComputePerHour: 100}},
		{ID: "eu-any", OriginRegion: "eu", LatencySLO: time.Second, Demand: Resources{ComputePerHour: 100}},
		{ID: "eu-tight-2", OriginRegion: "eu", LatencySLO: 10 * time.Millisecond, Demand: Resources{ComputePerHour: 100}},
		{ID: "eu-tight-3", OriginRegion: "eu", LatencySLO: 10 * time.Millisecond, Demand: Resources{ComputePerHour: 100}},
	}
	cfg := Config{RTT: rtt, Score: ScoreConfig{LatencyPenaltyPerMs: 0.01}}
	p := newTestPipeline(t, cfg)
	plan, err := p.Pack(jobs, nodes)
	if err != nil {
		t.Fatal(err)
	}
	checkPlanAgainstRank(t, p, jobs, nodes, plan)
	// eu-any takes eu-5 (best even after its 2 ms penalty), eu-loose takes
	// us-3 (80 ms is within its SLO), eu-tight takes eu-2; nothing near
	// enough is left for the other two.
	if got := unplacedIDs(plan); fmt.Sprint(got) != "[eu-tight-2 eu-tight-3]" {
		t.Errorf("unplaced = %v; want [eu-tight-2 eu-tight-3]", got)
	}
}

// checkPlanAgainstRank replays a plan job by job: each placement must be
// the winner Rank picks on the free resources left by the placements
// before it, and each unplaced job must have no feasible node at its turn.
func checkPlanAgainstRank(t *testing.T, p *Pipeline, jobs []Job, nodes []Node, plan Plan) {
	t.Helper()
	state := append([]Node(nil), nodes...)
	order, err := jobOrder(jobs)
	if err != nil {
		t.Fatal(err)
	}
	pi, ui := 0, 0
	for _, ji := range order {
		j := jobs[ji]
		d, err := p.Rank(j, state)
		if err != nil {
			t.Fatal(err)
		}
		w, ok := d.Winner()
		if !ok {
			if ui >= len(plan.Unplaced) || plan.Unplaced[ui].JobID != j.ID {
				t.Fatalf("job %s: Rank finds no node, but the plan does not list it as unplaced next", j.ID)
			}
			// The unplaced job's counts and examples agree with Rank's
			// node-by-node rejections.
			u := &plan.Unplaced[ui]
			counts := map[Filter]int{}
			reasons := map[string]string{}
			for _, r := range d.Rejected() {
				counts[r.Filter]++
				reasons[r.NodeID] = r.String()
			}
			for f := FilterGPUType; f <= FilterInvalidNode; f++ {
				if u.RejectedBy(f) != counts[f] {
					t.Fatalf("job %s: %d nodes rejected by %v; Rank says %d", j.ID, u.RejectedBy(f), f, counts[f])
				}
				if s, ok := u.Sample(f); ok && reasons[s.NodeID] != s.String() {
					t.Fatalf("job %s: example %q; Rank says %q", j.ID, s.String(), reasons[s.NodeID])
				}
			}
			ui++
			continue
		}
		if pi >= len(plan.Placements) || plan.Placements[pi].JobID != j.ID {
			t.Fatalf("job %s: Rank picks %s, but the plan's next placement is %+v", j.ID, w.NodeID, plan.Placements[pi:min(pi+1, len(plan.Placements))])
		}
		pl := plan.Placements[pi]
		if pl.NodeID != w.NodeID || pl.Score != w.Score || pl.Components != w.Components {
			t.Fatalf("job %s: plan placed on %s (score %v %+v); Rank picks %s (score %v %+v)",
				j.ID, pl.NodeID, pl.Score, pl.Components, w.NodeID, w.Score, w.Components)
		}
		state[w.Index].Free = clampedSub(state[w.Index].Free, j.Demand)
		pi++
	}
	if pi != len(plan.Placements) || ui != len(plan.Unplaced) {
		t.Fatalf("plan has %d placements and %d unplaced; replay used %d and %d", len(plan.Placements), len(plan.Unplaced), pi, ui)
	}
	for i := range state {
		if state[i].Free != plan.Free[i] {
			t.Errorf("node %s: plan leaves %+v free; replay leaves %+v", state[i].ID, plan.Free[i], state[i].Free)
		}
	}
}
