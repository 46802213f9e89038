package bench

import (
	"math"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/node/api"
)

// segmentWorld is the world of the segment tests: N. Virginia at $4 and
// Dublin at $1 per node-hour, 80 ms apart, one one-GPU node each (3,600
// tasks/hour); the penalty is $8 per node-hour.
func segmentWorld(t *testing.T) *World {
	t.Helper()
	return tinyWorld(t, map[string]float64{"us-east-1": 4, "eu-west-1": 1}, map[[2]string]int{{"us-east-1", "eu-west-1"}: 80}, 1)
}

// seg is a segment from and to offsets of t0.
func seg(region string, from, to time.Duration, cost float64) Segment {
	return Segment{Region: region, Node: region + "-0", Start: t0.Add(from), End: t0.Add(to), CostPerHour: cost}
}

func evaluate(t *testing.T, w *World, jobs []Job, res ...JobResult) Evaluation {
	t.Helper()
	ev, err := Evaluate(w, jobs, "x", Outcome{Jobs: res})
	if err != nil {
		t.Fatal(err)
	}
	// Whatever the segments, the timeline adds up to the cost.
	sum := 0.0
	for _, c := range ev.Timeline.CostUSD {
		sum += c
	}
	if math.Abs(sum-ev.Result.CostUSD) > 1e-9 {
		t.Errorf("timeline costs add up to %v; want %v", sum, ev.Result.CostUSD)
	}
	return ev
}

func near(t *testing.T, what string, got, want float64) {
	t.Helper()
	if math.Abs(got-want) > 1e-9 {
		t.Errorf("%s %v; want %v", what, got, want)
	}
}

// TestEvaluateOneSegmentIsTheJob: a result with one segment from its Start
// to its window's end evaluates exactly as the same result without
// Segments, whether placed at arrival, late, traded at a markup outside its
// SLO, or after its window.
func TestEvaluateOneSegmentIsTheJob(t *testing.T) {
	w := segmentWorld(t)
	slo := 50 * time.Millisecond
	jobs := indexed(
		job("a", "us-east-1", 0, 3600, slo, 30*time.Minute),
		job("b", "us-east-1", 5*time.Minute, 1800, slo, 40*time.Minute),
		job("c", "eu-west-1", 10*time.Minute, 900, 0, time.Hour),
		job("d", "eu-west-1", 20*time.Minute, 1200, 0, 10*time.Minute),
		job("e", "us-east-1", 0, 600, 0, 20*time.Minute),
	)
	plain := []JobResult{
		{Placed: true, Region: "us-east-1", Node: "us-east-1-0", Start: jobs[0].At, CostPerHour: 4, PlacementLatency: 3 * time.Millisecond},
		{Placed: true, Region: "eu-west-1", Node: "eu-west-1-0", Start: jobs[1].At.Add(time.Second), CostPerHour: 1.5, PlacementLatency: time.Second, Traded: true},
		{Placed: true, Region: "eu-west-1", Node: "eu-west-1-0", Start: jobs[2].At.Add(17 * time.Minute), CostPerHour: 0.25, PlacementLatency: 17 * time.Minute},
		{Placed: true, Region: "eu-west-1", Node: "eu-west-1-0", Start: jobs[3].End().Add(5 * time.Minute), CostPerHour: 1.0 / 3},
		{Reason: "full"},
	}
	segmented := make([]JobResult, len(plain))
	for i, r := range plain {
		segmented[i] = r
		if r.Placed {
			segmented[i].Segments = []Segment{{Region: r.Region, Node: r.Node, Start: r.Start, End: maxTime(r.Start, jobs[i].End()), CostPerHour: r.CostPerHour}}
		}
	}
	want := evaluate(t, w, jobs, plain...)
	got := evaluate(t, w, jobs, segmented...)
	if !reflect.DeepEqual(got, want) {
		t.Errorf("with one segment each:\n%+v\nwithout:\n%+v", got, want)
	}
	if got.Moved != 0 {
		t.Errorf("%d jobs moved; none was", got.Moved)
	}
}

