package forecast

import (
	"fmt"
	"math"

	"github.com/meridian-mesh/meridian/placement"
)

// Params are the smoothing parameters of the two models.
type Params struct {
	// Alpha smooths the Holt-Winters level, in (0, 1].
	Alpha float64 `json:"alpha" msgpack:"a"`
	// Beta smooths the Holt-Winters trend, in [0, 1]; 0 keeps the initial
	// trend for ever.
	Beta float64 `json:"beta" msgpack:"b"`
	// Gamma smooths the Holt-Winters seasonal terms, in (0, 1].
	Gamma float64 `json:"gamma" msgpack:"g"`
	// EWMAAlpha smooths the EWMA level used while history is short, in (0, 1].
	EWMAAlpha float64 `json:"ewma_alpha" msgpack:"e"`
}

// DefaultParams are the starting parameters: a level that follows a shift
// within a few buckets, an almost fixed trend (demand has no long-term
// slope within a week) and a season that learns a changed day in about ten
// days. Adaptation moves them from there.
func DefaultParams() Params {
	return Params{Alpha: 0.2, Beta: 0.01, Gamma: 0.1, EWMAAlpha: 0.3}
}

// Validate checks that every parameter is in its range.
func (p Params) Validate() error {
	for _, f := range []struct {
		name      string
		v         float64
		zeroValid bool
	}{
		{"alpha", p.Alpha, false},
		{"beta", p.Beta, true},
		{"gamma", p.Gamma, false},
		{"ewma_alpha", p.EWMAAlpha, false},
	} {
		lo := "(0, 1]"
		if f.zeroValid {
			lo = "[0, 1]"
		}
		if math.IsNaN(f.v) || f.v > 1 || f.v < 0 || (f.v == 0 && !f.zeroValid) {
			return &placement.FieldError{Field: f.name, Reason: fmt.Sprintf("must be in %s, got %v", lo, f.v)}
		}
	}
	return nil
}

// String formats the parameters for logs and adjustment reasons.
func (p Params) String() string {
	return fmt.Sprintf("α=%g β=%g γ=%g ewma_α=%g", p.Alpha, p.Beta, p.Gamma, p.EWMAAlpha)
}

// HoltWinters is the additive Holt-Winters model with a trend and a season
// of m buckets. After observation y at index t (season slot t mod m):
//
//	level  ← α·(y − s[slot]) + (1−α)·(level + trend)
//	trend  ← β·(level − previous level) + (1−β)·trend
//	s[slot] ← γ·(y − level) + (1−γ)·s[slot]
//
// and the forecast k ≥ 1 steps ahead is level + k·trend + s[(t+k) mod m],
// floored at zero because demand is never negative.
//
// It is not safe for concurrent use.
type HoltWinters struct {
	p            Params
	level, trend float64
	season       []float64 // by slot: absolute index mod m
	next         int       // absolute index of the next observation
}

// NewHoltWinters returns a model initialised from the first two seasons of
// history (which must hold at least 2·seasonLength values, the first one at
// season slot 0) and then updated with every value of history, so that its
// next observation is the one after history. See initialise for the rule.
func NewHoltWinters(p Params, seasonLength int, history []float64) (*HoltWinters, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	if seasonLength < 1 {
		return nil, &placement.FieldError{Field: "season_length", Reason: fmt.Sprintf("must be at least 1, got %d", seasonLength)}
	}
	if len(history) < 2*seasonLength {
		return nil, &placement.FieldError{Field: "history", Reason: fmt.Sprintf("needs two seasons (%d values), got %d", 2*seasonLength, len(history))}
	}
	for i, y := range history {
		if err := checkObservation(y); err != nil {
			return nil, fmt.Errorf("history[%d]: %w", i, err)
		}
	}
	hw := &HoltWinters{}
	hw.initialise(p, seasonLength, 0, history)
	for _, y := range history {
		hw.Update(y)
	}
	return hw, nil
}

