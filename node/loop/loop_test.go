package loop

import (
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/consensus"
	"github.com/meridian-mesh/meridian/placement"
	"github.com/meridian-mesh/meridian/placement/forecast"
	"github.com/meridian-mesh/meridian/placement/workload"
)

// A diurnal demand over six simulated days: the horizon error, high while
// the EWMA fallback runs, falls under 10 % once Holt-Winters has learnt the
// day, and the view shows it.
func TestDiurnalForecastErrorFalls(t *testing.T) {
	t.Parallel()
	c := newController(t, testConfig())
	rng := rand.New(rand.NewPCG(1, 2))
	const days = 6
	s := newSim(t, c, 2*nodeCompute, generate(rng, diurnal(20000, 15, 0.25), t0, t0.Add(days*forecast.Day), c.Config().Interval, 0.05, "j"))

	var mapeByDay []float64
	for day := range days {
		s.run(t0.Add(time.Duration(day)*forecast.Day), t0.Add(time.Duration(day+1)*forecast.Day))
		v := c.View(t0.Add(time.Duration(day+1) * forecast.Day))
		mapeByDay = append(mapeByDay, v.Horizon.MAPE)
		t.Logf("day %d: model %s params %s horizon %s one-step %s", day+1, v.Model, v.Params, v.Horizon, v.OneStep)
	}
	v := c.View(t0.Add(days * forecast.Day))
	if v.Model != forecast.ModelHoltWinters {
		t.Fatalf("model after %d days = %s; want %s", days, v.Model, forecast.ModelHoltWinters)
	}
	if got := mapeByDay[days-1]; got >= 10 {
		t.Errorf("horizon MAPE on day %d = %.1f%%; want < 10%%", days, got)
	}
	if first, last := mapeByDay[0], mapeByDay[days-1]; last >= first/2 {
		t.Errorf("horizon MAPE day 1 %.1f%% → day %d %.1f%%; want it at least halved", first, days, last)
	}
	if v.Forecast == nil {
		t.Fatal("View.Forecast = nil after six days")
	}
	if got, want := v.Forecast.ErrorMAPE, v.Horizon.MAPE/100; got != want {
		t.Errorf("Forecast.ErrorMAPE = %v; want the horizon MAPE as a fraction %v", got, want)
	}
	if v.Forecast.HorizonS != int64((2 * time.Hour).Seconds()) {
		t.Errorf("Forecast.HorizonS = %d; want 7200", v.Forecast.HorizonS)
	}
	// The last interval observed is 23:55–24:00 (jobs that straddle its
	// boundaries count in part, hence the tolerance).
	last := t0.Add(days*forecast.Day - c.Config().Interval)
	if o, want := v.Forecast.ObservedComputePerHour, s.load[last]; math.Abs(o-want) > 0.01*want {
		t.Errorf("Forecast.ObservedComputePerHour = %.0f; want the demand of %s, %.0f", o, stamp(last), want)
	}
	if v.Forecast.ComputePerHour < v.MeanComputePerHour {
		t.Errorf("Forecast.ComputePerHour (peak) %.0f < mean %.0f", v.Forecast.ComputePerHour, v.MeanComputePerHour)
	}
	if v.Bias != v.Horizon.Bias {
		t.Errorf("View.Bias = %v; want the horizon bias %v", v.Bias, v.Horizon.Bias)
	}
	if rel := math.Abs(v.Bias) / 20000; rel > 0.05 {
		t.Errorf("horizon bias %.0f tasks/hour is %.1f%% of the mean demand; want within 5%%", v.Bias, 100*rel)
	}
}

