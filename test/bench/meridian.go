package bench

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/meridian-mesh/meridian/node"
	"github.com/meridian-mesh/meridian/node/api"
	"github.com/meridian-mesh/meridian/node/simcluster"
)

// MeridianOptions tune how the benchmark drives the mesh; the zero value
// is what the benchmark uses.
type MeridianOptions struct {
	// Logger receives the agents' logs; nil discards them.
	Logger *slog.Logger
	// Tuning is every agent's Tuning; zero fields take node's defaults.
	Tuning node.Tuning
	// ReadyTimeout bounds how long the mesh may take to form (virtual
	// time); 0 means 10 minutes.
	ReadyTimeout time.Duration
	// Poll is how soon a client first asks again about a job that came
	// back pending; it backs off from there to 10 s (a placement's time
	// is read from the ledger, so polling only decides when the client
	// gives up). 0 means 100 ms.
	Poll time.Duration
	// RequestTimeout bounds one API call; 0 means 30 s.
	RequestTimeout time.Duration
	// Progress, when set, is called from Run's goroutine after each
	// simulated hour of arrivals with the virtual time simulated so far,
	// the run's length and the jobs submitted so far.
	Progress func(done, total time.Duration, submitted int)
	// NoMarket turns the market off: the ablation "meridian-no-market",
	// which should do what local-only does, through the real mesh.
	NoMarket bool
}

// Meridian returns the scheduler that is the real mesh: node/simcluster
// with every region's servers and workers (each one instance of the run,
// at the region's price), its market on. Each job is submitted through
// api.Service.SubmitJob on an agent of its origin region at its arrival
// time; a job that comes back pending is polled until it is placed, and
// cancelled if it is still pending when its window ends (its requests are
// gone by then). After the last job's end, every job's final status is read
// from its home region's ledger (Jobs, by region).
//
// Run must be called inside a testing/synctest bubble: it simulates the
// run's hours in virtual time, which outside a bubble would take as many
// real hours.
func Meridian(opts MeridianOptions) Scheduler {
	if opts.ReadyTimeout <= 0 {
		opts.ReadyTimeout = 10 * time.Minute
	}
	if opts.Poll <= 0 {
		opts.Poll = 100 * time.Millisecond
	}
	if opts.RequestTimeout <= 0 {
		opts.RequestTimeout = 30 * time.Second
	}
	return &meridian{opts: opts}
}

type meridian struct{ opts MeridianOptions }

// Name implements Scheduler.
func (m *meridian) Name() string {
	if m.opts.NoMarket {
		return "meridian-no-market"
	}
	return "meridian"
}

// jobRecord is what the clients saw of one job. Each record is written by
// the one goroutine that submits its job, and read after they all ended.
type jobRecord struct {
	placedAt time.Time // virtual time the client first saw it placed
	status   api.JobStatus
	retries  int
	err      string // why it was not placed, from the client's side
}

