package forecast

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/placement"
)

// 5-minute buckets: a day is 288 of them.
const benchSeason = 288

func benchSeries(days int) []float64 {
	return seasonal(rand.New(rand.NewPCG(1, 2)), days, benchSeason, 1000, 400, 0, 0, 50)
}

// BenchmarkForecasterObserve is the cost of one bucket in Holt-Winters
// mode: the model update, both error trackers and the horizon forecast.
func BenchmarkForecasterObserve(b *testing.B) {
	ys := benchSeries(7)
	f, err := Replay(Config{SeasonLength: benchSeason, Horizon: 12}, ys[:3*benchSeason])
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if err := f.Observe(ys[i%len(ys)]); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// BenchmarkAdapt is one adaptation pass over 7 days of 5-minute buckets
// (2016 observations) with the default grid of 120 candidates.
func BenchmarkAdapt(b *testing.B) {
	ys := benchSeries(7)
	f, err := Replay(Config{SeasonLength: benchSeason, Params: Params{Alpha: 0.05, Beta: 0, Gamma: 0.05, EWMAAlpha: 0.3}}, ys)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		// Each pass starts from the same (slow) parameters.
		f.params = Params{Alpha: 0.05, Beta: 0, Gamma: 0.05, EWMAAlpha: 0.3}
		f.Adapt(t0)
	}
}

// BenchmarkPlanAhead is one decision over a 12-bucket horizon with two leases.
func BenchmarkPlanAhead(b *testing.B) {
	cfg := PlanConfig{LeaseUnit: placement.Resources{ComputePerHour: 28800, GPUs: 8}}
	in := PlanInput{Now: t0, Start: t0, Interval: 5 * time.Minute, OwnCapacity: 100000,
		Forecast: benchSeries(1)[:12],
		Leases:   []Lease{{Compute: 28800, From: t0, Until: t0.Add(time.Hour)}, {Compute: 28800, From: t0.Add(30 * time.Minute), Until: t0.Add(2 * time.Hour)}}}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := PlanAhead(cfg, in); err != nil {
			b.Fatal(err)
		}
	}
}
