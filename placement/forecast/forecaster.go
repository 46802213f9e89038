package forecast

import (
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/meridian-mesh/meridian/placement"
)

// Model names the model a Forecaster currently forecasts with.
type Model string

// The models.
const (
	// ModelNone: nothing observed yet; forecasts are zero.
	ModelNone Model = "none"
	// ModelEWMA: fewer than two seasons observed.
	ModelEWMA Model = "ewma"
	// ModelHoltWinters: two seasons or more observed.
	ModelHoltWinters Model = "holt-winters"
)

// Grid is the set of candidate parameters an adaptation pass tries. Holt-
// Winters candidates are every (Alpha, Beta, Gamma) combination, in the
// order given; EWMA candidates are the EWMAAlpha values.
type Grid struct {
	// Alpha are the candidate level smoothings.
	Alpha []float64 `json:"alpha"`
	// Beta are the candidate trend smoothings.
	Beta []float64 `json:"beta"`
	// Gamma are the candidate seasonal smoothings.
	Gamma []float64 `json:"gamma"`
	// EWMAAlpha are the candidate EWMA smoothings.
	EWMAAlpha []float64 `json:"ewma_alpha"`
}

// DefaultGrid is 6·4·5 = 120 Holt-Winters candidates and 6 EWMA ones,
// spanning slow to fast smoothing.
func DefaultGrid() Grid {
	return Grid{
		Alpha:     []float64{0.05, 0.1, 0.2, 0.3, 0.5, 0.7},
		Beta:      []float64{0, 0.01, 0.05, 0.1},
		Gamma:     []float64{0.05, 0.1, 0.2, 0.3, 0.5},
		EWMAAlpha: []float64{0.1, 0.2, 0.3, 0.5, 0.7, 0.9},
	}
}

func (g Grid) validate() error {
	for _, f := range []struct {
		name string
		vs   []float64
		set  func(*Params, float64)
	}{
		{"alpha", g.Alpha, func(p *Params, v float64) { p.Alpha = v }},
		{"beta", g.Beta, func(p *Params, v float64) { p.Beta = v }},
		{"gamma", g.Gamma, func(p *Params, v float64) { p.Gamma = v }},
		{"ewma_alpha", g.EWMAAlpha, func(p *Params, v float64) { p.EWMAAlpha = v }},
	} {
		if len(f.vs) == 0 {
			return &placement.FieldError{Field: "adapt.grid." + f.name, Reason: "must not be empty"}
		}
		for i, v := range f.vs {
			p := DefaultParams()
			f.set(&p, v)
			if err := p.Validate(); err != nil {
				return &placement.FieldError{Field: fmt.Sprintf("adapt.grid.%s[%d]", f.name, i), Reason: reason(err)}
			}
		}
	}
	return nil
}

// AdaptConfig says when and how a Forecaster adapts its parameters.
type AdaptConfig struct {
	// Disabled turns AdaptDue off; Adapt still works when called.
	Disabled bool `json:"disabled,omitempty"`
	// Every is the number of observations between scheduled passes;
	// 0 means a quarter of a season (every 6 hours).
	Every int `json:"every,omitempty"`
	// Window is the number of most recent observations a pass scores
	// candidates on; 0 means one season.
	Window int `json:"window,omitempty"`
	// MinImprovement is the relative RMSE improvement a candidate needs to
	// replace the current parameters, so that parameters do not flap on
	// noise; 0 means 0.05 (5 %).
	MinImprovement float64 `json:"min_improvement,omitempty"`
	// TriggerMAPE, when positive, makes a pass due early (after a quarter
	// of Every) once the rolling one-step MAPE exceeds it, in percent.
	TriggerMAPE float64 `json:"trigger_mape_pct,omitempty"`
	// Grid is the candidate set; the zero value means DefaultGrid().
	Grid Grid `json:"grid"`
}

