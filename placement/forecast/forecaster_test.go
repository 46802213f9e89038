package forecast

import (
	"errors"
	"math"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/meridian-mesh/meridian/placement"
)

func TestForecasterSwitchesToHoltWintersAfterTwoSeasons(t *testing.T) {
	const m = 24
	f, err := NewForecaster(Config{SeasonLength: m})
	if err != nil {
		t.Fatal(err)
	}
	if f.Model() != ModelNone {
		t.Fatalf("Model() before observations = %q; want %q", f.Model(), ModelNone)
	}
	for _, v := range f.Forecast(5) {
		if v != 0 {
			t.Fatalf("Forecast before observations = %v; want zeros", f.Forecast(5))
		}
	}
	ys := seasonal(rand.New(rand.NewPCG(1, 1)), 3, m, 100, 50, 0, 0, 0)
	for i, y := range ys {
		if err := f.Observe(y); err != nil {
			t.Fatal(err)
		}
		want := ModelEWMA
		if i+1 >= 2*m {
			want = ModelHoltWinters
		}
		if f.Model() != want {
			t.Fatalf("after %d observations Model() = %q; want %q", i+1, f.Model(), want)
		}
	}
	// On a noise-free season, Holt-Winters forecasts the next day closely
	// where the EWMA could only give a flat line.
	next := seasonal(nil, 4, m, 100, 50, 0, 0, 0)[3*m:]
	if r := rmse(f.Forecast(m), next); r > 1 {
		t.Errorf("day-ahead RMSE after three noise-free days = %.3f; want < 1", r)
	}
}

func TestForecasterHorizonAndOneStepErrors(t *testing.T) {
	// With EWMA α = 1 the forecast is the last value. On the ramp 0,1,2,…
	// every one-step forecast is 1 low and every 3-step forecast 3 low.
	f, err := NewForecaster(Config{SeasonLength: 100, Horizon: 3, ErrorWindow: 50,
		Params: Params{Alpha: 0.5, Gamma: 0.5, EWMAAlpha: 1}})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		if err := f.Observe(float64(i)); err != nil {
			t.Fatal(err)
		}
	}
	acc := f.Accuracy()
	if acc.Model != ModelEWMA || acc.Observations != 20 || acc.HorizonSteps != 3 {
		t.Fatalf("Accuracy() = %+v; want ewma, 20 observations, horizon 3", acc)
	}
	if acc.OneStep.Points != 19 || acc.OneStep.Bias != -1 || acc.OneStep.RMSE != 1 {
		t.Errorf("one-step stats = %+v; want 19 points, bias −1, RMSE 1", acc.OneStep)
	}
	if acc.Horizon.Points != 17 || acc.Horizon.Bias != -3 || acc.Horizon.MAE != 3 {
		t.Errorf("horizon stats = %+v; want 17 points, bias −3, MAE 3", acc.Horizon)
	}
	// MAPE skips the one zero actual (the first value has no forecast, so
	// none is skipped here) and averages 1/i for i = 1..19.
	want := 0.0
	for i := 1; i < 20; i++ {
		want += 1 / float64(i)
	}
	want = 100 * want / 19
	if math.Abs(acc.OneStep.MAPE-want) > 1e-9 {
		t.Errorf("one-step MAPE = %v; want %v", acc.OneStep.MAPE, want)
	}
}

func TestForecasterRejectsBadObservation(t *testing.T) {
	f, _ := NewForecaster(Config{SeasonLength: 4})
	_ = f.Observe(3)
	for _, y := range []float64{-1, nan(), inf()} {
		if err := f.Observe(y); !errors.Is(err, placement.ErrInvalid) {
			t.Errorf("Observe(%v) = %v; want ErrInvalid", y, err)
		}
	}
	if f.Observations() != 1 || f.Forecast(1)[0] != 3 {
		t.Errorf("rejected observations changed the state: %d observations, forecast %v", f.Observations(), f.Forecast(1))
	}
}

