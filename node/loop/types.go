package loop

import (
	"fmt"
	"time"

	"github.com/meridian-mesh/meridian/consensus"
	"github.com/meridian-mesh/meridian/node/api"
	"github.com/meridian-mesh/meridian/placement"
	"github.com/meridian-mesh/meridian/placement/forecast"
)

// Outcome is what the region leader did with a job it admitted. Every
// outcome counts as demand: recording only what was served would censor
// demand at capacity, and the forecast would never ask for more.
type Outcome uint8

// The outcomes.
const (
	// OutcomeLocal: placed on a node of the region.
	OutcomeLocal Outcome = 1
	// OutcomeTraded: awarded to another region through the market.
	OutcomeTraded Outcome = 2
	// OutcomeUnplaced: neither; the job waits, pending.
	OutcomeUnplaced Outcome = 3
)

// String names the outcome.
func (o Outcome) String() string {
	switch o {
	case OutcomeLocal:
		return "local"
	case OutcomeTraded:
		return "traded"
	case OutcomeUnplaced:
		return "unplaced"
	}
	return fmt.Sprintf("outcome(%d)", uint8(o))
}

func (o Outcome) valid() bool { return o >= OutcomeLocal && o <= OutcomeUnplaced }

// OutcomeCounts counts collected jobs by outcome.
type OutcomeCounts struct {
	Local    int64 `json:"local"`
	Traded   int64 `json:"traded"`
	Unplaced int64 `json:"unplaced"`
}

func (c *OutcomeCounts) add(o Outcome) {
	switch o {
	case OutcomeLocal:
		c.Local++
	case OutcomeTraded:
		c.Traded++
	case OutcomeUnplaced:
		c.Unplaced++
	}
}

// Capacity is the region's capacity as Tick reads it: the leader builds it
// from its ledger snapshot (CapacityOf does).
type Capacity struct {
	// Total is the capacity of the region's own nodes that accept work.
	Total placement.Resources `json:"total"`
	// Free is the part of Total neither allocated nor held in escrow.
	Free placement.Resources `json:"free"`
	// NodePricePerHour is what one of the region's nodes costs, in US
	// dollars per node-hour (the unit the market quotes in); with mixed
	// nodes, the compute-weighted mean.
	NodePricePerHour float64 `json:"node_price_per_hour"`
	// Leases are the region's lease records, bought and sold, as its
	// ledger holds them. Bought leases count as capacity for the buckets
	// they cover; capacity sold for any part of the horizon does not count
	// as the region's own.
	Leases []consensus.Lease `json:"leases,omitempty"`
}

// CapacityOf sums a ledger's view into a Capacity: the Total and Free of
// the nodes that are ready (draining and down nodes take no new work), the
// compute-weighted mean of their prices, and the leases as given. A node's
// Free is clamped to [0, Total] against floating-point drift.
func CapacityOf(nodes []consensus.Node, leases []consensus.Lease) Capacity {
	var c Capacity
	var priced float64
	for _, n := range nodes {
		if n.State != consensus.NodeReady {
			continue
		}
		c.Total = c.Total.Add(n.Total)
		free := n.Free()
		free.ComputePerHour = min(max(0, free.ComputePerHour), n.Total.ComputePerHour)
		free.StorageGB = min(max(0, free.StorageGB), n.Total.StorageGB)
		free.BandwidthGBps = min(max(0, free.BandwidthGBps), n.Total.BandwidthGBps)
		free.GPUs = min(max(0, free.GPUs), n.Total.GPUs)
		c.Free = c.Free.Add(free)
		c.NodePricePerHour += n.PricePerHour * n.Total.ComputePerHour
		priced += n.Total.ComputePerHour
	}
	if priced > 0 {
		c.NodePricePerHour /= priced
	} else {
		c.NodePricePerHour = 0
	}
	c.Leases = append([]consensus.Lease(nil), leases...)
	return c
}

func (c Capacity) validate() error {
	if err := c.Total.Validate("capacity.total."); err != nil {
		return err
	}
	if err := c.Free.Validate("capacity.free."); err != nil {
		return err
	}
	if err := nonNegative("capacity.node_price_per_hour", c.NodePricePerHour); err != nil {
		return err
	}
	for i, l := range c.Leases {
		p := fmt.Sprintf("capacity.leases[%d]", i)
		if l.Direction != consensus.LeaseBought && l.Direction != consensus.LeaseSold {
			return fieldErr(p+".direction", "must be bought (1) or sold (2), got %d", uint8(l.Direction))
		}
		if err := l.Resources.Validate(p + ".resources."); err != nil {
			return err
		}
		if l.End.Before(l.Start) {
			return fieldErr(p+".end", "%s is before the start %s", stamp(l.End), stamp(l.Start))
		}
	}
	return nil
}

