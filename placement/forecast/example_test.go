package forecast_test

import (
	"fmt"
	"math"
	"time"

	"github.com/meridian-mesh/meridian/placement"
	"github.com/meridian-mesh/meridian/placement/forecast"
)

// A region leader's loop, one bucket at a time: record admitted demand,
// feed completed buckets to the forecaster, adapt when due, and plan ahead.
func Example() {
	const interval = time.Hour
	m, _ := forecast.SeasonLength(interval)
	start := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	series, _ := forecast.NewSeries(interval, start, 7*m)
	f, _ := forecast.NewForecaster(forecast.Config{SeasonLength: m, Horizon: 6})

	// Three days of demand peaking at 15:00: jobs of 1000 tasks/hour
	// running 36 s each, so a bucket's rate is 10 tasks/hour per job.
	observed := 0
	for h := range 3 * m {
		at := start.Add(time.Duration(h) * interval)
		jobs := int(200 + 150*math.Cos(2*math.Pi*float64(h%24-15)/24))
		_ = series.Record(at, jobs, float64(jobs)*1000*36)
		now := at.Add(interval)
		series.AdvanceTo(now)
		for ; observed < series.Completed(now); observed++ {
			_ = f.Observe(series.Bucket(observed).Rate(interval))
		}
		if f.AdaptDue() {
			if adj := f.Adapt(now); adj.Changed {
				fmt.Println("adapted:", adj.New)
			}
		}
	}

	// At midnight, plan the next 18 hours. The afternoon peak of 350 jobs
	// (3500 tasks/hour) needs 3500/0.85 ≈ 4118 against the 3000 held, plus
	// a safety margin from the horizon error, which still counts the
	// EWMA's early misses (capped here at 50 %).
	now := start.Add(time.Duration(3*m) * interval)
	margin := forecast.SafetyMargin(f.Accuracy().Horizon, 0.5)
	plan, err := forecast.PlanAhead(
		forecast.PlanConfig{LeaseUnit: placement.Resources{ComputePerHour: 500}},
		forecast.PlanInput{Now: now, Start: now, Interval: interval, Forecast: f.Forecast(18), OwnCapacity: 3000, Margin: margin})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("%s, margin %.0f%%: %s %d unit(s) %s–%s\n", f.Accuracy().Model, 100*margin, plan.Action, plan.Units,
		plan.From.Format("15:04"), plan.Until.Format("15:04"))
	// Output:
	// adapted: α=0.2 β=0.01 γ=0.1 ewma_α=0.9
	// adapted: α=0.1 β=0 γ=0.1 ewma_α=0.9
	// holt-winters, margin 50%: buy 7 unit(s) 09:00–18:00
}
