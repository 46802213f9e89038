package forecast

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/placement"
)

func TestPlanAhead(t *testing.T) {
	unit := placement.Resources{ComputePerHour: 100, StorageGB: 50, BandwidthGBps: 2, GPUs: 1}
	cfg := PlanConfig{TargetUtilization: 0.8, BuyThreshold: 0.05, AdvertiseThreshold: 0.25, LeaseUnit: unit}
	h := func(n float64) time.Time { return t0.Add(time.Duration(n * float64(time.Hour))) }
	// need = forecast / 0.8: [500 600 800 900 500] against 600 own.
	peak := []float64{400, 480, 640, 720, 400}
	for _, tc := range []struct {
		name        string
		cfg         func(*PlanConfig)
		in          PlanInput
		action      Action
		units       int
		compute     float64
		from, until time.Time
		reason      string
	}{
		{
			name:   "deficit in the afternoon: buy the largest deficit for its window",
			in:     PlanInput{Forecast: peak, OwnCapacity: 600},
			action: ActionBuy, units: 3, compute: 300, from: h(2), until: h(4), reason: "buy 3 lease unit(s)",
		},
		{
			name:   "a lease already covering the peak: nothing",
			in:     PlanInput{Forecast: peak, OwnCapacity: 600, Leases: []Lease{{Compute: 300, From: h(2), Until: h(4)}}},
			action: ActionNone, reason: "capacity covers the forecast",
		},
		{
			name:   "a lease that starts mid-bucket does not cover that bucket",
			in:     PlanInput{Forecast: peak, OwnCapacity: 600, Leases: []Lease{{Compute: 300, From: h(2.5), Until: h(4)}}},
			action: ActionBuy, units: 2, compute: 200, from: h(2), until: h(3),
		},
		{
			name:   "deficit beyond the lead time: wait",
			cfg:    func(c *PlanConfig) { c.LeadTime = time.Hour },
			in:     PlanInput{Forecast: peak, OwnCapacity: 600},
			action: ActionNone, reason: "more than the lead time",
		},
		{
			name:   "deficit within the lead time: buy",
			cfg:    func(c *PlanConfig) { c.LeadTime = time.Hour },
			in:     PlanInput{Now: h(1), Forecast: peak, OwnCapacity: 600},
			action: ActionBuy, units: 3, compute: 300, from: h(2), until: h(4),
		},
		{
			name:   "deficit under the buy threshold: nothing",
			in:     PlanInput{Forecast: []float64{400, 496, 400}, OwnCapacity: 600}, // need 620: 20 ≤ 5 % of 600
			action: ActionNone,
		},
		{
			name:   "deficit to the end of the horizon says so",
			in:     PlanInput{Forecast: []float64{400, 720}, OwnCapacity: 600},
			action: ActionBuy, units: 3, compute: 300, from: h(1), until: h(2), reason: "expect to renew",
		},
		{
			name:   "margin from forecast error raises the need",
			in:     PlanInput{Forecast: []float64{480}, OwnCapacity: 600, Margin: 0.25}, // need 750
			action: ActionBuy, units: 2, compute: 150, from: h(0), until: h(1),
		},
		{
			name:   "no own capacity: any demand is a deficit",
			in:     PlanInput{Forecast: []float64{8}, OwnCapacity: 0},
			action: ActionBuy, units: 1, compute: 10, from: h(0), until: h(1),
		},
		{
			name:   "minimum lease window stretches a short deficit",
			cfg:    func(c *PlanConfig) { c.MinLeaseWindow = 3 * time.Hour },
			in:     PlanInput{Forecast: []float64{720, 0}, OwnCapacity: 600},
			action: ActionBuy, units: 3, compute: 300, from: h(0), until: h(3),
		},
		{
			name:   "a deficit already under way starts the lease now",
			in:     PlanInput{Now: h(0.5), Forecast: []float64{720}, OwnCapacity: 600},
			action: ActionBuy, units: 3, compute: 300, from: h(0.5), until: h(1),
		},
		{
			name:   "surplus all horizon: advertise whole units of the smallest spare",
			in:     PlanInput{Forecast: []float64{160, 200, 160}, OwnCapacity: 600}, // spare 400, 350, 400
			action: ActionAdvertise, units: 3, compute: 350, from: h(0), until: h(3), reason: "advertise 3 lease unit(s)",
		},
		{
			name:   "surplus below the advertise threshold: nothing",
			in:     PlanInput{Forecast: []float64{360}, OwnCapacity: 600}, // spare 150 = 25 %
			action: ActionNone,
		},
		{
			name:   "surplus smaller than one unit: nothing",
			in:     PlanInput{Forecast: []float64{0}, OwnCapacity: 90},
			action: ActionNone, reason: "less than one lease unit",
		},
		{
			name:   "leased capacity is never advertised",
			in:     PlanInput{Forecast: []float64{0, 0}, OwnCapacity: 100, Leases: []Lease{{Compute: 1000, From: h(0), Until: h(2)}}},
			action: ActionAdvertise, units: 1, compute: 100, from: h(0), until: h(2),
		},
	} {
		c := cfg
		if tc.cfg != nil {
			tc.cfg(&c)
		}
		in := tc.in
		in.Start, in.Interval = t0, time.Hour
		if in.Now.IsZero() {
			in.Now = t0
		}
		p, err := PlanAhead(c, in)
		if err != nil {
			t.Errorf("%s: PlanAhead error %v", tc.name, err)
			continue
		}
		if p.Action != tc.action || p.Units != tc.units || !near(p.Compute, tc.compute) {
			t.Errorf("%s: plan %s %d units (%.4g); want %s %d units (%.4g)\n  reason: %s", tc.name, p.Action, p.Units, p.Compute, tc.action, tc.units, tc.compute, p.Reason)
		}
		if tc.action != ActionNone && (!p.From.Equal(tc.from) || !p.Until.Equal(tc.until)) {
			t.Errorf("%s: window %s–%s; want %s–%s", tc.name, stamp(p.From), stamp(p.Until), stamp(tc.from), stamp(tc.until))
		}
		if want := scale(unit, tc.units); tc.action != ActionNone && p.Resources != want {
			t.Errorf("%s: resources %+v; want %+v", tc.name, p.Resources, want)
		}
		if p.Reason == "" || !strings.Contains(p.Reason, tc.reason) {
			t.Errorf("%s: reason %q; want it to mention %q", tc.name, p.Reason, tc.reason)
		}
	}
}