// Run implements Scheduler.
func (m *meridian) Run(ctx context.Context, w *World, jobs []Job) (_ Outcome, err error) {
	cfg := w.Config()
	logger := m.opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	regions := w.Regions()
	if cfg.Workers == 0 && cfg.Servers == 3 {
		// simcluster reads 0 workers next to 3 servers as its default of
		// 2, which would not be the world the baselines ran on.
		return Outcome{}, fmt.Errorf("meridian: -servers 3 -workers 0 cannot be run: node/simcluster takes 0 workers with 3 servers for its default of 2")
	}
	capacity := simcluster.NodeCapacity{Resources: w.NodeCapacity(), GPUType: w.Instance().Accelerator}
	started := time.Now()
	cluster, err := simcluster.Start(ctx, simcluster.Config{
		Topology: w.Topology(),
		Regions:  regions,
		Servers:  cfg.Servers,
		Workers:  cfg.Workers,
		Seed:     cfg.Seed,
		Capacity: func(region string, _ int) simcluster.NodeCapacity {
			c := capacity
			c.PricePerHour = w.Price(region)
			return c
		},
		Market: !m.opts.NoMarket,
		Logger: logger,
		Tuning: m.opts.Tuning,
		// The run is in a synctest bubble: a sync would take no virtual
		// time, only hold the clock (a quarter of a day run's wall time).
		NoSync: true,
	})
	if err != nil {
		return Outcome{}, fmt.Errorf("meridian: starting the mesh: %w", err)
	}
	defer func() {
		if cerr := cluster.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("meridian: closing the mesh: %w", cerr)
		}
		// memberlist's probe goroutines notice the shutdown on their next
		// tick; let virtual time reach it so none is left blocked.
		time.Sleep(time.Minute)
	}()
	rctx, cancel := context.WithTimeout(ctx, m.opts.ReadyTimeout)
	err = cluster.WaitReady(rctx)
	cancel()
	if err != nil {
		return Outcome{}, fmt.Errorf("meridian: the mesh did not form within %v: %w", m.opts.ReadyTimeout, err)
	}
	ready := time.Now()

	// Jobs keep their time of day when the mesh is ready before the run
	// starts (and not absurdly early); otherwise every arrival moves by
	// the same shift.
	var shift time.Duration
	if lead := w.Start().Sub(ready); lead < 0 || lead > time.Hour {
		shift = -lead
	}
	byRegion := map[string][]*node.Agent{}
	for _, a := range cluster.Agents() {
		byRegion[a.Region()] = append(byRegion[a.Region()], a)
	}
	for _, r := range regions {
		if len(byRegion[r]) == 0 {
			return Outcome{}, fmt.Errorf("meridian: region %s has no running agent", r)
		}
	}

	records := make([]jobRecord, len(jobs))
	next := map[string]int{} // round-robin over a region's agents
	var wg sync.WaitGroup
	reported := time.Duration(0)
	for i := range jobs {
		j := &jobs[i]
		if done := j.At.Sub(w.Start()).Truncate(time.Hour); m.opts.Progress != nil && done > reported {
			reported = done
			m.opts.Progress(done, w.End().Sub(w.Start()), i)
		}
		if d := time.Until(j.At.Add(shift)); d > 0 {
			select {
			case <-time.After(d):
			case <-ctx.Done():
				wg.Wait()
				return Outcome{}, fmt.Errorf("meridian: %w", ctx.Err())
			}
		}
		agents := byRegion[j.Origin]
		first := next[j.Origin] % len(agents)
		next[j.Origin]++
		wg.Go(func() {
			m.submit(ctx, agents, first, j, shift, &records[i])
		})
	}
	wg.Wait()
	if ctx.Err() != nil {
		return Outcome{}, fmt.Errorf("meridian: %w", ctx.Err())
	}

	// Let the last jobs run to their end and their workers report it,
	// then read every job's final status from its home ledger.
	last := w.End()
	for i := range jobs {
		last = maxTime(last, jobs[i].End())
	}
	if d := time.Until(last.Add(shift).Add(15 * time.Second)); d > 0 {
		select {
		case <-time.After(d):
		case <-ctx.Done():
			return Outcome{}, fmt.Errorf("meridian: %w", ctx.Err())
		}
	}
	ids := make(map[string]bool, len(jobs))
	for i := range jobs {
		ids[jobs[i].ID] = true
	}
	final, allocated, err := m.collect(ctx, regions, byRegion, ids, w.NodeCapacity().ComputePerHour)
	if err != nil {
		return Outcome{}, err
	}

	out := Outcome{Jobs: make([]JobResult, len(jobs))}
	states := map[api.JobState]int{}
	retries, missing, fromClient := 0, 0, 0
	for i := range jobs {
		j, rec := &jobs[i], &records[i]
		retries += rec.retries
		st, ok := final[j.ID]
		if !ok {
			missing++
			st = rec.status
		}
		states[st.State]++
		res := &out.Jobs[i]
		if rec.placedAt.IsZero() {
			res.Reason = rec.err
			if res.Reason == "" {
				res.Reason = fmt.Sprintf("%s: %s", st.State, st.Reason)
			}
			continue
		}
		if allocs := allocated[j.ID]; len(allocs) > 0 {
			*res = meshSegments(j, st, rec, allocs, shift)
			continue
		}
		// Its allocations are gone from the ledgers (pruned): one segment
		// as the client and the job's status saw it. What the job paid per
		// hour: its status says while it holds an allocation (for a traded
		// job, the trade's price); a finished job's status no longer does,
		// so the status the client saw when it was placed.
		fromClient++
		region, cost := st.Region, st.CostPerHour
		if region == "" {
			region = rec.status.Region
		}
		if cost == 0 {
			cost = rec.status.CostPerHour
		}
		at := rec.placedAt
		*res = JobResult{
			Placed: true, Region: region, Node: st.Node, Start: at.Add(-shift),
			CostPerHour: cost, PlacementLatency: max(0, at.Sub(j.At.Add(shift))),
			Traded: st.State == api.JobTraded || region != j.Origin,
		}
	}
	out.Notes = append(out.Notes,
		fmt.Sprintf("real mesh: %d regions × (%d servers + %d workers), market %s; formed in %v of virtual time; arrivals shifted by %v",
			len(regions), cfg.Servers, cfg.Workers, onOff(!m.opts.NoMarket), ready.Sub(started).Round(time.Millisecond), shift),
		fmt.Sprintf("placement latency: from arrival to the first allocation's commit in a ledger (for %d jobs whose allocation was gone, when the submitting client saw it placed)", fromClient),
		fmt.Sprintf("final job states: %s; %d submission retries; %d jobs not found in any ledger at the end", formatStates(states), retries, missing),
	)
	return out, nil
}

