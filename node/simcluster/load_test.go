package simcluster

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/placement"
	"github.com/meridian-mesh/meridian/placement/workload"
)

func arrival(origin string, class workload.SLOClass, compute float64, dur, slo time.Duration) workload.Arrival {
	return workload.Arrival{Class: class, Job: placement.Job{OriginRegion: origin, Demand: placement.Resources{ComputePerHour: compute}, Duration: dur, LatencySLO: slo}}
}

func TestBatchConservesDemandAndSplits(t *testing.T) {
	b := Batching{Block: time.Minute, RealDuration: 10 * time.Second, MaxJobCompute: 1000, Scale: 2}
	in := []workload.Arrival{
		arrival("a", workload.Interactive, 6000, 30*time.Second, 150*time.Millisecond), // 3000 mean over the block
		arrival("a", workload.Interactive, 600, 60*time.Second, 120*time.Millisecond),  // 600
		arrival("b", workload.Batch, 60, 60*time.Second, 0),                            // 60
	}
	jobs := b.Batch(in, 7, "t")
	var sumA, sumB float64
	partsA := 0
	for _, j := range jobs {
		if j.Demand.ComputePerHour > b.MaxJobCompute+1e-9 {
			t.Errorf("job %s demands %v, above the cap", j.ID, j.Demand.ComputePerHour)
		}
		if j.DurationS != 10 {
			t.Errorf("job %s runs %d s, want 10", j.ID, j.DurationS)
		}
		switch j.OriginRegion {
		case "a":
			sumA += j.Demand.ComputePerHour
			partsA++
			if j.LatencySLOMs != 120 {
				t.Errorf("job %s SLO %d ms, want the strictest, 120", j.ID, j.LatencySLOMs)
			}
		case "b":
			sumB += j.Demand.ComputePerHour
			if j.LatencySLOMs != 0 {
				t.Errorf("batch job %s has an SLO", j.ID)
			}
		}
	}
	if math.Abs(sumA-2*3600) > 1e-6 || math.Abs(sumB-2*60) > 1e-6 || partsA != 8 {
		t.Errorf("demand a=%v (want 7200 in 8 jobs, got %d) b=%v (want 120)", sumA, partsA, sumB)
	}
	again := b.Batch(in, 7, "t")
	for i := range jobs {
		if jobs[i].ID != again[i].ID || jobs[i].Demand != again[i].Demand {
			t.Fatalf("batch is not deterministic: %v vs %v", jobs[i], again[i])
		}
	}
	if err := (Batching{Block: time.Minute, RealDuration: time.Millisecond, MaxJobCompute: 1, Scale: 1}).Validate(); err == nil {
		t.Error("a sub-second real duration was accepted")
	}
}

func TestScaleForHitsTheLoad(t *testing.T) {
	start := time.Date(2026, 11, 27, 0, 0, 0, 0, time.UTC)
	cfg, err := workload.DefaultConfig(start, "us-east-1", "eu-west-1")
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.SetWorkload("diurnal"); err != nil {
		t.Fatal(err)
	}
	gen := func() *workload.Generator {
		g, err := workload.NewGenerator(cfg, rand.New(rand.NewPCG(1, 2)))
		if err != nil {
			t.Fatal(err)
		}
		return g
	}
	scale, err := ScaleFor(gen(), 0.5, 10000)
	if err != nil {
		t.Fatal(err)
	}
	// The same day, batched: mean demand per region ≈ 5000 tasks/hour.
	b := Batching{Block: time.Hour, RealDuration: time.Second, MaxJobCompute: 1e9, Scale: scale}
	g := gen()
	var total float64
	for h := range 24 {
		from := start.Add(time.Duration(h) * time.Hour)
		for _, j := range b.Batch(g.Between(from, from.Add(time.Hour)), h, "x") {
			total += j.Demand.ComputePerHour
		}
	}
	mean := total / 24 / 2
	if math.Abs(mean-5000) > 50 {
		t.Errorf("mean demand per region %v, want 5000", mean)
	}
}