// TestEvaluateSegmentGapIsUnserved: a job stopped for ten minutes between
// two allocations is unserved, and charged the penalty, for those ten
// minutes; segments are clipped to its window.
func TestEvaluateSegmentGapIsUnserved(t *testing.T) {
	w := segmentWorld(t)
	jobs := indexed(job("a", "us-east-1", 0, 3600, 0, time.Hour)) // a whole node
	ev := evaluate(t, w, jobs, JobResult{Placed: true, Region: "us-east-1", Start: t0, CostPerHour: 4, Segments: []Segment{
		seg("us-east-1", -5*time.Minute, 20*time.Minute, 4), // before its arrival: clipped
		seg("us-east-1", 30*time.Minute, 70*time.Minute, 4), // after its window's end: clipped
	}})
	near(t, "served", ev.ServedUSD, 4*50.0/60)
	near(t, "paid", ev.PaidUSD, 4*50.0/60)
	near(t, "penalty", ev.PenaltyUSD, 8*10.0/60)
	near(t, "placed work %", ev.PlacedWorkPct, 100*50.0/60)
	near(t, "utilization", ev.Utilization["us-east-1"], 50.0/60)
	if ev.Moved != 1 || ev.Placed != 1 || ev.Traded != 0 || ev.SLOMisses != 0 {
		t.Errorf("moved %d, placed %d, traded %d, SLO misses %d; want 1, 1, 0, 0", ev.Moved, ev.Placed, ev.Traded, ev.SLOMisses)
	}
	// The gap, 20 to 30 minutes, is in the second 15-minute bucket.
	wantCost := []float64{1, 4*5.0/60 + 8*10.0/60, 1, 1}
	for b, c := range ev.Timeline.CostUSD {
		near(t, "bucket cost", c, wantCost[b])
	}
	if u := ev.Timeline.Utilization["us-east-1"]; u[1] != 1.0/3 || u[2] != 1 {
		t.Errorf("utilization per bucket %v; want 1, 1/3, 1, 1", u)
	}
}

// TestEvaluateSegmentsInTwoRegions: a job moved half-way from N. Virginia
// to Dublin costs each half at its region's price, pays the trade's price
// for the second, and crossed regions for half its serving time.
func TestEvaluateSegmentsInTwoRegions(t *testing.T) {
	w := segmentWorld(t)
	jobs := indexed(job("a", "us-east-1", 0, 1800, 0, time.Hour)) // half a node
	ev := evaluate(t, w, jobs, JobResult{Placed: true, Region: "eu-west-1", Start: t0, CostPerHour: 1.5, Segments: []Segment{
		seg("us-east-1", 0, 30*time.Minute, 2),
		seg("eu-west-1", 30*time.Minute, time.Hour, 1.5), // traded at 3× Dublin's price
	}})
	near(t, "served", ev.ServedUSD, 4*0.5*0.5+1*0.5*0.5)
	near(t, "paid", ev.PaidUSD, 2*0.5+1.5*0.5)
	near(t, "penalty", ev.PenaltyUSD, 0)
	near(t, "cross-region GB", ev.Result.CrossRegionGB, jobs[0].WireGB/2)
	near(t, "us-east-1 utilization", ev.Utilization["us-east-1"], 0.25)
	near(t, "eu-west-1 utilization", ev.Utilization["eu-west-1"], 0.25)
	near(t, "placed work %", ev.PlacedWorkPct, 100)
	if ev.Moved != 1 || ev.Traded != 1 {
		t.Errorf("moved %d, traded %d; want 1, 1", ev.Moved, ev.Traded)
	}
}

// TestEvaluateOverlappingSegments: a move that committed the new
// allocation five minutes before stopping the old pays for both during
// the overlap, but serves the window once: no penalty, all work placed.
func TestEvaluateOverlappingSegments(t *testing.T) {
	w := segmentWorld(t)
	jobs := indexed(job("a", "us-east-1", 0, 3600, 0, time.Hour))
	ev := evaluate(t, w, jobs, JobResult{Placed: true, Region: "eu-west-1", Start: t0, CostPerHour: 1, Segments: []Segment{
		seg("eu-west-1", 30*time.Minute, time.Hour, 1), // out of order: Evaluate does not mind
		seg("us-east-1", 0, 35*time.Minute, 4),
	}})
	near(t, "served", ev.ServedUSD, 4*35.0/60+1*0.5)
	near(t, "paid", ev.PaidUSD, 4*35.0/60+1*0.5)
	near(t, "penalty", ev.PenaltyUSD, 0)
	near(t, "placed work %", ev.PlacedWorkPct, 100)
	near(t, "us-east-1 utilization", ev.Utilization["us-east-1"], 35.0/60)
	near(t, "eu-west-1 utilization", ev.Utilization["eu-west-1"], 0.5)
	near(t, "cross-region GB", ev.Result.CrossRegionGB, jobs[0].WireGB*30/65)
	if u := ev.Timeline.Utilization["us-east-1"][2]; math.Abs(u-1.0/3) > 1e-12 {
		t.Errorf("us-east-1 utilization from 30 to 45 minutes %v; want 1/3", u)
	}
}