// Config configures a Forecaster.
type Config struct {
	// SeasonLength is the number of buckets in a day (see SeasonLength);
	// required.
	SeasonLength int `json:"season_length"`
	// Horizon is how many buckets ahead the horizon error is tracked and
	// what callers usually ask Forecast for; 0 means one hour's worth of
	// buckets (at least 1).
	Horizon int `json:"horizon"`
	// Params are the starting parameters; the zero value means DefaultParams().
	Params Params `json:"params"`
	// HistoryLimit is how many recent observations are kept for
	// initialisation and adaptation; 0 means 7 seasons. At least 2 seasons + 1.
	HistoryLimit int `json:"history_limit"`
	// ErrorWindow is the rolling window of the error statistics; 0 means one
	// season.
	ErrorWindow int `json:"error_window"`
	// Adapt configures parameter adaptation.
	Adapt AdaptConfig `json:"adapt"`
}

// withDefaults fills zero fields and validates the result.
func (c Config) withDefaults() (Config, error) {
	m := c.SeasonLength
	if m < 1 {
		return c, &placement.FieldError{Field: "season_length", Reason: fmt.Sprintf("must be at least 1, got %d", m)}
	}
	if c.Horizon == 0 {
		c.Horizon = max(1, m/24)
	}
	if c.Params == (Params{}) {
		c.Params = DefaultParams()
	}
	if c.HistoryLimit == 0 {
		c.HistoryLimit = 7 * m
	}
	if c.ErrorWindow == 0 {
		c.ErrorWindow = m
	}
	a := &c.Adapt
	if a.Every == 0 {
		a.Every = max(1, m/4)
	}
	if a.Window == 0 {
		a.Window = m
	}
	if a.MinImprovement == 0 {
		a.MinImprovement = 0.05
	}
	if a.Grid.Alpha == nil && a.Grid.Beta == nil && a.Grid.Gamma == nil && a.Grid.EWMAAlpha == nil {
		a.Grid = DefaultGrid()
	}
	switch {
	case c.Horizon < 1:
		return c, &placement.FieldError{Field: "horizon", Reason: fmt.Sprintf("must be at least 1, got %d", c.Horizon)}
	case c.HistoryLimit < 2*m+1:
		return c, &placement.FieldError{Field: "history_limit", Reason: fmt.Sprintf("must be at least two seasons + 1 (%d), got %d", 2*m+1, c.HistoryLimit)}
	case c.ErrorWindow < 1:
		return c, &placement.FieldError{Field: "error_window", Reason: fmt.Sprintf("must be at least 1, got %d", c.ErrorWindow)}
	case a.Every < 1:
		return c, &placement.FieldError{Field: "adapt.every", Reason: fmt.Sprintf("must be at least 1, got %d", a.Every)}
	case a.Window < 1:
		return c, &placement.FieldError{Field: "adapt.window", Reason: fmt.Sprintf("must be at least 1, got %d", a.Window)}
	case math.IsNaN(a.MinImprovement) || a.MinImprovement < 0 || a.MinImprovement >= 1:
		return c, &placement.FieldError{Field: "adapt.min_improvement", Reason: fmt.Sprintf("must be in [0, 1), got %v", a.MinImprovement)}
	case math.IsNaN(a.TriggerMAPE) || a.TriggerMAPE < 0:
		return c, &placement.FieldError{Field: "adapt.trigger_mape_pct", Reason: fmt.Sprintf("must not be negative, got %v", a.TriggerMAPE)}
	}
	if err := c.Params.Validate(); err != nil {
		var fe *placement.FieldError
		if errors.As(err, &fe) {
			return c, &placement.FieldError{Field: "params." + fe.Field, Reason: fe.Reason}
		}
		return c, fmt.Errorf("params: %w", err)
	}
	if err := a.Grid.validate(); err != nil {
		return c, err
	}
	return c, nil
}

// Accuracy is what a Forecaster exposes about itself: the model in use, its
// parameters and its rolling error, one step ahead and at the horizon.
type Accuracy struct {
	// Model is the model forecasts currently come from.
	Model Model `json:"model"`
	// Params are the current parameters.
	Params Params `json:"params"`
	// Observations is the number of buckets observed so far.
	Observations int `json:"observations"`
	// OneStep is the error of the forecasts made one bucket ahead.
	OneStep ErrorStats `json:"one_step"`
	// HorizonSteps is the configured horizon in buckets.
	HorizonSteps int `json:"horizon_steps"`
	// Horizon is the error of the forecasts made HorizonSteps buckets ahead
	// (the ones allocate-ahead decisions rest on).
	Horizon ErrorStats `json:"horizon"`
}

