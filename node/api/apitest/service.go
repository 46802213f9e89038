// Package apitest provides an in-memory api.Service for the tests of code
// that serves or calls the API: the handler, the client and the CLI. It keeps
// jobs in a map with the same idempotency, conflict, pagination and cancel
// rules a real agent follows, serves the mesh views a test sets, and can be
// told to fail or block a method. Production code never imports it.
package apitest

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/meridian-mesh/meridian/node/api"
)

// Hook, when set for a method, runs before the method does its work; a
// non-nil error is returned instead of the method's result. A hook may block
// on ctx to simulate a slow commit.
type Hook func(ctx context.Context) error

// Service is an in-memory api.Service. One mutex guards all its state; it
// is safe for concurrent use.
type Service struct {
	mu      sync.Mutex
	now     func() time.Time
	regions []string // known regions; empty accepts any
	jobs    map[string]*api.JobStatus
	nodes   []api.NodeStatus
	view    api.RegionsView
	allocs  []api.Allocation
	trades  []api.Trade
	health  api.Health
	hooks   map[string]Hook
}

var _ api.Service = (*Service)(nil)

// New returns an empty Service that knows the given regions (a submit with
// another origin or home region is refused, as a real agent refuses a region
// gossip has never heard of) and reads time from now.
func New(now func() time.Time, regions ...string) *Service {
	return &Service{
		now:     now,
		regions: slices.Clone(regions),
		jobs:    make(map[string]*api.JobStatus),
		health:  api.Health{Status: api.HealthOK},
		hooks:   make(map[string]Hook),
	}
}

// SetHook sets (or, with nil, clears) the hook of a Service method, named
// as in the interface ("SubmitJob", "Jobs", ...).
func (s *Service) SetHook(method string, h Hook) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if h == nil {
		delete(s.hooks, method)
		return
	}
	s.hooks[method] = h
}

// FailWith makes a method return err until cleared with SetHook(method, nil).
func (s *Service) FailWith(method string, err error) {
	s.SetHook(method, func(context.Context) error { return err })
}

// SetNodes sets what Nodes returns.
func (s *Service) SetNodes(n []api.NodeStatus) { s.mu.Lock(); s.nodes = slices.Clone(n); s.mu.Unlock() }

// SetRegions sets what Regions returns.
func (s *Service) SetRegions(v api.RegionsView) { s.mu.Lock(); s.view = v; s.mu.Unlock() }

// SetAllocations sets the allocations Allocations filters.
func (s *Service) SetAllocations(a []api.Allocation) {
	s.mu.Lock()
	s.allocs = slices.Clone(a)
	s.mu.Unlock()
}

// SetTrades sets what Trades returns.
func (s *Service) SetTrades(t []api.Trade) { s.mu.Lock(); s.trades = slices.Clone(t); s.mu.Unlock() }

// SetHealth sets what Health returns.
func (s *Service) SetHealth(h api.Health) { s.mu.Lock(); s.health = h; s.mu.Unlock() }

// UpdateJob applies fn to the stored status of job id, as the agent's
// lifecycle would (placement, a task's exit); false if there is no such job.
func (s *Service) UpdateJob(id string, fn func(*api.JobStatus)) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, ok := s.jobs[id]
	if ok {
		fn(st)
		st.UpdatedAt = s.now()
	}
	return ok
}

func (s *Service) hook(ctx context.Context, method string) error {
	s.mu.Lock()
	h := s.hooks[method]
	s.mu.Unlock()
	if h == nil {
		return nil
	}
	return h(ctx)
}

// SubmitJob implements api.Service.
func (s *Service) SubmitJob(ctx context.Context, spec api.JobSpec) (api.JobStatus, bool, error) {
	if err := s.hook(ctx, "SubmitJob"); err != nil {
		return api.JobStatus{}, false, err
	}
	if err := spec.Validate(); err != nil {
		return api.JobStatus{}, false, fmt.Errorf("apitest: the handler passed an invalid spec: %w", err)
	}
	spec = spec.Normalized()
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.regions) > 0 {
		for _, f := range []struct{ field, region string }{{"origin_region", spec.OriginRegion}, {"home_region", spec.HomeRegion}} {
			if !slices.Contains(s.regions, f.region) {
				return api.JobStatus{}, false, &api.FieldError{Field: f.field,
					Message: fmt.Sprintf("unknown region %q; known: %s", f.region, strings.Join(s.regions, ", "))}
			}
		}
	}
	if st, ok := s.jobs[spec.ID]; ok {
		if !st.Spec.Equal(spec) {
			return api.JobStatus{}, false, fmt.Errorf("job %q exists with a different spec: %w", spec.ID, api.ErrConflict)
		}
		return clone(st), false, nil
	}
	now := s.now()
	st := &api.JobStatus{
		ID: spec.ID, State: api.JobPending, Reason: "waiting for placement",
		OriginRegion: spec.OriginRegion, HomeRegion: spec.HomeRegion,
		SubmittedAt: now, UpdatedAt: now, Spec: &spec,
	}
	s.jobs[spec.ID] = st
	return clone(st), true, nil
}