// LeaseRequest asks the market for capacity ahead of a forecast deficit:
// an auction item of kind lease (auction.ItemLease) whose Job.Demand is
// Resources, whose Job.Duration runs from the award to Until, and whose
// Job.MaxPricePerHour and Job.LatencySLO are the bounds below.
type LeaseRequest struct {
	// ID names the request; it is unique per region and decision time
	// ("lease-<region>-<unix ns>"), so it can serve as the auction or item
	// ID. Pass it to Resolved when the auction is over.
	ID string `json:"id"`
	// Resources is what to buy: Units lease units.
	Resources placement.Resources `json:"resources"`
	// Units is Resources in Config.Plan.LeaseUnit.
	Units int `json:"units"`
	// From is when the forecast deficit starts (never before the decision);
	// Until is when it ends. A lease bought now and lasting until Until
	// covers it.
	From  time.Time `json:"from"`
	Until time.Time `json:"until"`
	// MaxPricePerHour is the most the region pays, US dollars per
	// node-hour: its own node price × Config.MaxBuyMultiplier (0 when the
	// region's nodes are free: no limit).
	MaxPricePerHour float64 `json:"max_price_per_hour"`
	// LatencySLO bounds the RTT from the region to the seller (0: none).
	LatencySLO time.Duration `json:"latency_slo,omitempty"`
	// Expires is when the request stops counting as held capacity unless
	// Resolved is called first.
	Expires time.Time `json:"expires"`
	// Reason explains the purchase with its numbers.
	Reason string `json:"reason"`
}

// Duration returns how long a lease awarded at now must last to cover the
// request: Until − now, or 0 when Until has passed.
func (r LeaseRequest) Duration(now time.Time) time.Duration { return max(0, r.Until.Sub(now)) }

// AskOffer advertises capacity the forecast says the region will not
// need: what node/ turns into an auction.Ask for gossip.
type AskOffer struct {
	// Surplus is the spare own capacity in every bucket of the window, in
	// whole lease units.
	Surplus placement.Resources `json:"surplus"`
	// Units is Surplus in Config.Plan.LeaseUnit.
	Units int `json:"units"`
	// MinPricePerHour is the lowest price the region asks, US dollars per
	// node-hour: the node price × the current price multiplier.
	MinPricePerHour float64 `json:"min_price_per_hour"`
	// From and Until are the window the surplus is forecast over.
	From  time.Time `json:"from"`
	Until time.Time `json:"until"`
	// Expires is when the ask lapses (decision time + Config.AskTTL).
	Expires time.Time `json:"expires"`
	// Reason explains the offer with its numbers.
	Reason string `json:"reason"`
}

// AdjustmentKind says what an Adjustment changed.
type AdjustmentKind string

// The adjustment kinds.
const (
	// AdjustForecast: an adaptation pass over the forecaster's parameters,
	// scored on the observed one-step error.
	AdjustForecast AdjustmentKind = "forecast-params"
	// AdjustMargin: the safety margin followed the horizon error.
	AdjustMargin AdjustmentKind = "safety-margin"
	// AdjustPrice: the price multiplier followed the utilization.
	AdjustPrice AdjustmentKind = "price-multiplier"
)

// Adjustment is one feed-back step: what changed, from what to what, and
// why. Every adjustment is logged with its reason.
type Adjustment struct {
	// At is when it was made: the decision time, or for a forecast pass
	// the end of the interval whose observation made it due (so a rebuild
	// reproduces it exactly).
	At time.Time `json:"at"`
	// Kind is what changed.
	Kind AdjustmentKind `json:"kind"`
	// Changed reports whether anything changed; a forecast pass that kept
	// the parameters is reported too, unchanged.
	Changed bool `json:"changed"`
	// Old and New are the price multiplier or the safety margin (as a
	// fraction) before and after; zero for a forecast pass, whose
	// parameters are in Forecast.
	Old float64 `json:"old,omitempty"`
	New float64 `json:"new,omitempty"`
	// Forecast is the adaptation pass, for AdjustForecast.
	Forecast *forecast.Adjustment `json:"forecast,omitempty"`
	// Reason says why, with the numbers.
	Reason string `json:"reason"`
}

