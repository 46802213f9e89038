package bench

import (
	"math"
	"reflect"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/node/api"
	"github.com/meridian-mesh/meridian/placement/workload"
)

func TestWorkloadJobsAreWellFormed(t *testing.T) {
	w, err := Load(Config{Length: 2 * time.Hour, Seed: 9, HistoryDays: -1})
	if err != nil {
		t.Fatal(err)
	}
	wl, err := BuildWorkload(w)
	if err != nil {
		t.Fatal(err)
	}
	if len(wl.Jobs) == 0 {
		t.Fatal("no jobs")
	}
	cfg := w.Config()
	maxCompute := cfg.MaxJobFraction * w.NodeCapacity().ComputePerHour
	ids := map[string]bool{}
	origins := map[string]int{}
	for i := range wl.Jobs {
		j := &wl.Jobs[i]
		if ids[j.ID] {
			t.Fatalf("job ID %s twice", j.ID)
		}
		ids[j.ID] = true
		origins[j.Origin]++
		if j.Index != i {
			t.Errorf("%s: index %d at position %d", j.ID, j.Index, i)
		}
		if i > 0 && j.At.Before(wl.Jobs[i-1].At) {
			t.Errorf("%s arrives before its predecessor", j.ID)
		}
		if !api.ValidID(j.ID) {
			t.Errorf("%s is not a valid API job ID", j.ID)
		}
		// Within its window, to the window's end, in whole seconds.
		win := cfg.Start.Add(j.At.Sub(cfg.Start).Truncate(cfg.Window))
		if j.At.Before(cfg.Start) || !j.At.Before(w.End()) || !j.End().Equal(minTime(win.Add(cfg.Window), w.End())) {
			t.Errorf("%s runs %v–%v, not to the end of its window %v", j.ID, j.At, j.End(), win)
		}
		if j.Duration < time.Second || j.Duration%time.Second != 0 || j.At.Sub(cfg.Start)%time.Second != 0 {
			t.Errorf("%s: arrival %v, duration %v; want whole seconds", j.ID, j.At, j.Duration)
		}
		if !(j.Demand.ComputePerHour > 0) || j.Demand.ComputePerHour > maxCompute*(1+1e-12) {
			t.Errorf("%s asks %v tasks/h; want within (0, %v]", j.ID, j.Demand.ComputePerHour, maxCompute)
		}
		if err := j.PlacementJob().Validate(); err != nil {
			t.Errorf("%s: %v", j.ID, err)
		}
		switch j.Class {
		case workload.Interactive:
			if j.LatencySLO < 100*time.Millisecond || j.LatencySLO > 150*time.Millisecond || j.LatencySLO%cfg.SLOStep != 0 || j.Priority != 2 {
				t.Errorf("%s: interactive with SLO %v, priority %d", j.ID, j.LatencySLO, j.Priority)
			}
		case workload.Batch:
			if j.LatencySLO != 0 || j.Priority != 1 {
				t.Errorf("%s: batch with SLO %v, priority %d", j.ID, j.LatencySLO, j.Priority)
			}
		default:
			t.Errorf("%s: class %q", j.ID, j.Class)
		}
		if j.MaxPricePerHour != 0 && math.Abs(j.MaxPricePerHour-1.2*w.Price(j.Origin)) > 1e-9 {
			t.Errorf("%s: price limit %v; want 1.2 × %v", j.ID, j.MaxPricePerHour, w.Price(j.Origin))
		}
		if j.Requests <= 0 || j.WireGB <= 0 || j.Demand.StorageGB <= 0 {
			t.Errorf("%s: %v requests, %v GB on the wire, %v GB of KV cache", j.ID, j.Requests, j.WireGB, j.Demand.StorageGB)
		}
	}
	if len(origins) != len(w.Regions()) {
		t.Errorf("jobs from %d regions; want every one of %d", len(origins), len(w.Regions()))
	}
}

