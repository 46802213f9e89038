package forecast

import (
	"errors"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/meridian-mesh/meridian/placement"
)

func TestHoltWintersExactOnTrendPlusSeason(t *testing.T) {
	// A noise-free linear trend plus a zero-mean season: the two-season
	// initialisation recovers level, trend and season exactly, so every
	// forecast continues the series to rounding error.
	const m = 8
	season := []float64{5, -3, 2, 0, -4, 1, 3, -4}
	y := func(t int) float64 { return 50 + 0.5*float64(t) + season[t%m] }
	hist := make([]float64, 3*m)
	for i := range hist {
		hist[i] = y(i)
	}
	hw, err := NewHoltWinters(Params{Alpha: 0.3, Beta: 0.1, Gamma: 0.2, EWMAAlpha: 0.5}, m, hist)
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(hw.Trend()-0.5) > 1e-9 {
		t.Errorf("Trend() = %v; want 0.5", hw.Trend())
	}
	for k, f := range hw.Forecast(2 * m) {
		if want := y(3*m + k); math.Abs(f-want) > 1e-9 {
			t.Errorf("forecast %d steps ahead = %v; want %v", k+1, f, want)
		}
	}
	// And the one-step forecasts made while updating were exact too.
	if f := hw.Update(y(3 * m)); math.Abs(f-y(3*m)) > 1e-9 {
		t.Errorf("Update returned forecast %v; want %v", f, y(3*m))
	}
}

func TestEWMAHandComputed(t *testing.T) {
	e, err := NewEWMA(0.5)
	if err != nil {
		t.Fatal(err)
	}
	if got := e.ForecastAt(1); got != 0 {
		t.Errorf("forecast before any observation = %v; want 0", got)
	}
	for i, c := range []struct{ y, wantForecast float64 }{{10, 0}, {20, 10}, {30, 15}} {
		if got := e.Update(c.y); got != c.wantForecast {
			t.Errorf("Update #%d(%v) returned %v; want %v", i, c.y, got, c.wantForecast)
		}
	}
	for _, f := range e.Forecast(3) {
		if f != 22.5 {
			t.Errorf("Forecast(3) = %v; want all 22.5", e.Forecast(3))
		}
	}
	if _, err := NewEWMA(0); !errors.Is(err, placement.ErrInvalid) {
		t.Errorf("NewEWMA(0) error = %v; want ErrInvalid", err)
	}
}

func TestNewHoltWintersRejectsBadInput(t *testing.T) {
	ok := make([]float64, 8)
	for _, tc := range []struct {
		name  string
		p     Params
		m     int
		hist  []float64
		field string
	}{
		{"alpha 0", Params{Alpha: 0, Gamma: 0.1, EWMAAlpha: 0.1}, 4, ok, "alpha"},
		{"beta > 1", Params{Alpha: 0.1, Beta: 1.5, Gamma: 0.1, EWMAAlpha: 0.1}, 4, ok, "beta"},
		{"gamma NaN", Params{Alpha: 0.1, Gamma: nan(), EWMAAlpha: 0.1}, 4, ok, "gamma"},
		{"season 0", DefaultParams(), 0, ok, "season_length"},
		{"short history", DefaultParams(), 5, ok, "history"},
		{"negative value", DefaultParams(), 4, []float64{1, 2, 3, 4, 5, 6, 7, -8}, "observation"},
		{"Inf value", DefaultParams(), 4, []float64{1, 2, 3, 4, inf(), 6, 7, 8}, "observation"},
	} {
		_, err := NewHoltWinters(tc.p, tc.m, tc.hist)
		var fe *placement.FieldError
		if !errors.As(err, &fe) || fe.Field != tc.field {
			t.Errorf("%s: NewHoltWinters error = %v; want a FieldError on %q", tc.name, err, tc.field)
		}
	}
}

