package placement

import (
	"errors"
	"math"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestWorkedExample is the design's acceptance case: E = 20, 18.75, 20 and
// node1 chosen, whatever the order of the nodes.
func TestWorkedExample(t *testing.T) {
	p := newTestPipeline(t, Config{})
	want := map[string]float64{"node1": 20, "node2": 18.75, "node3": 20}
	for _, nodes := range permutations(ExampleNodes()) {
		order := []string{nodes[0].ID, nodes[1].ID, nodes[2].ID}
		d, err := p.Rank(computeJob("example", ExampleDemand), nodes)
		if err != nil {
			t.Fatalf("Rank(%v): %v", order, err)
		}
		for _, c := range d.Ranked() {
			if c.Score != want[c.NodeID] { // exact: the example is in round numbers
				t.Errorf("input %v: score(%s) = %v; want %v", order, c.NodeID, c.Score, want[c.NodeID])
			}
		}
		if got := rankedIDs(d); !slices.Equal(got, []string{"node1", "node3", "node2"}) {
			t.Errorf("input %v: ranking = %v; want [node1 node3 node2]", order, got)
		}
		if w, ok := d.Winner(); !ok || w.NodeID != "node1" {
			t.Errorf("input %v: winner = %v, %v; want node1", order, w.NodeID, ok)
		}
		if len(d.Rejected()) != 0 {
			t.Errorf("input %v: rejected = %v; want none", order, d.Rejected())
		}
	}
}

func TestWorkedExampleExplanation(t *testing.T) {
	p := newTestPipeline(t, Config{})
	d, err := p.Rank(computeJob("example", ExampleDemand), ExampleNodes())
	if err != nil {
		t.Fatal(err)
	}
	ex := d.Explain()
	want := []struct {
		node    string
		outcome Outcome
		reason  string
	}{
		{"node1", OutcomeChosen, "highest score 20, tied with node3; won the tie-break on larger total compute (200 > 100 tasks/h)"},
		{"node3", OutcomeOutranked, "score 20 ties with node1; lost the tie-break on smaller total compute (100 < 200 tasks/h)"},
		{"node2", OutcomeOutranked, "score 18.75 < 20 of node1"},
	}
	if len(ex) != len(want) {
		t.Fatalf("Explain() has %d entries; want %d", len(ex), len(want))
	}
	for i, w := range want {
		if ex[i].NodeID != w.node || ex[i].Outcome != w.outcome || ex[i].Reason != w.reason {
			t.Errorf("Explain()[%d] = %s %s %q; want %s %s %q", i, ex[i].NodeID, ex[i].Outcome, ex[i].Reason, w.node, w.outcome, w.reason)
		}
	}
	if !d.Ranked()[0].Tied || !d.Ranked()[1].Tied || d.Ranked()[2].Tied {
		t.Errorf("Tied = %v %v %v; want true true false", d.Ranked()[0].Tied, d.Ranked()[1].Tied, d.Ranked()[2].Tied)
	}
}

func TestScoresEqual(t *testing.T) {
	tests := []struct {
		a, b float64
		want bool
	}{
		{20, 20, true},
		{20.000000001, 20, true},
		{20, 20.0000001, false},
		{18.75, 20, false},
		{0, 0, true},
		{-5, -5.000000001, true},
		{1e-300, 0, false},
	}
	for _, tt := range tests {
		if got := scoresEqual(tt.a, tt.b); got != tt.want {
			t.Errorf("scoresEqual(%v, %v) = %v; want %v", tt.a, tt.b, got, tt.want)
		}
	}
}

// TestTieBreak checks each rule of the documented order.
func TestTieBreak(t *testing.T) {
	// With D = 100, E = C·100/c: pick C and c to set the scores.
	tests := []struct {
		name  string
		nodes []Node
		want  []string
	}{
		{"higher score wins", []Node{node("a", 100, 1, 1, 500), node("b", 150, 1, 1, 800)}, []string{"a", "b"}},
		{"equal score: larger total compute", []Node{node("small", 100, 1, 1, 500), node("big", 200, 1, 1, 1000)}, []string{"big", "small"}},
		{"equal score, equal compute: lower price", []Node{
			// Free differs, total and score the same: the price rule cannot
			// be reached through E alone, so vary free compute with price.
			{ID: "dear", Total: Resources{ComputePerHour: 400}, Free: Resources{ComputePerHour: 200}, PricePerHour: 1000},
			{ID: "cheap", Total: Resources{ComputePerHour: 400}, Free: Resources{ComputePerHour: 100}, PricePerHour: 500},
		}, []string{"cheap", "dear"}},
		{"all equal: node ID", []Node{node("b", 100, 1, 1, 500), node("a", 100, 1, 1, 500), node("c", 100, 1, 1, 500)}, []string{"a", "b", "c"}},
		{"within tolerance counts as equal", []Node{
			node("small", 100.000000001, 1, 1, 500), // E = 20.0000000002
			node("big", 200, 1, 1, 1000),            // E = 20
		}, []string{"big", "small"}},
		{"beyond tolerance the score decides", []Node{
			node("small", 100.001, 1, 1, 500), // E = 20.0002
			node("big", 200, 1, 1, 1000),
		}, []string{"small", "big"}},
	}
	p := newTestPipeline(t, Config{})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, nodes := range permutations(tt.nodes) {
				d, err := p.Rank(computeJob("j", 100), nodes)
				if err != nil {
					t.Fatal(err)
				}
				if got := rankedIDs(d); !slices.Equal(got, tt.want) {
					t.Errorf("ranking = %v; want %v", got, tt.want)
				}
			}
		})
	}
}

