package bench

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestEvaluateHandMadeOutcome(t *testing.T) {
	// Two regions of one one-GPU node; N. Virginia $4/h, Dublin $1/h.
	w := tinyWorld(t, map[string]float64{"us-east-1": 4, "eu-west-1": 1}, map[[2]string]int{{"us-east-1", "eu-west-1"}: 80}, 1)
	slo := 50 * time.Millisecond
	jobs := indexed(
		job("a", "us-east-1", 0, 3600, slo, 30*time.Minute),         // served at home, a whole node
		job("b", "us-east-1", 0, 1800, slo, 30*time.Minute),         // served in Dublin: beyond its SLO
		job("c", "us-east-1", 0, 1800, 0, 60*time.Minute),           // not placed
		job("d", "eu-west-1", 30*time.Minute, 1800, 0, time.Minute), // served at home
	)
	out := Outcome{Jobs: []JobResult{
		{Placed: true, Region: "us-east-1", Node: "us-east-1-0", Start: jobs[0].At, CostPerHour: 4, PlacementLatency: 2 * time.Millisecond},
		{Placed: true, Region: "eu-west-1", Node: "eu-west-1-0", Start: jobs[1].At, CostPerHour: 0.5, PlacementLatency: 100 * time.Millisecond, Traded: true},
		{Reason: "full"},
		{Placed: true, Region: "eu-west-1", Node: "eu-west-1-0", Start: jobs[3].At, CostPerHour: 0.5, PlacementLatency: 4 * time.Millisecond},
	}}
	ev, err := Evaluate(w, jobs, "x", out)
	if err != nil {
		t.Fatal(err)
	}
	penalty := w.PenaltyPerNodeHour()
	if penalty != 2*4 {
		t.Fatalf("penalty %v per node-hour; want twice the dearest price", penalty)
	}
	served := 4*0.5 + 0.5*0.5 + 0.5/60
	unserved := 0.5 * 1 * penalty // half a node for an hour
	r := ev.Result
	if math.Abs(ev.ServedUSD-served) > 1e-12 || math.Abs(ev.PenaltyUSD-unserved) > 1e-12 || math.Abs(r.CostUSD-served-unserved) > 1e-12 {
		t.Errorf("served %v, penalty %v, cost %v; want %v + %v", ev.ServedUSD, ev.PenaltyUSD, r.CostUSD, served, unserved)
	}
	// Every job here paid its node's list price, so the two agree.
	if math.Abs(ev.PaidUSD-served) > 1e-12 {
		t.Errorf("paid %v; want %v", ev.PaidUSD, served)
	}
	if r.PlacedPct != 75 || ev.Placed != 3 || ev.Traded != 1 || ev.Unplaced["full"] != 1 {
		t.Errorf("placed %v%% (%d), traded %d, unplaced %v", r.PlacedPct, ev.Placed, ev.Traded, ev.Unplaced)
	}
	if math.Abs(r.SLOPct-200.0/3) > 1e-9 || ev.SLOMisses != 1 {
		t.Errorf("slo %v%% with %d misses; want 2 of 3 placed jobs within their SLO", r.SLOPct, ev.SLOMisses)
	}
	if r.PlacementP50Ms != 4 || r.PlacementP99Ms != 100 {
		t.Errorf("placement p50 %v ms, p99 %v ms; want 4 and 100", r.PlacementP50Ms, r.PlacementP99Ms)
	}
	if r.CrossRegionGB != jobs[1].WireGB {
		t.Errorf("cross-region %v GB; want job b's %v", r.CrossRegionGB, jobs[1].WireGB)
	}
	// Over the horizon of an hour: N. Virginia busy 0.5 node-hours, Dublin
	// 0.25 + 1/120.
	uVA, uIE := 0.5, 0.25+1.0/120
	if math.Abs(ev.Utilization["us-east-1"]-uVA) > 1e-12 || math.Abs(ev.Utilization["eu-west-1"]-uIE) > 1e-12 {
		t.Errorf("utilization %v; want us-east-1 %v, eu-west-1 %v", ev.Utilization, uVA, uIE)
	}
	if want := (uVA + uIE) * (uVA + uIE) / (2 * (uVA*uVA + uIE*uIE)); math.Abs(r.JainUtilization-want) > 1e-12 {
		t.Errorf("jain %v; want %v", r.JainUtilization, want)
	}
	// The timeline adds up to the totals.
	sum := 0.0
	for _, c := range ev.Timeline.CostUSD {
		sum += c
	}
	if math.Abs(sum-r.CostUSD) > 1e-9 {
		t.Errorf("timeline costs add up to %v; want %v", sum, r.CostUSD)
	}
	if u := ev.Timeline.Utilization["us-east-1"]; u[0] != 1 || u[1] != 1 || u[2] != 0 {
		t.Errorf("us-east-1 utilization per 15 min %v; want 1, 1, 0, 0", u)
	}
}

