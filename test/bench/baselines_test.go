package bench

import (
	"context"
	"math"
	"reflect"
	"testing"
	"time"
)

// scenario is a hand-made world for the baselines: three regions, one
// one-GPU node (3,600 tasks/hour) each; Ohio is 10 ms from N. Virginia,
// Dublin 80 ms from N. Virginia and 90 ms from Ohio. Dublin is cheapest,
// N. Virginia dearest.
func scenario(t *testing.T) (*World, []Job) {
	t.Helper()
	w := tinyWorld(t, map[string]float64{"us-east-1": 10, "us-east-2": 5, "eu-west-1": 1},
		map[[2]string]int{{"us-east-1", "us-east-2"}: 10, {"us-east-1", "eu-west-1"}: 80, {"us-east-2", "eu-west-1"}: 90}, 1)
	slo := 50 * time.Millisecond
	win := 10 * time.Minute
	capped := job("j4", "us-east-1", 20*time.Minute, 1000, 0, win)
	capped.MaxPricePerHour = 6
	jobs := indexed(
		job("j1", "us-east-1", 0, 2400, slo, win),           // 2/3 of a node, interactive
		job("j2", "us-east-1", time.Second, 2400, slo, win), // does not fit next to j1
		job("j3", "us-east-1", 2*time.Second, 3600, 0, win), // batch, a whole node
		capped, // after everything ended; may not pay N. Virginia's price
		job("j5", "us-east-1", 20*time.Minute+time.Second, 3600, slo, win), // exactly fills a freed node
	)
	return w, jobs
}

func TestBaselinesOnHandMadeScenario(t *testing.T) {
	w, jobs := scenario(t)
	cases := []struct {
		s    Scheduler
		want []string
	}{
		// local-only: j2 and j3 find N. Virginia full; j4 may not pay
		// its price; j5 fits next to nothing (j1 ended).
		{LocalOnly(), []string{"us-east-1", "", "", "", "us-east-1"}},
		// nearest-first: origin, then Ohio (10 ms), then Dublin (80 ms,
		// beyond the 50 ms SLO of j1/j2 but fine for batch j3).
		{NearestFirst(), []string{"us-east-1", "us-east-2", "eu-west-1", "us-east-2", "us-east-1"}},
		// central-cheapest: Dublin is out of the interactive jobs' SLO,
		// so j1 goes to Ohio and j2 to N. Virginia; batch j3 and capped
		// j4 to Dublin; j5 to Ohio, the cheapest within 50 ms.
		{CentralCheapest(), []string{"us-east-2", "us-east-1", "eu-west-1", "eu-west-1", "us-east-2"}},
	}
	for _, c := range cases {
		t.Run(c.s.Name(), func(t *testing.T) {
			out, err := c.s.Run(context.Background(), w, jobs)
			if err != nil {
				t.Fatal(err)
			}
			if len(out.Jobs) != len(jobs) {
				t.Fatalf("%d results for %d jobs", len(out.Jobs), len(jobs))
			}
			for i, res := range out.Jobs {
				j := jobs[i]
				got := ""
				if res.Placed {
					got = res.Region
				}
				if got != c.want[i] {
					t.Errorf("%s placed in %q; want %q (reason %q)", j.ID, got, c.want[i], res.Reason)
					continue
				}
				if !res.Placed {
					if res.Reason == "" {
						t.Errorf("%s: unplaced without a reason", j.ID)
					}
					continue
				}
				if wantCost := w.Price(res.Region) * j.Demand.ComputePerHour / 3600; math.Abs(res.CostPerHour-wantCost) > 1e-9 {
					t.Errorf("%s costs %v/h; want %v (price × share of the node)", j.ID, res.CostPerHour, wantCost)
				}
				if !res.Start.Equal(j.At) {
					t.Errorf("%s starts at %v; want its arrival %v", j.ID, res.Start, j.At)
				}
				if res.Traded != (res.Region != j.Origin) {
					t.Errorf("%s: traded = %v in %s", j.ID, res.Traded, res.Region)
				}
				if res.PlacementLatency <= 0 {
					t.Errorf("%s: placement latency %v; want > 0", j.ID, res.PlacementLatency)
				}
			}
		})
	}
}

func TestBaselineLatencyModels(t *testing.T) {
	w, jobs := scenario(t)
	j := &jobs[0] // from us-east-1
	ms := time.Millisecond
	if got, want := peerLatency(w, j, "us-east-1"), 2*ms; got != want {
		t.Errorf("local placement latency = %v; want %v (client→leader + commit)", got, want)
	}
	if got, want := peerLatency(w, j, "us-east-2"), (1+10+1+1)*ms; got != want {
		t.Errorf("remote placement latency = %v; want %v", got, want)
	}
	// The broker sits where the summed RTT to every region is least:
	// N. Virginia 1+10+80 = 91 ms, Ohio 101 ms, Dublin 171 ms.
	if b := brokerRegion(w); b != "us-east-1" {
		t.Errorf("broker region = %s; want us-east-1", b)
	}
}