// TestTieGroupsAreStrict: a ≈ b and b ≈ c but a ≉ c. Grouping from the top
// puts a and b together and c alone, whatever the input order.
func TestTieGroupsAreStrict(t *testing.T) {
	// E = C for D = 100, c = 100. Steps of 0.6e-9 relative.
	nodes := []Node{
		node("a", 1000, 1, 1, 100),            // 1000
		node("b", 1000*(1-0.6e-9), 1, 1, 100), // ≈ a
		node("c", 1000*(1-1.2e-9), 1, 1, 100), // ≈ b, not ≈ a
		node("z", 1000*(1-1.2e-9), 1, 1, 100), // = c exactly
	}
	// Larger compute wins ties, so within {a, b} a is first; c and z tie
	// exactly on everything but ID.
	want := []string{"a", "b", "c", "z"}
	p := newTestPipeline(t, Config{})
	for _, perm := range permutations(nodes) {
		d, err := p.Rank(computeJob("j", 100), perm)
		if err != nil {
			t.Fatal(err)
		}
		if got := rankedIDs(d); !slices.Equal(got, want) {
			t.Fatalf("ranking = %v; want %v", got, want)
		}
		if !d.Ranked()[1].Tied || d.Ranked()[2].Tied {
			t.Errorf("Tied(b) = %v, Tied(c) = %v; want true, false", d.Ranked()[1].Tied, d.Ranked()[2].Tied)
		}
	}
}

func TestEfficiencyApply(t *testing.T) {
	tests := []struct {
		e                Efficiency
		demand, capacity float64
		want             float64
	}{
		{EfficiencyLinear, 100, 200, 100},
		{EfficiencyLinear, 0, 200, 0},
		{EfficiencySaturating, 100, 200, 0.5},
		{EfficiencySaturating, 300, 200, 1},
		{EfficiencySaturating, 0, 200, 0},
		{EfficiencySaturating, 10, 0, 0},
	}
	for _, tt := range tests {
		if got := tt.e.Apply(tt.demand, tt.capacity); got != tt.want {
			t.Errorf("%v.Apply(%v, %v) = %v; want %v", tt.e, tt.demand, tt.capacity, got, tt.want)
		}
	}
	for _, name := range []string{"linear", "saturating"} {
		e, err := ParseEfficiency(name)
		if err != nil || e.String() != name {
			t.Errorf("ParseEfficiency(%q) = %v, %v", name, e, err)
		}
	}
	if _, err := ParseEfficiency("cubic"); !errors.Is(err, ErrInvalid) {
		t.Errorf("ParseEfficiency(cubic) error = %v; want ErrInvalid", err)
	}
}