// Job implements api.Service.
func (s *Service) Job(ctx context.Context, id string) (api.JobStatus, error) {
	if err := s.hook(ctx, "Job"); err != nil {
		return api.JobStatus{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	st, ok := s.jobs[id]
	if !ok {
		return api.JobStatus{}, fmt.Errorf("job %q: %w", id, api.ErrNotFound)
	}
	return clone(st), nil
}

// Jobs implements api.Service: jobs ordered by ID; the cursor is the last ID
// of the previous page.
func (s *Service) Jobs(ctx context.Context, f api.JobFilter) (api.JobList, error) {
	if err := s.hook(ctx, "Jobs"); err != nil {
		return api.JobList{}, err
	}
	limit := f.Limit
	if limit == 0 {
		limit = api.DefaultJobsLimit
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var list api.JobList
	for _, id := range slices.Sorted(maps.Keys(s.jobs)) {
		st := s.jobs[id]
		if id <= f.Cursor ||
			f.State != "" && st.State != f.State ||
			f.Region != "" && st.HomeRegion != f.Region && st.Region != f.Region {
			continue
		}
		if len(list.Jobs) == limit {
			list.NextCursor = list.Jobs[limit-1].ID
			break
		}
		list.Jobs = append(list.Jobs, clone(st))
	}
	return list, nil
}

// CancelJob implements api.Service.
func (s *Service) CancelJob(ctx context.Context, id string) (api.JobStatus, error) {
	if err := s.hook(ctx, "CancelJob"); err != nil {
		return api.JobStatus{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	st, ok := s.jobs[id]
	if !ok {
		return api.JobStatus{}, fmt.Errorf("job %q: %w", id, api.ErrNotFound)
	}
	if !st.State.Terminal() {
		st.State, st.Reason, st.UpdatedAt = api.JobCancelled, "cancelled by a client", s.now()
	}
	return clone(st), nil
}

// Nodes implements api.Service.
func (s *Service) Nodes(ctx context.Context) ([]api.NodeStatus, error) {
	if err := s.hook(ctx, "Nodes"); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	out := slices.Clone(s.nodes)
	slices.SortFunc(out, func(a, b api.NodeStatus) int {
		return cmp.Or(cmp.Compare(a.Region, b.Region), cmp.Compare(a.Name, b.Name))
	})
	return out, nil
}

// Regions implements api.Service.
func (s *Service) Regions(ctx context.Context) (api.RegionsView, error) {
	if err := s.hook(ctx, "Regions"); err != nil {
		return api.RegionsView{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.view, nil
}

// Allocations implements api.Service.
func (s *Service) Allocations(ctx context.Context, f api.AllocationFilter) ([]api.Allocation, error) {
	if err := s.hook(ctx, "Allocations"); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []api.Allocation
	for _, a := range s.allocs {
		if f.JobID != "" && a.JobID != f.JobID || f.Node != "" && a.Node != f.Node ||
			f.Region != "" && a.Region != f.Region || f.State != "" && a.State != f.State {
			continue
		}
		out = append(out, a)
	}
	slices.SortFunc(out, func(a, b api.Allocation) int { return cmp.Compare(a.ID, b.ID) })
	return out, nil
}

// Trades implements api.Service.
func (s *Service) Trades(ctx context.Context) ([]api.Trade, error) {
	if err := s.hook(ctx, "Trades"); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.trades), nil
}

// Health implements api.Service.
func (s *Service) Health(ctx context.Context) (api.Health, error) {
	if err := s.hook(ctx, "Health"); err != nil {
		return api.Health{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.health, nil
}

// clone copies a status so callers never share the stored one.
func clone(st *api.JobStatus) api.JobStatus {
	out := *st
	if st.Spec != nil {
		spec := st.Spec.Normalized() // Normalized copies command and env
		out.Spec = &spec
	}
	if st.ExitCode != nil {
		c := *st.ExitCode
		out.ExitCode = &c
	}
	return out
}