// The own capacity of one node cannot carry the afternoon peak (1.6 × a
// mean of 20,000 tasks/hour). Once Holt-Winters runs, every interval whose
// actual demand needs more than the node is covered by a lease bought
// before that interval started — ahead of the peak, not after it.
func TestLeaseBoughtBeforePeak(t *testing.T) {
	t.Parallel()
	c := newController(t, testConfig())
	rng := rand.New(rand.NewPCG(3, 4))
	const days = 5
	iv := c.Config().Interval
	arrivals := generate(rng, diurnal(20000, 15, 0.25), t0, t0.Add(days*forecast.Day), iv, 0.03, "j")
	s := newSim(t, c, nodeCompute, arrivals)
	s.run(t0, t0.Add(days*forecast.Day))

	target := 0.85 // PlanConfig's default target utilization
	deficits, covered := 0, 0
	for b := t0.Add(3 * forecast.Day); b.Before(t0.Add(days * forecast.Day)); b = b.Add(iv) {
		need := s.load[b] / target
		if need <= nodeCompute {
			continue
		}
		deficits++
		var leased float64
		var boughtBefore bool
		for _, l := range s.market.leases {
			if !l.Start.After(b) && !l.End.Before(b.Add(iv)) {
				leased += l.Resources.ComputePerHour
				boughtBefore = boughtBefore || l.Added.Before(b)
			}
		}
		if boughtBefore && nodeCompute+leased >= s.load[b] {
			covered++
		} else {
			t.Logf("interval %s: demand %.0f, need %.0f, leased %.0f bought before: %v", stamp(b), s.load[b], need, leased, boughtBefore)
		}
	}
	if deficits == 0 {
		t.Fatal("the scenario has no interval whose demand exceeds one node: it tests nothing")
	}
	if share := float64(covered) / float64(deficits); share < 0.95 {
		t.Errorf("%d of %d deficit intervals covered by a lease bought before they started (%.0f%%); want ≥ 95%%", covered, deficits, 100*share)
	}
	// The 15:00 peak of the last day is covered.
	peak := t0.Add((days-1)*forecast.Day + 15*time.Hour)
	var leased float64
	for _, l := range s.market.leases {
		if !l.Start.After(peak) && !l.End.Before(peak.Add(iv)) {
			leased += l.Resources.ComputePerHour
		}
	}
	if nodeCompute+leased < s.load[peak] {
		t.Errorf("at the last peak %s demand %.0f exceeds own %d + leased %.0f", stamp(peak), s.load[peak], nodeCompute, leased)
	}
	// Every buy is well-formed.
	for _, d := range s.market.buys {
		b := d.Buy
		if b.Units < 1 || b.Resources != scaleRes(gpu, b.Units) || b.From.Before(d.At) || !b.Until.After(b.From) {
			t.Errorf("malformed buy at %s: %+v", stamp(d.At), *b)
		}
		if want := 32.77 * c.Config().MaxBuyMultiplier; math.Abs(b.MaxPricePerHour-want) > 1e-9 {
			t.Errorf("buy max price = %v; want node price × MaxBuyMultiplier = %v", b.MaxPricePerHour, want)
		}
		if b.From.Sub(d.At) > c.Config().Plan.LeadTime {
			t.Errorf("buy at %s for a deficit from %s: more than the lead time %v ahead", stamp(d.At), stamp(b.From), c.Config().Plan.LeadTime)
		}
		if !strings.Contains(b.Reason, "buy") || d.Reason != b.Reason {
			t.Errorf("buy reason %q (decision %q)", b.Reason, d.Reason)
		}
	}
	// Nights have surplus: the region advertises.
	if len(s.market.asks) == 0 {
		t.Error("no ask over five days with nights at 0.4 × the mean")
	}
	for _, d := range s.market.asks {
		a := d.Ask
		if a.Units < 1 || a.Surplus != scaleRes(gpu, a.Units) || a.Surplus.ComputePerHour > nodeCompute {
			t.Errorf("malformed ask at %s: %+v", stamp(d.At), *a)
		}
		if want := 32.77 * d.PriceMultiplier; math.Abs(a.MinPricePerHour-want) > 1e-9 {
			t.Errorf("ask min price = %v; want node price × multiplier %v", a.MinPricePerHour, want)
		}
		if !a.Expires.Equal(d.At.Add(c.Config().AskTTL)) {
			t.Errorf("ask expires %s; want %s", a.Expires, d.At.Add(c.Config().AskTTL))
		}
		if h := d.At.Hour(); d.At.After(t0.Add(forecast.Day)) && h >= 11 && h < 19 {
			t.Errorf("ask at %s, in the afternoon peak: %s", stamp(d.At), a.Reason)
		}
	}
}

func scaleRes(r placement.Resources, n int) placement.Resources {
	f := float64(n)
	return placement.Resources{ComputePerHour: r.ComputePerHour * f, StorageGB: r.StorageGB * f, BandwidthGBps: r.BandwidthGBps * f, GPUs: r.GPUs * n}
}

// Before any demand the forecast is zero and all own capacity is surplus;
// the ask's price follows utilization, which raises the multiplier
// monotonically from 1 (idle) to the cap (full), each change logged with
// its reason.
func TestPriceRisesWithUtilization(t *testing.T) {
	var logs logBuffer
	cfg := testConfig()
	cfg.Logger = newLogger(&logs)
	c := newController(t, cfg)
	var mults, asks []float64
	reported := 0.0
	for i := 0; i <= 10; i++ {
		u := float64(i) / 10
		now := t0.Add(time.Duration(i) * time.Minute)
		d, err := c.Tick(now, Capacity{
			Total:            placement.Resources{ComputePerHour: 4 * nodeCompute},
			Free:             placement.Resources{ComputePerHour: 4 * nodeCompute * (1 - u)},
			NodePricePerHour: 32.77,
		})
		if err != nil {
			t.Fatalf("Tick: %v", err)
		}
		if want := c.Config().Price.Multiplier(d.Utilization); d.PriceMultiplier != want || math.Abs(d.Utilization-u) > 1e-12 {
			t.Errorf("u=%.1f: utilization %v, multiplier %v; want %v", u, d.Utilization, d.PriceMultiplier, want)
		}
		if d.Action != forecast.ActionAdvertise || d.Ask == nil {
			t.Fatalf("u=%.1f: action %s (%s); want advertise before any demand", u, d.Action, d.Reason)
		}
		if !strings.HasPrefix(d.Reason, "no demand collected yet") {
			t.Errorf("reason %q does not say no demand was collected", d.Reason)
		}
		if d.Ask.Units != 4*8 {
			t.Errorf("u=%.1f: ask of %d units; want all 32 GPUs of the region", u, d.Ask.Units)
		}
		mults = append(mults, d.PriceMultiplier)
		asks = append(asks, d.Ask.MinPricePerHour)
		var priced bool
		for _, a := range d.Adjustments {
			if a.Kind == AdjustPrice {
				priced = true
				if a.New != d.PriceMultiplier || a.Old != reported || !strings.Contains(a.Reason, "utilization") {
					t.Errorf("price adjustment %+v (last reported %v)", a, reported)
				}
				reported = a.New
			}
		}
		// A move of 0.05 or more since the last report is an adjustment.
		if moved := math.Abs(d.PriceMultiplier - reported); moved >= priceStep || i == 0 && !priced {
			t.Errorf("u=%.1f: multiplier %v, last reported %v, without an adjustment", u, d.PriceMultiplier, reported)
		}
	}
	if mults[0] != 1 || mults[10] != 2 {
		t.Errorf("multiplier idle %v, full %v; want 1 and 2", mults[0], mults[10])
	}
	for i := 1; i < len(mults); i++ {
		if mults[i] <= mults[i-1] || asks[i] <= asks[i-1] {
			t.Errorf("step %d: multiplier %v → %v, ask %v → %v; want both rising", i, mults[i-1], mults[i], asks[i-1], asks[i])
		}
	}
	if math.Abs(asks[5]-32.77*1.25) > 1e-9 {
		t.Errorf("ask at half load = %v; want 1.25 × 32.77", asks[5])
	}
	v := c.View(t0.Add(11 * time.Minute))
	if v.Adjustments == nil || v.Adjustments.PriceMultiplier != 2 {
		t.Errorf("View.Adjustments = %+v; want multiplier 2", v.Adjustments)
	}
	out := logs.String()
	// 1, 1.01, 1.04, 1.09, 1.16, 1.25, 1.36, 1.49, 1.64, 1.81, 2: reported
	// at 0, 0.3, 0.4, ..., 1.0 utilization.
	if n := strings.Count(out, "kind=price-multiplier"); n != 9 {
		t.Errorf("%d price adjustments logged; want 9:\n%s", n, out)
	}
	if !strings.Contains(out, `reason="compute utilization 50.0%`) {
		t.Errorf("log lacks the reason of the half-load adjustment:\n%s", out)
	}
}

