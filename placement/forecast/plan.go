package forecast

import (
	"fmt"
	"math"
	"time"

	"github.com/meridian-mesh/meridian/placement"
)

// Action is what a Plan asks the region leader to do.
type Action string

// The actions.
const (
	// ActionNone: capacity matches the forecast within the thresholds.
	ActionNone Action = "none"
	// ActionBuy: buy capacity leases through the market before a deficit.
	ActionBuy Action = "buy"
	// ActionAdvertise: offer spare own capacity to other regions (asks).
	ActionAdvertise Action = "advertise"
)

// Lease is capacity the region already holds for a time: bought from
// another region, or bought and still being committed.
type Lease struct {
	// Compute is the leased compute in tasks/hour.
	Compute float64 `json:"compute"`
	// From is when the lease starts; it counts for a bucket only if it
	// covers the whole bucket.
	From time.Time `json:"from"`
	// Until is when the lease ends.
	Until time.Time `json:"until"`
}

// PlanConfig holds the thresholds of the allocate-ahead decision.
type PlanConfig struct {
	// TargetUtilization is the share of capacity the forecast demand may
	// fill before more is needed, in (0, 1]; 0 means 0.85, leaving headroom
	// for bursts inside a bucket.
	TargetUtilization float64 `json:"target_utilization"`
	// BuyThreshold: buy when, in some bucket of the horizon, the needed
	// capacity exceeds the capacity held by more than this fraction of it
	// (or by anything when none is held). 0 means 0.05.
	BuyThreshold float64 `json:"buy_threshold"`
	// AdvertiseThreshold: advertise when spare own capacity, in every
	// bucket of the horizon, exceeds this fraction of the own capacity.
	// 0 means 0.25. Keeping it well above BuyThreshold leaves a dead band,
	// so a region does not buy and sell the same capacity back and forth.
	AdvertiseThreshold float64 `json:"advertise_threshold"`
	// LeaseUnit is what one lease buys (for example one node's worth);
	// LeaseUnit.ComputePerHour must be positive. Buys round up to whole
	// units, asks round down.
	LeaseUnit placement.Resources `json:"lease_unit"`
	// MinLeaseWindow is the shortest lease worth buying; a shorter deficit
	// window is stretched to it. 0 means no minimum: the window is the
	// deficit's buckets.
	MinLeaseWindow time.Duration `json:"min_lease_window"`
	// LeadTime, when positive, defers a buy until the first deficit bucket
	// starts within LeadTime of now, because nearer forecasts are better
	// and the market needs only that long. 0 buys as soon as a deficit shows.
	LeadTime time.Duration `json:"lead_time"`
}

func (c PlanConfig) withDefaults() (PlanConfig, error) {
	if c.TargetUtilization == 0 {
		c.TargetUtilization = 0.85
	}
	if c.BuyThreshold == 0 {
		c.BuyThreshold = 0.05
	}
	if c.AdvertiseThreshold == 0 {
		c.AdvertiseThreshold = 0.25
	}
	switch {
	case math.IsNaN(c.TargetUtilization) || c.TargetUtilization <= 0 || c.TargetUtilization > 1:
		return c, &placement.FieldError{Field: "target_utilization", Reason: fmt.Sprintf("must be in (0, 1], got %v", c.TargetUtilization)}
	case math.IsNaN(c.BuyThreshold) || math.IsInf(c.BuyThreshold, 0) || c.BuyThreshold < 0:
		return c, &placement.FieldError{Field: "buy_threshold", Reason: fmt.Sprintf("must be a finite number ≥ 0, got %v", c.BuyThreshold)}
	case math.IsNaN(c.AdvertiseThreshold) || c.AdvertiseThreshold < 0 || c.AdvertiseThreshold > 1:
		return c, &placement.FieldError{Field: "advertise_threshold", Reason: fmt.Sprintf("must be in [0, 1], got %v", c.AdvertiseThreshold)}
	case c.MinLeaseWindow < 0:
		return c, &placement.FieldError{Field: "min_lease_window", Reason: fmt.Sprintf("must not be negative, got %v", c.MinLeaseWindow)}
	case c.LeadTime < 0:
		return c, &placement.FieldError{Field: "lead_time", Reason: fmt.Sprintf("must not be negative, got %v", c.LeadTime)}
	}
	if err := c.LeaseUnit.Validate("lease_unit."); err != nil {
		return c, err
	}
	if !(c.LeaseUnit.ComputePerHour > 0) {
		return c, &placement.FieldError{Field: "lease_unit.compute", Reason: "must be greater than zero"}
	}
	return c, nil
}

