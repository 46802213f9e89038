package loop

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"time"

	"github.com/meridian-mesh/meridian/placement"
	"github.com/meridian-mesh/meridian/placement/forecast"
)

// Defaults of Config. Each zero field of a Config takes the one named
// after it.
const (
	DefaultInterval          = 5 * time.Minute
	DefaultHorizon           = 2 * time.Hour
	DefaultHistory           = 7 * forecast.Day
	DefaultMaxJobSpan        = forecast.Day
	DefaultLedgerRetention   = 72 * time.Hour // consensus.Config.PruneAfter's default
	DefaultMaxMargin         = 0.25
	DefaultRecentAdjustments = 32
	maxSettle                = 10 * time.Second
	maxRegionLen             = 64
)

// Config configures a Controller. Zero fields take the defaults given on
// each; New checks the result and names the first field at fault.
type Config struct {
	// Region is the region the controller plans for; required
	// ([A-Za-z0-9._-], at most 64 bytes). It names the region in logs and
	// in lease request IDs.
	Region string `json:"region"`
	// Interval is the bucket length of the demand series and the period at
	// which the leader should call Tick; it must divide 24 h so that a
	// daily season lines up with the clock. 0 means 5 minutes.
	Interval time.Duration `json:"interval"`
	// Horizon is how far ahead Tick forecasts and plans, rounded up to
	// whole intervals. 0 means 2 hours.
	Horizon time.Duration `json:"horizon"`
	// History is how much observed demand the forecaster keeps for
	// initialisation and adaptation, rounded up to whole intervals; at
	// least two days and one interval (Holt-Winters needs two seasons).
	// 0 means 7 days.
	History time.Duration `json:"history"`
	// MaxJobSpan bounds how long one job's demand counts: a job adds its
	// compute to every interval it runs in, up to MaxJobSpan after it
	// arrives, and a job without a duration (it runs until cancelled) counts
	// as running that long. It keeps one week-long job from extending the
	// series a week into the future. 0 means 24 hours.
	MaxJobSpan time.Duration `json:"max_job_span"`
	// Settle is how long after an interval ends Tick waits before observing
	// it, so that jobs committed just before the boundary but reported a
	// little later still land in it. It must be shorter than Interval.
	// 0 means 10 s, or a tenth of the interval if that is shorter.
	Settle time.Duration `json:"settle"`
	// LedgerRetention is how far back the ledger keeps every job
	// (consensus.Config.PruneAfter): Rebuild ignores jobs submitted earlier
	// (or before History), because of those the ledger keeps only some and
	// their intervals would look quieter than they were. 0 means 72 hours.
	LedgerRetention time.Duration `json:"ledger_retention"`
	// MinObservations is the number of intervals the forecaster must have
	// observed before Tick buys or advertises; until then it only prices.
	// 0 means one hour's worth (at least 1).
	MinObservations int `json:"min_observations"`
	// Forecast configures the forecaster. SeasonLength, Horizon and
	// HistoryLimit follow from Interval, Horizon and History: leave them
	// zero (any other value is an error). Params, ErrorWindow and Adapt
	// are used as given, with the forecast package's defaults.
	Forecast forecast.Config `json:"forecast"`
	// Plan holds the allocate-ahead thresholds. Plan.LeaseUnit is required
	// (for example one node's worth). Plan.LeadTime 0 means three
	// intervals: a lease is bought when the deficit is that close, because
	// a market lease starts when it is awarded; set it to Horizon to buy as
	// soon as a deficit shows.
	Plan forecast.PlanConfig `json:"plan"`
	// Price is the utilization-aware price multiplier; the zero value means
	// forecast.DefaultPriceConfig().
	Price forecast.PriceConfig `json:"price"`
	// MaxMargin caps the safety margin added to the forecast, which is the
	// horizon MAPE as a fraction (forecast.SafetyMargin). 0 means 0.25.
	MaxMargin float64 `json:"max_margin"`
	// MaxBuyMultiplier bounds what a lease may cost: at most the region's
	// own node price times this, per node-hour. Beyond that the region is
	// better off leaving the demand to per-job trades. 0 means
	// Price.MaxMultiplier, the most the region itself ever asks.
	MaxBuyMultiplier float64 `json:"max_buy_multiplier"`
	// LeaseLatencySLO is copied into every lease request: the highest RTT
	// from this region to a seller worth leasing from (its interactive jobs
	// cannot use capacity farther away). 0 means no bound.
	LeaseLatencySLO time.Duration `json:"lease_latency_slo"`
	// AskTTL is how long an advertised ask stays valid; the next Tick
	// replaces it. 0 means two intervals, so that one late tick does not
	// let the ask lapse.
	AskTTL time.Duration `json:"ask_ttl"`
	// PendingTTL is how long a lease request counts as capacity held
	// after Tick returned it, unless the leader calls Resolved first; it
	// keeps the next ticks from buying the same capacity again while the
	// auction runs. 0 means one interval.
	PendingTTL time.Duration `json:"pending_ttl"`
	// RecentAdjustments is how many adjustments of each kind View keeps.
	// 0 means 32.
	RecentAdjustments int `json:"recent_adjustments"`
	// Logger receives one record per adjustment and decision; nil discards.
	Logger *slog.Logger `json:"-"`
}