func TestEvaluateRejectsBrokenOutcomes(t *testing.T) {
	w := tinyWorld(t, map[string]float64{"us-east-1": 4}, nil, 1)
	jobs := indexed(job("a", "us-east-1", 0, 100, 0, time.Minute))
	for name, out := range map[string]Outcome{
		"too few results": {},
		"unknown region":  {Jobs: []JobResult{{Placed: true, Region: "mars-1", Start: jobs[0].At}}},
		"NaN cost":        {Jobs: []JobResult{{Placed: true, Region: "us-east-1", Start: jobs[0].At, CostPerHour: math.NaN()}}},
		"no start":        {Jobs: []JobResult{{Placed: true, Region: "us-east-1"}}},
	} {
		if _, err := Evaluate(w, jobs, "x", out); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func TestJain(t *testing.T) {
	for _, c := range []struct {
		xs   []float64
		want float64
	}{
		{[]float64{0.5, 0.5, 0.5}, 1},
		{[]float64{1, 0}, 0.5},
		{[]float64{1, 0, 0, 0}, 0.25},
		{[]float64{0, 0}, 0},
	} {
		if got := jain(c.xs); math.Abs(got-c.want) > 1e-12 {
			t.Errorf("jain(%v) = %v; want %v", c.xs, got, c.want)
		}
	}
}

func TestMoney(t *testing.T) {
	for v, want := range map[float64]string{0: "0.00", 12.345: "12.35", 1234.5: "1,234.50", 1234567.891: "1,234,567.89", -4321: "-4,321.00"} {
		if got := money(v); got != want {
			t.Errorf("money(%v) = %q; want %q", v, got, want)
		}
	}
}

func TestWriteReportRefusesAFileAsDirectory(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	err := WriteReport(file, &Report{})
	if err == nil || !strings.Contains(err.Error(), "-out") {
		t.Errorf("WriteReport into a file: %v", err)
	}
}

func TestResultsJSONShape(t *testing.T) {
	b, err := json.Marshal(Results{LPBoundUSD: 1, Schedulers: []SchedulerResult{{Name: "x"}}})
	if err != nil {
		t.Fatal(err)
	}
	want := `{"lp_bound_usd":1,"schedulers":[{"name":"x","cost_usd":0,"cost_vs_lp":0,"placed_pct":0,"slo_pct":0,"placement_p50_ms":0,"placement_p99_ms":0,"cross_region_gb":0,"jain_utilization":0}]}`
	if string(b) != want {
		t.Errorf("results.json = %s\nwant          %s", b, want)
	}
}

// TestEvaluateTradePriceAndLateStart: a traded job's markup is paid, not
// cost; a job placed late is unserved until it starts and runs only to its
// window's end.
func TestEvaluateTradePriceAndLateStart(t *testing.T) {
	w := tinyWorld(t, map[string]float64{"us-east-1": 4, "eu-west-1": 1}, map[[2]string]int{{"us-east-1", "eu-west-1"}: 80}, 1)
	jobs := indexed(
		job("a", "us-east-1", 0, 1800, 0, time.Hour), // half a node, traded at 3× Dublin's price
		job("b", "eu-west-1", 0, 3600, 0, time.Hour), // a whole node, placed 15 minutes late
	)
	out := Outcome{Jobs: []JobResult{
		{Placed: true, Region: "eu-west-1", Node: "eu-west-1-0", Start: jobs[0].At, CostPerHour: 1.5, Traded: true},
		{Placed: true, Region: "us-east-1", Node: "us-east-1-0", Start: jobs[1].At.Add(15 * time.Minute), CostPerHour: 4},
	}}
	ev, err := Evaluate(w, jobs, "x", out)
	if err != nil {
		t.Fatal(err)
	}
	served := 0.5*1*1 + 1*4*0.75 // list prices, b for the 45 minutes it ran
	paid := 1.5*1 + 4*0.75
	penalty := 1 * 0.25 * w.PenaltyPerNodeHour()
	if math.Abs(ev.ServedUSD-served) > 1e-12 || math.Abs(ev.PaidUSD-paid) > 1e-12 || math.Abs(ev.PenaltyUSD-penalty) > 1e-12 {
		t.Errorf("served %v, paid %v, penalty %v; want %v, %v, %v", ev.ServedUSD, ev.PaidUSD, ev.PenaltyUSD, served, paid, penalty)
	}
	if math.Abs(ev.Result.CostUSD-served-penalty) > 1e-12 {
		t.Errorf("cost %v; want served + penalty %v", ev.Result.CostUSD, served+penalty)
	}
	// a's half node-hour and b's 0.75 of 1 node-hour, of 1.5 node-hours.
	if want := 100 * (0.5 + 0.75) / 1.5; math.Abs(ev.PlacedWorkPct-want) > 1e-9 {
		t.Errorf("placed work %v%%; want %v%%", ev.PlacedWorkPct, want)
	}
	sum := 0.0
	for _, c := range ev.Timeline.CostUSD {
		sum += c
	}
	if math.Abs(sum-ev.Result.CostUSD) > 1e-9 {
		t.Errorf("timeline costs add up to %v; want %v", sum, ev.Result.CostUSD)
	}
}