func TestBaselinesAreDeterministic(t *testing.T) {
	w, err := Load(Config{Length: 30 * time.Minute, Seed: 3, HistoryDays: -1})
	if err != nil {
		t.Fatal(err)
	}
	wl, err := BuildWorkload(w)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range Baselines() {
		a, err := s.Run(context.Background(), w, wl.Jobs)
		if err != nil {
			t.Fatal(err)
		}
		b, err := s.Run(context.Background(), w, wl.Jobs)
		if err != nil {
			t.Fatal(err)
		}
		for i := range a.Jobs {
			if !reflect.DeepEqual(a.Jobs[i], b.Jobs[i]) {
				t.Fatalf("%s: job %s: %+v then %+v", s.Name(), wl.Jobs[i].ID, a.Jobs[i], b.Jobs[i])
			}
		}
	}
}

func TestBaselineNeverOvercommits(t *testing.T) {
	w, err := Load(Config{Length: time.Hour, Seed: 5, HistoryDays: -1, Load: 1.2})
	if err != nil {
		t.Fatal(err)
	}
	wl, err := BuildWorkload(w)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range Baselines() {
		out, err := s.Run(context.Background(), w, wl.Jobs)
		if err != nil {
			t.Fatal(err)
		}
		// At every arrival, the compute allocated on each node is within
		// its capacity.
		for i := range wl.Jobs {
			at := wl.Jobs[i].At
			used := map[string]float64{}
			for k, res := range out.Jobs {
				j := &wl.Jobs[k]
				if res.Placed && !res.Start.After(at) && res.Start.Add(j.Duration).After(at) {
					used[res.Node] += j.Demand.ComputePerHour
				}
			}
			for n, u := range used {
				if u > w.NodeCapacity().ComputePerHour*(1+1e-9) {
					t.Fatalf("%s: node %s holds %v tasks/h at %v, capacity %v", s.Name(), n, u, at, w.NodeCapacity().ComputePerHour)
				}
			}
			if i > 200 {
				break // the first windows are enough, and keep the test fast
			}
		}
	}
}

func TestBaselineHonoursCancellation(t *testing.T) {
	w, err := Load(Config{Length: time.Hour, HistoryDays: -1})
	if err != nil {
		t.Fatal(err)
	}
	wl, err := BuildWorkload(w)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := LocalOnly().Run(ctx, w, wl.Jobs); err == nil {
		t.Fatal("Run with a cancelled context succeeded")
	}
}

// TestPreemptionInTheModel: with preemption (the placement-policy study's
// model of the mesh), an interactive job that fits nowhere takes its
// origin's node from a batch job, which moves to a region with room and is
// charged there from then on; without room elsewhere for the batch job,
// nothing is preempted.
func TestPreemptionInTheModel(t *testing.T) {
	w := tinyWorld(t, map[string]float64{"us-east-1": 10, "eu-west-1": 1},
		map[[2]string]int{{"us-east-1", "eu-west-1"}: 80}, 1)
	slo := 50 * time.Millisecond
	win := 10 * time.Minute
	batch := job("batch", "us-east-1", 0, 3600, 0, win)
	batch.Priority = 1
	filler := job("filler", "eu-west-1", 0, 3600, slo, win)
	filler.Priority = 2
	inter := job("inter", "us-east-1", time.Minute, 2400, slo, win)
	inter.Priority = 2
	model := &baseline{name: "model", order: nearestOrder, latency: peerLatency, preempt: true, note: func(*World) string { return "" }}

	out, err := model.Run(context.Background(), w, indexed(batch, inter))
	if err != nil {
		t.Fatal(err)
	}
	b, i := out.Jobs[0], out.Jobs[1]
	if !i.Placed || i.Region != "us-east-1" || len(i.Segments) != 0 {
		t.Fatalf("interactive job: %+v; want placed at home, one allocation", i)
	}
	if len(b.Segments) != 2 || b.Segments[0].Region != "us-east-1" || b.Segments[1].Region != "eu-west-1" ||
		!b.Segments[0].End.Equal(b.Segments[1].Start) || !b.Segments[1].Start.Equal(inter.At) {
		t.Fatalf("batch job: %+v; want moved from us-east-1 to eu-west-1 when the interactive job came", b)
	}
	ev, err := Evaluate(w, indexed(batch, inter), "model", out)
	if err != nil || ev.Moved != 1 || ev.Placed != 2 {
		t.Fatalf("evaluation: moved %d, placed %d, %v", ev.Moved, ev.Placed, err)
	}

	// Dublin is full: the batch job has nowhere to go and keeps its node.
	out, err = model.Run(context.Background(), w, indexed(batch, filler, inter))
	if err != nil {
		t.Fatal(err)
	}
	if b, i := out.Jobs[0], out.Jobs[2]; i.Placed || len(b.Segments) != 0 || b.Region != "us-east-1" {
		t.Fatalf("batch %+v, interactive %+v; want nothing preempted", b, i)
	}
}