func TestForecasterConfigValidation(t *testing.T) {
	for _, tc := range []struct {
		name  string
		cfg   Config
		field string
	}{
		{"no season", Config{}, "season_length"},
		{"negative horizon", Config{SeasonLength: 4, Horizon: -1}, "horizon"},
		{"history too short", Config{SeasonLength: 4, HistoryLimit: 8}, "history_limit"},
		{"bad params", Config{SeasonLength: 4, Params: Params{Alpha: 2, Gamma: 0.1, EWMAAlpha: 0.1}}, "params.alpha"},
		{"bad improvement", Config{SeasonLength: 4, Adapt: AdaptConfig{MinImprovement: 1}}, "adapt.min_improvement"},
		{"negative trigger", Config{SeasonLength: 4, Adapt: AdaptConfig{TriggerMAPE: -1}}, "adapt.trigger_mape_pct"},
		{"empty grid axis", Config{SeasonLength: 4, Adapt: AdaptConfig{Grid: Grid{Alpha: []float64{0.1}}}}, "adapt.grid.beta"},
		{"bad grid value", Config{SeasonLength: 4, Adapt: AdaptConfig{Grid: Grid{Alpha: []float64{0.1, 0}, Beta: []float64{0}, Gamma: []float64{0.1}, EWMAAlpha: []float64{0.1}}}}, "adapt.grid.alpha[1]"},
	} {
		_, err := NewForecaster(tc.cfg)
		var fe *placement.FieldError
		if !errors.As(err, &fe) || fe.Field != tc.field {
			t.Errorf("%s: NewForecaster error = %v; want a FieldError on %q", tc.name, err, tc.field)
		}
	}
}

func TestReplayRebuildsTheSameForecaster(t *testing.T) {
	const m = 48
	ys := seasonal(rand.New(rand.NewPCG(3, 3)), 10, m, 100, 40, 0, 0, 8)
	cfg := Config{SeasonLength: m, HistoryLimit: 3 * m}
	a, _ := NewForecaster(cfg)
	for _, y := range ys {
		_ = a.Observe(y)
	}
	b, err := Replay(cfg, ys)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(a.Forecast(m), b.Forecast(m)) || !reflect.DeepEqual(a.Accuracy(), b.Accuracy()) {
		t.Error("a forecaster replayed from the same values differs from the original")
	}
	if _, err := Replay(cfg, []float64{1, -1}); err == nil || !strings.Contains(err.Error(), "value 1") {
		t.Errorf("Replay with a negative value: err = %v; want one naming value 1", err)
	}
}

// regimeChange is five days of one daily pattern followed by four days of a
// busier one whose peak comes six hours later.
func regimeChange(seed uint64, m int) []float64 {
	rng := rand.New(rand.NewPCG(seed, 99))
	before := seasonal(rng, 5, m, 100, 40, 0, 0, 5)
	after := seasonal(rng, 4, m, 180, 90, float64(m)/4, 0, 5)
	return append(before, after...)
}

