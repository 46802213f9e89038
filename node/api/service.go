package api

import "context"

// Service is the agent's job lifecycle as the HTTP handler consumes it.
// node.Agent implements it; Client implements it too, so an agent can hand a
// request to another node's API unchanged.
//
// The handler calls every method from the request's goroutine, concurrently,
// with a context that ends when the client goes away or the request times
// out; implementations must be safe for concurrent use, may block (a write
// waits for its Raft commit) and must return promptly once ctx is done.
// Returned values are owned by the caller.
//
// Errors: wrap ErrNotFound, ErrConflict, ErrNoLeader or ErrUnavailable, or
// return a *FieldError for a request the service itself finds invalid (an
// unknown region, say); an *Error from a forwarded call keeps its status;
// context errors become 504; anything else is logged and answered with a
// generic 500.
type Service interface {
	// SubmitJob creates the job described by spec, which the handler has
	// validated and normalized, and returns it with created = true once the
	// job is committed in its home region's ledger. If a job with spec.ID
	// exists with an Equal spec it returns that job with created = false; if
	// its spec differs, ErrConflict.
	SubmitJob(ctx context.Context, spec JobSpec) (status JobStatus, created bool, err error)
	// Job returns the job with this ID, or ErrNotFound.
	Job(ctx context.Context, id string) (JobStatus, error)
	// Jobs returns a page of the jobs f selects, ordered by ID. The handler
	// has checked f (a known state, 1 ≤ Limit ≤ MaxJobsLimit).
	Jobs(ctx context.Context, f JobFilter) (JobList, error)
	// CancelJob cancels the job and returns its status once the cancel is
	// committed; cancelling a job that has already ended returns its status
	// unchanged. ErrNotFound if there is no such job.
	CancelJob(ctx context.Context, id string) (JobStatus, error)
	// Nodes returns every node this agent knows of through gossip, ordered
	// by region then name.
	Nodes(ctx context.Context) ([]NodeStatus, error)
	// Regions returns the region summaries and the estimated RTT matrix.
	Regions(ctx context.Context) (RegionsView, error)
	// Allocations returns the allocations f selects, ordered by ID.
	Allocations(ctx context.Context, f AllocationFilter) ([]Allocation, error)
	// Trades returns the cross-region trades this agent's region took part
	// in, newest first.
	Trades(ctx context.Context) ([]Trade, error)
	// Health returns this agent's view of itself.
	Health(ctx context.Context) (Health, error)
}