// Adjustment records one adaptation pass, whether or not it changed the
// parameters, so the caller can log it and show it to operators.
type Adjustment struct {
	// At is the time the caller passed to Adapt.
	At time.Time `json:"at"`
	// Model is the model whose parameters were searched.
	Model Model `json:"model"`
	// Changed reports whether New replaced Old.
	Changed bool `json:"changed"`
	// Old is the parameters before the pass.
	Old Params `json:"old"`
	// New is the parameters after the pass (Old when nothing changed).
	New Params `json:"new"`
	// OldRMSE is the one-step RMSE of Old over the scored window; 0 when
	// the pass was skipped.
	OldRMSE float64 `json:"old_rmse"`
	// BestRMSE is the one-step RMSE of the best candidate; 0 when the pass
	// was skipped.
	BestRMSE float64 `json:"best_rmse"`
	// Window is the number of observations scored.
	Window int `json:"window"`
	// Candidates is the number of parameter sets tried.
	Candidates int `json:"candidates"`
	// Reason says in one sentence why the parameters changed or did not.
	Reason string `json:"reason"`
}

type pendingForecast struct {
	target int // absolute index of the observation it forecasts
	value  float64
	valid  bool
}

// Forecaster forecasts one series, bucket by bucket: it runs an EWMA while
// it has observed fewer than two seasons, and from the second season's last
// bucket on an additive Holt-Winters model initialised from the first two
// seasons of its kept history (see HoltWinters). Its state is a function of
// its Config, its parameters and the values observed, so a new leader that
// observes the same series (for example rebuilt from a SeriesState) with
// the last adopted parameters reaches the same forecasts.
//
// It is not safe for concurrent use.
type Forecaster struct {
	cfg    Config
	params Params
	n      int       // observations so far; absolute index of the next one
	hist   []float64 // the last ≤ HistoryLimit observations
	ewma   EWMA
	hw     *HoltWinters
	// scratch is reused by adaptation replays.
	scratch HoltWinters

	oneStep, horizon *ErrorTracker
	pending          []pendingForecast // ring of Horizon forecasts
	sinceAdapt       int
}

// NewForecaster returns a Forecaster that has observed nothing.
func NewForecaster(cfg Config) (*Forecaster, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("forecaster config: %w", err)
	}
	f := &Forecaster{
		cfg:     cfg,
		params:  cfg.Params,
		hist:    make([]float64, 0, 2*cfg.HistoryLimit),
		pending: make([]pendingForecast, cfg.Horizon),
	}
	f.ewma = EWMA{alpha: cfg.Params.EWMAAlpha}
	f.oneStep, _ = NewErrorTracker(cfg.ErrorWindow)
	f.horizon, _ = NewErrorTracker(cfg.ErrorWindow)
	return f, nil
}

// Replay returns a Forecaster that has observed values in order: how a new
// leader rebuilds one from its region's series.
func Replay(cfg Config, values []float64) (*Forecaster, error) {
	f, err := NewForecaster(cfg)
	if err != nil {
		return nil, err
	}
	for i, y := range values {
		if err := f.Observe(y); err != nil {
			return nil, fmt.Errorf("replay value %d: %w", i, err)
		}
	}
	return f, nil
}

// Config returns the configuration with its defaults filled in.
func (f *Forecaster) Config() Config { return f.cfg }

// Params returns the current parameters.
func (f *Forecaster) Params() Params { return f.params }

// Observations returns the number of buckets observed.
func (f *Forecaster) Observations() int { return f.n }

// Model returns the model forecasts currently come from.
func (f *Forecaster) Model() Model {
	switch {
	case f.hw != nil:
		return ModelHoltWinters
	case f.n > 0:
		return ModelEWMA
	}
	return ModelNone
}

