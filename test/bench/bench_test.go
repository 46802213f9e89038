package bench

import (
	"context"
	"testing"
)

// dayWorkload builds the default day's world and workload once per
// benchmark, outside its timer.
func dayWorkload(b *testing.B) (*World, *Workload) {
	b.Helper()
	w, err := Load(Config{Seed: 1})
	if err != nil {
		b.Fatal(err)
	}
	wl, err := BuildWorkload(w)
	if err != nil {
		b.Fatal(err)
	}
	return w, wl
}

// BenchmarkWorkloadDay generates and aggregates a day of the default
// world (and its two days of forecaster warm-up).
func BenchmarkWorkloadDay(b *testing.B) {
	w, err := Load(Config{Seed: 1})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := BuildWorkload(w); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkLowerBoundDay solves the LP bound of a day of the default world.
func BenchmarkLowerBoundDay(b *testing.B) {
	w, wl := dayWorkload(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := LowerBound(w, wl.Jobs, 0); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(wl.Jobs)), "jobs")
}

// BenchmarkBaselinesDay runs the three baselines over a day of the default
// world.
func BenchmarkBaselinesDay(b *testing.B) {
	w, wl := dayWorkload(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := RunAll(context.Background(), w, wl.Jobs, Baselines()); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkForecastsDay runs the per-region forecasters over the warm-up
// and a day.
func BenchmarkForecastsDay(b *testing.B) {
	w, wl := dayWorkload(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Forecasts(w, wl); err != nil {
			b.Fatal(err)
		}
	}
}
