package placement

import (
	"errors"
	"math"
	"strings"
	"testing"
	"time"
)

func TestFilters(t *testing.T) {
	rtt := NewRTTMatrix()
	mustSet(rtt, "eu", "us", 80*time.Millisecond)

	gpuNode := func(typ string, total, free int) Node {
		n := node("g", 100, 100, 10, 500)
		n.GPUType, n.Total.GPUs, n.Free.GPUs = typ, total, free
		return n
	}
	inRegion := func(n Node, region string) Node { n.Region = region; return n }
	withFree := func(n Node, free Resources) Node { n.Free = free; return n }
	base := node("n", 100, 100, 10, 500)
	job := func(mod func(*Job)) Job {
		j := Job{ID: "j", Demand: Resources{ComputePerHour: 50, StorageGB: 50, BandwidthGBps: 5}}
		if mod != nil {
			mod(&j)
		}
		return j
	}

	tests := []struct {
		name   string
		rtt    RTTEstimator
		node   Node
		job    Job
		filter Filter // 0: feasible
		reason string
	}{
		{"fits", nil, base, job(nil), 0, ""},
		{"exact fit", nil, base, job(func(j *Job) { j.Demand = base.Free }), 0, ""},
		{"compute short", nil, withFree(base, Resources{ComputePerHour: 40, StorageGB: 100, BandwidthGBps: 10}), job(nil),
			FilterResources, "needs 50 tasks/h of compute, 40 free"},
		{"storage short", nil, base, job(func(j *Job) { j.Demand.StorageGB = 100.5 }),
			FilterResources, "needs 100.5 GB of storage, 100 free"},
		{"bandwidth short", nil, base, job(func(j *Job) { j.Demand.BandwidthGBps = 11 }),
			FilterResources, "needs 11 GB/s of bandwidth, 10 free"},
		{"free, not total, counts", nil, withFree(base, Resources{ComputePerHour: 100, StorageGB: 10, BandwidthGBps: 10}), job(nil),
			FilterResources, "needs 50 GB of storage, 10 free"},
		{"GPUs short", nil, gpuNode("A100", 8, 1), job(func(j *Job) { j.Demand.GPUs = 2 }),
			FilterResources, "needs 2 GPUs, 1 free"},
		{"GPUs fit, any type", nil, gpuNode("A100", 8, 2), job(func(j *Job) { j.Demand.GPUs = 2 }), 0, ""},
		{"GPU type matches", nil, gpuNode("H100", 8, 8), job(func(j *Job) { j.GPUType = "H100"; j.Demand.GPUs = 1 }), 0, ""},
		{"GPU type differs", nil, gpuNode("A100", 8, 8), job(func(j *Job) { j.GPUType = "H100" }),
			FilterGPUType, `job needs GPU type "H100", node has "A100"`},
		{"no GPU", nil, base, job(func(j *Job) { j.GPUType = "H100" }),
			FilterGPUType, `job needs GPU type "H100", node has no GPU`},
		{"price above max", nil, base, job(func(j *Job) { j.MaxPricePerHour = 499.99 }),
			FilterMaxPrice, "price $500/h exceeds the job's maximum $499.99/h"},
		{"price at max", nil, base, job(func(j *Job) { j.MaxPricePerHour = 500 }), 0, ""},
		{"no max price", nil, base, job(func(j *Job) { j.MaxPricePerHour = 0 }), 0, ""},
		{"RTT over SLO", rtt, inRegion(base, "us"), job(func(j *Job) { j.OriginRegion = "eu"; j.LatencySLO = 79 * time.Millisecond }),
			FilterLatencySLO, "RTT 80ms from eu to us exceeds the latency SLO 79ms"},
		{"RTT at SLO", rtt, inRegion(base, "us"), job(func(j *Job) { j.OriginRegion = "eu"; j.LatencySLO = 80 * time.Millisecond }), 0, ""},
		{"RTT unknown", rtt, inRegion(base, "ap"), job(func(j *Job) { j.OriginRegion = "eu"; j.LatencySLO = time.Second }),
			FilterLatencySLO, "no RTT estimate from eu to ap"},
		{"no estimator", nil, inRegion(base, "us"), job(func(j *Job) { j.OriginRegion = "eu"; j.LatencySLO = time.Second }),
			FilterLatencySLO, "no RTT estimate from eu to us"},
		{"same region without an entry", rtt, inRegion(base, "eu"), job(func(j *Job) { j.OriginRegion = "eu"; j.LatencySLO = time.Millisecond }), 0, ""},
		{"batch job ignores latency", nil, inRegion(base, "ap"), job(func(j *Job) { j.OriginRegion = "eu" }), 0, ""},
		{"first failing filter is reported", nil, withFree(base, Resources{}), job(func(j *Job) { j.GPUType = "A100"; j.MaxPricePerHour = 1 }),
			FilterGPUType, `job needs GPU type "A100", node has no GPU`},
		{"price before latency", nil, inRegion(base, "ap"), job(func(j *Job) { j.MaxPricePerHour = 1; j.LatencySLO = time.Second }),
			FilterMaxPrice, "price $500/h exceeds the job's maximum $1/h"},
		{"latency before resources", nil, withFree(base, Resources{}), job(func(j *Job) { j.LatencySLO = time.Second }),
			FilterLatencySLO, `no RTT estimate from "" to ""`},
		{"price not a number", nil, func() Node { n := base; n.PricePerHour = math.NaN(); return n }(), job(nil),
			FilterInvalidNode, "price_per_hour must be a positive finite number, got NaN"},
		{"price zero", nil, func() Node { n := base; n.PricePerHour = 0; return n }(), job(nil),
			FilterInvalidNode, "price_per_hour must be a positive finite number, got 0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newTestPipeline(t, Config{RTT: tt.rtt})
			d, err := p.Rank(tt.job, []Node{tt.node})
			if err != nil {
				t.Fatal(err)
			}
			if tt.filter == 0 {
				if len(d.Ranked()) != 1 {
					t.Fatalf("rejected: %v; want feasible", d.Rejected())
				}
				return
			}
			if len(d.Rejected()) != 1 {
				t.Fatalf("ranked %v; want rejected by %v", rankedIDs(d), tt.filter)
			}
			r := d.Rejected()[0]
			if r.Filter != tt.filter || r.Reason() != tt.reason {
				t.Errorf("rejected by %v: %q; want %v: %q", r.Filter, r.Reason(), tt.filter, tt.reason)
			}
		})
	}
}