// TestWeightedModel checks the weighted score term by term.
func TestWeightedModel(t *testing.T) {
	job := Job{ID: "j", Demand: Resources{ComputePerHour: 100, StorageGB: 250, BandwidthGBps: 4}}
	tests := []struct {
		name   string
		cfg    ScoreConfig
		want   map[string]Components
		winner string
	}{
		{
			name: "linear, no price",
			cfg:  WeightedConfig(EfficiencyLinear, 0),
			want: map[string]Components{
				"node1": {Compute: 200 * 100, Storage: 500 * 250, Bandwidth: 10 * 4},
				"node2": {Compute: 150 * 100, Storage: 300 * 250, Bandwidth: 5 * 4},
				// node3 has 200 GB storage < 250: rejected.
			},
			winner: "node1",
		},
		{
			name: "saturating with price: capacity beyond demand is worthless, so the cheapest wins",
			cfg:  WeightedConfig(EfficiencySaturating, 0.01),
			want: map[string]Components{
				"node1": {Compute: 100, Storage: 250, Bandwidth: 4, Price: 10},
				"node2": {Compute: 100, Storage: 250, Bandwidth: 4, Price: 8},
			},
			winner: "node2",
		},
		{
			name: "weights",
			cfg: ScoreConfig{Model: ModelWeighted,
				Compute: Term{Weight: 2, Efficiency: EfficiencySaturating},
				Storage: Term{Weight: 0}, Bandwidth: Term{Weight: 0.5, Efficiency: EfficiencyLinear}},
			want: map[string]Components{
				"node1": {Compute: 200, Bandwidth: 0.5 * 10 * 4},
				"node2": {Compute: 200, Bandwidth: 0.5 * 5 * 4},
			},
			winner: "node1",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newTestPipeline(t, Config{Score: tt.cfg})
			d, err := p.Rank(job, ExampleNodes())
			if err != nil {
				t.Fatal(err)
			}
			if len(d.Ranked()) != len(tt.want) {
				t.Fatalf("ranked %v; want %d nodes", rankedIDs(d), len(tt.want))
			}
			for _, c := range d.Ranked() {
				w := tt.want[c.NodeID]
				if c.Components != w {
					t.Errorf("components(%s) = %+v; want %+v", c.NodeID, c.Components, w)
				}
				if c.Score != w.Score() {
					t.Errorf("score(%s) = %v; want %v", c.NodeID, c.Score, w.Score())
				}
			}
			if w, _ := d.Winner(); w.NodeID != tt.winner {
				t.Errorf("winner = %s; want %s", w.NodeID, tt.winner)
			}
		})
	}
}

// TestLambda: the price term λ·c moves the choice from the biggest node to
// the cheapest as λ grows (linear: 20000 − 1000λ against 10000 − 500λ, equal
// at λ = 20).
func TestLambda(t *testing.T) {
	tests := []struct {
		lambda float64
		winner string
		score  float64
	}{
		{0, "node1", 20000},
		{10, "node1", 10000},
		{20, "node1", 0}, // node1 and node3 tie at 0; larger compute wins
		{30, "node3", -5000},
	}
	for _, tt := range tests {
		cfg := WeightedConfig(EfficiencyLinear, tt.lambda)
		cfg.Storage.Weight, cfg.Bandwidth.Weight = 0, 0
		p := newTestPipeline(t, Config{Score: cfg})
		d, err := p.Rank(computeJob("j", 100), ExampleNodes())
		if err != nil {
			t.Fatal(err)
		}
		w, _ := d.Winner()
		if w.NodeID != tt.winner || w.Score != tt.score {
			t.Errorf("λ=%v: winner %s score %v; want %s score %v", tt.lambda, w.NodeID, w.Score, tt.winner, tt.score)
		}
		if w.Components.Price != tt.lambda*w.PricePerHour {
			t.Errorf("λ=%v: price term %v; want %v", tt.lambda, w.Components.Price, tt.lambda*w.PricePerHour)
		}
	}
}

