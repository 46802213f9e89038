package loop

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/meridian-mesh/meridian/consensus"
	"github.com/meridian-mesh/meridian/node/api"
	"github.com/meridian-mesh/meridian/placement"
	"github.com/meridian-mesh/meridian/placement/forecast"
)

// quantum is the resolution of recorded resource-seconds: 1/4096 of a
// task-second. Rounding every contribution to it makes the per-interval sums
// exact (up to 2^41 task-seconds an interval), so they do not depend on the
// order jobs are recorded in, and a rebuild from the ledger reproduces live
// collection bit for bit.
const quantum = 4096

// Step sizes below which a drifting value is not reported as a new
// adjustment (it is still used): one percentage point of margin, 0.05 of
// the price multiplier (which runs from 1 to its cap, 2 by default).
const (
	marginStep = 0.01
	priceStep  = 0.05
)

// Controller is one region's demand loop. The region's Raft leader owns it:
// it calls Admitted for every job its ledger records, Tick once per
// Config.Interval, Resolved when a lease auction ends, Rebuild after it
// becomes leader, and View for the API.
//
// A Controller is safe for concurrent use; one mutex guards its state.
type Controller struct {
	cfg   Config
	fcfg  forecast.Config
	steps int // horizon in intervals
	log   *slog.Logger

	mu sync.Mutex
	st collection // what Admitted and Rebuild collect and Tick observes

	pending      []LeaseRequest
	leases       []consensus.Lease // from the last Tick's Capacity
	last         *Decision
	margin       float64
	utilization  float64
	multiplier   float64
	loggedMargin float64 // the values last reported as adjustments
	loggedMult   float64
	ticked       bool
}

// collection is the part of a Controller's state that is a function of
// the jobs recorded and the times observed: exactly what Rebuild
// reconstructs.
type collection struct {
	series   *forecast.Series     // nil until the first job
	fc       *forecast.Forecaster // nil until the first job
	nextObs  time.Time            // start of the next interval to observe
	lastRate float64              // demand of the last interval observed
	counts   OutcomeCounts
	late     int64
	recent   map[AdjustmentKind][]Adjustment // changed adjustments by kind, oldest first
	adapted  *Adjustment                     // the last forecast pass
}

// New returns a controller that has collected nothing. It checks cfg and
// names the first field at fault.
func New(cfg Config) (*Controller, error) {
	cfg, fcfg, err := cfg.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("loop config: %w", err)
	}
	return &Controller{
		cfg:   cfg,
		fcfg:  fcfg,
		steps: fcfg.Horizon,
		log:   cfg.Logger.With("region", cfg.Region),
	}, nil
}

// Config returns the configuration with its defaults filled in.
func (c *Controller) Config() Config { return c.cfg }

// ForecastConfig returns the forecaster's configuration, defaults filled in.
func (c *Controller) ForecastConfig() forecast.Config { return c.fcfg }

