package api

import (
	"time"

	"github.com/meridian-mesh/meridian/placement"
)

// JobState is where a job is in its lifecycle.
type JobState string

// The job states. A job starts pending, is placed in its home region or
// traded to another region, runs, and ends completed, failed or cancelled.
const (
	JobPending   JobState = "pending"   // acknowledged, not yet placed
	JobPlaced    JobState = "placed"    // allocated to a node of the home region
	JobTraded    JobState = "traded"    // allocated to a node of another region through the market
	JobRunning   JobState = "running"   // its task runs on the chosen node
	JobCompleted JobState = "completed" // ran for its duration, or its command exited 0
	JobFailed    JobState = "failed"    // could not be placed or its command failed
	JobCancelled JobState = "cancelled" // cancelled by a client
)

// JobStates lists every job state, in lifecycle order.
var JobStates = []JobState{JobPending, JobPlaced, JobTraded, JobRunning, JobCompleted, JobFailed, JobCancelled}

// Valid reports whether s is one of the job states.
func (s JobState) Valid() bool {
	for _, v := range JobStates {
		if s == v {
			return true
		}
	}
	return false
}

// Terminal reports whether a job in state s will never run again.
func (s JobState) Terminal() bool {
	return s == JobCompleted || s == JobFailed || s == JobCancelled
}

// JobStatus is what the API says about one job.
type JobStatus struct {
	// ID is the client's job ID.
	ID string `json:"id"`
	// State is the job's lifecycle state.
	State JobState `json:"state"`
	// Reason explains the state when it needs explaining (why a job is still
	// pending or why it failed).
	Reason string `json:"reason,omitempty"`
	// OriginRegion is where the job's users are.
	OriginRegion string `json:"origin_region"`
	// HomeRegion is the region whose ledger is the job's source of truth.
	HomeRegion string `json:"home_region"`
	// Node is the node the job is allocated to, empty while pending.
	Node string `json:"node,omitempty"`
	// Region is the region the job runs in (the home region, or the seller's
	// region when traded), empty while pending.
	Region string `json:"region,omitempty"`
	// AllocationID names the job's current allocation.
	AllocationID string `json:"allocation_id,omitempty"`
	// Epoch is the placement epoch: it grows each time the job is re-placed,
	// so a stale allocation can be told from the current one.
	Epoch uint64 `json:"epoch"`
	// Attempts counts placement attempts.
	Attempts int `json:"attempts"`
	// SubmittedAt is when the home region committed the job.
	SubmittedAt time.Time `json:"submitted_at"`
	// UpdatedAt is when the job's state last changed.
	UpdatedAt time.Time `json:"updated_at"`
	// CostPerHour is what the job's allocation costs, in US dollars per hour.
	CostPerHour float64 `json:"cost_per_hour"`
	// ExitCode is the exit status of an exec task that has exited; absent
	// otherwise (a process killed by a signal reports -1).
	ExitCode *int `json:"exit_code,omitempty"`
	// Spec is the job as submitted, with defaults applied, when the server
	// includes it.
	Spec *JobSpec `json:"spec,omitempty"`
}

// JobFilter selects jobs for Service.Jobs and GET /v1/jobs. The zero value
// selects the first page of all jobs.
type JobFilter struct {
	// State keeps only jobs in this state; empty keeps all.
	State JobState
	// Region keeps only jobs whose home region or running region is Region.
	Region string
	// Limit is the page size: 0 means DefaultJobsLimit; at most MaxJobsLimit.
	Limit int
	// Cursor continues a listing from a previous JobList.NextCursor.
	Cursor string
}

// Page sizes of job listings.
const (
	DefaultJobsLimit = 100
	MaxJobsLimit     = 1000
)

// JobList is one page of jobs, ordered by ID.
type JobList struct {
	// Jobs is the page.
	Jobs []JobStatus `json:"jobs"`
	// NextCursor, when not empty, continues the listing (the cursor query
	// parameter); empty on the last page.
	NextCursor string `json:"next_cursor,omitempty"`
}

// MemberState is a node's state in gossip.
type MemberState string

// The member states, as memberlist reports them.
const (
	MemberAlive   MemberState = "alive"
	MemberSuspect MemberState = "suspect"
	MemberDead    MemberState = "dead"
	MemberLeft    MemberState = "left"
)

// MemberCounts counts the members of a region or of the mesh by state.
type MemberCounts struct {
	Alive   int `json:"alive"`
	Suspect int `json:"suspect"`
	Dead    int `json:"dead"`
}