// Observe folds in the value of the next completed bucket (a demand: finite
// and not negative), updating the error statistics with the forecasts that
// had been made for it.
func (f *Forecaster) Observe(y float64) error {
	if err := checkObservation(y); err != nil {
		return err
	}
	h := f.cfg.Horizon
	if f.n > 0 {
		f.oneStep.Add(f.forecastAt(1), y)
	}
	if p := f.pending[f.n%h]; p.valid && p.target == f.n {
		f.horizon.Add(p.value, y)
	}
	f.hist = append(f.hist, y)
	if len(f.hist) > f.cfg.HistoryLimit {
		n := copy(f.hist, f.hist[len(f.hist)-f.cfg.HistoryLimit:])
		f.hist = f.hist[:n]
	}
	f.n++
	f.sinceAdapt++
	m := f.cfg.SeasonLength
	switch {
	case f.hw != nil:
		f.hw.Update(y)
	case f.n >= 2*m:
		// Two seasons observed: switch to Holt-Winters, initialised from
		// the first two kept seasons and brought up to date.
		f.hw = &HoltWinters{}
		f.replayInto(f.hw, f.params, 0, math.Inf(1))
	default:
		f.ewma.Update(y)
	}
	f.pending[(f.n-1)%h] = pendingForecast{target: f.n - 1 + h, value: f.forecastAt(h), valid: true}
	return nil
}

// replayInto initialises hw with p from the kept history and replays it,
// returning the sum of squared one-step errors over the last score values.
// It stops early, returning +Inf, once the sum exceeds bound: that
// candidate cannot win any more.
func (f *Forecaster) replayInto(hw *HoltWinters, p Params, score int, bound float64) float64 {
	first := f.n - len(f.hist)
	hw.initialise(p, f.cfg.SeasonLength, first, f.hist)
	from := len(f.hist) - score
	var sse float64
	for i, y := range f.hist {
		fc := hw.Update(y)
		if i >= from {
			e := fc - y
			sse += e * e
			if sse > bound {
				return math.Inf(1)
			}
		}
	}
	return sse
}

// ewmaReplay returns the sum of squared one-step errors of an EWMA with
// alpha over the last score values of the kept history.
func (f *Forecaster) ewmaReplay(alpha float64, score int) (EWMA, float64) {
	e := EWMA{alpha: alpha}
	from := len(f.hist) - score
	var sse float64
	for i, y := range f.hist {
		fc := e.Update(y)
		if i >= from {
			sse += (fc - y) * (fc - y)
		}
	}
	return e, sse
}

func (f *Forecaster) forecastAt(k int) float64 {
	if f.hw != nil {
		return f.hw.ForecastAt(k)
	}
	return f.ewma.ForecastAt(k)
}

// Forecast returns the demand forecast for the next h buckets (the first
// is the bucket after the last observed one); every value is ≥ 0. Before
// any observation the forecast is zeros. It returns nil for h < 1.
func (f *Forecaster) Forecast(h int) []float64 {
	if h < 1 {
		return nil
	}
	out := make([]float64, h)
	for k := range out {
		out[k] = f.forecastAt(k + 1)
	}
	return out
}

// Accuracy returns the model, parameters and rolling errors.
func (f *Forecaster) Accuracy() Accuracy {
	return Accuracy{
		Model:        f.Model(),
		Params:       f.params,
		Observations: f.n,
		OneStep:      f.oneStep.Stats(),
		HorizonSteps: f.cfg.Horizon,
		Horizon:      f.horizon.Stats(),
	}
}

// AdaptDue reports whether an adaptation pass is due: Adapt.Every
// observations since the last pass, or, with Adapt.TriggerMAPE set, a
// quarter of that once the rolling one-step MAPE exceeds the trigger.
func (f *Forecaster) AdaptDue() bool {
	a := f.cfg.Adapt
	if a.Disabled || f.n < 2 {
		return false
	}
	if f.sinceAdapt >= a.Every {
		return true
	}
	return a.TriggerMAPE > 0 && f.sinceAdapt >= max(1, a.Every/4) && f.oneStep.Stats().MAPE > a.TriggerMAPE
}

