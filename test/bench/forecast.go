package bench

import (
	"fmt"
	"time"

	"github.com/meridian-mesh/meridian/placement/forecast"
)

// RegionForecast is a region's demand over the run, as placement/forecast
// saw it: the actual demand per bucket and the forecast made for it one
// horizon earlier, in nodes (compute demand over one node's compute).
type RegionForecast struct {
	// Region is the region.
	Region string `json:"region"`
	// Start and Interval place the buckets in time.
	Start    time.Time     `json:"start"`
	Interval time.Duration `json:"interval"`
	// HorizonSteps is how many buckets ahead Forecast was made.
	HorizonSteps int `json:"horizon_steps"`
	// Actual is the demand of each bucket of the run.
	Actual []float64 `json:"actual_nodes"`
	// Forecast is the forecast for each bucket, made HorizonSteps earlier.
	Forecast []float64 `json:"forecast_nodes"`
	// CapacityNodes is the region's own capacity.
	CapacityNodes float64 `json:"capacity_nodes"`
	// Error is the horizon forecast's error over the run's buckets.
	Error forecast.ErrorStats `json:"error"`
	// Model is the model in use at the end of the run.
	Model forecast.Model `json:"model"`
	// Adjustments counts parameter changes adopted by adaptation passes
	// during the run.
	Adjustments int `json:"adjustments"`
}

// Forecasts runs a forecast.Forecaster per region over the demand series
// of the warm-up history and the run (each job's compute spread over the
// buckets it runs in, as the mesh's collect step records long jobs), with
// adaptation passes when due, and returns the horizon forecasts against
// the actual demand of the run's buckets.
func Forecasts(w *World, wl *Workload) ([]RegionForecast, error) {
	interval := w.cfg.ForecastInterval
	m, err := forecast.SeasonLength(interval)
	if err != nil {
		return nil, fmt.Errorf("forecast interval: %w", err)
	}
	runStart, end := horizon(w, wl.Jobs)
	runStart = runStart.Truncate(interval)
	origin := runStart
	for i := range wl.History {
		if t := wl.History[i].At.Truncate(interval); t.Before(origin) {
			origin = t
		}
	}
	nb := int((end.Sub(origin) + interval - 1) / interval)
	first := int(runStart.Sub(origin) / interval) // first bucket of the run
	series := map[string][]float64{}
	for _, r := range w.regions {
		series[r] = make([]float64, nb)
	}
	add := func(j *Job) {
		s := series[j.Origin]
		if s == nil {
			return
		}
		from, to := j.At, j.End()
		for b := max(0, int(from.Sub(origin)/interval)); b < nb; b++ {
			bs := origin.Add(time.Duration(b) * interval)
			if !bs.Before(to) {
				break
			}
			if ov := minTime(bs.Add(interval), to).Sub(maxTime(bs, from)); ov > 0 {
				s[b] += j.Demand.ComputePerHour * ov.Seconds() / interval.Seconds()
			}
		}
	}
	for i := range wl.History {
		add(&wl.History[i])
	}
	for i := range wl.Jobs {
		add(&wl.Jobs[i])
	}
	cfg := forecast.Config{SeasonLength: m}
	var out []RegionForecast
	for _, r := range w.regions {
		fc, err := forecast.NewForecaster(cfg)
		if err != nil {
			return nil, fmt.Errorf("forecaster for %s: %w", r, err)
		}
		h := fc.Config().Horizon
		tracker, err := forecast.NewErrorTracker(max(1, nb-first))
		if err != nil {
			return nil, fmt.Errorf("error tracker for %s: %w", r, err)
		}
		rf := RegionForecast{Region: r, Start: runStart, Interval: interval, HorizonSteps: h,
			CapacityNodes: float64(w.NodesPerRegion())}
		made := map[int]float64{} // bucket → forecast made h buckets before it
		node := w.node.ComputePerHour
		for b, y := range series[r] {
			if b >= first {
				f, ok := made[b]
				if !ok {
					// The run starts less than a horizon after the
					// history: the nearest forecast made so far.
					f = fc.Forecast(1)[0]
				}
				delete(made, b)
				rf.Actual = append(rf.Actual, y/node)
				rf.Forecast = append(rf.Forecast, f/node)
				tracker.Add(f/node, y/node)
			}
			if err := fc.Observe(y); err != nil {
				return nil, fmt.Errorf("forecaster for %s, bucket %d: %w", r, b, err)
			}
			at := origin.Add(time.Duration(b+1) * interval)
			if fc.AdaptDue() {
				if adj := fc.Adapt(at); adj.Changed && b >= first {
					rf.Adjustments++
				}
			}
			made[b+h] = fc.Forecast(h)[h-1]
		}
		rf.Error = tracker.Stats()
		rf.Model = fc.Model()
		out = append(out, rf)
	}
	return out, nil
}