// submit submits job j through agents (starting with agents[first]) at
// the current virtual time and follows it until it is placed or its
// window ends. It records what it saw in rec.
func (m *meridian) submit(ctx context.Context, agents []*node.Agent, first int, j *Job, shift time.Duration, rec *jobRecord) {
	spec := api.JobSpec{
		ID:              j.ID,
		OriginRegion:    j.Origin,
		Demand:          j.Demand,
		LatencySLOMs:    j.LatencySLO.Milliseconds(),
		MaxPricePerHour: j.MaxPricePerHour,
		Priority:        j.Priority,
		DurationS:       int64(j.Duration / time.Second),
	}
	deadline := j.End().Add(shift)
	placed := func(st api.JobStatus) bool {
		switch st.State {
		case api.JobPlaced, api.JobTraded, api.JobRunning, api.JobCompleted:
			return true
		}
		return false
	}
	call := func(f func(ctx context.Context, a *node.Agent) error) error {
		backoff := 50 * time.Millisecond
		for k := first; ; k++ {
			cctx, cancel := context.WithTimeout(ctx, m.opts.RequestTimeout)
			err := f(cctx, agents[k%len(agents)])
			cancel()
			if err == nil || !retryable(err) || ctx.Err() != nil || !time.Now().Add(backoff).Before(deadline) {
				return err
			}
			rec.retries++
			time.Sleep(backoff)
			backoff = min(2*backoff, 2*time.Second)
		}
	}
	err := call(func(ctx context.Context, a *node.Agent) error {
		st, _, err := a.SubmitJob(ctx, spec)
		if err == nil {
			rec.status = st
		}
		return err
	})
	if err != nil {
		rec.err = "submission failed: " + err.Error()
		return
	}
	poll := m.opts.Poll
	for {
		if placed(rec.status) {
			rec.placedAt = time.Now()
			m.stopAtWindowEnd(j, deadline, call, rec)
			return
		}
		if rec.status.State.Terminal() {
			rec.err = fmt.Sprintf("%s: %s", rec.status.State, rec.status.Reason)
			return
		}
		if !time.Now().Add(poll).Before(deadline) {
			break
		}
		time.Sleep(poll)
		poll = min(poll*3/2, 10*time.Second)
		err := call(func(ctx context.Context, a *node.Agent) error {
			st, err := a.Job(ctx, j.ID)
			if err == nil {
				rec.status = st
			}
			return err
		})
		if err != nil && !retryable(err) {
			rec.err = "status failed: " + err.Error()
			return
		}
	}
	// Still pending as its window ends: its requests are gone, so the
	// client withdraws it.
	reason := rec.status.Reason
	_ = call(func(ctx context.Context, a *node.Agent) error {
		st, err := a.CancelJob(ctx, j.ID)
		if err == nil {
			rec.status = st
		}
		return err
	})
	if placed(rec.status) {
		// Placed between the last poll and the cancel: it ran until
		// cancelled, but too late for its window; count it unplaced.
		reason = "placed only after its window ended"
	}
	rec.err = "still pending when its window ended: " + reason
}