// With slow starting parameters and a regime change (the peak moves six
// hours and grows by half on day 4), adaptation replaces the parameters,
// says why, logs it, and ends with a lower error than the same parameters
// fixed.
func TestAdaptationChangesParametersWhenErrorIsHigh(t *testing.T) {
	t.Parallel()
	slow := forecast.Params{Alpha: 0.05, Beta: 0, Gamma: 0.05, EWMAAlpha: 0.1}
	before, after := diurnal(15000, 9, 0.25), diurnal(22500, 15, 0.25)
	regime := func(at time.Time) float64 {
		if at.Before(t0.Add(3 * forecast.Day)) {
			return before(at)
		}
		return after(at)
	}
	const days = 5
	run := func(disabled bool) (*Controller, string) {
		var logs logBuffer
		cfg := testConfig()
		cfg.Logger = newLogger(&logs)
		cfg.Forecast.Params = slow
		cfg.Forecast.Adapt.Disabled = disabled
		cfg.Forecast.Adapt.TriggerMAPE = 15
		c := newController(t, cfg)
		rng := rand.New(rand.NewPCG(5, 6))
		s := newSim(t, c, 4*nodeCompute, generate(rng, regime, t0, t0.Add(days*forecast.Day), cfg.Interval, 0.03, "j"))
		s.run(t0, t0.Add(days*forecast.Day))
		return c, logs.String()
	}
	adaptive, logs := run(false)
	fixed, _ := run(true)

	va, vf := adaptive.View(t0.Add(days*forecast.Day)), fixed.View(t0.Add(days*forecast.Day))
	t.Logf("adaptive: %s one-step %s horizon %s", va.Params, va.OneStep, va.Horizon)
	t.Logf("fixed:    %s one-step %s horizon %s", vf.Params, vf.OneStep, vf.Horizon)
	if va.Params == slow {
		t.Fatalf("parameters still %s after a regime change", slow)
	}
	if vf.Params != slow {
		t.Fatalf("adaptation disabled, yet parameters moved to %s", vf.Params)
	}
	var changed []Adjustment
	for _, a := range va.Recent {
		if a.Kind == AdjustForecast {
			changed = append(changed, a)
		}
	}
	if len(changed) == 0 {
		t.Fatal("no forecast adjustment among View.Recent")
	}
	for _, a := range changed {
		if !a.Changed || a.Forecast == nil || a.Forecast.New == a.Forecast.Old || !strings.Contains(a.Reason, "better") {
			t.Errorf("forecast adjustment %+v", a)
		}
		if !strings.Contains(logs, a.Reason) {
			t.Errorf("reason %q not logged", a.Reason)
		}
	}
	if va.LastAdaptation == nil || va.LastAdaptation.Kind != AdjustForecast {
		t.Errorf("View.LastAdaptation = %+v", va.LastAdaptation)
	}
	if va.OneStep.MAPE >= vf.OneStep.MAPE {
		t.Errorf("one-step MAPE adaptive %.1f%% ≥ fixed %.1f%%", va.OneStep.MAPE, vf.OneStep.MAPE)
	}
	if va.Horizon.MAPE >= vf.Horizon.MAPE {
		t.Errorf("horizon MAPE adaptive %.1f%% ≥ fixed %.1f%%", va.Horizon.MAPE, vf.Horizon.MAPE)
	}
}

