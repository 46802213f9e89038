package node

import (
	"context"
	"time"

	"github.com/meridian-mesh/meridian/consensus"
	"github.com/meridian-mesh/meridian/node/loop"
	"github.com/meridian-mesh/meridian/placement"
	"github.com/meridian-mesh/meridian/placement/forecast"
	"github.com/meridian-mesh/meridian/placement/workload"
)

// demandLoop is the region leader's collect → forecast → allocate-ahead →
// feed-back loop (node/loop), for one term of leadership. The controller
// is safe for concurrent use (the API reads its view); admitted is owned by
// the leader's duty goroutine.
type demandLoop struct {
	c        *loop.Controller
	admitted map[string]bool // jobs already counted, so none counts twice
}

// leaseUnit is what one lease buys: one node of the region's ledger (the
// largest), or the reference node of the throughput model (8 A100s) while
// the ledger has none.
func leaseUnit(l *consensus.Ledger) placement.Resources {
	var unit placement.Resources
	for _, n := range l.Nodes() {
		if n.Total.ComputePerHour > unit.ComputePerHour {
			unit = n.Total
		}
	}
	if unit.ComputePerHour <= 0 {
		unit = workload.DefaultThroughput().NodeCapacity(8)
	}
	return unit
}

// startDemandLoop rebuilds the region's demand series from the ledger, as
// every new leader does, so the forecast survives leader changes.
func (a *Agent) startDemandLoop(now time.Time) *demandLoop {
	l := a.server.Ledger()
	c, err := loop.New(loop.Config{
		Region:   a.cfg.Region,
		Interval: a.cfg.Tuning.DemandInterval,
		Plan:     forecast.PlanConfig{LeaseUnit: leaseUnit(l)},
		Logger:   a.log.With("component", "demand-loop"),
	})
	if err != nil {
		a.log.Error("demand loop", "err", err)
		return nil
	}
	jobs := l.Jobs()
	rep, err := c.Rebuild(now, jobs)
	if err != nil {
		a.log.Error("demand loop rebuild", "err", err)
		return nil
	}
	a.log.Debug("demand series rebuilt from the ledger", "report", rep)
	d := &demandLoop{c: c, admitted: make(map[string]bool, len(jobs))}
	for _, j := range jobs {
		d.admitted[j.ID] = true
	}
	a.demand.Store(c)
	return d
}

// admit counts the jobs of a placement pass the loop has not seen yet,
// with the outcome of their first pass.
func (d *demandLoop) admit(a *Agent, jobs []consensus.Job, outcome func(id string) loop.Outcome) {
	if d == nil {
		return
	}
	for _, j := range jobs {
		if d.admitted[j.ID] {
			continue
		}
		d.admitted[j.ID] = true
		if err := d.c.Admitted(j.Submitted, j.Spec, outcome(j.ID)); err != nil {
			a.log.Debug("demand loop skipped a job", "job", j.ID, "err", err)
		}
	}
}

// forget drops jobs the ledger no longer holds from the admitted set.
func (d *demandLoop) forget(l *consensus.Ledger) {
	if d == nil || len(d.admitted) < 4096 {
		return
	}
	live := map[string]bool{}
	for _, j := range l.Jobs() {
		live[j.ID] = true
	}
	for id := range d.admitted {
		if !live[id] {
			delete(d.admitted, id)
		}
	}
}

// tick runs one step of the loop: forecast, and the decision to buy ahead
// or to advertise surplus, which the market carries out.
func (d *demandLoop) tick(ctx context.Context, a *Agent, now time.Time) {
	if d == nil {
		return
	}
	l := a.server.Ledger()
	dec, err := d.c.Tick(now, loop.CapacityOf(l.Nodes(), l.Leases()))
	if err != nil {
		a.log.Warn("demand loop tick", "err", err)
		return
	}
	a.log.Debug("demand loop decision", "action", dec.Action, "reason", dec.Reason, "price_multiplier", dec.PriceMultiplier)
	if a.desk == nil {
		return
	}
	if planner, ok := a.desk.(leasePlanner); ok {
		if err := planner.Plan(ctx, dec); err != nil && ctx.Err() == nil {
			a.log.Warn("market did not act on the demand plan", "action", dec.Action, "err", err)
		}
		if dec.Buy != nil {
			d.c.Resolved(now, dec.Buy.ID)
		}
	}
}

// leasePlanner is what the market offers the demand loop: buying a lease
// ahead of a forecast deficit, advertising an ask for a forecast surplus,
// and pricing by utilization.
type leasePlanner interface {
	Plan(ctx context.Context, d loop.Decision) error
}