// TestEvaluateSegmentOutsideSLO: a job moved to a region beyond its SLO
// for part of its run is one SLO miss, however many segments it spent
// there.
func TestEvaluateSegmentOutsideSLO(t *testing.T) {
	w := segmentWorld(t)
	slo := 50 * time.Millisecond
	jobs := indexed(
		job("a", "us-east-1", 0, 1800, slo, time.Hour),
		job("b", "us-east-1", 0, 1800, slo, time.Hour),
	)
	ev := evaluate(t, w, jobs,
		JobResult{Placed: true, Region: "eu-west-1", Start: t0, CostPerHour: 0.5, Segments: []Segment{
			seg("us-east-1", 0, 20*time.Minute, 2),
			seg("eu-west-1", 20*time.Minute, 40*time.Minute, 0.5), // 80 ms from home
			seg("eu-west-1", 40*time.Minute, time.Hour, 0.5),
		}},
		JobResult{Placed: true, Region: "us-east-1", Start: t0, CostPerHour: 2, Segments: []Segment{
			seg("us-east-1", 0, 10*time.Minute, 2),
			seg("us-east-1", 10*time.Minute, time.Hour, 2),
		}},
	)
	if ev.SLOMisses != 1 || ev.Result.SLOPct != 50 || ev.Moved != 2 || ev.Traded != 1 {
		t.Errorf("SLO misses %d (%v%% met), moved %d, traded %d; want 1 (50%%), 2, 1", ev.SLOMisses, ev.Result.SLOPct, ev.Moved, ev.Traded)
	}
	near(t, "cross-region GB", ev.Result.CrossRegionGB, jobs[0].WireGB*2/3)
}

// TestEvaluateRejectsBrokenSegments: a segment in an unknown region, at a
// bad cost, with no start or ending before it starts is an error naming
// the job and the segment.
func TestEvaluateRejectsBrokenSegments(t *testing.T) {
	w := segmentWorld(t)
	jobs := indexed(job("a", "us-east-1", 0, 100, 0, time.Hour))
	good := seg("us-east-1", 0, 10*time.Minute, 1)
	for name, bad := range map[string]Segment{
		"unknown region":        seg("mars-1", 10*time.Minute, 20*time.Minute, 1),
		"NaN cost":              seg("us-east-1", 10*time.Minute, 20*time.Minute, math.NaN()),
		"negative cost":         seg("us-east-1", 10*time.Minute, 20*time.Minute, -1),
		"no start":              {Region: "us-east-1", End: t0.Add(time.Minute)},
		"ends before it starts": seg("us-east-1", 20*time.Minute, 10*time.Minute, 1),
	} {
		res := JobResult{Placed: true, Region: "us-east-1", Start: t0, CostPerHour: 1, Segments: []Segment{good, bad}}
		_, err := Evaluate(w, jobs, "x", Outcome{Jobs: []JobResult{res}})
		if err == nil || !strings.Contains(err.Error(), "job a segment 1") {
			t.Errorf("%s: %v; want an error naming job a's segment 1", name, err)
		}
	}
}