// stopAtWindowEnd stops job j at its window's end (deadline) if it would
// run past it: its requests end with the window, so the client stops it
// then, as the baselines' jobs end, rather than let it hold capacity the
// next window's jobs need. The time it did not run is charged as unserved
// (Evaluate). A job placed on arrival ends with its window by itself
// unless the mesh moved it (preemption, a lost node): placed again, its new
// allocation runs the job's whole duration from there. So the client looks
// once, a second after the window's end (the tolerance of a placement's
// latency), and stops it if it still runs; one placed late is stopped at
// the end itself.
func (m *meridian) stopAtWindowEnd(j *Job, deadline time.Time, call func(func(context.Context, *node.Agent) error) error, rec *jobRecord) {
	if !rec.placedAt.Add(j.Duration).After(deadline.Add(time.Second)) {
		time.Sleep(time.Until(deadline.Add(time.Second)))
		var st api.JobStatus
		err := call(func(ctx context.Context, a *node.Agent) error {
			var err error
			st, err = a.Job(ctx, j.ID)
			return err
		})
		if err != nil || st.State.Terminal() {
			return
		}
	} else {
		time.Sleep(time.Until(deadline))
	}
	_ = call(func(ctx context.Context, a *node.Agent) error {
		_, err := a.CancelJob(ctx, j.ID)
		return err
	})
}

// retryable reports errors a client retries: no leader, a region that
// did not answer, a request that timed out.
func retryable(err error) bool {
	return errors.Is(err, api.ErrNoLeader) || errors.Is(err, api.ErrUnavailable) || errors.Is(err, context.DeadlineExceeded)
}

// meshSegments is the result of placed job j from its allocations in the
// ledgers (in the mesh's virtual time, which is the run's shifted by
// shift): one Segment per allocation, so that a job the mesh moved is
// charged for each place it ran in. st is the job's final status and rec
// what its client saw, for a cost an allocation does not say.
func meshSegments(j *Job, st api.JobStatus, rec *jobRecord, allocs []allocInfo, shift time.Duration) JobResult {
	segs := make([]Segment, 0, len(allocs))
	at := rec.placedAt // the first commit, for the placement latency
	traded := st.State == api.JobTraded
	for _, al := range allocs {
		at = minTime(at, al.created)
		start := al.created.Add(-shift)
		// A live allocation holds its capacity until the client stops the
		// job at its window's end (or the job completes, which Evaluate
		// reads as the same: a job runs to its window's end).
		end := j.End()
		if !al.stopped.IsZero() {
			end = al.stopped.Add(-shift)
		}
		cost := al.cost
		if cost == 0 {
			// Its node is gone from the ledger: what the job's status said.
			cost = cmp.Or(st.CostPerHour, rec.status.CostPerHour)
		}
		segs = append(segs, Segment{Region: al.region, Node: al.node, Start: start, End: maxTime(start, end), CostPerHour: cost})
		traded = traded || al.region != j.Origin
	}
	slices.SortFunc(segs, func(a, b Segment) int {
		return cmp.Or(a.Start.Compare(b.Start), a.End.Compare(b.End), cmp.Compare(a.Region, b.Region), cmp.Compare(a.Node, b.Node))
	})
	last := segs[len(segs)-1]
	return JobResult{
		Placed: true, Region: last.Region, Node: last.Node, Start: segs[0].Start, CostPerHour: last.CostPerHour,
		PlacementLatency: max(0, at.Sub(j.At.Add(shift))), Traded: traded, Segments: segs,
	}
}

// allocInfo is one of a job's allocations, as a ledger has it.
type allocInfo struct {
	created time.Time
	stopped time.Time // zero while it is live
	// cost is what the job was charged per hour: for a traded allocation
	// the trade's price (the buyer's ledger has it), for a local one its
	// node's; zero when neither is known.
	cost         float64
	region, node string
	tradeID      string // the trade that bought it, if any
}