// NodeStatus is what the API says about one node of the mesh, as the
// answering agent sees it through gossip.
type NodeStatus struct {
	// Name is the node's unique name in the mesh.
	Name string `json:"name"`
	// Region is the node's region.
	Region string `json:"region"`
	// Addr is the node's HTTP API address, when known.
	Addr string `json:"addr,omitempty"`
	// State is the node's gossip state.
	State MemberState `json:"state"`
	// Total is the node's capacity.
	Total placement.Resources `json:"total"`
	// Free is the capacity neither allocated nor held in escrow.
	Free placement.Resources `json:"free"`
	// PricePerHour is what the whole node costs, in US dollars per hour.
	PricePerHour float64 `json:"price_per_hour"`
	// GPUType names the node's accelerator model.
	GPUType string `json:"gpu_type,omitempty"`
	// Allocations counts the live allocations on the node, from the
	// region's ledger when the answering node holds it; for another
	// region's node it is the tasks running there as gossip last reported
	// (up to one capacity interval old, leases not counted).
	Allocations int `json:"allocations"`
	// Leader is true when the node leads its region's Raft group.
	Leader bool `json:"leader"`
	// RTTMs is the estimated round-trip time from the answering node, in
	// milliseconds (from network coordinates); absent when unknown.
	RTTMs *float64 `json:"rtt_ms,omitempty"`
	// UpdatedAt is when the node's capacity record was last updated.
	UpdatedAt time.Time `json:"updated_at"`
}

// RegionForecast is a region's demand forecast, as the allocate-ahead loop
// last computed it.
type RegionForecast struct {
	// At is when the forecast was made.
	At time.Time `json:"at"`
	// HorizonS is how far ahead it looks, in seconds.
	HorizonS int64 `json:"horizon_s"`
	// ComputePerHour is the forecast compute demand, in tasks per hour.
	ComputePerHour float64 `json:"compute_per_hour"`
	// ObservedComputePerHour is the demand admitted in the last interval.
	ObservedComputePerHour float64 `json:"observed_compute_per_hour"`
	// ErrorMAPE is the forecast's recent mean absolute percentage error
	// (0.1 = 10 %).
	ErrorMAPE float64 `json:"error_mape"`
}

// RegionAdjustments are what the feedback loop changed in a region.
type RegionAdjustments struct {
	// PriceMultiplier is the utilization-aware factor applied to list prices
	// (1 = none).
	PriceMultiplier float64 `json:"price_multiplier"`
	// Leased is capacity bought ahead of a forecast peak.
	Leased placement.Resources `json:"leased"`
}

// RegionSummary is what the API says about one region.
type RegionSummary struct {
	// Region is the region's name.
	Region string `json:"region"`
	// Members counts the region's nodes by gossip state.
	Members MemberCounts `json:"members"`
	// Total is the capacity of the region's alive nodes.
	Total placement.Resources `json:"total"`
	// Free is the unallocated capacity of the region's alive nodes.
	Free placement.Resources `json:"free"`
	// CheapestPricePerHour is the lowest node price among nodes with free
	// capacity, in US dollars per hour; 0 when there is none.
	CheapestPricePerHour float64 `json:"cheapest_price_per_hour"`
	// Leader names the node that leads the region's Raft group, when known.
	Leader string `json:"leader,omitempty"`
	// Forecast is the region's latest demand forecast, when there is one.
	Forecast *RegionForecast `json:"forecast,omitempty"`
	// Adjustments are the loop's current price and lease adjustments, when
	// there are any.
	Adjustments *RegionAdjustments `json:"adjustments,omitempty"`
}

// RegionsView is GET /v1/regions: every region the answering node knows of,
// and the estimated RTT between each pair.
type RegionsView struct {
	// Regions is ordered by name.
	Regions []RegionSummary `json:"regions"`
	// RTTMs[a][b] is the estimated round-trip time from region a to region b,
	// in milliseconds. Pairs with no estimate are absent.
	RTTMs map[string]map[string]float64 `json:"rtt_ms"`
}

// AllocState is where an allocation is in its life.
type AllocState string

// The allocation states.
const (
	AllocPending   AllocState = "pending"   // committed, task not started
	AllocRunning   AllocState = "running"   // its task runs
	AllocCompleted AllocState = "completed" // its task finished successfully
	AllocFailed    AllocState = "failed"    // its task failed
	AllocCancelled AllocState = "cancelled" // stopped by a cancel or a re-placement
	AllocLost      AllocState = "lost"      // its node failed
	AllocPreempted AllocState = "preempted" // a job of higher priority took its room; its job is placed again
)