// PlanInput is the state an allocate-ahead decision reads.
type PlanInput struct {
	// Now is the decision time.
	Now time.Time `json:"now"`
	// Start is the start of the bucket Forecast[0] covers (usually the end
	// of the last observed bucket).
	Start time.Time `json:"start"`
	// Interval is the bucket length.
	Interval time.Duration `json:"interval"`
	// Forecast is the forecast demand per bucket, in tasks/hour (see
	// Bucket.Rate); it must not be empty.
	Forecast []float64 `json:"forecast"`
	// OwnCapacity is the compute of the region's own nodes, in tasks/hour.
	OwnCapacity float64 `json:"own_capacity"`
	// Leases is the capacity held from other regions.
	Leases []Lease `json:"leases,omitempty"`
	// Margin is an extra fraction of the forecast to provide for, covering
	// forecast error; see SafetyMargin. 0 trusts the forecast.
	Margin float64 `json:"margin"`
}

// Plan is the outcome of PlanAhead.
type Plan struct {
	// Action is what to do.
	Action Action `json:"action"`
	// Compute is, for a buy, the largest deficit over the window; for an
	// advertise, the spare own compute in every bucket of the window; in
	// tasks/hour. 0 for none.
	Compute float64 `json:"compute"`
	// Units is Compute in lease units: rounded up for a buy, down for an
	// advertise.
	Units int `json:"units"`
	// Resources is Units × PlanConfig.LeaseUnit: what to bid for or offer.
	Resources placement.Resources `json:"resources"`
	// From is the start of the window the lease or ask should cover.
	From time.Time `json:"from"`
	// Until is the end of that window.
	Until time.Time `json:"until"`
	// PeakNeed is the highest needed capacity over the horizon (forecast ×
	// (1+margin) / target utilization), in tasks/hour.
	PeakNeed float64 `json:"peak_need"`
	// PeakAt is the start of PeakNeed's bucket.
	PeakAt time.Time `json:"peak_at"`
	// Reason explains the decision with its numbers.
	Reason string `json:"reason"`
}

// SafetyMargin turns the horizon error of a forecaster into a Margin for
// PlanInput: the MAPE as a fraction, capped at maxMargin. A region whose
// forecasts have been 20 % off provides 20 % more than it forecasts.
func SafetyMargin(s ErrorStats, maxMargin float64) float64 {
	return min(max(0, s.MAPE/100), max(0, maxMargin))
}