func TestAdaptationImprovesErrorAfterRegimeChange(t *testing.T) {
	const m = 48
	slow := Params{Alpha: 0.05, Beta: 0, Gamma: 0.05, EWMAAlpha: 0.3}
	for _, seed := range []uint64{1, 2, 3} {
		ys := regimeChange(seed, m)
		fixed, _ := NewForecaster(Config{SeasonLength: m, Params: slow, Adapt: AdaptConfig{Disabled: true}})
		adaptive, _ := NewForecaster(Config{SeasonLength: m, Params: slow})
		var fFixed, fAdaptive, actual []float64
		var adjustments []Adjustment
		at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
		for i, y := range ys {
			if i >= 6*m { // score the last three days, after the change
				fFixed = append(fFixed, fixed.Forecast(1)[0])
				fAdaptive = append(fAdaptive, adaptive.Forecast(1)[0])
				actual = append(actual, y)
			}
			_ = fixed.Observe(y)
			_ = adaptive.Observe(y)
			if fixed.AdaptDue() {
				t.Fatal("AdaptDue() with adaptation disabled")
			}
			if adaptive.AdaptDue() {
				adj := adaptive.Adapt(at.Add(time.Duration(i) * 30 * time.Minute))
				if adj.Changed {
					adjustments = append(adjustments, adj)
				}
			}
		}
		rf, ra := rmse(fFixed, actual), rmse(fAdaptive, actual)
		t.Logf("seed %d: RMSE over the last 3 days fixed %.2f adaptive %.2f, %d changes", seed, rf, ra, len(adjustments))
		if !(ra < 0.7*rf) {
			t.Errorf("seed %d: adaptive one-step RMSE %.2f; want < 70%% of the fixed parameters' %.2f", seed, ra, rf)
		}
		if len(adjustments) == 0 {
			t.Fatalf("seed %d: no adjustment changed the parameters", seed)
		}
		for _, a := range adjustments {
			wantCandidates := map[Model]int{ModelEWMA: 6, ModelHoltWinters: 120}[a.Model]
			if a.Old == a.New || a.BestRMSE >= a.OldRMSE || a.Reason == "" || a.At.IsZero() || a.Candidates != wantCandidates {
				t.Errorf("seed %d: malformed adjustment %+v", seed, a)
			}
		}
		if p := adaptive.Params(); p.Alpha <= slow.Alpha && p.Gamma <= slow.Gamma {
			t.Errorf("seed %d: final params %s are no faster than the slow start %s", seed, p, slow)
		}
	}
}

func TestAdaptIsDeterministic(t *testing.T) {
	const m = 24
	ys := regimeChange(5, m)
	run := func() ([]Adjustment, []float64) {
		f, _ := NewForecaster(Config{SeasonLength: m, Params: Params{Alpha: 0.05, Beta: 0, Gamma: 0.05, EWMAAlpha: 0.9}})
		var adj []Adjustment
		for i, y := range ys {
			_ = f.Observe(y)
			if f.AdaptDue() {
				adj = append(adj, f.Adapt(time.Unix(int64(i), 0)))
			}
		}
		return adj, f.Forecast(m)
	}
	a1, f1 := run()
	a2, f2 := run()
	if !reflect.DeepEqual(a1, a2) || !reflect.DeepEqual(f1, f2) {
		t.Fatal("two runs over the same series gave different adjustments or forecasts")
	}
	// The EWMA phase adapts EWMAAlpha only; Holt-Winters passes the rest.
	sawEWMA, sawHW := false, false
	for _, a := range a1 {
		if a.Window == 0 {
			continue // skipped: too little history to score
		}
		switch a.Model {
		case ModelEWMA:
			sawEWMA = true
			if a.Candidates != 6 || a.New.Alpha != a.Old.Alpha {
				t.Errorf("EWMA pass %+v; want 6 candidates and Holt-Winters parameters untouched", a)
			}
		case ModelHoltWinters:
			sawHW = true
			if a.New.EWMAAlpha != a.Old.EWMAAlpha {
				t.Errorf("Holt-Winters pass changed ewma_alpha: %+v", a)
			}
		}
	}
	if !sawEWMA || !sawHW {
		t.Errorf("passes covered ewma=%v holt-winters=%v; want both", sawEWMA, sawHW)
	}
}