func TestPlanAheadPeak(t *testing.T) {
	p, err := PlanAhead(PlanConfig{LeaseUnit: placement.Resources{ComputePerHour: 1}},
		PlanInput{Now: t0, Start: t0, Interval: time.Minute, Forecast: []float64{1, 8.5, 3}, OwnCapacity: 1000})
	if err != nil {
		t.Fatal(err)
	}
	if !near(p.PeakNeed, 10) || !p.PeakAt.Equal(t0.Add(time.Minute)) {
		t.Errorf("peak %v at %v; want 10 (8.5/0.85) at %v", p.PeakNeed, p.PeakAt, t0.Add(time.Minute))
	}
}

func TestPlanAheadRejectsBadInput(t *testing.T) {
	unit := placement.Resources{ComputePerHour: 10}
	good := PlanInput{Now: t0, Start: t0, Interval: time.Hour, Forecast: []float64{1}, OwnCapacity: 10}
	for _, tc := range []struct {
		name  string
		cfg   PlanConfig
		edit  func(*PlanInput)
		field string
	}{
		{"empty forecast", PlanConfig{LeaseUnit: unit}, func(in *PlanInput) { in.Forecast = nil }, "forecast"},
		{"negative forecast", PlanConfig{LeaseUnit: unit}, func(in *PlanInput) { in.Forecast = []float64{1, -1} }, "forecast[1]"},
		{"NaN capacity", PlanConfig{LeaseUnit: unit}, func(in *PlanInput) { in.OwnCapacity = nan() }, "own_capacity"},
		{"zero interval", PlanConfig{LeaseUnit: unit}, func(in *PlanInput) { in.Interval = 0 }, "interval"},
		{"negative margin", PlanConfig{LeaseUnit: unit}, func(in *PlanInput) { in.Margin = -0.1 }, "margin"},
		{"lease ends before it starts", PlanConfig{LeaseUnit: unit}, func(in *PlanInput) { in.Leases = []Lease{{Compute: 1, From: t0, Until: t0.Add(-1)}} }, "leases[0].until"},
		{"negative lease", PlanConfig{LeaseUnit: unit}, func(in *PlanInput) { in.Leases = []Lease{{Compute: -1}} }, "leases[0].compute"},
		{"no lease unit", PlanConfig{}, nil, "lease_unit.compute"},
		{"negative lease unit", PlanConfig{LeaseUnit: placement.Resources{ComputePerHour: 1, StorageGB: -1}}, nil, "lease_unit.storage_gb"},
		{"utilization above 1", PlanConfig{LeaseUnit: unit, TargetUtilization: 1.5}, nil, "target_utilization"},
		{"negative buy threshold", PlanConfig{LeaseUnit: unit, BuyThreshold: -1}, nil, "buy_threshold"},
		{"advertise threshold above 1", PlanConfig{LeaseUnit: unit, AdvertiseThreshold: 2}, nil, "advertise_threshold"},
		{"negative lead time", PlanConfig{LeaseUnit: unit, LeadTime: -time.Second}, nil, "lead_time"},
		{"negative min window", PlanConfig{LeaseUnit: unit, MinLeaseWindow: -time.Second}, nil, "min_lease_window"},
	} {
		in := good
		if tc.edit != nil {
			tc.edit(&in)
		}
		_, err := PlanAhead(tc.cfg, in)
		var fe *placement.FieldError
		if !errors.As(err, &fe) || fe.Field != tc.field {
			t.Errorf("%s: PlanAhead error = %v; want a FieldError on %q", tc.name, err, tc.field)
		}
	}
}