// PlanAhead decides whether to buy capacity before a forecast deficit, to
// advertise spare capacity, or to do nothing. For bucket k of the horizon:
//
//	need_k     = Forecast_k · (1 + Margin) / TargetUtilization
//	capacity_k = OwnCapacity + the leases that cover the whole bucket
//
// It buys when need_k − capacity_k > BuyThreshold · capacity_k in some
// bucket: the window runs from the first to the last such bucket (at least
// MinLeaseWindow, and never starting before Now) and the amount is the largest deficit in it, in whole
// lease units. Otherwise it advertises when the spare own capacity,
// min(Own, capacity_k − need_k), exceeds AdvertiseThreshold · Own in every
// bucket: the amount is the smallest spare over the horizon, in whole lease
// units, for the whole horizon. Leased capacity is never advertised.
// Buckets that ended by Now are ignored.
func PlanAhead(cfg PlanConfig, in PlanInput) (Plan, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return Plan{}, fmt.Errorf("plan config: %w", err)
	}
	if err := in.validate(); err != nil {
		return Plan{}, fmt.Errorf("plan input: %w", err)
	}
	n := len(in.Forecast)
	bucketStart := func(k int) time.Time { return in.Start.Add(time.Duration(k) * in.Interval) }
	need := make([]float64, n)
	capacity := make([]float64, n)
	plan := Plan{Action: ActionNone}
	first, last, worst := -1, -1, -1
	// Buckets that ended by now are the past: nothing to plan for them.
	skip := 0
	for skip < n && !bucketStart(skip+1).After(in.Now) {
		skip++
	}
	if skip == n {
		return Plan{}, fmt.Errorf("plan input: %w", &placement.FieldError{Field: "start",
			Reason: fmt.Sprintf("every forecast bucket ends by now (%s)", stamp(in.Now))})
	}
	for k := skip; k < n; k++ {
		f := in.Forecast[k]
		need[k] = f * (1 + in.Margin) / cfg.TargetUtilization
		capacity[k] = in.OwnCapacity
		s, e := bucketStart(k), bucketStart(k+1)
		for _, l := range in.Leases {
			if !l.From.After(s) && !l.Until.Before(e) {
				capacity[k] += l.Compute
			}
		}
		if plan.PeakAt.IsZero() || need[k] > plan.PeakNeed {
			plan.PeakNeed, plan.PeakAt = need[k], s
		}
		if d := need[k] - capacity[k]; d > 0 && d > cfg.BuyThreshold*capacity[k] {
			if first < 0 {
				first = k
			}
			last = k
		}
	}
	unit := cfg.LeaseUnit
	if first >= 0 {
		for k := first; k <= last; k++ {
			if worst < 0 || need[k]-capacity[k] > need[worst]-capacity[worst] {
				worst = k
			}
		}
		deficit := need[worst] - capacity[worst]
		from := bucketStart(first)
		if cfg.LeadTime > 0 && from.After(in.Now.Add(cfg.LeadTime)) {
			plan.Reason = fmt.Sprintf("deficit of %.4g tasks/hour (need %.4g, capacity %.4g) first at %s, more than the lead time %v away: decide again by %s",
				deficit, need[worst], capacity[worst], stamp(from), cfg.LeadTime, stamp(from.Add(-cfg.LeadTime)))
			return plan, nil
		}
		if from.Before(in.Now) {
			from = in.Now
		}
		until := bucketStart(last + 1)
		if until.Sub(from) < cfg.MinLeaseWindow {
			until = from.Add(cfg.MinLeaseWindow)
		}
		units := int(math.Ceil(deficit/unit.ComputePerHour - 1e-9))
		plan.Action, plan.Compute, plan.Units = ActionBuy, deficit, units
		plan.Resources = scale(unit, units)
		plan.From, plan.Until = from, until
		tail := ""
		if last == n-1 {
			tail = "; the deficit lasts to the end of the horizon, so expect to renew"
		}
		plan.Reason = fmt.Sprintf("forecast needs %.4g tasks/hour at %s (forecast %.4g, margin %.0f%%, target utilization %.0f%%) against capacity %.4g: buy %d lease unit(s) of %.4g tasks/hour for %s–%s%s",
			need[worst], stamp(bucketStart(worst)), in.Forecast[worst], 100*in.Margin, 100*cfg.TargetUtilization, capacity[worst],
			units, unit.ComputePerHour, stamp(from), stamp(until), tail)
		return plan, nil
	}

	spare := math.Inf(1)
	tightest := 0
	for k := skip; k < n; k++ {
		if s := min(in.OwnCapacity, capacity[k]-need[k]); s < spare {
			spare, tightest = s, k
		}
	}
	if spare > cfg.AdvertiseThreshold*in.OwnCapacity && spare > 0 {
		units := int(math.Floor(spare/unit.ComputePerHour + 1e-9))
		if units >= 1 {
			from := in.Start
			if from.Before(in.Now) {
				from = in.Now
			}
			plan.Action, plan.Compute, plan.Units = ActionAdvertise, spare, units
			plan.Resources = scale(unit, units)
			plan.From, plan.Until = from, bucketStart(n)
			plan.Reason = fmt.Sprintf("at least %.4g of own %.4g tasks/hour spare in every bucket to %s (tightest at %s, need %.4g): advertise %d lease unit(s) of %.4g tasks/hour",
				spare, in.OwnCapacity, stamp(plan.Until), stamp(bucketStart(tightest)), need[tightest], units, unit.ComputePerHour)
			return plan, nil
		}
		plan.Reason = fmt.Sprintf("spare %.4g tasks/hour is less than one lease unit of %.4g; peak need %.4g at %s",
			spare, unit.ComputePerHour, plan.PeakNeed, stamp(plan.PeakAt))
		return plan, nil
	}
	plan.Reason = fmt.Sprintf("capacity covers the forecast: peak need %.4g tasks/hour at %s within the buy threshold of %.0f%%; lowest spare own capacity %.4g of %.4g is not above the advertise threshold of %.0f%%",
		plan.PeakNeed, stamp(plan.PeakAt), 100*cfg.BuyThreshold, max(0, spare), in.OwnCapacity, 100*cfg.AdvertiseThreshold)
	return plan, nil
}