// A new leader that rebuilds from the ledger's jobs (in any order) reaches
// the very state of the leader that collected them live: the same model,
// parameters, errors and adaptation record, and from then on the same
// decisions, tick after tick.
func TestRebuildEquivalentToLiveCollection(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(7, 8))
	cfg := testConfig()
	live := newController(t, cfg)
	iv := cfg.Interval
	const days = 5
	arrivals := generate(rng, diurnal(20000, 15, 0.25), t0, t0.Add(days*forecast.Day), iv, 0.05, "j")
	s := newSim(t, live, nodeCompute, arrivals)
	change := t0.Add(3*forecast.Day + 13*time.Hour + 20*time.Minute) // 13:20 on day 4, before the peak
	s.run(t0, change)
	now := change.Add(s.tickOffset)

	jobs := ledgerJobs(arrivals, now)
	rand.New(rand.NewPCG(9, 10)).Shuffle(len(jobs), func(i, j int) { jobs[i], jobs[j] = jobs[j], jobs[i] })
	rebuilt := newController(t, cfg)
	rep, err := rebuilt.Rebuild(now, jobs)
	if err != nil {
		t.Fatalf("Rebuild: %v", err)
	}
	if rep.Recorded != len(jobs) || len(rep.Skipped) != 0 || rep.BeforeRetention != 0 {
		t.Fatalf("Rebuild report %+v; want all %d jobs recorded", rep, len(jobs))
	}
	if rep.Adaptations == 0 {
		t.Fatalf("Rebuild replayed no adaptation pass: the test does not cover them")
	}
	lv, rv := live.View(now), rebuilt.View(now)
	if lv.Model != rv.Model || lv.Params != rv.Params || lv.Observations != rv.Observations ||
		lv.OneStep != rv.OneStep || lv.Horizon != rv.Horizon || lv.SeriesStart != rv.SeriesStart || lv.SeriesEnd != rv.SeriesEnd {
		t.Fatalf("after rebuild:\nlive    %s %s n=%d one-step %s horizon %s series %s–%s\nrebuilt %s %s n=%d one-step %s horizon %s series %s–%s",
			lv.Model, lv.Params, lv.Observations, lv.OneStep, lv.Horizon, lv.SeriesStart, lv.SeriesEnd,
			rv.Model, rv.Params, rv.Observations, rv.OneStep, rv.Horizon, rv.SeriesStart, rv.SeriesEnd)
	}
	if lv.LastAdaptation == nil || rv.LastAdaptation == nil || lv.LastAdaptation.Reason != rv.LastAdaptation.Reason {
		t.Errorf("last adaptation: live %+v, rebuilt %+v", lv.LastAdaptation, rv.LastAdaptation)
	}
	if got, want := forecastAdjustments(rv.Recent), forecastAdjustments(lv.Recent); !slices.EqualFunc(got, want, sameAdjustment) {
		t.Errorf("forecast adjustments: rebuilt %d, live %d", len(got), len(want))
	}
	if lv.Collected.Local != rv.Collected.Local {
		t.Errorf("collected: live %+v, rebuilt %+v", lv.Collected, rv.Collected)
	}

	// From here both leaders tick through the peak with the same capacity
	// and decide the same, except for adjustments of price and margin that
	// the rebuilt one reports on its first tick.
	r := newSim(t, rebuilt, nodeCompute, arrivals)
	r.next = s.next
	r.market.leases = slices.Clone(s.market.leases)
	end := change.Add(12 * time.Hour)
	for b := change.Add(iv); !b.After(end); b = b.Add(iv) {
		now := b.Add(s.tickOffset)
		s.admitUntil(now)
		r.admitUntil(now)
		dl, err := live.Tick(now, s.capacity(now))
		if err != nil {
			t.Fatal(err)
		}
		dr, err := rebuilt.Tick(now, r.capacity(now))
		if err != nil {
			t.Fatal(err)
		}
		if !sameDecision(dl, dr) {
			t.Fatalf("at %s:\nlive    %s %+v %+v %s\nrebuilt %s %+v %+v %s", stamp(now), dl.Action, dl.Buy, dl.Ask, dl.Reason, dr.Action, dr.Buy, dr.Ask, dr.Reason)
		}
		s.market.apply(t, live, dl)
		r.market.apply(t, rebuilt, dr)
	}
	if len(s.market.buys) == 0 {
		t.Error("no buy in the scenario: the comparison does not cover buys")
	}
}

func forecastAdjustments(as []Adjustment) []Adjustment {
	var out []Adjustment
	for _, a := range as {
		if a.Kind == AdjustForecast {
			out = append(out, a)
		}
	}
	return out
}

func sameAdjustment(a, b Adjustment) bool {
	return a.At.Equal(b.At) && a.Kind == b.Kind && a.Changed == b.Changed && a.Reason == b.Reason
}

func sameDecision(a, b Decision) bool {
	if a.Action != b.Action || a.Reason != b.Reason || a.Plan != b.Plan ||
		a.PriceMultiplier != b.PriceMultiplier || a.Margin != b.Margin || a.Utilization != b.Utilization ||
		!a.ForecastStart.Equal(b.ForecastStart) || !slices.Equal(a.Forecast, b.Forecast) {
		return false
	}
	if (a.Buy == nil) != (b.Buy == nil) || a.Buy != nil && *a.Buy != *b.Buy {
		return false
	}
	if (a.Ask == nil) != (b.Ask == nil) || a.Ask != nil && *a.Ask != *b.Ask {
		return false
	}
	return slices.EqualFunc(forecastAdjustments(a.Adjustments), forecastAdjustments(b.Adjustments), sameAdjustment)
}

