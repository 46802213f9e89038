package gossip

import (
	"testing"
	"time"

	"github.com/hashicorp/serf/coordinate"

	"github.com/meridian-mesh/meridian/placement"
)

// coordAt returns a coordinate at x seconds on the first axis, with no
// height or adjustment, so distances are exact.
func coordAt(x float64) *coordinate.Coordinate {
	c := coordinate.NewCoordinate(coordinate.DefaultConfig())
	c.Vec[0] = x
	c.Height = 0
	return c
}

func TestSummarize(t *testing.T) {
	res := func(c float64, gpus int) placement.Resources {
		return placement.Resources{ComputePerHour: c, StorageGB: c, BandwidthGBps: 1, GPUs: gpus}
	}
	rec := func(name string, total, free placement.Resources, price, util float64, q int, demand float64, f *Forecast) Record {
		return Record{Node: name, Capacity: Capacity{Total: total, Free: free, PricePerHour: price, Utilization: util, QueueLength: q, DemandPerHour: demand, Forecast: f}}
	}
	s := snapshot{
		members: []Member{
			{Name: "a1", Meta: Meta{Region: "a"}, State: StateAlive},
			{Name: "a2", Meta: Meta{Region: "a"}, State: StateAlive},
			{Name: "a3", Meta: Meta{Region: "a"}, State: StateAlive}, // full: not the cheapest with free compute
			{Name: "a4", Meta: Meta{Region: "a"}, State: StateSuspect},
			{Name: "a5", Meta: Meta{Region: "a"}, State: StateFailed},
			{Name: "a6", Meta: Meta{Region: "a"}, State: StateAlive}, // no record yet
			{Name: "b1", Meta: Meta{Region: "b"}, State: StateAlive},
			{Name: "b2", Meta: Meta{Region: "b"}, State: StateLeft},
		},
		records: map[string]Record{
			"a1": rec("a1", res(100, 2), res(40, 1), 900, 0.6, 3, 10, &Forecast{Horizon: time.Hour, DemandPerHour: 20, High: 30}),
			"a2": rec("a2", res(300, 4), res(60, 0), 700, 0.8, 1, 5, nil),
			"a3": rec("a3", res(100, 0), res(0, 0), 100, 1, 9, 1, nil),
			"a4": rec("a4", res(999, 9), res(999, 9), 1, 0, 0, 0, nil),
			"a5": rec("a5", res(999, 9), res(999, 9), 1, 0, 0, 0, nil),
			"b1": rec("b1", res(50, 1), res(50, 1), 500, 0, 0, 0, nil),
			"b2": rec("b2", res(999, 9), res(999, 9), 1, 0, 0, 0, nil),
		},
		coords: map[string]*coordinate.Coordinate{
			"a1": coordAt(0), "a2": coordAt(0.002), "a3": coordAt(0.004), "a4": coordAt(0.100),
			"a5": coordAt(9), "b1": coordAt(0.080), "b2": coordAt(9),
		},
	}
	sums := summarize(s)
	if len(sums) != 2 || sums[0].Region != "a" || sums[1].Region != "b" {
		t.Fatalf("summarize = %+v; want regions a and b in order", sums)
	}
	a, b := sums[0], sums[1]
	if a.Alive != 4 || a.Suspect != 1 || a.Failed != 1 || a.Left != 0 || a.Nodes != 3 {
		t.Errorf("region a counts = alive %d suspect %d failed %d left %d nodes %d; want 4 1 1 0 3", a.Alive, a.Suspect, a.Failed, a.Left, a.Nodes)
	}
	if want := (placement.Resources{ComputePerHour: 500, StorageGB: 500, BandwidthGBps: 3, GPUs: 6}); a.Total != want {
		t.Errorf("region a Total = %v; want %v (alive nodes only)", a.Total, want)
	}
	if want := (placement.Resources{ComputePerHour: 100, StorageGB: 100, BandwidthGBps: 3, GPUs: 1}); a.Free != want {
		t.Errorf("region a Free = %v; want %v", a.Free, want)
	}
	if want := res(60, 0); a.LargestFree != want {
		t.Errorf("region a LargestFree = %v; want %v", a.LargestFree, want)
	}
	if a.CheapestNode != "a2" || a.CheapestPricePerHour != 700 {
		t.Errorf("region a cheapest = %s at %v; want a2 at 700 (a3 is cheaper but full)", a.CheapestNode, a.CheapestPricePerHour)
	}
	if want := (0.6*100 + 0.8*300 + 1*100) / 500; a.Utilization != want {
		t.Errorf("region a Utilization = %v; want %v (compute-weighted)", a.Utilization, want)
	}
	if a.QueueLength != 13 || a.DemandPerHour != 16 || a.ForecastPerHour != 20 || a.ForecastNodes != 1 {
		t.Errorf("region a queue %d demand %v forecast %v over %d; want 13 16 20 over 1", a.QueueLength, a.DemandPerHour, a.ForecastPerHour, a.ForecastNodes)
	}
	if b.Alive != 1 || b.Left != 1 || b.Nodes != 1 || b.CheapestNode != "b1" {
		t.Errorf("region b = %+v; want 1 alive, 1 left, cheapest b1", b)
	}
	// RTT: alive and suspect members' coordinates; a's pairs are 2, 4, 2 ms
	// among a1..a3 plus 100, 98, 96 ms to a4: median of {2,2,4,96,98,100} = 50 ms.
	if got, want := a.RTT["a"], 50*time.Millisecond; !near(got, want) {
		t.Errorf("intra-region RTT of a = %v; want %v", got, want)
	}
	// a→b: 80, 78, 76, 20 ms → median 77 ms.
	if got, want := a.RTT["b"], 77*time.Millisecond; !near(got, want) || !near(b.RTT["a"], want) {
		t.Errorf("RTT a→b = %v, b→a = %v; want %v both ways", got, b.RTT["a"], want)
	}
	if _, ok := b.RTT["b"]; ok {
		t.Errorf("region b with one live member has an intra-region RTT %v; want none", b.RTT["b"])
	}
}

func near(a, b time.Duration) bool { return a-b < time.Microsecond && b-a < time.Microsecond }

func TestMedianDistance(t *testing.T) {
	cs := []*coordinate.Coordinate{coordAt(0), coordAt(0.010), coordAt(0.030)}
	if d, ok := medianDistance(cs, cs, true); !ok || !near(d, 20*time.Millisecond) {
		t.Errorf("median of {10, 30, 20} ms = %v, %v; want 20ms", d, ok)
	}
	if d, ok := medianDistance(cs[:1], cs[1:], false); !ok || !near(d, 20*time.Millisecond) {
		t.Errorf("median of {10, 30} ms = %v, %v; want 20ms", d, ok)
	}
	if _, ok := medianDistance(cs[:1], cs[:1], true); ok {
		t.Error("median over one node's pairs with itself = ok; want none")
	}
	if _, ok := medianDistance(nil, cs, false); ok {
		t.Error("median with an empty region = ok; want none")
	}
}