// Adapt runs one adaptation pass at time at: it replays the kept history
// with every candidate of the grid (Holt-Winters candidates in Holt-Winters
// mode, EWMA ones before), scores each by the squared one-step error over
// the last Adapt.Window observations, and adopts the best candidate if its
// RMSE beats the current parameters' by Adapt.MinImprovement. Ties go to
// the earliest candidate in grid order, so a pass is deterministic. The
// returned Adjustment says what happened and why.
func (f *Forecaster) Adapt(at time.Time) Adjustment {
	f.sinceAdapt = 0
	adj := Adjustment{At: at, Model: f.Model(), Old: f.params, New: f.params}
	a := f.cfg.Adapt
	m := f.cfg.SeasonLength
	var window int
	switch adj.Model {
	case ModelHoltWinters:
		window = min(a.Window, len(f.hist)-2*m)
		if need := max(1, a.Window/4); window < need {
			adj.Reason = fmt.Sprintf("skipped: %d observations past the two initialisation seasons, need %d", max(0, window), need)
			return adj
		}
	case ModelEWMA:
		window = min(a.Window, len(f.hist)-1)
		if need := max(1, min(a.Window/4, m/4)); window < need {
			adj.Reason = fmt.Sprintf("skipped: %d observations to score, need %d", window, need)
			return adj
		}
	default:
		adj.Reason = "skipped: nothing observed yet"
		return adj
	}
	adj.Window = window

	best, bestSSE := f.params, 0.0
	if adj.Model == ModelHoltWinters {
		cur := f.replayInto(&f.scratch, f.params, window, math.Inf(1))
		bestSSE = math.Inf(1)
		for _, al := range a.Grid.Alpha {
			for _, be := range a.Grid.Beta {
				for _, ga := range a.Grid.Gamma {
					adj.Candidates++
					p := Params{Alpha: al, Beta: be, Gamma: ga, EWMAAlpha: f.params.EWMAAlpha}
					if sse := f.replayInto(&f.scratch, p, window, bestSSE); sse < bestSSE {
						best, bestSSE = p, sse
					}
				}
			}
		}
		adj.OldRMSE = math.Sqrt(cur / float64(window))
	} else {
		_, cur := f.ewmaReplay(f.params.EWMAAlpha, window)
		bestSSE = math.Inf(1)
		for _, al := range a.Grid.EWMAAlpha {
			adj.Candidates++
			p := f.params
			p.EWMAAlpha = al
			if _, sse := f.ewmaReplay(al, window); sse < bestSSE {
				best, bestSSE = p, sse
			}
		}
		adj.OldRMSE = math.Sqrt(cur / float64(window))
	}
	adj.BestRMSE = math.Sqrt(bestSSE / float64(window))

	gain := 0.0
	if adj.OldRMSE > 0 {
		gain = (adj.OldRMSE - adj.BestRMSE) / adj.OldRMSE
	}
	live := f.oneStep.Stats()
	if best == f.params || gain < a.MinImprovement || adj.BestRMSE >= adj.OldRMSE {
		adj.Reason = fmt.Sprintf("kept %s: best candidate %s has one-step RMSE %.4g vs %.4g over the last %d buckets (%.1f%% better, need %.1f%%); live %s",
			f.params, best, adj.BestRMSE, adj.OldRMSE, window, 100*gain, 100*a.MinImprovement, live)
		return adj
	}
	adj.Changed = true
	adj.New = best
	adj.Reason = fmt.Sprintf("%s one-step RMSE over the last %d buckets %.4g → %.4g (%.1f%% better) with %s, best of %d candidates; live %s",
		adj.Model, window, adj.OldRMSE, adj.BestRMSE, 100*gain, best, adj.Candidates, live)
	f.params = best
	if adj.Model == ModelHoltWinters {
		f.replayInto(f.hw, best, 0, math.Inf(1))
	} else {
		f.ewma, _ = f.ewmaReplay(best.EWMAAlpha, 0)
	}
	return adj
}

// reason returns the Reason of a FieldError, or the error's text.
func reason(err error) string {
	var fe *placement.FieldError
	if errors.As(err, &fe) {
		return fe.Reason
	}
	return err.Error()
}