// Rebuild ignores jobs older than the ledger retention (the ledger keeps
// only some of those), skips the ones it cannot record and says which,
// and resets what a new leader does not inherit.
func TestRebuildRetentionAndBadJobs(t *testing.T) {
	cfg := testConfig()
	cfg.LedgerRetention = 72 * time.Hour
	c := newController(t, cfg)
	now := t0.Add(5 * forecast.Day)
	job := func(id string, at time.Time, compute float64, d time.Duration) consensus.Job {
		return consensus.Job{ID: id, Submitted: at, State: consensus.JobPending,
			Spec: placement.Job{ID: id, Demand: placement.Resources{ComputePerHour: compute}, Duration: d}}
	}
	traded := job("traded", now.Add(-time.Hour), 100, time.Minute)
	traded.State = consensus.JobTraded
	placed := job("placed", now.Add(-time.Hour), 100, time.Minute)
	placed.State, placed.AllocID = consensus.JobRunning, "a1"
	jobs := []consensus.Job{
		job("old", now.Add(-73*time.Hour), 100, time.Minute),
		job("nan", now.Add(-2*time.Hour), math.NaN(), time.Minute),
		job("negative", now.Add(-2*time.Hour), 100, -time.Second),
		job("zero-time", time.Time{}, 100, time.Minute),
		job("pending", now.Add(-71*time.Hour), 100, time.Minute),
		traded, placed,
	}
	rep, err := c.Rebuild(now, jobs)
	if err != nil {
		t.Fatalf("Rebuild: %v", err)
	}
	if rep.Jobs != 7 || rep.Recorded != 3 || rep.BeforeRetention != 1 || len(rep.Skipped) != 3 {
		t.Fatalf("report %+v; want 7 jobs, 3 recorded, 1 before retention, 3 skipped", rep)
	}
	for i, want := range []string{"jobs[1].spec: field \"job.demand.compute\"", "jobs[2].spec: field \"job.duration\"", "jobs[3].submitted"} {
		if !strings.Contains(rep.Skipped[i].Err, want) {
			t.Errorf("skipped[%d] = %+v; want it to name %s", i, rep.Skipped[i], want)
		}
	}
	v := c.View(now)
	if v.Collected != (OutcomeCounts{Local: 1, Traded: 1, Unplaced: 1}) {
		t.Errorf("collected %+v; want one of each outcome", v.Collected)
	}
	// The series starts with the oldest job inside the retention.
	if want := now.Add(-71 * time.Hour).Add(-c.Config().Settle).Truncate(cfg.Interval); !v.SeriesStart.Equal(want) {
		t.Errorf("series starts %s; want %s", v.SeriesStart, want)
	}
	if _, err := c.Rebuild(time.Time{}, jobs); err == nil || !strings.Contains(err.Error(), `"now"`) {
		t.Errorf("Rebuild(zero time) = %v; want an error naming now", err)
	}
}

// A job adds its demand to every interval it runs in; one without a
// duration counts for MaxJobSpan.
func TestAdmittedSpreadsJobsOverTheirRun(t *testing.T) {
	cfg := testConfig()
	cfg.MaxJobSpan = 2 * time.Hour
	c := newController(t, cfg)
	at := t0.Add(2*time.Minute + 30*time.Second)
	long := placement.Job{ID: "long", Demand: placement.Resources{ComputePerHour: 3600}, Duration: time.Hour}
	if err := c.Admitted(at, long, OutcomeLocal); err != nil {
		t.Fatal(err)
	}
	rates := func() []float64 {
		c.mu.Lock()
		defer c.mu.Unlock()
		var out []float64
		for _, b := range c.st.series.Buckets() {
			out = append(out, b.Rate(cfg.Interval))
		}
		return out
	}
	// 150 s in the first interval, eleven whole ones, 150 s in the last.
	want := []float64{1800}
	for range 11 {
		want = append(want, 3600)
	}
	want = append(want, 1800)
	if got := rates(); !slices.Equal(got, want) {
		t.Fatalf("rates after a one-hour job = %v; want %v", got, want)
	}
	service := placement.Job{ID: "service", Demand: placement.Resources{ComputePerHour: 360}}
	if err := c.Admitted(at, service, OutcomeLocal); err != nil {
		t.Fatal(err)
	}
	got := rates()
	if len(got) != 25 { // 2 h from 00:02:30 ends in the 25th interval
		t.Fatalf("%d intervals after a job without duration; want 25", len(got))
	}
	if got[24] != 180 || got[23] != 360 || got[12] != 1800+360 {
		t.Errorf("rates = %v; want the service counted at 360 tasks/hour for two hours", got)
	}
}