// withDefaults fills the zero fields and checks the result. It returns the
// forecaster configuration that goes with it.
func (c Config) withDefaults() (Config, forecast.Config, error) {
	if err := validRegion(c.Region); err != nil {
		return c, forecast.Config{}, err
	}
	if c.Interval == 0 {
		c.Interval = DefaultInterval
	}
	m, err := forecast.SeasonLength(c.Interval)
	if err != nil {
		return c, forecast.Config{}, err // names "interval"
	}
	durations := []struct {
		name string
		v    *time.Duration
		def  time.Duration
	}{
		{"horizon", &c.Horizon, DefaultHorizon},
		{"history", &c.History, DefaultHistory},
		{"max_job_span", &c.MaxJobSpan, DefaultMaxJobSpan},
		{"settle", &c.Settle, min(maxSettle, c.Interval/10)},
		{"ledger_retention", &c.LedgerRetention, DefaultLedgerRetention},
		{"ask_ttl", &c.AskTTL, 2 * c.Interval},
		{"pending_ttl", &c.PendingTTL, c.Interval},
		{"plan.lead_time", &c.Plan.LeadTime, 3 * c.Interval},
	}
	for _, d := range durations {
		if *d.v < 0 {
			return c, forecast.Config{}, fieldErr(d.name, "must not be negative, got %v", *d.v)
		}
		if *d.v == 0 {
			*d.v = d.def
		}
	}
	if c.LeaseLatencySLO < 0 {
		return c, forecast.Config{}, fieldErr("lease_latency_slo", "must not be negative, got %v", c.LeaseLatencySLO)
	}
	if c.Settle >= c.Interval {
		return c, forecast.Config{}, fieldErr("settle", "must be shorter than the interval %v, got %v", c.Interval, c.Settle)
	}
	steps := ceilDiv(c.Horizon, c.Interval)
	hist := ceilDiv(c.History, c.Interval)
	if hist < 2*m+1 {
		return c, forecast.Config{}, fieldErr("history", "must cover at least two days and one interval (%v), got %v", time.Duration(2*m+1)*c.Interval, c.History)
	}
	if c.MaxJobSpan > c.History {
		return c, forecast.Config{}, fieldErr("max_job_span", "must not exceed the history %v, got %v", c.History, c.MaxJobSpan)
	}
	if c.MinObservations < 0 {
		return c, forecast.Config{}, fieldErr("min_observations", "must not be negative, got %d", c.MinObservations)
	}
	if c.MinObservations == 0 {
		c.MinObservations = max(1, ceilDiv(time.Hour, c.Interval))
	}
	if c.RecentAdjustments < 0 {
		return c, forecast.Config{}, fieldErr("recent_adjustments", "must not be negative, got %d", c.RecentAdjustments)
	}
	if c.RecentAdjustments == 0 {
		c.RecentAdjustments = DefaultRecentAdjustments
	}

	fc := c.Forecast
	for _, f := range []struct {
		name      string
		got, want int
	}{
		{"forecast.season_length", fc.SeasonLength, m},
		{"forecast.horizon", fc.Horizon, steps},
		{"forecast.history_limit", fc.HistoryLimit, hist},
	} {
		if f.got != 0 && f.got != f.want {
			return c, forecast.Config{}, fieldErr(f.name, "is set from interval, horizon and history (%d); leave it 0, got %d", f.want, f.got)
		}
	}
	fc.SeasonLength, fc.Horizon, fc.HistoryLimit = m, steps, hist
	probe, err := forecast.NewForecaster(fc)
	if err != nil {
		return c, forecast.Config{}, prefixed("forecast.", err)
	}
	fc = probe.Config()

	if c.Price == (forecast.PriceConfig{}) {
		c.Price = forecast.DefaultPriceConfig()
	}
	if err := c.Price.Validate(); err != nil {
		return c, forecast.Config{}, prefixed("price.", err)
	}
	// PlanAhead fills and checks its own configuration; one call on a
	// trivial input surfaces any error in it, named by its field.
	t0 := time.Unix(0, 0).UTC()
	if _, err := forecast.PlanAhead(c.Plan, forecast.PlanInput{Now: t0, Start: t0, Interval: c.Interval, Forecast: []float64{0}}); err != nil {
		return c, forecast.Config{}, prefixed("plan.", err)
	}

	for _, f := range []struct {
		name string
		v    *float64
		def  float64
	}{
		{"max_margin", &c.MaxMargin, DefaultMaxMargin},
		{"max_buy_multiplier", &c.MaxBuyMultiplier, c.Price.MaxMultiplier},
	} {
		if math.IsNaN(*f.v) || math.IsInf(*f.v, 0) || *f.v < 0 {
			return c, forecast.Config{}, fieldErr(f.name, "must be a finite number ≥ 0, got %v", *f.v)
		}
		if *f.v == 0 {
			*f.v = f.def
		}
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return c, fc, nil
}

func validRegion(r string) error {
	if r == "" {
		return fieldErr("region", "must not be empty")
	}
	if len(r) > maxRegionLen {
		return fieldErr("region", "must be at most %d bytes, got %d", maxRegionLen, len(r))
	}
	for i := 0; i < len(r); i++ {
		c := r[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fieldErr("region", "%q: byte %d (%q) is not one of [A-Za-z0-9._-]", r, i, c)
		}
	}
	return nil
}

func fieldErr(field, format string, args ...any) error {
	return &placement.FieldError{Field: field, Reason: fmt.Sprintf(format, args...)}
}

// prefixed returns err's FieldError with prefix before the field name, so
// that an error from a nested configuration names the field as the caller
// spelled it ("plan.lease_unit.compute").
func prefixed(prefix string, err error) error {
	var fe *placement.FieldError
	if errors.As(err, &fe) {
		return &placement.FieldError{Field: prefix + fe.Field, Reason: fe.Reason}
	}
	return fmt.Errorf("%s: %w", prefix[:len(prefix)-1], err)
}

func nonNegative(field string, v float64) error {
	if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
		return fieldErr(field, "must be a finite number ≥ 0, got %v", v)
	}
	return nil
}

func ceilDiv(d, unit time.Duration) int {
	return int((d + unit - 1) / unit)
}
