package forecast

import (
	"errors"
	"testing"

	"github.com/meridian-mesh/meridian/placement"
)

func TestAskPrice(t *testing.T) {
	def := DefaultPriceConfig()
	steep := PriceConfig{Slope: 10, Exponent: 1, MaxMultiplier: 3}
	for _, tc := range []struct {
		cfg        PriceConfig
		cost, u    float64
		want       float64
		annotation string
	}{
		{def, 32.77, 0, 32.77, "idle: cost"},
		{def, 100, 0.5, 125, "1 + 0.5²"},
		{def, 100, 1, 200, "full: 2×"},
		{def, 100, 1.7, 200, "clamped to u = 1"},
		{def, 100, -0.3, 100, "clamped to u = 0"},
		{steep, 10, 0.1, 20, "1 + 10·0.1"},
		{steep, 10, 0.5, 30, "capped at 3×"},
		{PriceConfig{Slope: 0, Exponent: 1, MaxMultiplier: 1}, 7, 0.9, 7, "flat"},
		{def, 0, 0.9, 0, "free stays free"},
	} {
		got, err := tc.cfg.Ask(tc.cost, tc.u)
		if err != nil || !near(got, tc.want) {
			t.Errorf("%+v.Ask(%v, %v) = %v, %v; want %v (%s)", tc.cfg, tc.cost, tc.u, got, err, tc.want, tc.annotation)
		}
	}
}

func TestAskPriceIsMonotoneAndCapped(t *testing.T) {
	for _, c := range []PriceConfig{DefaultPriceConfig(), {Slope: 3, Exponent: 0.5, MaxMultiplier: 2.5}, {Slope: 0.2, Exponent: 4, MaxMultiplier: 10}} {
		prev := 0.0
		for i := 0; i <= 1000; i++ {
			u := float64(i) / 1000
			m := c.Multiplier(u)
			if m < prev || m < 1 || m > c.MaxMultiplier {
				t.Fatalf("%+v: multiplier(%v) = %v after %v; want non-decreasing within [1, %v]", c, u, m, prev, c.MaxMultiplier)
			}
			prev = m
		}
	}
}

func TestAskPriceRejectsBadInput(t *testing.T) {
	for _, tc := range []struct {
		cfg     PriceConfig
		cost, u float64
		field   string
	}{
		{DefaultPriceConfig(), -1, 0.5, "cost_per_hour"},
		{DefaultPriceConfig(), inf(), 0.5, "cost_per_hour"},
		{DefaultPriceConfig(), 1, nan(), "utilization"},
		{PriceConfig{Slope: -1, Exponent: 1, MaxMultiplier: 2}, 1, 0.5, "slope"},
		{PriceConfig{Slope: 1, Exponent: 0, MaxMultiplier: 2}, 1, 0.5, "exponent"},
		{PriceConfig{Slope: 1, Exponent: 1, MaxMultiplier: 0.5}, 1, 0.5, "max_multiplier"},
	} {
		_, err := tc.cfg.Ask(tc.cost, tc.u)
		var fe *placement.FieldError
		if !errors.As(err, &fe) || fe.Field != tc.field {
			t.Errorf("%+v.Ask(%v, %v) error = %v; want a FieldError on %q", tc.cfg, tc.cost, tc.u, err, tc.field)
		}
	}
}