// Bad input is refused with an error that names the field, and changes
// nothing.
func TestAdmittedAndTickRejectBadInput(t *testing.T) {
	c := newController(t, testConfig())
	ok := placement.Job{ID: "j", Demand: placement.Resources{ComputePerHour: 10}, Duration: time.Second}
	if err := c.Admitted(t0.Add(time.Hour), ok, OutcomeLocal); err != nil {
		t.Fatal(err)
	}
	bad := func(mod func(*placement.Job)) placement.Job { j := ok; mod(&j); return j }
	for _, tc := range []struct {
		name    string
		at      time.Time
		job     placement.Job
		outcome Outcome
		field   string
	}{
		{"zero time", time.Time{}, ok, OutcomeLocal, `"now"`},
		{"unknown outcome", t0.Add(time.Hour), ok, 9, `"outcome"`},
		{"NaN demand", t0.Add(time.Hour), bad(func(j *placement.Job) { j.Demand.ComputePerHour = math.NaN() }), OutcomeLocal, `"job.demand.compute"`},
		{"negative demand", t0.Add(time.Hour), bad(func(j *placement.Job) { j.Demand.ComputePerHour = -1 }), OutcomeTraded, `"job.demand.compute"`},
		{"overflowing demand", t0.Add(time.Hour), bad(func(j *placement.Job) { j.Demand.ComputePerHour = math.MaxFloat64 / 2 }), OutcomeLocal, `"job.demand.compute"`},
		{"negative duration", t0.Add(time.Hour), bad(func(j *placement.Job) { j.Duration = -time.Second }), OutcomeUnplaced, `"job.duration"`},
	} {
		err := c.Admitted(tc.at, tc.job, tc.outcome)
		if err == nil || !strings.Contains(err.Error(), tc.field) || !errors.Is(err, placement.ErrInvalid) {
			t.Errorf("%s: Admitted = %v; want an invalid-input error naming %s", tc.name, err, tc.field)
		}
	}
	// Before the oldest interval kept.
	if err := c.Admitted(t0, ok, OutcomeLocal); !errors.Is(err, forecast.ErrTooOld) {
		t.Errorf("Admitted before the series = %v; want ErrTooOld", err)
	}
	if v := c.View(t0.Add(time.Hour)); v.Collected != (OutcomeCounts{Local: 1}) {
		t.Errorf("collected %+v after refused jobs; want only the first", v.Collected)
	}

	good := Capacity{Total: placement.Resources{ComputePerHour: 100}, Free: placement.Resources{ComputePerHour: 50}, NodePricePerHour: 1}
	for _, tc := range []struct {
		name  string
		mod   func(*Capacity)
		field string
	}{
		{"NaN total", func(c *Capacity) { c.Total.ComputePerHour = math.NaN() }, `"capacity.total.compute"`},
		{"negative free", func(c *Capacity) { c.Free.StorageGB = -1 }, `"capacity.free.storage_gb"`},
		{"infinite price", func(c *Capacity) { c.NodePricePerHour = math.Inf(1) }, `"capacity.node_price_per_hour"`},
		{"lease direction", func(c *Capacity) { c.Leases = []consensus.Lease{{ID: "l"}} }, `"capacity.leases[0].direction"`},
		{"lease resources", func(c *Capacity) {
			c.Leases = []consensus.Lease{{ID: "l", Direction: consensus.LeaseBought, Resources: placement.Resources{GPUs: -1}}}
		}, `"capacity.leases[0].resources.gpus"`},
		{"lease ends before it starts", func(c *Capacity) {
			c.Leases = []consensus.Lease{{ID: "l", Direction: consensus.LeaseSold, Start: t0.Add(time.Hour), End: t0}}
		}, `"capacity.leases[0].end"`},
	} {
		cp := good
		tc.mod(&cp)
		if _, err := c.Tick(t0.Add(2*time.Hour), cp); err == nil || !strings.Contains(err.Error(), tc.field) {
			t.Errorf("%s: Tick = %v; want an error naming %s", tc.name, err, tc.field)
		}
	}
	if _, err := c.Tick(time.Time{}, good); err == nil || !strings.Contains(err.Error(), `"now"`) {
		t.Errorf("Tick(zero time) = %v; want an error naming now", err)
	}
	if v := c.View(t0.Add(2 * time.Hour)); v.LastDecision != nil || v.Observations != 0 {
		t.Errorf("refused ticks changed the controller: %+v", v)
	}
}

// A job reported after its interval was observed is kept for rebuilds and
// counted as late.
func TestLateJobIsKeptAndCounted(t *testing.T) {
	c := newController(t, testConfig())
	j := placement.Job{ID: "j", Demand: placement.Resources{ComputePerHour: 3600}, Duration: time.Second}
	if err := c.Admitted(t0.Add(time.Minute), j, OutcomeLocal); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Tick(t0.Add(10*time.Minute), Capacity{}); err != nil {
		t.Fatal(err)
	}
	j.ID = "late"
	if err := c.Admitted(t0.Add(4*time.Minute), j, OutcomeLocal); err != nil {
		t.Fatal(err)
	}
	if v := c.View(t0.Add(10 * time.Minute)); v.Late != 1 || v.Collected.Local != 2 {
		t.Errorf("late %d, collected %+v; want 1 late of 2", v.Late, v.Collected)
	}
}

// A lease request counts as held until it is resolved or expires, so the
// ticks that follow do not buy the same capacity again.
func TestPendingLeaseRequestIsNotBoughtTwice(t *testing.T) {
	t.Parallel()
	cfg := testConfig()
	c := newController(t, cfg)
	rng := rand.New(rand.NewPCG(11, 12))
	arrivals := generate(rng, diurnal(20000, 15, 0.25), t0, t0.Add(4*forecast.Day), cfg.Interval, 0.02, "j")
	s := newSim(t, c, nodeCompute, arrivals)
	// Run to the first buy of day 3 without filling it.
	var buy Decision
	iv := cfg.Interval
	for b := t0.Add(iv); b.Before(t0.Add(4 * forecast.Day)); b = b.Add(iv) {
		now := b.Add(s.tickOffset)
		s.admitUntil(now)
		d, err := c.Tick(now, s.capacity(now))
		if err != nil {
			t.Fatal(err)
		}
		if d.Action == forecast.ActionBuy && b.After(t0.Add(2*forecast.Day)) {
			buy = d
			break
		}
		s.market.apply(t, c, d)
	}
	if buy.Buy == nil {
		t.Fatal("no buy on day 3")
	}
	if v := c.View(buy.At); len(v.Pending) != 1 || v.Pending[0] != *buy.Buy {
		t.Fatalf("View.Pending = %+v; want the request", v.Pending)
	}
	// A minute later, the same capacity: nothing more to buy.
	now := buy.At.Add(time.Minute)
	d, err := c.Tick(now, s.capacity(now))
	if err != nil {
		t.Fatal(err)
	}
	if d.Action == forecast.ActionBuy && d.Buy.Resources.ComputePerHour >= buy.Buy.Resources.ComputePerHour {
		t.Errorf("bought %v again a minute after requesting %v", d.Buy.Resources, buy.Buy.Resources)
	}
	// Resolved without a lease (the auction failed): buy again.
	if !c.Resolved(now, buy.Buy.ID) {
		t.Fatal("Resolved = false")
	}
	if c.Resolved(now, buy.Buy.ID) {
		t.Error("Resolved twice = true")
	}
	now = now.Add(time.Minute)
	if d, err = c.Tick(now, s.capacity(now)); err != nil || d.Action != forecast.ActionBuy {
		t.Fatalf("after a failed auction: %s %v (%s); want buy", d.Action, err, d.Reason)
	}
	// Unresolved, it expires after PendingTTL and is bought again.
	now = now.Add(time.Minute)
	if d2, _ := c.Tick(now, s.capacity(now)); d2.Action == forecast.ActionBuy {
		t.Errorf("bought again while the request is pending: %s", d2.Reason)
	}
	now = d.Buy.Expires
	if d3, _ := c.Tick(now, s.capacity(now)); d3.Action != forecast.ActionBuy {
		t.Errorf("after the request expired: %s (%s); want buy", d3.Action, d3.Reason)
	}
}