// liveAlloc reports allocation states in which an allocation still holds
// its capacity; every other state is a stop, at its UpdatedAt.
func liveAlloc(s api.AllocState) bool {
	return s == api.AllocPending || s == api.AllocRunning
}

// collect reads every job's final status from its home region's ledger,
// and every allocation of the jobs in ids (not leases, not other jobs) from
// the ledgers of the regions the allocations are in. A traded allocation
// is charged its trade's price, read from the buyer's trades: a price per
// node-hour, of which the job pays its share (its compute over
// nodeCompute, each node's).
func (m *meridian) collect(ctx context.Context, regions []string, byRegion map[string][]*node.Agent, ids map[string]bool, nodeCompute float64) (map[string]api.JobStatus, map[string][]allocInfo, error) {
	// ask calls f on the region's agents in turn until one answers.
	ask := func(r string, f func(ctx context.Context, a *node.Agent) error) error {
		var err error
		for attempt, a := range append(byRegion[r], byRegion[r]...) {
			cctx, cancel := context.WithTimeout(ctx, m.opts.RequestTimeout)
			err = f(cctx, a)
			cancel()
			if err == nil || !retryable(err) {
				return err
			}
			time.Sleep(time.Duration(attempt+1) * 100 * time.Millisecond)
		}
		return err
	}
	final := map[string]api.JobStatus{}
	allocated := map[string][]allocInfo{}
	tradeCost := map[string]float64{} // by trade ID, per hour of the job
	for _, r := range regions {
		cursor := ""
		for {
			var list api.JobList
			err := ask(r, func(ctx context.Context, a *node.Agent) error {
				var err error
				list, err = a.Jobs(ctx, api.JobFilter{Region: r, Limit: api.MaxJobsLimit, Cursor: cursor})
				return err
			})
			if err != nil {
				return nil, nil, fmt.Errorf("meridian: listing the jobs of %s: %w", r, err)
			}
			for _, st := range list.Jobs {
				if st.HomeRegion == r {
					final[st.ID] = st
				}
			}
			if list.NextCursor == "" {
				break
			}
			cursor = list.NextCursor
		}
		var allocs []api.Allocation
		err := ask(r, func(ctx context.Context, a *node.Agent) error {
			var err error
			allocs, err = a.Allocations(ctx, api.AllocationFilter{Region: r})
			return err
		})
		if err != nil {
			return nil, nil, fmt.Errorf("meridian: listing the allocations of %s: %w", r, err)
		}
		for _, al := range allocs {
			if !ids[al.JobID] {
				continue
			}
			ai := allocInfo{created: al.CreatedAt, cost: al.CostPerHour, region: al.Region, node: al.Node, tradeID: al.TradeID}
			if !liveAlloc(al.State) {
				ai.stopped = maxTime(al.UpdatedAt, al.CreatedAt)
			}
			allocated[al.JobID] = append(allocated[al.JobID], ai)
		}
		var trades []api.Trade
		err = ask(r, func(ctx context.Context, a *node.Agent) error {
			var err error
			trades, err = a.Trades(ctx)
			return err
		})
		if err != nil {
			return nil, nil, fmt.Errorf("meridian: listing the trades of %s: %w", r, err)
		}
		for _, tr := range trades {
			// The buyer's record of a trade has the price it pays; the
			// seller's lists its node's cost.
			if tr.BuyerRegion == r && tr.SellerRegion != r && ids[tr.JobID] && tr.PricePerHour > 0 && nodeCompute > 0 {
				tradeCost[tr.ID] = tr.PricePerHour * tr.Resources.ComputePerHour / nodeCompute
			}
		}
	}
	// Allocations are listed by the region that holds them, trades by the
	// buyer: match them once every region has been read.
	for _, jobAllocs := range allocated {
		for k := range jobAllocs {
			if c, ok := tradeCost[jobAllocs[k].tradeID]; ok {
				jobAllocs[k].cost = c
			}
		}
	}
	return final, allocated, nil
}

func formatStates(states map[api.JobState]int) string {
	var parts []string
	for s, n := range states {
		parts = append(parts, fmt.Sprintf("%s %d", s, n))
	}
	sort.Strings(parts)
	return strings.Join(parts, ", ")
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}