// Admitted collects one job the region's ledger recorded at now — which must
// be the job's Submitted time in the ledger, so that Rebuild reproduces the
// collection — with what the leader did with it. The job's demand
// (Demand.ComputePerHour × Duration resource-seconds) is added to the
// intervals it runs in, from now to now + min(Duration, MaxJobSpan); a job
// without a duration counts as running MaxJobSpan. Its arrival counts in
// the interval of now.
//
// A job recorded into an interval the forecaster already observed is kept
// (a rebuild will see it) and counted in View.Late. An invalid job or
// outcome, or a time before the oldest interval kept, is an error that
// changes nothing.
func (c *Controller) Admitted(now time.Time, job placement.Job, outcome Outcome) error {
	if now.IsZero() {
		return fmt.Errorf("admitted job %q: %w", job.ID, fieldErr("now", "must not be the zero time"))
	}
	if !outcome.valid() {
		return fmt.Errorf("admitted job %q: %w", job.ID, fieldErr("outcome", "must be local (1), traded (2) or unplaced (3), got %d", uint8(outcome)))
	}
	l, err := c.loadOf(job)
	if err != nil {
		return fmt.Errorf("admitted job %q: %w", job.ID, err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	st := &c.st
	if st.series == nil {
		if err := c.startSeries(st, now); err != nil {
			return fmt.Errorf("admitted job %q: %w", job.ID, err)
		}
	}
	late, err := c.record(st, now, l)
	if err != nil {
		return fmt.Errorf("admitted job %q: %w", job.ID, err)
	}
	if late {
		st.late++
	}
	st.counts.add(outcome)
	return nil
}

// load is a checked job's demand: compute for a run, from its arrival.
type load struct {
	compute float64       // tasks/hour
	run     time.Duration // how long it counts, at most MaxJobSpan
}

// loadOf checks the parts of a job that collection reads.
func (c *Controller) loadOf(job placement.Job) (load, error) {
	d := job.Demand.ComputePerHour
	if err := nonNegative("job.demand.compute", d); err != nil {
		return load{}, err
	}
	if job.Duration < 0 {
		return load{}, fieldErr("job.duration", "must not be negative, got %v", job.Duration)
	}
	run := job.Duration
	if run == 0 || run > c.cfg.MaxJobSpan {
		run = c.cfg.MaxJobSpan
	}
	if total := d * run.Seconds(); math.IsInf(total, 0) || total > math.MaxFloat64/quantum {
		return load{}, fieldErr("job.demand.compute", "%v tasks/hour for %v overflows the resource-seconds", d, run)
	}
	return load{compute: d, run: run}, nil
}

func quantize(rs float64) float64 { return math.Round(rs*quantum) / quantum }

// startSeries starts the series and forecaster with the interval of
// first − Settle, so that a job committed just before that boundary but
// reported after a later one still has its interval.
func (c *Controller) startSeries(st *collection, first time.Time) error {
	hist := c.fcfg.HistoryLimit
	span := ceilDiv(c.cfg.MaxJobSpan, c.cfg.Interval)
	s, err := forecast.NewSeries(c.cfg.Interval, first.Add(-c.cfg.Settle), hist+span+2)
	if err != nil {
		return fmt.Errorf("start series: %w", err)
	}
	fc, err := forecast.NewForecaster(c.fcfg)
	if err != nil {
		return fmt.Errorf("start forecaster: %w", err)
	}
	st.series, st.fc, st.nextObs = s, fc, s.Start()
	return nil
}

// record adds a job arriving at at to the intervals it runs in: its
// arrival to the first, and to each the compute times the part of the run
// inside it. It reports whether the arrival landed in an interval already
// observed.
func (c *Controller) record(st *collection, at time.Time, l load) (late bool, err error) {
	if at.Before(st.series.Start()) {
		return false, fmt.Errorf("record at %s (oldest interval kept starts %s): %w", stamp(at), stamp(st.series.Start()), forecast.ErrTooOld)
	}
	iv := c.cfg.Interval
	end := at.Add(l.run)
	arrivals := 1
	for s := at; s.Before(end); {
		next := s.Truncate(iv).Add(iv) // relative to the zero time, like the series' buckets
		if next.After(end) {
			next = end
		}
		if err := st.series.Record(s, arrivals, quantize(l.compute*next.Sub(s).Seconds())); err != nil {
			// The arrival's interval was checked above, and later ones only
			// grow the series: this is a value the series refuses.
			return false, fmt.Errorf("record: %w", err)
		}
		arrivals, s = 0, next
	}
	return at.Before(st.nextObs), nil
}

// Rebuild replaces the controller's collection by one rebuilt from the
// region ledger's jobs, as a new leader does: each job submitted within
// LedgerRetention (and History) of now is recorded at its Submitted time with its Spec,
// in (Submitted, ID) order, then every interval that ended by now − Settle
// is replayed through the forecaster with the same adaptation passes live
// collection would have made. A controller that collected the same jobs
// live (from the same first job) and ticked through the same intervals has
// the same series, forecaster, parameters and errors.
//
// Outcomes are read from the jobs' current states (traded, placed or
// later, or still unplaced). Lease requests in flight, the last decision,
// the margin and the price are reset: the next Tick recomputes them. Jobs
// that cannot be recorded are skipped and listed in the report; the error
// is for a zero now only, which changes nothing.
//
// Pass the jobs of one ledger snapshot, and call Admitted only for jobs
// committed after it: a job given to both counts twice. Rebuild holds the
// controller's lock while it replays (about 150 ms for three days of
// 5-minute intervals and 150,000 jobs), so concurrent calls wait.
func (c *Controller) Rebuild(now time.Time, jobs []consensus.Job) (RebuildReport, error) {
	rep := RebuildReport{Jobs: len(jobs)}
	if now.IsZero() {
		return rep, fmt.Errorf("rebuild: %w", fieldErr("now", "must not be the zero time"))
	}
	type rec struct {
		at      time.Time
		id      string
		load    load
		outcome Outcome
	}
	// Older jobs: the ledger may have pruned their neighbours, and the
	// forecaster would not keep them anyway.
	cutoff := now.Add(-min(c.cfg.LedgerRetention, c.cfg.History))
	recs := make([]rec, 0, len(jobs))
	for i, j := range jobs {
		switch {
		case j.Submitted.IsZero():
			rep.Skipped = append(rep.Skipped, SkippedJob{ID: j.ID, Err: fmt.Sprintf("jobs[%d].submitted: must not be the zero time", i)})
			continue
		case j.Submitted.Before(cutoff):
			rep.BeforeRetention++
			continue
		}
		l, err := c.loadOf(j.Spec)
		if err != nil {
			rep.Skipped = append(rep.Skipped, SkippedJob{ID: j.ID, Err: fmt.Sprintf("jobs[%d].spec: %v", i, err)})
			continue
		}
		recs = append(recs, rec{at: j.Submitted, id: j.ID, load: l, outcome: outcomeOf(j)})
	}
	slices.SortFunc(recs, func(a, b rec) int {
		if c := a.at.Compare(b.at); c != 0 {
			return c
		}
		return cmp.Compare(a.id, b.id)
	})

	var st collection
	var logs []logRecord
	c.mu.Lock()
	defer func() {
		c.mu.Unlock()
		c.emit(logs)
	}()
	if len(recs) > 0 {
		if err := c.startSeries(&st, recs[0].at); err != nil {
			return rep, fmt.Errorf("rebuild: %w", err)
		}
		for _, r := range recs {
			if _, err := c.record(&st, r.at, r.load); err != nil {
				rep.Skipped = append(rep.Skipped, SkippedJob{ID: r.id, Err: err.Error()})
				continue
			}
			st.counts.add(r.outcome)
			rep.Recorded++
		}
		var err error
		if rep.Observed, rep.Adaptations, err = c.observe(&st, now, &logs, slog.LevelDebug); err != nil {
			return rep, fmt.Errorf("rebuild: %w", err)
		}
	}

	c.st = st
	c.pending, c.leases, c.last = nil, nil, nil
	c.margin, c.utilization, c.multiplier, c.loggedMargin, c.loggedMult, c.ticked = 0, 0, 0, 0, 0, false

	for _, s := range rep.Skipped {
		logs = append(logs, logRecord{level: slog.LevelWarn, msg: "rebuild skipped a ledger job", attrs: []slog.Attr{slog.String("job", s.ID), slog.String("reason", s.Err)}})
	}
	logs = append(logs, logRecord{level: slog.LevelInfo, msg: "demand series rebuilt from the ledger", attrs: []slog.Attr{
		slog.Int("jobs", rep.Jobs), slog.Int("recorded", rep.Recorded), slog.Int("before_retention", rep.BeforeRetention),
		slog.Int("skipped", len(rep.Skipped)), slog.Int("observed", rep.Observed), slog.Int("adaptations", rep.Adaptations),
	}})
	return rep, nil
}

// outcomeOf reads what became of a ledger job.
func outcomeOf(j consensus.Job) Outcome {
	switch {
	case j.State == consensus.JobTraded || j.Remote != nil:
		return OutcomeTraded
	case j.AllocID != "" || j.State == consensus.JobPlaced || j.State == consensus.JobRunning || j.State == consensus.JobCompleted:
		return OutcomeLocal
	}
	return OutcomeUnplaced
}

// observe folds every interval that ended by now − Settle into the
// forecaster, running an adaptation pass whenever one is due. It returns
// the number of intervals observed and of passes run.
func (c *Controller) observe(st *collection, now time.Time, logs *[]logRecord, keptLevel slog.Level) (observed, passes int, err error) {
	if st.series == nil {
		return 0, 0, nil
	}
	iv := c.cfg.Interval
	st.series.AdvanceTo(now)
	limit := now.Add(-c.cfg.Settle)
	for !st.nextObs.Add(iv).After(limit) {
		if st.nextObs.Before(st.series.Start()) {
			// Intervals were dropped before they were observed (no Tick for
			// longer than the history): start over from what is kept.
			*logs = append(*logs, logRecord{level: slog.LevelWarn, msg: "forecaster restarted: intervals were dropped before they were observed", attrs: []slog.Attr{
				slog.Time("next", st.nextObs), slog.Time("oldest_kept", st.series.Start())}})
			if st.fc, err = forecast.NewForecaster(c.fcfg); err != nil {
				return observed, passes, fmt.Errorf("restart forecaster: %w", err)
			}
			st.nextObs = st.series.Start()
			continue
		}
		i := int(st.nextObs.Sub(st.series.Start()) / iv)
		rate := st.series.Bucket(i).Rate(iv)
		if err := st.fc.Observe(rate); err != nil {
			return observed, passes, fmt.Errorf("observe interval %s: %w", stamp(st.nextObs), err)
		}
		st.lastRate = rate
		st.nextObs = st.nextObs.Add(iv)
		observed++
		if st.fc.AdaptDue() {
			passes++
			fa := st.fc.Adapt(st.nextObs)
			adj := Adjustment{At: fa.At, Kind: AdjustForecast, Changed: fa.Changed, Forecast: &fa, Reason: fa.Reason}
			st.adapted = &adj
			level := keptLevel
			if adj.Changed {
				c.remember(st, adj)
				level = slog.LevelInfo
			}
			*logs = append(*logs, adjustmentLog(level, adj))
		}
	}
	return observed, passes, nil
}

// remember keeps a changed adjustment for View: the last
// RecentAdjustments of each kind, so that frequent price moves do not push
// the rare parameter changes out.
func (c *Controller) remember(st *collection, adj Adjustment) {
	if st.recent == nil {
		st.recent = make(map[AdjustmentKind][]Adjustment)
	}
	r := st.recent[adj.Kind]
	if len(r) == c.cfg.RecentAdjustments {
		copy(r, r[1:])
		r = r[:len(r)-1]
	}
	st.recent[adj.Kind] = append(r, adj)
}

// recentAdjustments merges the kept adjustments of every kind, oldest
// first (ties in kind order, so the result is deterministic).
func (st *collection) recentAdjustments() []Adjustment {
	out := []Adjustment{}
	for _, k := range []AdjustmentKind{AdjustForecast, AdjustMargin, AdjustPrice} {
		out = append(out, st.recent[k]...)
	}
	slices.SortStableFunc(out, func(a, b Adjustment) int { return a.At.Compare(b.At) })
	return out
}

// Resolved tells the controller that the market is done with lease request
// id, bought or not: a bought lease is in the ledger from now on (and in
// Capacity.Leases), so the request stops counting as held capacity. It
// reports whether the request was pending. Without it a request counts
// until its Expires.
func (c *Controller) Resolved(now time.Time, id string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, r := range c.pending {
		if r.ID == id {
			c.pending = slices.Delete(c.pending, i, i+1)
			return true
		}
	}
	return false
}

// Tick runs one pass of the loop at now: it folds the intervals that ended
// into the forecaster (adapting its parameters when due), sets the safety
// margin from the horizon error and the price multiplier from the
// utilization, and plans the horizon: a lease to buy ahead of a forecast
// deficit, an ask for a forecast surplus, or nothing. Call it once per
// Config.Interval; calling it more often is harmless. The decision's
// adjustments are logged and kept for View.
//
// Before any job is collected the forecast is zero: all own capacity is
// surplus. Once jobs arrive, nothing is bought or advertised until
// MinObservations intervals have been observed.
//
// An invalid capacity is an error that changes nothing.
func (c *Controller) Tick(now time.Time, capacity Capacity) (Decision, error) {
	if now.IsZero() {
		return Decision{}, fmt.Errorf("tick: %w", fieldErr("now", "must not be the zero time"))
	}
	if err := capacity.validate(); err != nil {
		return Decision{}, fmt.Errorf("tick: %w", err)
	}
	var logs []logRecord
	c.mu.Lock()
	d, err := c.tickLocked(now, capacity, &logs)
	c.mu.Unlock()
	c.emit(logs)
	return d, err
}

func (c *Controller) tickLocked(now time.Time, capacity Capacity, logs *[]logRecord) (Decision, error) {
	st := &c.st
	nAdj := len(*logs)
	observed, _, err := c.observe(st, now, logs, slog.LevelDebug)
	if err != nil {
		return Decision{}, fmt.Errorf("tick: %w", err)
	}
	d := Decision{At: now, Region: c.cfg.Region, Action: forecast.ActionNone, Observed: observed}
	for _, l := range (*logs)[nAdj:] {
		if l.adj != nil {
			d.Adjustments = append(d.Adjustments, *l.adj)
		}
	}

	// Monitor and feed back: the price follows the utilization, the margin
	// follows the horizon error.
	total := capacity.Total.ComputePerHour
	u := 1.0
	if total > 0 {
		u = min(1, max(0, 1-capacity.Free.ComputePerHour/total))
	}
	mult := c.cfg.Price.Multiplier(u)
	if !c.ticked || math.Abs(mult-c.loggedMult) >= priceStep {
		adj := Adjustment{At: now, Kind: AdjustPrice, Changed: true, Old: c.loggedMult, New: mult,
			Reason: fmt.Sprintf("compute utilization %.1f%% (free %.4g of %.4g tasks/hour): price multiplier %.3g → %.3g (1 + %.3g·u^%.3g, capped at %.3g)",
				100*u, capacity.Free.ComputePerHour, total, c.loggedMult, mult, c.cfg.Price.Slope, c.cfg.Price.Exponent, c.cfg.Price.MaxMultiplier)}
		c.loggedMult = mult
		d.Adjustments = append(d.Adjustments, adj)
		c.remember(st, adj)
		*logs = append(*logs, adjustmentLog(slog.LevelInfo, adj))
	}
	c.utilization, c.multiplier = u, mult
	d.Utilization, d.PriceMultiplier = u, mult

	var acc forecast.Accuracy
	if st.fc != nil {
		acc = st.fc.Accuracy()
	}
	margin := forecast.SafetyMargin(acc.Horizon, c.cfg.MaxMargin)
	if !c.ticked || math.Abs(margin-c.loggedMargin) >= marginStep {
		adj := Adjustment{At: now, Kind: AdjustMargin, Changed: true, Old: c.loggedMargin, New: margin,
			Reason: fmt.Sprintf("%d-interval-ahead error %s: safety margin %.0f%% → %.0f%% (the MAPE, capped at %.0f%%)",
				acc.HorizonSteps, acc.Horizon, 100*c.loggedMargin, 100*margin, 100*c.cfg.MaxMargin)}
		c.loggedMargin = margin
		d.Adjustments = append(d.Adjustments, adj)
		c.remember(st, adj)
		*logs = append(*logs, adjustmentLog(slog.LevelInfo, adj))
	}
	c.margin, d.Margin = margin, margin
	c.ticked = true
	c.leases = append(c.leases[:0], capacity.Leases...)

	// Lease requests the market has not resolved still count as held, so
	// that the next ticks do not buy the same capacity again.
	c.pending = slices.DeleteFunc(c.pending, func(r LeaseRequest) bool { return !now.Before(r.Expires) })

	// Forecast and allocate ahead.
	iv := c.cfg.Interval
	var start time.Time
	var prefix string
	switch {
	case st.fc == nil:
		// No demand ever collected: the forecast is zero.
		start = now.Truncate(iv)
		d.Forecast = make([]float64, c.steps)
		prefix = "no demand collected yet: "
	case st.fc.Observations() < c.cfg.MinObservations:
		d.Reason = fmt.Sprintf("warming up: %d of %d intervals observed before buying or advertising", st.fc.Observations(), c.cfg.MinObservations)
		c.finish(&d, logs)
		return d, nil
	default:
		start = st.nextObs
		lag := 0
		if now.After(start) {
			lag = int(now.Sub(start) / iv)
		}
		d.Forecast = st.fc.Forecast(lag + c.steps)
	}
	d.ForecastStart = start
	in := forecast.PlanInput{Now: now, Start: start, Interval: iv, Forecast: d.Forecast, Margin: margin}
	in.OwnCapacity, in.Leases = c.capacityLocked(now, start, capacity)
	plan, err := forecast.PlanAhead(c.cfg.Plan, in)
	if err != nil {
		return Decision{}, fmt.Errorf("tick: plan: %w", err)
	}
	d.Plan, d.Action, d.Reason = plan, plan.Action, prefix+plan.Reason
	switch plan.Action {
	case forecast.ActionBuy:
		maxPrice := capacity.NodePricePerHour * c.cfg.MaxBuyMultiplier
		req := LeaseRequest{
			ID:              fmt.Sprintf("lease-%s-%d", c.cfg.Region, now.UnixNano()),
			Resources:       plan.Resources,
			Units:           plan.Units,
			From:            plan.From,
			Until:           plan.Until,
			MaxPricePerHour: maxPrice,
			LatencySLO:      c.cfg.LeaseLatencySLO,
			Expires:         now.Add(c.cfg.PendingTTL),
			Reason:          fmt.Sprintf("%s; pay at most %.4g $/node-hour (node price %.4g × %.3g)", plan.Reason, maxPrice, capacity.NodePricePerHour, c.cfg.MaxBuyMultiplier),
		}
		d.Buy = &req
		d.Reason = prefix + req.Reason
		c.pending = append(c.pending, req)
	case forecast.ActionAdvertise:
		price := capacity.NodePricePerHour * mult
		ask := AskOffer{
			Surplus:         plan.Resources,
			Units:           plan.Units,
			MinPricePerHour: price,
			From:            plan.From,
			Until:           plan.Until,
			Expires:         now.Add(c.cfg.AskTTL),
			Reason:          fmt.Sprintf("%s at %.4g $/node-hour (node price %.4g × %.3g at %.0f%% utilization)", prefix+plan.Reason, price, capacity.NodePricePerHour, mult, 100*u),
		}
		d.Ask = &ask
		d.Reason = ask.Reason
	}
	c.finish(&d, logs)
	return d, nil
}

// capacityLocked returns the own capacity and the leases the plan counts:
// own compute less what is sold for any bucket of the horizon, and bought
// leases plus pending requests. A lease already in force covers the
// current bucket whole (its part before now is past).
func (c *Controller) capacityLocked(now, start time.Time, capacity Capacity) (float64, []forecast.Lease) {
	iv := c.cfg.Interval
	end := now.Add(time.Duration(c.steps) * iv)
	var sold float64
	for b := start; b.Before(end); b = b.Add(iv) {
		var s float64
		for _, l := range capacity.Leases {
			if l.Direction == consensus.LeaseSold && l.Start.Before(b.Add(iv)) && l.End.After(b) && l.End.After(now) {
				s += l.Resources.ComputePerHour
			}
		}
		sold = max(sold, s)
	}
	own := max(0, capacity.Total.ComputePerHour-sold)
	held := func(from, until time.Time, compute float64) forecast.Lease {
		if !from.After(now) && from.After(start) {
			from = start
		}
		return forecast.Lease{Compute: compute, From: from, Until: until}
	}
	var leases []forecast.Lease
	for _, l := range capacity.Leases {
		if l.Direction == consensus.LeaseBought && l.End.After(now) {
			leases = append(leases, held(l.Start, l.End, l.Resources.ComputePerHour))
		}
	}
	for _, r := range c.pending {
		leases = append(leases, held(now, r.Until, r.Resources.ComputePerHour))
	}
	return own, leases
}

// finish records the decision and logs it.
func (c *Controller) finish(d *Decision, logs *[]logRecord) {
	keep := *d
	keep.Forecast = slices.Clone(d.Forecast)
	keep.Adjustments = slices.Clone(d.Adjustments)
	c.last = &keep
	level := slog.LevelDebug
	if d.Action == forecast.ActionBuy {
		level = slog.LevelInfo
	}
	*logs = append(*logs, logRecord{level: level, msg: "demand loop decision", attrs: []slog.Attr{
		slog.String("action", string(d.Action)), slog.String("reason", d.Reason),
		slog.Float64("utilization", d.Utilization), slog.Float64("price_multiplier", d.PriceMultiplier),
		slog.Float64("margin", d.Margin), slog.Int("observed", d.Observed)}})
}

// View returns what the controller shows about its region at now: the
// latest forecast and adjustments in the API's types, and the detail
// behind them.
func (c *Controller) View(now time.Time) View {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := &c.st
	v := View{
		Region:          c.cfg.Region,
		Margin:          c.margin,
		Utilization:     c.utilization,
		PriceMultiplier: c.multiplier,
		Pending:         slices.Clone(c.pending),
		Recent:          st.recentAdjustments(),
		Collected:       st.counts,
		Late:            st.late,
	}
	if st.adapted != nil {
		a := *st.adapted
		v.LastAdaptation = &a
	}
	if st.fc != nil {
		acc := st.fc.Accuracy()
		v.Model, v.Params, v.Observations = acc.Model, acc.Params, acc.Observations
		v.OneStep, v.Horizon, v.Bias = acc.OneStep, acc.Horizon, acc.Horizon.Bias
		v.SeriesStart, v.SeriesEnd = st.series.Start(), st.series.End()
	} else {
		v.Model, v.Params = forecast.ModelNone, c.fcfg.Params
	}
	if c.last == nil {
		return v
	}
	last := *c.last
	last.Forecast = slices.Clone(c.last.Forecast)
	last.Adjustments = slices.Clone(c.last.Adjustments)
	v.LastDecision = &last

	var leased placement.Resources
	for _, l := range c.leases {
		if l.Direction == consensus.LeaseBought && !now.Before(l.Start) && now.Before(l.End) {
			leased = leased.Add(l.Resources)
		}
	}
	v.Adjustments = &api.RegionAdjustments{PriceMultiplier: c.multiplier, Leased: leased}
	if last.Forecast != nil {
		peak, sum, n := c.ahead(last)
		if n > 0 {
			v.MeanComputePerHour = sum / float64(n)
		}
		v.Forecast = &api.RegionForecast{
			At:                     last.At,
			HorizonS:               int64(time.Duration(c.steps) * c.cfg.Interval / time.Second),
			ComputePerHour:         peak,
			ObservedComputePerHour: st.lastRate,
			ErrorMAPE:              v.Horizon.MAPE / 100,
		}
	}
	return v
}

// ahead sums up d's forecast over the buckets of the horizon from the
// decision time on (the ones before it ended already): their peak, their
// sum and how many there are.
func (c *Controller) ahead(d Decision) (peak, sum float64, n int) {
	iv := c.cfg.Interval
	for k, f := range d.Forecast {
		if !d.ForecastStart.Add(time.Duration(k+1) * iv).After(d.At) {
			continue
		}
		peak, sum = max(peak, f), sum+f
		n++
	}
	return peak, sum, n
}

// ForecastPeak returns the peak demand (compute, tasks/hour) of the latest
// forecast over the rest of its horizon, and false before the first
// forecast. A seller keeps that much out of the leases it sells.
func (c *Controller) ForecastPeak() (float64, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.last == nil || c.last.Forecast == nil {
		return 0, false
	}
	peak, _, n := c.ahead(*c.last)
	return peak, n > 0
}

// logRecord is a log line gathered under the lock and emitted after it.
type logRecord struct {
	level slog.Level
	msg   string
	attrs []slog.Attr
	adj   *Adjustment // set for adjustment records
}

func adjustmentLog(level slog.Level, adj Adjustment) logRecord {
	attrs := []slog.Attr{slog.String("kind", string(adj.Kind)), slog.Bool("changed", adj.Changed), slog.Time("at", adj.At), slog.String("reason", adj.Reason)}
	if adj.Forecast != nil {
		attrs = append(attrs, slog.String("old", adj.Forecast.Old.String()), slog.String("new", adj.Forecast.New.String()))
	} else {
		attrs = append(attrs, slog.Float64("old", adj.Old), slog.Float64("new", adj.New))
	}
	return logRecord{level: level, msg: "demand loop adjustment", attrs: attrs, adj: &adj}
}

func (c *Controller) emit(logs []logRecord) {
	ctx := context.Background()
	for _, l := range logs {
		c.log.LogAttrs(ctx, l.level, l.msg, l.attrs...)
	}
}