// Capacity sold to other regions for part of the horizon is not the
// region's to advertise again; bought leases show in the view.
func TestSoldAndBoughtLeases(t *testing.T) {
	c := newController(t, testConfig())
	now := t0.Add(time.Hour)
	sold := consensus.Lease{ID: "s", Direction: consensus.LeaseSold, Resources: scaleRes(gpu, 3), Start: now.Add(30 * time.Minute), End: now.Add(90 * time.Minute)}
	bought := consensus.Lease{ID: "b", Direction: consensus.LeaseBought, Resources: scaleRes(gpu, 2), Start: now.Add(-time.Minute), End: now.Add(time.Hour)}
	d, err := c.Tick(now, Capacity{
		Total:            placement.Resources{ComputePerHour: nodeCompute},
		Free:             placement.Resources{ComputePerHour: nodeCompute},
		NodePricePerHour: 10,
		Leases:           []consensus.Lease{sold, bought},
	})
	if err != nil {
		t.Fatal(err)
	}
	if d.Action != forecast.ActionAdvertise || d.Ask.Units != 8-3 {
		t.Fatalf("%s %+v; want an ask of the 5 GPUs not sold", d.Action, d.Ask)
	}
	v := c.View(now)
	if v.Adjustments == nil || v.Adjustments.Leased != scaleRes(gpu, 2) {
		t.Errorf("View.Adjustments = %+v; want the bought lease", v.Adjustments)
	}
	if v = c.View(now.Add(2 * time.Hour)); v.Adjustments.Leased != (placement.Resources{}) {
		t.Errorf("leased after the lease ended = %+v; want none", v.Adjustments.Leased)
	}
}

func TestCapacityOf(t *testing.T) {
	nodes := []consensus.Node{
		{ID: "a", State: consensus.NodeReady, PricePerHour: 30, Total: placement.Resources{ComputePerHour: 100, GPUs: 8}, Used: placement.Resources{ComputePerHour: 40, GPUs: 2}},
		{ID: "b", State: consensus.NodeReady, PricePerHour: 10, Total: placement.Resources{ComputePerHour: 300, GPUs: 8}, Used: placement.Resources{ComputePerHour: 300.0000001}},
		{ID: "c", State: consensus.NodeDraining, PricePerHour: 99, Total: placement.Resources{ComputePerHour: 1000}},
		{ID: "d", State: consensus.NodeDown, PricePerHour: 99, Total: placement.Resources{ComputePerHour: 1000}},
	}
	leases := []consensus.Lease{{ID: "l", Direction: consensus.LeaseBought}}
	got := CapacityOf(nodes, leases)
	want := Capacity{
		Total:            placement.Resources{ComputePerHour: 400, GPUs: 16},
		Free:             placement.Resources{ComputePerHour: 60, GPUs: 14},
		NodePricePerHour: (30*100 + 10*300) / 400.0,
		Leases:           leases,
	}
	if got.Total != want.Total || got.Free != want.Free || got.NodePricePerHour != want.NodePricePerHour || len(got.Leases) != 1 {
		t.Errorf("CapacityOf = %+v; want %+v", got, want)
	}
	if e := CapacityOf(nil, nil); e.NodePricePerHour != 0 || e.Total != (placement.Resources{}) {
		t.Errorf("CapacityOf(nil) = %+v", e)
	}
	// A region without nodes is full: nothing to sell, the price at its cap.
	c := newController(t, testConfig())
	if d, err := c.Tick(t0, CapacityOf(nil, nil)); err != nil || d.Utilization != 1 || d.PriceMultiplier != 2 || d.Action != forecast.ActionNone {
		t.Errorf("Tick without nodes = %s u=%v ×%v, %v; want none at u=1 ×2", d.Action, d.Utilization, d.PriceMultiplier, err)
	}
}

// Bad configurations are refused with an error naming the field.
func TestNewRejectsBadConfig(t *testing.T) {
	for _, tc := range []struct {
		mod   func(*Config)
		field string
	}{
		{func(c *Config) { c.Region = "" }, "region"},
		{func(c *Config) { c.Region = "us east" }, "region"},
		{func(c *Config) { c.Interval = 7 * time.Minute }, "interval"},
		{func(c *Config) { c.Interval = -time.Minute }, "interval"},
		{func(c *Config) { c.Horizon = -time.Hour }, "horizon"},
		{func(c *Config) { c.History = 24 * time.Hour }, "history"},
		{func(c *Config) { c.MaxJobSpan = 30 * forecast.Day }, "max_job_span"},
		{func(c *Config) { c.Settle = 5 * time.Minute }, "settle"},
		{func(c *Config) { c.LedgerRetention = -1 }, "ledger_retention"},
		{func(c *Config) { c.MinObservations = -1 }, "min_observations"},
		{func(c *Config) { c.Forecast.SeasonLength = 24 }, "forecast.season_length"},
		{func(c *Config) { c.Forecast.Horizon = 3 }, "forecast.horizon"},
		{func(c *Config) { c.Forecast.Params.Alpha = 2 }, "forecast.params.alpha"},
		{func(c *Config) { c.Forecast.Adapt.MinImprovement = 1.5 }, "forecast.adapt.min_improvement"},
		{func(c *Config) { c.Plan.LeaseUnit = placement.Resources{} }, "plan.lease_unit.compute"},
		{func(c *Config) { c.Plan.TargetUtilization = 1.5 }, "plan.target_utilization"},
		{func(c *Config) { c.Plan.LeadTime = -time.Minute }, "plan.lead_time"},
		{func(c *Config) { c.Price = forecast.PriceConfig{Slope: 1, Exponent: 0, MaxMultiplier: 2} }, "price.exponent"},
		{func(c *Config) { c.MaxMargin = math.NaN() }, "max_margin"},
		{func(c *Config) { c.MaxBuyMultiplier = -1 }, "max_buy_multiplier"},
		{func(c *Config) { c.LeaseLatencySLO = -time.Millisecond }, "lease_latency_slo"},
		{func(c *Config) { c.AskTTL = -time.Second }, "ask_ttl"},
		{func(c *Config) { c.PendingTTL = -time.Second }, "pending_ttl"},
		{func(c *Config) { c.RecentAdjustments = -1 }, "recent_adjustments"},
	} {
		cfg := testConfig()
		tc.mod(&cfg)
		_, err := New(cfg)
		if err == nil || !strings.Contains(err.Error(), `"`+tc.field+`"`) || !errors.Is(err, placement.ErrInvalid) {
			t.Errorf("New with bad %s = %v; want an invalid-field error naming it", tc.field, err)
		}
	}
}