// oneStepErrors runs the three models over ys after a warm-up of two
// seasons and returns their one-step and h-step RMSE over the rest.
func compareModels(t *testing.T, ys []float64, m, h int) (hw, ewma, naive [2]float64) {
	t.Helper()
	model, err := NewHoltWinters(DefaultParams(), m, ys[:2*m])
	if err != nil {
		t.Fatal(err)
	}
	e, _ := NewEWMA(DefaultParams().EWMAAlpha)
	for _, y := range ys[:2*m] {
		e.Update(y)
	}
	var f1 [3][]float64
	var fh [3][]float64
	var a1, ah []float64
	for t := 2 * m; t+h <= len(ys); t++ {
		// Forecasts made before observing ys[t].
		f1[0] = append(f1[0], model.ForecastAt(1))
		f1[1] = append(f1[1], e.ForecastAt(1))
		f1[2] = append(f1[2], ys[t-1])
		fh[0] = append(fh[0], model.ForecastAt(h))
		fh[1] = append(fh[1], e.ForecastAt(h))
		fh[2] = append(fh[2], ys[t-1])
		a1 = append(a1, ys[t])
		ah = append(ah, ys[t+h-1])
		model.Update(ys[t])
		e.Update(ys[t])
	}
	for i, r := range []*[2]float64{&hw, &ewma, &naive} {
		r[0], r[1] = rmse(f1[i], a1), rmse(fh[i], ah)
	}
	return hw, ewma, naive
}

func TestHoltWintersBeatsEWMAAndNaiveOnSeasonalData(t *testing.T) {
	for _, seed := range []uint64{1, 2, 3, 4, 5} {
		rng := rand.New(rand.NewPCG(seed, 0))
		const m = 96 // 15-minute buckets
		ys := seasonal(rng, 8, m, 200, 80, 0, 0.01, 10)
		hw, ewma, naive := compareModels(t, ys, m, 8)
		t.Logf("seed %d: RMSE one-step hw %.2f ewma %.2f naive %.2f; 8-step hw %.2f ewma %.2f naive %.2f",
			seed, hw[0], ewma[0], naive[0], hw[1], ewma[1], naive[1])
		for i, name := range []string{"one-step", "8-step"} {
			if !(hw[i] < 0.9*ewma[i] && hw[i] < 0.9*naive[i]) {
				t.Errorf("seed %d %s RMSE: holt-winters %.2f, ewma %.2f, naive %.2f; want holt-winters at least 10%% better than both",
					seed, name, hw[i], ewma[i], naive[i])
			}
		}
		// With noise σ = 10, the best possible one-step RMSE is about 10.
		if hw[0] > 13 {
			t.Errorf("seed %d: holt-winters one-step RMSE %.2f; want close to the noise level 10", seed, hw[0])
		}
	}
}

func TestForecastsNeverNegative(t *testing.T) {
	// A series that falls steeply to zero and then spikes drives the level
	// and trend far below zero; forecasts must still be ≥ 0.
	const m = 12
	rng := rand.New(rand.NewPCG(7, 7))
	ys := make([]float64, 6*m)
	for i := range ys {
		switch {
		case i < 2*m:
			ys[i] = 1000 - 40*float64(i)
		case i%7 == 0:
			ys[i] = 500 * rng.Float64()
		}
		ys[i] = max(0, ys[i])
	}
	hw, err := NewHoltWinters(Params{Alpha: 0.9, Beta: 0.9, Gamma: 0.9, EWMAAlpha: 0.9}, m, ys[:2*m])
	if err != nil {
		t.Fatal(err)
	}
	f, _ := NewForecaster(Config{SeasonLength: m, Params: Params{Alpha: 0.9, Beta: 0.9, Gamma: 0.9, EWMAAlpha: 0.9}})
	sawNegativeState := false
	for i, y := range ys {
		if i >= 2*m {
			hw.Update(y)
			if hw.Level()+hw.Trend() < 0 {
				sawNegativeState = true
			}
		}
		if err := f.Observe(y); err != nil {
			t.Fatal(err)
		}
		for k, v := range append(hw.Forecast(3*m), f.Forecast(3*m)...) {
			if v < 0 || math.IsNaN(v) {
				t.Fatalf("after %d observations, forecast %d = %v; want ≥ 0", i+1, k, v)
			}
		}
	}
	if !sawNegativeState {
		t.Error("the test series never drove level+trend below zero; it does not test the floor")
	}
}
