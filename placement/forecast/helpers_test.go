package forecast

import (
	"math"
	"math/rand/v2"
)

func nan() float64 { return math.NaN() }
func inf() float64 { return math.Inf(1) }

// seasonal returns days·m values of base + amp·sin(2π(t+phase)/m) + slope·t
// plus Gaussian noise of standard deviation noise, floored at zero.
func seasonal(rng *rand.Rand, days, m int, base, amp, phase, slope, noise float64) []float64 {
	out := make([]float64, days*m)
	for t := range out {
		y := base + amp*math.Sin(2*math.Pi*(float64(t)+phase)/float64(m)) + slope*float64(t)
		if noise > 0 {
			y += noise * rng.NormFloat64()
		}
		out[t] = max(0, y)
	}
	return out
}

// rmse returns the root mean squared difference of f and a.
func rmse(f, a []float64) float64 {
	var s float64
	for i := range f {
		s += (f[i] - a[i]) * (f[i] - a[i])
	}
	return math.Sqrt(s / float64(len(f)))
}
