package node

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/meridian-mesh/meridian/consensus"
	"github.com/meridian-mesh/meridian/gossip"
	"github.com/meridian-mesh/meridian/node/api"
)

var _ api.Service = (*Agent)(nil)

// SubmitJob implements api.Service. The job is committed in its home
// region's ledger by that region's leader: this node forwards the request
// there unless it is that leader. The answer waits (up to
// Tuning.SubmitWait) for the leader's first placement pass, so a job that
// fits at once comes back placed.
func (a *Agent) SubmitJob(ctx context.Context, spec api.JobSpec) (api.JobStatus, bool, error) {
	spec = spec.Normalized()
	home := spec.HomeRegion
	if submissionOf(ctx) == "" {
		// The entry node names this submission, so the home leader can
		// tell a retry of it (after an answer lost to a crash) from
		// another client's resubmission.
		ctx = withSubmission(ctx, newSubmission())
	}
	if !a.knownRegion(home) {
		return api.JobStatus{}, false, &api.FieldError{Field: "home_region",
			Message: fmt.Sprintf("region %q has no node in the mesh", home)}
	}
	if home != a.cfg.Region || !a.IsLeader() {
		var st api.JobStatus
		var created bool
		err := a.forward(ctx, home, func(c *api.Client) error {
			var err error
			st, created, err = c.SubmitJob(ctx, spec)
			return err
		})
		return st, created, err
	}
	pj, err := spec.PlacementJob()
	if err != nil {
		return api.JobStatus{}, false, err
	}
	var task *consensus.TaskSpec
	if spec.Driver != api.DriverSim || len(spec.Command) > 0 || len(spec.Env) > 0 {
		task = &consensus.TaskSpec{Driver: spec.Driver, Command: spec.Command, Env: spec.Env}
	}
	wait := make(chan struct{})
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return api.JobStatus{}, false, errNotServing
	}
	a.waiters[spec.ID] = append(a.waiters[spec.ID], wait)
	a.mu.Unlock()
	res, err := a.server.Propose(ctx, consensus.SubmitJob{Job: pj, Task: task, Submission: submissionOf(ctx)})
	if err == nil {
		err = res[0].Err
	}
	if err != nil {
		a.dropWaiter(spec.ID, wait)
		return api.JobStatus{}, false, ledgerErr(err)
	}
	created := res[0].Created
	if created {
		a.metrics.submitted.Inc()
		poke(a.placePoke)
		t := time.NewTimer(a.cfg.Tuning.SubmitWait)
		select {
		case <-wait:
		case <-t.C:
		case <-ctx.Done():
		}
		t.Stop()
	}
	a.dropWaiter(spec.ID, wait)
	j, ok := a.server.Ledger().Job(spec.ID)
	if !ok {
		// Only a Prune of an ended job could remove it this fast.
		return api.JobStatus{}, false, fmt.Errorf("job %s: committed but no longer in the ledger: %w", spec.ID, api.ErrNotFound)
	}
	return a.jobStatus(a.server.Ledger(), j), created, nil
}

func (a *Agent) dropWaiter(id string, w chan struct{}) {
	a.mu.Lock()
	defer a.mu.Unlock()
	ws := a.waiters[id]
	if i := slices.Index(ws, w); i >= 0 {
		ws = slices.Delete(ws, i, i+1)
	}
	if len(ws) == 0 {
		delete(a.waiters, id)
	} else {
		a.waiters[id] = ws
	}
}

// ledgerErr maps a consensus error to the API's sentinels.
func ledgerErr(err error) error {
	switch {
	// The ledger's message starts with its sentinel ("conflict: job ..."),
	// the API's end with theirs, which is the same word: say it once.
	case errors.Is(err, consensus.ErrConflict):
		return fmt.Errorf("%s: %w", strings.TrimPrefix(err.Error(), consensus.ErrConflict.Error()+": "), api.ErrConflict)
	case errors.Is(err, consensus.ErrNotFound):
		return fmt.Errorf("%s: %w", strings.TrimPrefix(err.Error(), consensus.ErrNotFound.Error()+": "), api.ErrNotFound)
	case errors.Is(err, consensus.ErrInvalid):
		var ce *consensus.CommandError
		if errors.As(err, &ce) {
			return &api.FieldError{Field: ce.Subject, Message: ce.Message}
		}
		return &api.FieldError{Message: err.Error()}
	case errors.Is(err, consensus.ErrNoLeader), errors.Is(err, consensus.ErrNotLeader):
		return fmt.Errorf("%v: %w", err, api.ErrNoLeader)
	case errors.Is(err, consensus.ErrOutcomeUnknown), errors.Is(err, consensus.ErrShutdown):
		return fmt.Errorf("%v (retry: the request is idempotent): %w", err, api.ErrUnavailable)
	}
	return err
}