func (in PlanInput) validate() error {
	if in.Interval <= 0 {
		return &placement.FieldError{Field: "interval", Reason: fmt.Sprintf("must be positive, got %v", in.Interval)}
	}
	if len(in.Forecast) == 0 {
		return &placement.FieldError{Field: "forecast", Reason: "must not be empty"}
	}
	for k, f := range in.Forecast {
		if math.IsNaN(f) || math.IsInf(f, 0) || f < 0 {
			return &placement.FieldError{Field: fmt.Sprintf("forecast[%d]", k), Reason: fmt.Sprintf("must be a finite number ≥ 0, got %v", f)}
		}
	}
	if math.IsNaN(in.OwnCapacity) || math.IsInf(in.OwnCapacity, 0) || in.OwnCapacity < 0 {
		return &placement.FieldError{Field: "own_capacity", Reason: fmt.Sprintf("must be a finite number ≥ 0, got %v", in.OwnCapacity)}
	}
	if math.IsNaN(in.Margin) || math.IsInf(in.Margin, 0) || in.Margin < 0 {
		return &placement.FieldError{Field: "margin", Reason: fmt.Sprintf("must be a finite number ≥ 0, got %v", in.Margin)}
	}
	for i, l := range in.Leases {
		if math.IsNaN(l.Compute) || math.IsInf(l.Compute, 0) || l.Compute < 0 {
			return &placement.FieldError{Field: fmt.Sprintf("leases[%d].compute", i), Reason: fmt.Sprintf("must be a finite number ≥ 0, got %v", l.Compute)}
		}
		if l.Until.Before(l.From) {
			return &placement.FieldError{Field: fmt.Sprintf("leases[%d].until", i), Reason: "is before from"}
		}
	}
	return nil
}

// scale returns units × r.
func scale(r placement.Resources, units int) placement.Resources {
	u := float64(units)
	return placement.Resources{
		ComputePerHour: r.ComputePerHour * u,
		StorageGB:      r.StorageGB * u,
		BandwidthGBps:  r.BandwidthGBps * u,
		GPUs:           r.GPUs * units,
	}
}

func stamp(t time.Time) string { return t.UTC().Format("2006-01-02 15:04Z") }

// PriceConfig is the utilization-aware ask price: a region sells capacity
// at its cost times
//
//	multiplier(u) = min(1 + Slope · u^Exponent, MaxMultiplier)
//
// with u the utilization in [0, 1] (values outside are clamped). The
// multiplier is 1 when idle, never decreases as utilization grows, and is
// capped, so a busy region prices itself out of selling before it runs
// out, and a buyer can bound what it will ever pay.
type PriceConfig struct {
	// Slope is k ≥ 0: the markup at full utilization before the cap.
	Slope float64 `json:"slope"`
	// Exponent is p > 0: above 1, prices stay near cost until the region
	// is busy and then rise steeply.
	Exponent float64 `json:"exponent"`
	// MaxMultiplier caps the multiplier; at least 1.
	MaxMultiplier float64 `json:"max_multiplier"`
}

// DefaultPriceConfig is 1 + u², capped at 2: a region at half load asks
// 1.25× its cost and a full one 2×.
func DefaultPriceConfig() PriceConfig {
	return PriceConfig{Slope: 1, Exponent: 2, MaxMultiplier: 2}
}

// Validate checks the configuration.
func (c PriceConfig) Validate() error {
	switch {
	case math.IsNaN(c.Slope) || math.IsInf(c.Slope, 0) || c.Slope < 0:
		return &placement.FieldError{Field: "slope", Reason: fmt.Sprintf("must be a finite number ≥ 0, got %v", c.Slope)}
	case math.IsNaN(c.Exponent) || math.IsInf(c.Exponent, 0) || c.Exponent <= 0:
		return &placement.FieldError{Field: "exponent", Reason: fmt.Sprintf("must be a finite number > 0, got %v", c.Exponent)}
	case math.IsNaN(c.MaxMultiplier) || math.IsInf(c.MaxMultiplier, 0) || c.MaxMultiplier < 1:
		return &placement.FieldError{Field: "max_multiplier", Reason: fmt.Sprintf("must be a finite number ≥ 1, got %v", c.MaxMultiplier)}
	}
	return nil
}

// Multiplier returns the price multiplier at utilization u (clamped to
// [0, 1]; NaN counts as fully utilized, the safe side for a seller).
func (c PriceConfig) Multiplier(u float64) float64 {
	switch {
	case math.IsNaN(u) || u > 1:
		u = 1
	case u < 0:
		u = 0
	}
	return min(1+c.Slope*math.Pow(u, c.Exponent), c.MaxMultiplier)
}

// Ask returns the ask price, in the unit of costPerHour (US dollars per
// hour), for capacity whose cost is costPerHour at utilization u.
func (c PriceConfig) Ask(costPerHour, utilization float64) (float64, error) {
	if err := c.Validate(); err != nil {
		return 0, fmt.Errorf("price config: %w", err)
	}
	if math.IsNaN(costPerHour) || math.IsInf(costPerHour, 0) || costPerHour < 0 {
		return 0, &placement.FieldError{Field: "cost_per_hour", Reason: fmt.Sprintf("must be a finite number ≥ 0, got %v", costPerHour)}
	}
	if math.IsNaN(utilization) {
		return 0, &placement.FieldError{Field: "utilization", Reason: "must be a number, got NaN"}
	}
	return costPerHour * c.Multiplier(utilization), nil
}