// TestMeshSegments: the mesh harness turns a job's allocations into
// segments in the run's time: sorted, a stopped one ending when it
// stopped, a live one at the window's end, a cost the allocation lacks
// from the job's status.
func TestMeshSegments(t *testing.T) {
	shift := 3 * time.Hour // virtual time is the run's plus shift
	j := job("a", "us-east-1", 10*time.Minute, 1800, 0, 30*time.Minute)
	v := func(d time.Duration) time.Time { return t0.Add(d + shift) }
	rec := &jobRecord{placedAt: v(10*time.Minute + 2*time.Second)}
	st := api.JobStatus{State: api.JobTraded, CostPerHour: 1.5}
	res := meshSegments(&j, st, rec, []allocInfo{
		{created: v(25 * time.Minute), region: "eu-west-1", node: "eu-1"}, // live, its cost unknown
		{created: v(10*time.Minute + time.Second), stopped: v(20 * time.Minute), cost: 2, region: "us-east-1", node: "us-1"},
	}, shift)
	want := JobResult{
		Placed: true, Region: "eu-west-1", Node: "eu-1", Start: t0.Add(10*time.Minute + time.Second), CostPerHour: 1.5,
		PlacementLatency: time.Second, Traded: true, Segments: []Segment{
			{Region: "us-east-1", Node: "us-1", Start: t0.Add(10*time.Minute + time.Second), End: t0.Add(20 * time.Minute), CostPerHour: 2},
			{Region: "eu-west-1", Node: "eu-1", Start: t0.Add(25 * time.Minute), End: j.End(), CostPerHour: 1.5},
		},
	}
	if !reflect.DeepEqual(res, want) {
		t.Errorf("got  %+v\nwant %+v", res, want)
	}
	// A live allocation committed after the window ended is empty, not
	// one that ends before it starts.
	late := meshSegments(&j, st, rec, []allocInfo{{created: v(time.Hour), cost: 1, region: "us-east-1"}}, shift)
	if s := late.Segments[0]; !s.End.Equal(s.Start) {
		t.Errorf("late live allocation %v to %v; want empty", s.Start, s.End)
	}
	if !liveAlloc(api.AllocRunning) || !liveAlloc(api.AllocPending) || liveAlloc(api.AllocPreempted) || liveAlloc(api.AllocLost) {
		t.Error("liveAlloc: pending and running are live, preempted and lost are not")
	}
}

// TestEvaluateNoServiceIsNotPlaced: a job placed only as its window ended
// (the mesh can commit a placement in the instant the window's capacity
// frees) served nothing: it counts as not placed, with no latency sample.
func TestEvaluateNoServiceIsNotPlaced(t *testing.T) {
	w := segmentWorld(t)
	jobs := indexed(job("a", "us-east-1", 0, 3600, 0, time.Hour), job("b", "us-east-1", 0, 1800, 0, time.Hour))
	ev := evaluate(t, w, jobs,
		JobResult{Placed: true, Region: "us-east-1", Start: t0.Add(time.Hour), CostPerHour: 4, PlacementLatency: time.Hour,
			Segments: []Segment{seg("us-east-1", time.Hour, time.Hour, 4)}},
		JobResult{Placed: true, Region: "us-east-1", Start: t0, CostPerHour: 2, PlacementLatency: time.Second})
	if ev.Placed != 1 || ev.Result.PlacedPct != 50 || ev.Unplaced["placed only as its window ended"] != 1 {
		t.Fatalf("placed %d (%v %%), unplaced %v; want the first job not placed", ev.Placed, ev.Result.PlacedPct, ev.Unplaced)
	}
	near(t, "penalty", ev.PenaltyUSD, 8)
	near(t, "p99 latency", ev.Result.PlacementP99Ms, 1000)
}

// TestEvaluateOverrun: an allocation that runs past its job's window is
// capacity held for nothing, and is reported.
func TestEvaluateOverrun(t *testing.T) {
	w := segmentWorld(t)
	jobs := indexed(job("a", "us-east-1", 0, 3600, 0, 30*time.Minute))
	// Moved at 10 minutes and placed again for the job's whole 30 minutes:
	// 10 minutes past the window, at a full node.
	moved := JobResult{Placed: true, Segments: []Segment{seg("us-east-1", 0, 10*time.Minute, 4), seg("eu-west-1", 10*time.Minute, 40*time.Minute, 1)}}
	near(t, "overrun of a job moved and not stopped", evaluate(t, w, jobs, moved).OverrunNodeHours, 10.0/60)
	moved.Segments[1].End = t0.Add(30*time.Minute + 500*time.Millisecond) // stopped within the tolerance
	near(t, "overrun of a job stopped with its window", evaluate(t, w, jobs, moved).OverrunNodeHours, 0)
}
