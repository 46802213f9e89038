package placement

import (
	"math"
	"strconv"
)

// formatNumber writes v for people: plain decimals with at most four
// fractional digits for everyday magnitudes (18.75, 20, 0.3333), and
// exponent notation only for very large or very small values.
func formatNumber(v float64) string {
	a := math.Abs(v)
	if math.IsNaN(v) || math.IsInf(v, 0) || (a != 0 && (a < 1e-4 || a >= 1e15)) {
		return strconv.FormatFloat(v, 'g', 6, 64)
	}
	s := strconv.FormatFloat(v, 'f', 4, 64)
	// Trim trailing zeros and a trailing point: "20.0000" → "20".
	i := len(s)
	for i > 0 && s[i-1] == '0' {
		i--
	}
	if i > 0 && s[i-1] == '.' {
		i--
	}
	s = s[:i]
	if s == "-0" {
		return "0"
	}
	return s
}

// FormatNumber is formatNumber for callers outside the package, so the
// command line prints figures the way explanations do.
func FormatNumber(v float64) string { return formatNumber(v) }