// regionLedger returns a linearizable view of this node's region ledger,
// read on its leader. It fails when this node is not the leader.
func (a *Agent) regionLedger(ctx context.Context) (*consensus.Ledger, error) {
	if !a.IsLeader() {
		return nil, fmt.Errorf("not the leader: %w", api.ErrNoLeader)
	}
	l, err := a.server.ConsistentLedger(ctx)
	if err != nil {
		return nil, ledgerErr(err)
	}
	return l, nil
}

// inRegion runs local on this region's leader, or forwards call to it.
// Either way only this region's ledger answers.
func (a *Agent) inRegion(ctx context.Context, region string, local func(l *consensus.Ledger) error, call func(ctx context.Context, c *api.Client) error) error {
	if region == a.cfg.Region && a.IsLeader() {
		l, err := a.regionLedger(ctx)
		if err != nil {
			return err
		}
		return local(l)
	}
	ctx = withRegionScope(ctx)
	return a.forward(ctx, region, func(c *api.Client) error { return call(ctx, c) })
}

// fanOut runs f for every region gossip knows (or only this one, for a
// region-scoped request) concurrently and collects the regions that failed.
func (a *Agent) fanOut(ctx context.Context, f func(ctx context.Context, region string) error) map[string]error {
	regions := a.regions()
	if regionScoped(ctx) {
		regions = regions[:1]
	}
	var mu sync.Mutex
	failed := map[string]error{}
	var wg sync.WaitGroup
	for _, r := range regions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(ctx, r); err != nil {
				mu.Lock()
				failed[r] = err
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return failed
}

// Job implements api.Service: it asks this node's region first, then every
// other region, since a job ID does not say which region owns it.
func (a *Agent) Job(ctx context.Context, id string) (api.JobStatus, error) {
	st, _, err := a.findJob(ctx, id)
	return st, err
}

// findJob returns the job and its home region.
func (a *Agent) findJob(ctx context.Context, id string) (api.JobStatus, string, error) {
	lookup := func(ctx context.Context, region string) (api.JobStatus, error) {
		var st api.JobStatus
		err := a.inRegion(ctx, region, func(l *consensus.Ledger) error {
			j, ok := l.Job(id)
			if !ok {
				return fmt.Errorf("job %q: %w", id, api.ErrNotFound)
			}
			st = a.jobStatus(l, j)
			return nil
		}, func(ctx context.Context, c *api.Client) error {
			var err error
			st, err = c.Job(ctx, id)
			return err
		})
		return st, err
	}
	st, err := lookup(ctx, a.cfg.Region)
	if err == nil || regionScoped(ctx) || !errors.Is(err, api.ErrNotFound) && ctx.Err() != nil {
		return st, a.cfg.Region, err
	}
	firstErr := err
	var mu sync.Mutex
	var found *api.JobStatus
	var foundRegion string
	failed := a.fanOut(ctx, func(ctx context.Context, region string) error {
		if region == a.cfg.Region {
			if !errors.Is(firstErr, api.ErrNotFound) {
				return firstErr
			}
			return nil
		}
		st, err := lookup(ctx, region)
		if err != nil {
			if errors.Is(err, api.ErrNotFound) {
				return nil
			}
			return err
		}
		mu.Lock()
		found, foundRegion = &st, region
		mu.Unlock()
		return nil
	})
	if found != nil {
		return *found, foundRegion, nil
	}
	if len(failed) > 0 {
		return api.JobStatus{}, "", fmt.Errorf("job %q not found in the regions that answered; %s did not: %w",
			id, failedRegions(failed), api.ErrUnavailable)
	}
	return api.JobStatus{}, "", fmt.Errorf("job %q: %w", id, api.ErrNotFound)
}

func failedRegions(failed map[string]error) string {
	var parts []string
	for r, err := range failed {
		parts = append(parts, r+" ("+err.Error()+")")
	}
	slices.Sort(parts)
	return strings.Join(parts, ", ")
}

// Jobs implements api.Service: the region's leader answers for its jobs;
// without a region filter every region is asked and the pages merged.
func (a *Agent) Jobs(ctx context.Context, f api.JobFilter) (api.JobList, error) {
	if f.Limit <= 0 {
		f.Limit = api.DefaultJobsLimit
	}
	local := func(l *consensus.Ledger) api.JobList {
		var out api.JobList
		jobs := l.Jobs()
		slices.SortFunc(jobs, func(x, y consensus.Job) int { return cmp.Compare(x.ID, y.ID) })
		for _, j := range jobs {
			if j.ID <= f.Cursor {
				continue
			}
			st := a.jobStatus(l, j)
			if f.State != "" && st.State != f.State {
				continue
			}
			if len(out.Jobs) == f.Limit {
				out.NextCursor = out.Jobs[len(out.Jobs)-1].ID
				break
			}
			out.Jobs = append(out.Jobs, st)
		}
		return out
	}
	one := func(ctx context.Context, region string) (api.JobList, error) {
		var out api.JobList
		sub := f
		sub.Region = ""
		err := a.inRegion(ctx, region, func(l *consensus.Ledger) error {
			out = local(l)
			return nil
		}, func(ctx context.Context, c *api.Client) error {
			var err error
			out, err = c.Jobs(ctx, sub)
			return err
		})
		return out, err
	}
	if f.Region != "" {
		if !a.knownRegion(f.Region) {
			return api.JobList{}, &api.FieldError{Field: "region", Message: fmt.Sprintf("region %q has no node in the mesh", f.Region)}
		}
		return one(ctx, f.Region)
	}
	var mu sync.Mutex
	var all []api.JobStatus
	more := false
	failed := a.fanOut(ctx, func(ctx context.Context, region string) error {
		l, err := one(ctx, region)
		if err != nil {
			return err
		}
		mu.Lock()
		all = append(all, l.Jobs...)
		more = more || l.NextCursor != ""
		mu.Unlock()
		return nil
	})
	if len(failed) > 0 {
		return api.JobList{}, fmt.Errorf("listing jobs: %s did not answer: %w", failedRegions(failed), api.ErrUnavailable)
	}
	slices.SortFunc(all, func(x, y api.JobStatus) int { return cmp.Compare(x.ID, y.ID) })
	out := api.JobList{Jobs: all}
	if len(all) > f.Limit {
		out.Jobs = all[:f.Limit]
		more = true
	}
	if more && len(out.Jobs) > 0 {
		out.NextCursor = out.Jobs[len(out.Jobs)-1].ID
	}
	if out.Jobs == nil {
		out.Jobs = []api.JobStatus{}
	}
	return out, nil
}

// CancelJob implements api.Service: the job's home leader commits the
// cancel, which stops its allocation.
func (a *Agent) CancelJob(ctx context.Context, id string) (api.JobStatus, error) {
	st, home, err := a.findJob(ctx, id)
	if err != nil {
		return api.JobStatus{}, err
	}
	if st.State.Terminal() {
		return st, nil
	}
	if home != a.cfg.Region || !a.IsLeader() {
		var out api.JobStatus
		ctx := withRegionScope(ctx)
		err := a.forward(ctx, home, func(c *api.Client) error {
			var err error
			out, err = c.CancelJob(ctx, id)
			return err
		})
		return out, err
	}
	res, err := a.server.Propose(ctx, consensus.SetJobState{JobID: id, State: consensus.JobCancelled, Reason: "cancelled by a client"})
	if err == nil && res[0].Err != nil && !errors.Is(res[0].Err, consensus.ErrInvalidTransition) {
		err = res[0].Err
	}
	if err != nil {
		return api.JobStatus{}, ledgerErr(err)
	}
	l := a.server.Ledger()
	j, ok := l.Job(id)
	if !ok {
		return api.JobStatus{}, fmt.Errorf("job %q: %w", id, api.ErrNotFound)
	}
	if j.Remote != nil && a.desk != nil {
		poke(a.placePoke)
	}
	return a.jobStatus(l, j), nil
}

// Nodes implements api.Service from gossip. A node's allocation count
// comes from this region's ledger where this node holds it (a server, for
// its own region's nodes); for any other node — another region's, or any
// node when this one is a worker — it is the number of tasks the node
// last reported running in its gossip record (Capacity.QueueLength), which
// lags by up to the capacity interval and does not count capacity held
// for a lease, rather than a 0 that says nothing.
func (a *Agent) Nodes(ctx context.Context) ([]api.NodeStatus, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	records := map[string]gossip.Record{}
	for _, r := range a.gossip.Records() {
		records[r.Node] = r
	}
	var l *consensus.Ledger
	var leaderRaft string
	if a.server != nil {
		l = a.server.Ledger()
		_, leaderRaft, _ = a.server.Leader()
	}
	var out []api.NodeStatus
	for _, m := range a.gossip.Members() {
		ns := api.NodeStatus{Name: m.Name, Region: m.Region, Addr: m.HTTPAddr, State: memberState(m.State),
			UpdatedAt: m.Since}
		if r, ok := records[m.Name]; ok {
			ns.Total, ns.Free, ns.PricePerHour, ns.GPUType = r.Total, r.Free, r.PricePerHour, r.GPUType
			ns.Leader = r.Market != nil && r.Market.Leader
			ns.Allocations = r.QueueLength
			if r.UpdatedAt.After(ns.UpdatedAt) {
				ns.UpdatedAt = r.UpdatedAt
			}
		}
		if l != nil && m.Region == a.cfg.Region {
			ns.Allocations = 0
			for _, al := range l.NodeAllocations(m.Name) {
				if al.Live() {
					ns.Allocations++
				}
			}
			ns.Leader = leaderRaft != "" && m.RaftAddr == leaderRaft
		}
		if m.Name == a.cfg.Name {
			ns.Leader = a.IsLeader()
		} else if d, ok := a.gossip.EstimateRTT(a.cfg.Name, m.Name); ok {
			ms := float64(d) / float64(time.Millisecond)
			ns.RTTMs = &ms
		}
		out = append(out, ns)
	}
	slices.SortFunc(out, func(x, y api.NodeStatus) int {
		return cmp.Or(cmp.Compare(x.Region, y.Region), cmp.Compare(x.Name, y.Name))
	})
	return out, nil
}

func memberState(s gossip.MemberState) api.MemberState {
	switch s {
	case gossip.StateAlive:
		return api.MemberAlive
	case gossip.StateSuspect:
		return api.MemberSuspect
	case gossip.StateLeft:
		return api.MemberLeft
	}
	return api.MemberDead
}

// Regions implements api.Service from gossip's region summaries and RTT
// estimates.
func (a *Agent) Regions(ctx context.Context) (api.RegionsView, error) {
	if err := ctx.Err(); err != nil {
		return api.RegionsView{}, err
	}
	view := api.RegionsView{RTTMs: map[string]map[string]float64{}}
	sums := a.gossip.RegionSummaries()
	var leaderName string
	if a.server != nil {
		leaderName, _, _ = a.server.Leader()
	}
	rtt := regionRTT{a.gossip, a.cfg.Region}
	// Other regions' leaders, as their servers claim in gossip (the
	// highest term wins).
	claimed := map[string]string{}
	terms := map[string]uint64{}
	for _, r := range a.gossip.Records() {
		if r.Market != nil && r.Market.Leader && r.Market.Term >= terms[r.Region] {
			claimed[r.Region], terms[r.Region] = r.Node, r.Market.Term
		}
	}
	for _, s := range sums {
		rs := api.RegionSummary{
			Region:               s.Region,
			Members:              api.MemberCounts{Alive: s.Alive, Suspect: s.Suspect, Dead: s.Failed},
			Total:                s.Total,
			Free:                 s.Free,
			CheapestPricePerHour: s.CheapestPricePerHour,
		}
		rs.Leader = claimed[s.Region]
		if s.Region == a.cfg.Region && a.server != nil {
			rs.Leader = leaderName
			if c := a.demand.Load(); c != nil {
				v := c.View(time.Now())
				rs.Forecast, rs.Adjustments = v.Forecast, v.Adjustments
			}
		}
		view.Regions = append(view.Regions, rs)
		row := map[string]float64{}
		for _, t := range sums {
			if d, ok := rtt.RegionRTT(s.Region, t.Region); ok {
				row[t.Region] = float64(d) / float64(time.Millisecond)
			}
		}
		view.RTTMs[s.Region] = row
	}
	return view, nil
}

// Allocations implements api.Service: each region's leader answers for the
// allocations its ledger holds; without a region filter every region is
// asked.
func (a *Agent) Allocations(ctx context.Context, f api.AllocationFilter) ([]api.Allocation, error) {
	one := func(ctx context.Context, region string) ([]api.Allocation, error) {
		var out []api.Allocation
		sub := f
		sub.Region = ""
		err := a.inRegion(ctx, region, func(l *consensus.Ledger) error {
			for _, al := range l.Allocations() {
				v := a.allocation(l, al)
				if (f.JobID == "" || v.JobID == f.JobID) && (f.Node == "" || v.Node == f.Node) && (f.State == "" || v.State == f.State) {
					out = append(out, v)
				}
			}
			return nil
		}, func(ctx context.Context, c *api.Client) error {
			var err error
			out, err = c.Allocations(ctx, sub)
			return err
		})
		return out, err
	}
	var all []api.Allocation
	if f.Region != "" {
		if !a.knownRegion(f.Region) {
			return nil, &api.FieldError{Field: "region", Message: fmt.Sprintf("region %q has no node in the mesh", f.Region)}
		}
		var err error
		if all, err = one(ctx, f.Region); err != nil {
			return nil, err
		}
	} else {
		var mu sync.Mutex
		failed := a.fanOut(ctx, func(ctx context.Context, region string) error {
			got, err := one(ctx, region)
			if err != nil {
				return err
			}
			mu.Lock()
			all = append(all, got...)
			mu.Unlock()
			return nil
		})
		if len(failed) > 0 {
			return nil, fmt.Errorf("listing allocations: %s did not answer: %w", failedRegions(failed), api.ErrUnavailable)
		}
	}
	slices.SortFunc(all, func(x, y api.Allocation) int { return cmp.Or(cmp.Compare(x.ID, y.ID), cmp.Compare(x.Region, y.Region)) })
	if all == nil {
		all = []api.Allocation{}
	}
	return all, nil
}

// Trades implements api.Service from this region's ledger.
func (a *Agent) Trades(ctx context.Context) ([]api.Trade, error) {
	var out []api.Trade
	err := a.inRegion(ctx, a.cfg.Region, func(l *consensus.Ledger) error {
		out = a.trades(l)
		return nil
	}, func(ctx context.Context, c *api.Client) error {
		var err error
		out, err = c.Trades(ctx)
		return err
	})
	if out == nil {
		out = []api.Trade{}
	}
	return out, err
}

// Health implements api.Service.
func (a *Agent) Health(ctx context.Context) (api.Health, error) {
	if err := ctx.Err(); err != nil {
		return api.Health{}, err
	}
	h := api.Health{Status: api.HealthOK, Node: a.cfg.Name, Region: a.cfg.Region, Role: string(gossip.RoleWorker),
		RaftState: "none", Version: a.cfg.Version}
	st := a.gossip.Stats()
	h.Members = api.MemberCounts{Alive: st.Alive, Suspect: st.Suspect, Dead: st.Failed}
	a.mu.Lock()
	closed := a.closed || a.left
	a.mu.Unlock()
	if a.server != nil {
		h.Role = string(gossip.RoleServer)
		stats := a.server.Stats()
		h.RaftState = strings.ToLower(stats.State)
		h.Leader, _, _ = a.server.Leader()
		if h.Leader == "" {
			h.Status = api.HealthDegraded
		}
	}
	if closed {
		h.Status = api.HealthUnavailable
	}
	return h, nil
}