// Allocation is one placement of a job on a node, as committed in a ledger.
type Allocation struct {
	// ID names the allocation.
	ID string `json:"id"`
	// JobID is the job it runs.
	JobID string `json:"job_id"`
	// Node is the node it runs on.
	Node string `json:"node"`
	// Region is the node's region.
	Region string `json:"region"`
	// HomeRegion is the job's home region.
	HomeRegion string `json:"home_region"`
	// Epoch is the job's placement epoch this allocation belongs to.
	Epoch uint64 `json:"epoch"`
	// State is the allocation's state.
	State AllocState `json:"state"`
	// Resources is what the allocation reserves on the node.
	Resources placement.Resources `json:"resources"`
	// CostPerHour is what it costs, in US dollars per hour.
	CostPerHour float64 `json:"cost_per_hour"`
	// Driver is the task driver ("sim" or "exec").
	Driver string `json:"driver"`
	// TradeID names the trade that bought it, for a traded allocation.
	TradeID string `json:"trade_id,omitempty"`
	// ExitCode is the exec task's exit status, once it has exited.
	ExitCode *int `json:"exit_code,omitempty"`
	// CreatedAt is when the allocation was committed.
	CreatedAt time.Time `json:"created_at"`
	// UpdatedAt is when its state last changed.
	UpdatedAt time.Time `json:"updated_at"`
}

// AllocationFilter selects allocations for Service.Allocations and
// GET /v1/allocations; empty fields select all.
type AllocationFilter struct {
	JobID  string
	Node   string
	Region string
	State  AllocState
}

// TradeState is where a cross-region trade is in the auction protocol.
type TradeState string

// The trade states.
const (
	TradeOpen      TradeState = "open"      // call for bids sent
	TradeEscrowed  TradeState = "escrowed"  // a seller holds capacity in escrow
	TradeAwarded   TradeState = "awarded"   // the buyer committed the award
	TradeCommitted TradeState = "committed" // the seller committed the allocation
	TradeExpired   TradeState = "expired"   // the escrow expired before an award
	TradeAborted   TradeState = "aborted"   // the trade was abandoned
)

// Trade is one cross-region purchase of capacity.
type Trade struct {
	// ID names the trade.
	ID string `json:"id"`
	// JobID is the job the capacity is for.
	JobID string `json:"job_id"`
	// BuyerRegion is the job's home region.
	BuyerRegion string `json:"buyer_region"`
	// SellerRegion is the region that sold the capacity.
	SellerRegion string `json:"seller_region"`
	// Node is the seller's node, once known.
	Node string `json:"node,omitempty"`
	// State is the trade's state.
	State TradeState `json:"state"`
	// Resources is the capacity traded.
	Resources placement.Resources `json:"resources"`
	// PricePerHour is the price paid, in US dollars per hour of the whole
	// seller's node (the score's c): the same figure on the buyer's and
	// the seller's side.
	PricePerHour float64 `json:"price_per_hour"`
	// CostPerHour is what the traded work pays per hour: PricePerHour
	// times the share of the node's compute it takes (the whole price
	// when the node's size is unknown to the answering node).
	CostPerHour float64 `json:"cost_per_hour"`
	// Score is the winning bid's cost-efficiency score.
	Score float64 `json:"score"`
	// CreatedAt is when the buyer opened the trade.
	CreatedAt time.Time `json:"created_at"`
	// UpdatedAt is when its state last changed.
	UpdatedAt time.Time `json:"updated_at"`
	// ExpiresAt is when the seller's escrow expires, while one is held.
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
}

// Health statuses.
const (
	// HealthOK: the node is a member of the mesh and its region has a leader.
	HealthOK = "ok"
	// HealthDegraded: the node serves reads, but writes may fail (for example
	// its region has no leader). Still answered with 200.
	HealthDegraded = "degraded"
	// HealthUnavailable: the node cannot serve (starting, shutting down).
	// Answered with 503.
	HealthUnavailable = "unavailable"
)

// Health is GET /v1/health: the answering node's view of itself.
type Health struct {
	// Status is HealthOK, HealthDegraded or HealthUnavailable.
	Status string `json:"status"`
	// Node is the answering node's name.
	Node string `json:"node"`
	// Region is its region.
	Region string `json:"region"`
	// Role is the node's role in its region's Raft group: "leader",
	// "follower", or "candidate".
	Role string `json:"role"`
	// Leader names its region's Raft leader, empty when there is none.
	Leader string `json:"leader,omitempty"`
	// RaftState is the raw Raft state ("Leader", "Follower", "Candidate",
	// "Shutdown").
	RaftState string `json:"raft_state"`
	// Members counts the mesh's members by gossip state, as this node sees it.
	Members MemberCounts `json:"members"`
	// Version is the agent's version.
	Version string `json:"version,omitempty"`
}