func TestNewFillsDefaults(t *testing.T) {
	c := newController(t, Config{Region: "eu-west-1", Plan: forecast.PlanConfig{LeaseUnit: gpu}})
	cfg, fc := c.Config(), c.ForecastConfig()
	if cfg.Interval != 5*time.Minute || cfg.Horizon != 2*time.Hour || cfg.History != 7*forecast.Day || cfg.Settle != 10*time.Second ||
		cfg.LedgerRetention != 72*time.Hour || cfg.MinObservations != 12 || cfg.Plan.LeadTime != 15*time.Minute ||
		cfg.AskTTL != 10*time.Minute || cfg.PendingTTL != 5*time.Minute || cfg.MaxMargin != 0.25 || cfg.MaxBuyMultiplier != 2 ||
		cfg.Price != forecast.DefaultPriceConfig() || cfg.Logger == nil {
		t.Errorf("defaults: %+v", cfg)
	}
	if fc.SeasonLength != 288 || fc.Horizon != 24 || fc.HistoryLimit != 7*288 || fc.Params != forecast.DefaultParams() {
		t.Errorf("forecast defaults: %+v", fc)
	}
}

// The same loop on the request streams placement/workload generates for
// the benchmark, for us-east-1 under its follow-the-sun envelope: Poisson
// arrivals with the LLM trace's request sizes (diurnal), and the trace's own
// minute-to-minute burstiness (trace). The second is so bursty that no
// forecast gets 5-minute buckets within 10 %; the yardstick is an oracle
// that knows the envelope and the mean request size — the best any
// forecast of the expected demand can do.
func TestForecastOnGeneratedWorkload(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		mode     workload.Mode
		maxMAPE  float64 // percent
		vsOracle float64 // most MAPE / oracle MAPE
	}{
		{workload.ModeDiurnal, 15, 1.25},
		{workload.ModeTrace, 100, 1.25},
	} {
		t.Run(string(tc.mode), func(t *testing.T) {
			t.Parallel()
			wcfg, err := workload.DefaultConfig(t0, "us-east-1")
			if err != nil {
				t.Fatal(err)
			}
			wcfg.RatePerSecond, wcfg.Mode, wcfg.MaxPrice, wcfg.Prices = 1, tc.mode, workload.MaxPriceMix{}, nil
			gen, err := workload.NewGenerator(wcfg, rand.New(rand.NewPCG(13, 14)))
			if err != nil {
				t.Fatal(err)
			}
			const days = 4
			var arrivals []arrival
			var gpuSeconds float64
			for _, a := range gen.Between(t0, t0.Add(days*forecast.Day)) {
				arrivals = append(arrivals, arrival{at: a.At, job: a.Job})
				gpuSeconds += a.GPUSeconds
			}
			c := newController(t, testConfig())
			s := newSim(t, c, 1e6, arrivals)
			s.run(t0, t0.Add(days*forecast.Day))
			v := c.View(t0.Add(days * forecast.Day))

			offset := wcfg.Regions[0].UTCOffset
			meanSize := gpuSeconds / float64(len(arrivals))
			iv := c.Config().Interval
			var oracle float64
			n := 0
			for b := t0.Add((days - 1) * forecast.Day); b.Before(t0.Add(days * forecast.Day)); b = b.Add(iv) {
				f := wcfg.RatePerSecond * wcfg.Envelope.At(b.Add(iv/2), offset) * meanSize * 3600
				if a := s.load[b]; a > 0 {
					oracle += math.Abs(f-a) / a
					n++
				}
			}
			oracle = 100 * oracle / float64(n)
			t.Logf("%d requests; %s %s horizon %s one-step %s; oracle MAPE %.1f%%", len(arrivals), v.Model, v.Params, v.Horizon, v.OneStep, oracle)
			if v.Model != forecast.ModelHoltWinters {
				t.Fatalf("model after %d days = %s", days, v.Model)
			}
			if v.Horizon.MAPE >= tc.maxMAPE || v.Horizon.MAPE > tc.vsOracle*oracle {
				t.Errorf("horizon MAPE %.1f%%; want under %.0f%% and within %.2f× the oracle's %.1f%%", v.Horizon.MAPE, tc.maxMAPE, tc.vsOracle, oracle)
			}
		})
	}
}