func TestWorkloadIsDeterministic(t *testing.T) {
	build := func(seed int64) *Workload {
		w, err := Load(Config{Length: 30 * time.Minute, Seed: seed, HistoryDays: -1})
		if err != nil {
			t.Fatal(err)
		}
		wl, err := BuildWorkload(w)
		if err != nil {
			t.Fatal(err)
		}
		return wl
	}
	a, b, c := build(4), build(4), build(5)
	if !reflect.DeepEqual(a.Jobs, b.Jobs) {
		t.Error("the same seed gave different jobs")
	}
	if reflect.DeepEqual(a.Jobs, c.Jobs) {
		t.Error("different seeds gave the same jobs")
	}
}

// TestWorkloadSizing checks the sizing: over a day each region's mean
// demand is Load of its capacity, and its afternoon peak is well above its
// capacity, so the region cannot serve its own peak.
func TestWorkloadSizing(t *testing.T) {
	if testing.Short() {
		t.Skip("a day of two regions")
	}
	w, err := Load(Config{Seed: 2, HistoryDays: -1, Regions: []string{"eu-west-1", "us-east-1"}})
	if err != nil {
		t.Fatal(err)
	}
	wl, err := BuildWorkload(w)
	if err != nil {
		t.Fatal(err)
	}
	cfg := w.Config()
	for _, r := range w.Regions() {
		capacity := w.RegionCompute(r)
		tasks := 0.0
		peak := 0.0
		perHour := map[int]float64{}
		for i := range wl.Jobs {
			if j := &wl.Jobs[i]; j.Origin == r {
				tasks += j.Tasks()
				perHour[int(j.At.Sub(cfg.Start)/time.Hour)] += j.Tasks()
			}
		}
		for _, v := range perHour {
			peak = max(peak, v)
		}
		mean := tasks / cfg.Length.Hours() / capacity
		if math.Abs(mean-cfg.Load) > 0.1*cfg.Load {
			t.Errorf("%s: mean demand %.3f of capacity; want %.2f ± 10%%", r, mean, cfg.Load)
		}
		if peak/capacity < 1.1 {
			t.Errorf("%s: peak hour needs %.2f of capacity; want the peak beyond the region's own capacity", r, peak/capacity)
		}
	}
}

func TestHistoryWarmsUpTheForecaster(t *testing.T) {
	w, err := Load(Config{Length: 2 * time.Hour, Seed: 1, Regions: []string{"eu-west-1", "us-east-1"}})
	if err != nil {
		t.Fatal(err)
	}
	wl, err := BuildWorkload(w)
	if err != nil {
		t.Fatal(err)
	}
	if len(wl.History) == 0 {
		t.Fatal("no history")
	}
	for _, h := range wl.History {
		if !h.At.Before(w.Start()) || h.At.Before(w.Start().Add(-2*24*time.Hour)) {
			t.Fatalf("history job %s at %v, outside the two days before %v", h.ID, h.At, w.Start())
		}
	}
	fcs, err := Forecasts(w, wl)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fcs {
		if f.Model != "holt-winters" {
			t.Errorf("%s forecasts with %s; two days of history should enable Holt-Winters", f.Region, f.Model)
		}
		if len(f.Actual) != len(f.Forecast) || len(f.Actual) < 8 {
			t.Errorf("%s: %d actual and %d forecast buckets", f.Region, len(f.Actual), len(f.Forecast))
		}
		// The actual series conserves the region's work: the run's jobs
		// and the end of the history in the run's first bucket.
		sum, want := 0.0, 0.0
		for _, a := range f.Actual {
			sum += a * f.Interval.Hours()
		}
		from := f.Start
		to := from.Add(time.Duration(len(f.Actual)) * f.Interval)
		for _, j := range append(wl.History[:len(wl.History):len(wl.History)], wl.Jobs...) {
			if j.Origin == f.Region {
				if ov := minTime(j.End(), to).Sub(maxTime(j.At, from)); ov > 0 {
					want += j.Demand.ComputePerHour * ov.Hours() / w.NodeCapacity().ComputePerHour
				}
			}
		}
		if math.Abs(sum-want) > 1e-6*want {
			t.Errorf("%s: actual series holds %v node-hours; the jobs %v", f.Region, sum, want)
		}
		if f.Error.Points == 0 || !(f.Error.MAPE > 0 && f.Error.MAPE < 100) {
			t.Errorf("%s: forecast error %+v", f.Region, f.Error)
		}
	}
}