// TestLatencyPenalty: within the SLO, each millisecond costs the configured
// penalty, which can turn the ranking.
func TestLatencyPenalty(t *testing.T) {
	rtt := NewRTTMatrix()
	mustSet(rtt, "eu", "eu", 2*time.Millisecond)
	mustSet(rtt, "eu", "us", 80*time.Millisecond)
	near := node("near", 100, 100, 1, 500) // E = 20
	near.Region = "eu"
	far := node("far", 110, 100, 1, 500) // E = 22
	far.Region = "us"
	job := Job{ID: "j", OriginRegion: "eu", Demand: Resources{ComputePerHour: 100}, LatencySLO: 100 * time.Millisecond}

	tests := []struct {
		penalty  float64
		winner   string
		farScore float64
	}{
		{0, "far", 22},
		{0.01, "far", 22 - 0.8},
		{0.1, "near", 22 - 8},
	}
	for _, tt := range tests {
		cfg := ScoreConfig{LatencyPenaltyPerMs: tt.penalty}
		p := newTestPipeline(t, Config{Score: cfg, RTT: rtt})
		d, err := p.Rank(job, []Node{near, far})
		if err != nil {
			t.Fatal(err)
		}
		if w, _ := d.Winner(); w.NodeID != tt.winner {
			t.Errorf("penalty %v: winner %s; want %s", tt.penalty, w.NodeID, tt.winner)
		}
		for _, c := range d.Ranked() {
			if c.NodeID != "far" {
				continue
			}
			if math.Abs(c.Score-tt.farScore) > 1e-12 || c.Components.RTT != 80*time.Millisecond ||
				math.Abs(c.Components.Latency-tt.penalty*80) > 1e-12 {
				t.Errorf("penalty %v: far = %v %+v; want score %v, latency %v", tt.penalty, c.Score, c.Components, tt.farScore, tt.penalty*80)
			}
		}
	}

	// A batch job (no SLO) ignores latency altogether: no penalty, no RTT.
	batch := job
	batch.LatencySLO = 0
	p := newTestPipeline(t, Config{Score: ScoreConfig{LatencyPenaltyPerMs: 1}})
	d, err := p.Rank(batch, []Node{near, far})
	if err != nil {
		t.Fatal(err)
	}
	if w, _ := d.Winner(); w.NodeID != "far" || w.Components.Latency != 0 || w.Components.RTT != 0 {
		t.Errorf("batch job: winner %+v; want far with no latency term", w)
	}
}

func TestCostPerHour(t *testing.T) {
	nodes := ExampleNodes()
	tests := []struct {
		node   Node
		demand float64
		want   float64
	}{
		{nodes[0], 100, 500},      // half of node1's 200 tasks/h at $1000/h
		{nodes[1], 150, 800},      // all of node2
		{nodes[2], 25, 125},       // a quarter of node3
		{nodes[2], 0, 0},          // nothing
		{Node{}, 10, math.Inf(1)}, // no compute: cannot be bought
	}
	for _, tt := range tests {
		if got := tt.node.CostPerHour(Resources{ComputePerHour: tt.demand}); got != tt.want {
			t.Errorf("%s.CostPerHour(%v) = %v; want %v", tt.node.ID, tt.demand, got, tt.want)
		}
	}
}

func TestScoreConfigValidate(t *testing.T) {
	bad := []struct {
		name  string
		cfg   ScoreConfig
		field string
	}{
		{"negative lambda", ScoreConfig{Lambda: -1}, "lambda"},
		{"NaN lambda", ScoreConfig{Lambda: math.NaN()}, "lambda"},
		{"infinite weight", ScoreConfig{Compute: Term{Weight: math.Inf(1)}}, "weights.compute"},
		{"negative weight", ScoreConfig{Storage: Term{Weight: -2}}, "weights.storage"},
		{"unknown model", ScoreConfig{Model: 7}, "model"},
		{"unknown packing", ScoreConfig{Packing: 4}, "packing"},
		{"unknown efficiency", ScoreConfig{Bandwidth: Term{Efficiency: 9}}, "weights.bandwidth.efficiency"},
		{"negative latency penalty", ScoreConfig{LatencyPenaltyPerMs: -0.1}, "latency_penalty_per_ms"},
	}
	for _, tt := range bad {
		_, err := NewPipeline(Config{Score: tt.cfg})
		var fe *FieldError
		if !errors.Is(err, ErrInvalid) || !errors.As(err, &fe) || fe.Field != tt.field {
			t.Errorf("%s: NewPipeline error = %v; want ErrInvalid on field %q", tt.name, err, tt.field)
		}
	}
	for _, name := range []string{"cost-efficiency", "weighted"} {
		m, err := ParseModel(name)
		if err != nil || m.String() != name {
			t.Errorf("ParseModel(%q) = %v, %v", name, m, err)
		}
	}
	if _, err := ParseModel("best"); err == nil || !strings.Contains(err.Error(), "unknown model") {
		t.Errorf("ParseModel(best) error = %v", err)
	}
	for _, name := range []string{"binpack", "spread"} {
		p, err := ParsePacking(name)
		if err != nil || p.String() != name {
			t.Errorf("ParsePacking(%q) = %v, %v", name, p, err)
		}
	}
	var fe *FieldError
	if _, err := ParsePacking("tight"); !errors.As(err, &fe) || fe.Field != "packing" {
		t.Errorf("ParsePacking(tight) error = %v; want a FieldError on packing", err)
	}
}