// Decision is what one Tick concluded.
type Decision struct {
	// At is the decision time.
	At time.Time `json:"at"`
	// Region is the controller's region.
	Region string `json:"region"`
	// Action is buy, advertise or none.
	Action forecast.Action `json:"action"`
	// Buy is set for ActionBuy: the lease to bid for now.
	Buy *LeaseRequest `json:"buy,omitempty"`
	// Ask is set for ActionAdvertise: the surplus to advertise now.
	Ask *AskOffer `json:"ask,omitempty"`
	// Reason explains the action (the plan's reason, or why there is no
	// plan yet).
	Reason string `json:"reason"`
	// Plan is the allocate-ahead plan behind the action; the zero value
	// while the forecaster warms up.
	Plan forecast.Plan `json:"plan"`
	// Utilization is the compute utilization of the region's own nodes,
	// 1 − Free/Total (1 when it has none).
	Utilization float64 `json:"utilization"`
	// PriceMultiplier is the utilization-aware factor on the node price.
	PriceMultiplier float64 `json:"price_multiplier"`
	// Margin is the safety margin the plan added to the forecast.
	Margin float64 `json:"margin"`
	// Observed is the number of intervals this Tick folded into the
	// forecaster.
	Observed int `json:"observed"`
	// ForecastStart is the start of the bucket Forecast[0] covers.
	ForecastStart time.Time `json:"forecast_start"`
	// Forecast is the forecast demand per interval from ForecastStart to
	// the end of the horizon, in tasks/hour; nil while warming up.
	Forecast []float64 `json:"forecast,omitempty"`
	// Adjustments are those made by this Tick, in order.
	Adjustments []Adjustment `json:"adjustments,omitempty"`
}

// View is what the controller shows about its region: the forecast and
// adjustments of GET /v1/regions, and the detail behind them.
type View struct {
	// Region is the controller's region.
	Region string `json:"region"`
	// Forecast is the latest forecast as the API shows it; nil before the
	// first forecast. ComputePerHour is the peak forecast over the horizon
	// (what capacity must cover); ErrorMAPE is the horizon MAPE as a
	// fraction.
	Forecast *api.RegionForecast `json:"forecast,omitempty"`
	// Adjustments are the current price multiplier and the bought leases
	// in force, as the API shows them; nil before the first Tick.
	Adjustments *api.RegionAdjustments `json:"adjustments,omitempty"`
	// Model, Params and Observations describe the forecaster.
	Model        forecast.Model  `json:"model"`
	Params       forecast.Params `json:"params"`
	Observations int             `json:"observations"`
	// OneStep and Horizon are the rolling forecast errors one interval and
	// one horizon ahead.
	OneStep forecast.ErrorStats `json:"one_step"`
	Horizon forecast.ErrorStats `json:"horizon"`
	// Bias is the horizon bias, mean(forecast − actual) in tasks/hour:
	// positive when the region over-forecasts.
	Bias float64 `json:"bias"`
	// MeanComputePerHour is the mean forecast over the horizon.
	MeanComputePerHour float64 `json:"mean_compute_per_hour"`
	// Margin, Utilization and PriceMultiplier are those of the last Tick.
	Margin          float64 `json:"margin"`
	Utilization     float64 `json:"utilization"`
	PriceMultiplier float64 `json:"price_multiplier"`
	// LastDecision is the last Tick's decision; nil before the first.
	LastDecision *Decision `json:"last_decision,omitempty"`
	// Pending are the lease requests still counted as held.
	Pending []LeaseRequest `json:"pending,omitempty"`
	// Recent are the last adjustments that changed something, oldest
	// first: up to Config.RecentAdjustments of each kind.
	Recent []Adjustment `json:"recent"`
	// LastAdaptation is the last forecast adaptation pass, changed or not.
	LastAdaptation *Adjustment `json:"last_adaptation,omitempty"`
	// Collected counts the jobs collected since the controller was made or
	// rebuilt, by outcome (after a rebuild, as the ledger shows them).
	Collected OutcomeCounts `json:"collected"`
	// Late counts jobs recorded into an interval the forecaster had
	// already observed (they are in the series, so a rebuild sees them).
	Late int64 `json:"late"`
	// SeriesStart and SeriesEnd bound the demand series kept.
	SeriesStart time.Time `json:"series_start"`
	SeriesEnd   time.Time `json:"series_end"`
}

// RebuildReport says what Rebuild made of the ledger's jobs.
type RebuildReport struct {
	// Jobs is the number of jobs given.
	Jobs int `json:"jobs"`
	// Recorded is the number recorded into the series.
	Recorded int `json:"recorded"`
	// BeforeRetention is the number ignored because they were submitted
	// before now − LedgerRetention (the ledger may have pruned their
	// neighbours).
	BeforeRetention int `json:"before_retention"`
	// Skipped lists the jobs that could not be recorded, with why.
	Skipped []SkippedJob `json:"skipped,omitempty"`
	// Observed is the number of intervals replayed into the forecaster.
	Observed int `json:"observed"`
	// Adaptations is the number of adaptation passes replayed.
	Adaptations int `json:"adaptations"`
}

// SkippedJob is a ledger job Rebuild could not record.
type SkippedJob struct {
	ID  string `json:"id"`
	Err string `json:"error"`
}

func stamp(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05Z") }