func TestSafetyMargin(t *testing.T) {
	for _, tc := range []struct {
		mape, cap, want float64
	}{{0, 0.5, 0}, {20, 0.5, 0.2}, {80, 0.5, 0.5}, {20, -1, 0}} {
		if got := SafetyMargin(ErrorStats{MAPE: tc.mape}, tc.cap); !near(got, tc.want) {
			t.Errorf("SafetyMargin(MAPE %v, cap %v) = %v; want %v", tc.mape, tc.cap, got, tc.want)
		}
	}
}

func near(a, b float64) bool { d := a - b; return d < 1e-9 && d > -1e-9 }

func TestPlanAheadIgnoresPastBuckets(t *testing.T) {
	cfg := PlanConfig{LeaseUnit: placement.Resources{ComputePerHour: 100}, TargetUtilization: 1}
	// Bucket 0 (a past deficit) ended at +1h; bucket 1 fits.
	p, err := PlanAhead(cfg, PlanInput{Now: t0.Add(time.Hour), Start: t0, Interval: time.Hour, Forecast: []float64{900, 450}, OwnCapacity: 500})
	if err != nil || p.Action != ActionNone {
		t.Errorf("PlanAhead with a past deficit = %+v, %v; want none", p, err)
	}
	_, err = PlanAhead(cfg, PlanInput{Now: t0.Add(2 * time.Hour), Start: t0, Interval: time.Hour, Forecast: []float64{900, 450}, OwnCapacity: 500})
	var fe *placement.FieldError
	if !errors.As(err, &fe) || fe.Field != "start" {
		t.Errorf("PlanAhead with only past buckets: err = %v; want a FieldError on start", err)
	}
}