func TestAdaptKeepsGoodParametersAndExplainsSkips(t *testing.T) {
	const m = 24
	f, _ := NewForecaster(Config{SeasonLength: m})
	if adj := f.Adapt(t0); adj.Changed || !strings.Contains(adj.Reason, "nothing observed") {
		t.Errorf("Adapt on an empty forecaster = %+v; want a skip explaining why", adj)
	}
	// Exactly two seasons: Holt-Winters has nothing past its initialisation to score.
	for _, y := range seasonal(nil, 2, m, 50, 20, 0, 0, 0) {
		_ = f.Observe(y)
	}
	if adj := f.Adapt(t0); adj.Changed || adj.Model != ModelHoltWinters || !strings.Contains(adj.Reason, "skipped") {
		t.Errorf("Adapt right after the switch = %+v; want a skipped Holt-Winters pass", adj)
	}
	// On a noise-free season the defaults forecast exactly: nothing can be
	// 5 % better than an RMSE of ~0, so the pass keeps them.
	for _, y := range seasonal(nil, 2, m, 50, 20, 0, 0, 0) {
		_ = f.Observe(y)
	}
	adj := f.Adapt(t0)
	if adj.Changed || adj.Old != adj.New || !strings.HasPrefix(adj.Reason, "kept") {
		t.Errorf("Adapt on a perfectly forecast series = %+v; want the parameters kept", adj)
	}
}

func TestAdaptDueSchedule(t *testing.T) {
	const m = 8
	f, _ := NewForecaster(Config{SeasonLength: m, Adapt: AdaptConfig{Every: 5}})
	due := []int{}
	for i := 1; i <= 12; i++ {
		_ = f.Observe(10)
		if f.AdaptDue() {
			due = append(due, i)
			f.Adapt(t0)
		}
	}
	if want := []int{5, 10}; !reflect.DeepEqual(due, want) {
		t.Errorf("passes due after observations %v; want %v", due, want)
	}
	// A high MAPE makes a pass due after a quarter of Every.
	g, _ := NewForecaster(Config{SeasonLength: m, Adapt: AdaptConfig{Every: 8, TriggerMAPE: 40}})
	for i, y := range []float64{10, 10, 100, 1} {
		_ = g.Observe(y)
		if got := g.AdaptDue(); got != (i >= 2) {
			t.Errorf("after %d observations AdaptDue() = %v (MAPE %.0f%%)", i+1, got, g.Accuracy().OneStep.MAPE)
		}
	}
}

func TestLeaderChangeRebuildsForecasterFromSeriesState(t *testing.T) {
	// The old leader records and forecasts bucket by bucket; the new one
	// gets the series from a (msgpack) ledger snapshot and replays it.
	const interval = 30 * time.Minute
	m, _ := SeasonLength(interval)
	rng := rand.New(rand.NewPCG(11, 11))
	s, _ := NewSeries(interval, t0, 5*m)
	cfg := Config{SeasonLength: m, HistoryLimit: 5 * m}
	old, _ := NewForecaster(cfg)
	observed := 0
	for i := range 4 * m {
		at := t0.Add(time.Duration(i) * interval)
		for range 1 + rng.IntN(20) {
			if err := s.Record(at.Add(time.Duration(rng.Int64N(int64(interval)))), 1, 3600*(1+10*rng.Float64())); err != nil {
				t.Fatal(err)
			}
		}
		now := at.Add(interval)
		s.AdvanceTo(now)
		for ; observed < s.Completed(now); observed++ {
			if err := old.Observe(s.Bucket(observed).Rate(interval)); err != nil {
				t.Fatal(err)
			}
		}
	}
	b, err := msgpack.Marshal(s.State())
	if err != nil {
		t.Fatal(err)
	}
	var st SeriesState
	if err := msgpack.Unmarshal(b, &st); err != nil {
		t.Fatal(err)
	}
	restored, err := RestoreSeries(st)
	if err != nil {
		t.Fatal(err)
	}
	now := t0.Add(time.Duration(4*m) * interval)
	rebuilt, err := Replay(cfg, restored.Rates(0, restored.Completed(now)))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(old.Forecast(m), rebuilt.Forecast(m)) || !reflect.DeepEqual(old.Accuracy(), rebuilt.Accuracy()) {
		t.Errorf("the new leader's forecaster differs:\n old %+v\n new %+v", old.Accuracy(), rebuilt.Accuracy())
	}
}
