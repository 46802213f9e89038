package forecast

import (
	"math"
	"testing"
)

func TestErrorStatsHandComputed(t *testing.T) {
	for _, tc := range []struct {
		name     string
		f, a     []float64
		window   int
		want     ErrorStats
		wantNote string
	}{
		{
			name: "mixed signs with a zero actual",
			f:    []float64{110, 90, 50, 0}, a: []float64{100, 100, 0, 10}, window: 10,
			// errors +10 −10 +50 −10; MAPE over the non-zero actuals:
			// (10/100 + 10/100 + 10/10)/3 = 40 %.
			want: ErrorStats{Points: 4, MAPE: 40, ZeroActuals: 1, Bias: 10, MAE: 20, RMSE: math.Sqrt(700)},
		},
		{
			name: "rolling window keeps the last two",
			f:    []float64{110, 90, 50, 0}, a: []float64{100, 100, 0, 10}, window: 2,
			// errors +50 −10 over actuals 0, 10.
			want: ErrorStats{Points: 2, MAPE: 100, ZeroActuals: 1, Bias: 20, MAE: 30, RMSE: math.Sqrt(1300)},
		},
		{
			name: "under-forecast has negative bias",
			f:    []float64{8, 16}, a: []float64{10, 20}, window: 5,
			want: ErrorStats{Points: 2, MAPE: 20, Bias: -3, MAE: 3, RMSE: math.Sqrt(10)},
		},
		{
			name: "only zero actuals: MAPE 0, not NaN",
			f:    []float64{1, 2}, a: []float64{0, 0}, window: 5,
			want: ErrorStats{Points: 2, ZeroActuals: 2, Bias: 1.5, MAE: 1.5, RMSE: math.Sqrt(2.5)},
		},
		{
			name: "non-finite pairs are ignored",
			f:    []float64{nan(), 5, 3}, a: []float64{1, inf(), 3}, window: 5,
			want: ErrorStats{Points: 1},
		},
		{name: "empty", window: 3, want: ErrorStats{}},
	} {
		tr, err := NewErrorTracker(tc.window)
		if err != nil {
			t.Fatal(err)
		}
		for i := range tc.f {
			tr.Add(tc.f[i], tc.a[i])
		}
		got := tr.Stats()
		if !closeStats(got, tc.want) {
			t.Errorf("%s: Stats() = %+v; want %+v", tc.name, got, tc.want)
		}
	}
	if _, err := NewErrorTracker(0); err == nil {
		t.Error("NewErrorTracker(0) succeeded; want an error")
	}
}

func TestErrorTrackerReset(t *testing.T) {
	tr, _ := NewErrorTracker(3)
	tr.Add(1, 2)
	tr.Reset()
	if s := tr.Stats(); s.Points != 0 {
		t.Errorf("after Reset, Stats() = %+v; want no points", s)
	}
}

func closeStats(a, b ErrorStats) bool {
	eq := func(x, y float64) bool { return math.Abs(x-y) <= 1e-9*math.Max(1, math.Abs(y)) }
	return a.Points == b.Points && a.ZeroActuals == b.ZeroActuals && eq(a.MAPE, b.MAPE) &&
		eq(a.Bias, b.Bias) && eq(a.MAE, b.MAE) && eq(a.RMSE, b.RMSE)
}
