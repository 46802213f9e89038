package forecast

import (
	"fmt"
	"math"

	"github.com/meridian-mesh/meridian/placement"
)

// zeroActual is the magnitude under which an actual value counts as zero for
// MAPE: a relative error against (almost) nothing is meaningless.
const zeroActual = 1e-9

// ErrorStats summarises forecast errors over a window. The error of a point
// is forecast − actual, so a positive Bias means over-forecasting (capacity
// bought that was not needed) and a negative one under-forecasting.
type ErrorStats struct {
	// Points is the number of (forecast, actual) pairs in the window.
	Points int `json:"points"`
	// MAPE is the mean absolute percentage error, in percent, over the
	// points whose actual is not zero: 100·mean(|f − a| / a). Points with a
	// zero actual are skipped (MAPE is undefined there) and counted in
	// ZeroActuals; MAPE is 0 when no point has a non-zero actual.
	MAPE float64 `json:"mape_pct"`
	// ZeroActuals is the number of points skipped by MAPE.
	ZeroActuals int `json:"zero_actuals"`
	// Bias is the mean signed error, mean(f − a), in the series' unit.
	Bias float64 `json:"bias"`
	// MAE is the mean absolute error, in the series' unit.
	MAE float64 `json:"mae"`
	// RMSE is the root mean squared error, in the series' unit.
	RMSE float64 `json:"rmse"`
}

// String formats the statistics for logs.
func (s ErrorStats) String() string {
	return fmt.Sprintf("MAPE %.1f%% (%d points, %d zero) bias %+.4g RMSE %.4g", s.MAPE, s.Points, s.ZeroActuals, s.Bias, s.RMSE)
}

// ErrorTracker keeps the last Window (forecast, actual) pairs and computes
// their ErrorStats. Add is O(1); Stats is O(window).
//
// It is not safe for concurrent use.
type ErrorTracker struct {
	f, a []float64 // ring buffers
	next int
	full bool
}

// NewErrorTracker returns a tracker over a rolling window of the given
// number of points.
func NewErrorTracker(window int) (*ErrorTracker, error) {
	if window < 1 {
		return nil, &placement.FieldError{Field: "error_window", Reason: fmt.Sprintf("must be at least 1, got %d", window)}
	}
	return &ErrorTracker{f: make([]float64, window), a: make([]float64, window)}, nil
}

// Window returns the size of the rolling window.
func (t *ErrorTracker) Window() int { return len(t.f) }

// Add records one forecast and the actual value that followed it. Pairs
// with a non-finite member are ignored: they carry no information.
func (t *ErrorTracker) Add(forecast, actual float64) {
	if math.IsNaN(forecast) || math.IsInf(forecast, 0) || math.IsNaN(actual) || math.IsInf(actual, 0) {
		return
	}
	t.f[t.next], t.a[t.next] = forecast, actual
	t.next++
	if t.next == len(t.f) {
		t.next, t.full = 0, true
	}
}

// Reset forgets every pair.
func (t *ErrorTracker) Reset() { t.next, t.full = 0, false }

// Stats returns the statistics of the pairs in the window.
func (t *ErrorTracker) Stats() ErrorStats {
	n := t.next
	if t.full {
		n = len(t.f)
	}
	return errorStats(t.f[:n], t.a[:n])
}

// errorStats computes ErrorStats of paired slices (order does not matter).
func errorStats(f, a []float64) ErrorStats {
	var s ErrorStats
	s.Points = len(f)
	if s.Points == 0 {
		return s
	}
	var sum, abs, sq, pct float64
	nonZero := 0
	for i := range f {
		e := f[i] - a[i]
		sum += e
		abs += math.Abs(e)
		sq += e * e
		if math.Abs(a[i]) > zeroActual {
			pct += math.Abs(e) / math.Abs(a[i])
			nonZero++
		}
	}
	n := float64(s.Points)
	s.Bias = sum / n
	s.MAE = abs / n
	s.RMSE = math.Sqrt(sq / n)
	s.ZeroActuals = s.Points - nonZero
	if nonZero > 0 {
		s.MAPE = 100 * pct / float64(nonZero)
	}
	return s
}