func TestNoFeasibleNode(t *testing.T) {
	p := newTestPipeline(t, Config{})
	j := computeJob("big", 250)
	j.GPUType = ""
	d, err := p.Rank(j, ExampleNodes())
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := d.Winner(); ok {
		t.Fatal("Winner() found a node for a demand above every capacity")
	}
	if got, want := d.WinnerReason(), "no feasible node: 3 rejected by resources"; got != want {
		t.Errorf("WinnerReason() = %q; want %q", got, want)
	}
	ex := d.Explain()
	if len(ex) != 3 || ex[0].Outcome != OutcomeRejected || ex[0].Filter != FilterResources || ex[0].Score != nil {
		t.Errorf("Explain() = %+v", ex)
	}
	empty, _ := p.Rank(j, nil)
	if got := empty.WinnerReason(); got != "no nodes to choose from" {
		t.Errorf("WinnerReason() with no nodes = %q", got)
	}
}

func TestRankRejectsInvalidJob(t *testing.T) {
	p := newTestPipeline(t, Config{})
	for _, j := range []Job{
		{ID: "", Demand: Resources{ComputePerHour: 1}},
		{ID: "zero", Demand: Resources{}},
		{ID: "nan", Demand: Resources{ComputePerHour: math.NaN()}},
		{ID: "neg-slo", Demand: Resources{ComputePerHour: 1}, LatencySLO: -time.Second},
	} {
		if _, err := p.Rank(j, ExampleNodes()); !errors.Is(err, ErrInvalid) {
			t.Errorf("Rank(%+v) error = %v; want ErrInvalid", j, err)
		}
	}
}

// TestRankNonFiniteScore: figures that overflow the score reject the node
// rather than poison the ordering.
func TestRankNonFiniteScore(t *testing.T) {
	p := newTestPipeline(t, Config{})
	huge := node("huge", math.MaxFloat64, 1, 1, 1e-300)
	d, err := p.Rank(computeJob("j", 100), []Node{huge, node("ok", 100, 1, 1, 10)})
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Rejected()) != 1 || d.Rejected()[0].Filter != FilterInvalidNode || !strings.Contains(d.Rejected()[0].Reason(), "not a finite number") {
		t.Errorf("rejected = %v; want huge rejected by invalid-node", d.Rejected())
	}
}

func TestRTTMatrix(t *testing.T) {
	m := NewRTTMatrix()
	mustSet(m, "a", "b", 10*time.Millisecond)
	mustSet(m, "b", "a", 12*time.Millisecond)
	mustSet(m, "a", "c", 30*time.Millisecond)
	mustSet(m, "c", "c", 3*time.Millisecond)
	tests := []struct {
		from, to string
		want     time.Duration
		ok       bool
	}{
		{"a", "b", 10 * time.Millisecond, true},
		{"b", "a", 12 * time.Millisecond, true},
		{"c", "a", 30 * time.Millisecond, true}, // only the reverse is known
		{"c", "c", 3 * time.Millisecond, true},
		{"a", "a", 0, true}, // a region reaches itself
		{"a", "zz", 0, false},
		{"", "", 0, false},
	}
	for _, tt := range tests {
		got, ok := m.RegionRTT(tt.from, tt.to)
		if got != tt.want || ok != tt.ok {
			t.Errorf("RegionRTT(%q, %q) = %v, %v; want %v, %v", tt.from, tt.to, got, ok, tt.want, tt.ok)
		}
	}
	if m.Len() != 4 {
		t.Errorf("Len() = %d; want 4", m.Len())
	}
	if err := m.Set("a", "b", -time.Millisecond); !errors.Is(err, ErrInvalid) {
		t.Errorf("Set(negative) error = %v; want ErrInvalid", err)
	}
	if err := m.Set("", "b", time.Millisecond); !errors.Is(err, ErrInvalid) {
		t.Errorf("Set(empty region) error = %v; want ErrInvalid", err)
	}
	var nilMatrix *RTTMatrix
	if _, ok := nilMatrix.RegionRTT("a", "a"); ok {
		t.Error("nil matrix knows an RTT")
	}
	var zero RTTMatrix
	if err := zero.Set("x", "y", time.Millisecond); err != nil {
		t.Errorf("zero RTTMatrix Set: %v", err)
	}
}