// initialise sets the state "just before" history[0], whose absolute index
// is first, from the first two seasons of history (the classic heuristic):
// A1, A2 = the means of season 1 and 2; trend = (A2 − A1)/m; level = A1
// moved back from the middle of season 1 to index −1 along the trend; the
// seasonal term of slot i = the mean over both seasons of the value minus
// its season mean and minus the trend's share at that position. It does not
// validate: callers do.
func (hw *HoltWinters) initialise(p Params, m, first int, history []float64) {
	var a1, a2 float64
	for i := range m {
		a1 += history[i]
		a2 += history[m+i]
	}
	a1 /= float64(m)
	a2 /= float64(m)
	trend := (a2 - a1) / float64(m)
	mid := float64(m-1) / 2
	hw.p = p
	hw.trend = trend
	hw.level = a1 - trend*(mid+1)
	if cap(hw.season) >= m {
		hw.season = hw.season[:m]
	} else {
		hw.season = make([]float64, m)
	}
	for i := range m {
		off := (float64(i) - mid) * trend
		hw.season[(first+i)%m] = ((history[i] - a1 - off) + (history[m+i] - a2 - off)) / 2
	}
	hw.next = first
}

// SeasonLength returns m.
func (hw *HoltWinters) SeasonLength() int { return len(hw.season) }

// Params returns the model's parameters.
func (hw *HoltWinters) Params() Params { return hw.p }

// Level returns the current level.
func (hw *HoltWinters) Level() float64 { return hw.level }

// Trend returns the current trend per bucket.
func (hw *HoltWinters) Trend() float64 { return hw.trend }

// Update folds in the next observation and returns the one-step forecast
// that the model had made for it (floored at zero). The caller checks that
// y is finite.
func (hw *HoltWinters) Update(y float64) float64 {
	m := len(hw.season)
	slot := hw.next % m
	s := hw.season[slot]
	f := max(0, hw.level+hw.trend+s)
	a, b, g := hw.p.Alpha, hw.p.Beta, hw.p.Gamma
	level := a*(y-s) + (1-a)*(hw.level+hw.trend)
	hw.trend = b*(level-hw.level) + (1-b)*hw.trend
	hw.level = level
	hw.season[slot] = g*(y-level) + (1-g)*s
	hw.next++
	return f
}

// ForecastAt returns the forecast k ≥ 1 steps ahead, floored at zero. It
// returns 0 for k < 1.
func (hw *HoltWinters) ForecastAt(k int) float64 {
	if k < 1 {
		return 0
	}
	m := len(hw.season)
	return max(0, hw.level+float64(k)*hw.trend+hw.season[(hw.next+k-1)%m])
}

// Forecast returns the forecasts 1..h steps ahead (nil for h < 1).
func (hw *HoltWinters) Forecast(h int) []float64 {
	if h < 1 {
		return nil
	}
	out := make([]float64, h)
	for k := range out {
		out[k] = hw.ForecastAt(k + 1)
	}
	return out
}

// EWMA is an exponentially weighted moving average: level ← a·y + (1−a)·level,
// starting at the first observation; its forecast is the level at every
// horizon. It has no notion of season, which is why Forecaster uses it only
// until two seasons of history exist.
//
// It is not safe for concurrent use.
type EWMA struct {
	alpha float64
	level float64
	n     int
}

// NewEWMA returns an EWMA with smoothing alpha in (0, 1].
func NewEWMA(alpha float64) (*EWMA, error) {
	if err := (Params{Alpha: 1, Gamma: 1, EWMAAlpha: alpha}).Validate(); err != nil {
		return nil, err
	}
	return &EWMA{alpha: alpha}, nil
}

// Update folds in the next observation and returns the one-step forecast it
// had made for it (0 before the first observation).
func (e *EWMA) Update(y float64) float64 {
	f := e.ForecastAt(1)
	if e.n == 0 {
		e.level = y
	} else {
		e.level = e.alpha*y + (1-e.alpha)*e.level
	}
	e.n++
	return f
}

// ForecastAt returns the forecast k ≥ 1 steps ahead: the level, floored at
// zero; 0 before any observation or for k < 1.
func (e *EWMA) ForecastAt(k int) float64 {
	if k < 1 || e.n == 0 {
		return 0
	}
	return max(0, e.level)
}

// Forecast returns the forecasts 1..h steps ahead (nil for h < 1).
func (e *EWMA) Forecast(h int) []float64 {
	if h < 1 {
		return nil
	}
	out := make([]float64, h)
	for k := range out {
		out[k] = e.ForecastAt(k + 1)
	}
	return out
}

func checkObservation(y float64) error {
	if math.IsNaN(y) || math.IsInf(y, 0) || y < 0 {
		return &placement.FieldError{Field: "observation", Reason: fmt.Sprintf("must be a finite number ≥ 0, got %v", y)}
	}
	return nil
}
