package placement

import (
	"encoding/json"
	"fmt"
	"math"
	"time"
)

// Filter names a feasibility filter of the pipeline. Filters run in the
// order of their values; a node is rejected by the first one it fails.
type Filter uint8

const (
	// FilterGPUType rejects nodes whose accelerator model is not the job's.
	FilterGPUType Filter = iota + 1
	// FilterMaxPrice rejects nodes whose whole-node hourly price exceeds the
	// job's MaxPricePerHour.
	FilterMaxPrice
	// FilterLatencySLO rejects nodes whose region's RTT from the job's origin
	// exceeds the job's LatencySLO, or is not known.
	FilterLatencySLO
	// FilterResources rejects nodes without enough free compute, storage,
	// bandwidth or GPUs for the job's demand.
	FilterResources
	// FilterInvalidNode rejects nodes whose figures cannot be scored (a price
	// that is not a positive finite number, or a score that overflows). A
	// validated node never fails it.
	FilterInvalidNode

	numFilters = int(FilterInvalidNode) + 1
)

// String returns the filter's name as explanations print it.
func (f Filter) String() string {
	switch f {
	case FilterGPUType:
		return "gpu-type"
	case FilterMaxPrice:
		return "max-price"
	case FilterLatencySLO:
		return "latency-slo"
	case FilterResources:
		return "resources"
	case FilterInvalidNode:
		return "invalid-node"
	case 0:
		return "none"
	}
	return fmt.Sprintf("Filter(%d)", uint8(f))
}

// MarshalText encodes the filter as its name.
func (f Filter) MarshalText() ([]byte, error) { return []byte(f.String()), nil }

// reasonCode says which check of a filter failed; with the numbers kept
// beside it, it is enough to write the reason later, off the hot path.
type reasonCode uint8

const (
	reasonNone reasonCode = iota
	reasonNoGPU
	reasonGPUType
	reasonPrice
	reasonNoRTT
	reasonRTT
	reasonCompute
	reasonStorage
	reasonBandwidth
	reasonGPUs
	reasonBadPrice
	reasonBadScore
)

// verdict is the outcome of the filters for one node: the zero value passes.
type verdict struct {
	filter     Filter
	code       reasonCode
	need, have float64
}

// jobView is a job prepared for the filters and the score.
type jobView struct {
	id, origin string
	demand     Resources
	slo        time.Duration
	maxPrice   float64
	gpuType    string
	hasLatency bool
}

func newJobView(j *Job) jobView {
	return jobView{
		id:         j.ID,
		origin:     j.OriginRegion,
		demand:     j.Demand,
		slo:        j.LatencySLO,
		maxPrice:   j.MaxPricePerHour,
		gpuType:    j.GPUType,
		hasLatency: j.LatencySLO > 0,
	}
}

// latency is what an RTTEstimator said about a node's region.
type latency struct {
	rtt   time.Duration
	known bool
}

// check runs the feasibility filters, in order, for node n with free
// resources free. lat is consulted only for jobs with a latency SLO.
func (jv *jobView) check(n *Node, free *Resources, lat latency) verdict {
	if jv.gpuType != "" && n.GPUType != jv.gpuType {
		if n.GPUType == "" {
			return verdict{filter: FilterGPUType, code: reasonNoGPU}
		}
		return verdict{filter: FilterGPUType, code: reasonGPUType}
	}
	if !(n.PricePerHour > 0) || n.PricePerHour > math.MaxFloat64 {
		return verdict{filter: FilterInvalidNode, code: reasonBadPrice, have: n.PricePerHour}
	}
	if jv.maxPrice > 0 && n.PricePerHour > jv.maxPrice {
		return verdict{filter: FilterMaxPrice, code: reasonPrice, need: jv.maxPrice, have: n.PricePerHour}
	}
	if jv.hasLatency {
		if !lat.known {
			return verdict{filter: FilterLatencySLO, code: reasonNoRTT}
		}
		if lat.rtt > jv.slo {
			return verdict{filter: FilterLatencySLO, code: reasonRTT, need: float64(jv.slo), have: float64(lat.rtt)}
		}
	}
	d := &jv.demand
	switch {
	case !leq(d.ComputePerHour, free.ComputePerHour):
		return verdict{filter: FilterResources, code: reasonCompute, need: d.ComputePerHour, have: free.ComputePerHour}
	case !leq(d.StorageGB, free.StorageGB):
		return verdict{filter: FilterResources, code: reasonStorage, need: d.StorageGB, have: free.StorageGB}
	case !leq(d.BandwidthGBps, free.BandwidthGBps):
		return verdict{filter: FilterResources, code: reasonBandwidth, need: d.BandwidthGBps, have: free.BandwidthGBps}
	case d.GPUs > free.GPUs:
		return verdict{filter: FilterResources, code: reasonGPUs, need: float64(d.GPUs), have: float64(free.GPUs)}
	}
	return verdict{}
}

// Rejection says why a node was found infeasible for a job.
type Rejection struct {
	// NodeID is the rejected node.
	NodeID string
	// Index is the node's position in the slice given to Rank.
	Index int
	// Filter is the filter that rejected it.
	Filter Filter

	code       reasonCode
	need, have float64
	// jobSide and nodeSide are the GPU types or regions the reason names.
	jobSide, nodeSide string
}

func newRejection(v verdict, idx int, n *Node, jv *jobView) Rejection {
	r := Rejection{NodeID: n.ID, Index: idx, Filter: v.filter, code: v.code, need: v.need, have: v.have}
	switch v.filter {
	case FilterGPUType:
		r.jobSide, r.nodeSide = jv.gpuType, n.GPUType
	case FilterLatencySLO:
		r.jobSide, r.nodeSide = jv.origin, n.Region
	}
	return r
}

// Reason says in words why the node was rejected.
func (r Rejection) Reason() string {
	switch r.code {
	case reasonNoGPU:
		return fmt.Sprintf("job needs GPU type %q, node has no GPU", r.jobSide)
	case reasonGPUType:
		return fmt.Sprintf("job needs GPU type %q, node has %q", r.jobSide, r.nodeSide)
	case reasonPrice:
		return fmt.Sprintf("price $%s/h exceeds the job's maximum $%s/h", formatNumber(r.have), formatNumber(r.need))
	case reasonNoRTT:
		return fmt.Sprintf("no RTT estimate from %s to %s", regionName(r.jobSide), regionName(r.nodeSide))
	case reasonRTT:
		return fmt.Sprintf("RTT %v from %s to %s exceeds the latency SLO %v",
			time.Duration(r.have), regionName(r.jobSide), regionName(r.nodeSide), time.Duration(r.need))
	case reasonCompute:
		return fmt.Sprintf("needs %s tasks/h of compute, %s free", formatNumber(r.need), formatNumber(r.have))
	case reasonStorage:
		return fmt.Sprintf("needs %s GB of storage, %s free", formatNumber(r.need), formatNumber(r.have))
	case reasonBandwidth:
		return fmt.Sprintf("needs %s GB/s of bandwidth, %s free", formatNumber(r.need), formatNumber(r.have))
	case reasonGPUs:
		return fmt.Sprintf("needs %s GPUs, %s free", formatNumber(r.need), formatNumber(r.have))
	case reasonBadPrice:
		return fmt.Sprintf("price_per_hour must be a positive finite number, got %v", r.have)
	case reasonBadScore:
		return fmt.Sprintf("score is not a finite number (%v): capacities or price out of range", r.have)
	}
	return "rejected"
}

// String formats the rejection as "node: filter: reason".
func (r Rejection) String() string {
	return r.NodeID + ": " + r.Filter.String() + ": " + r.Reason()
}

// MarshalJSON encodes the rejection with its reason in words.
func (r Rejection) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		NodeID string `json:"node"`
		Filter Filter `json:"filter"`
		Reason string `json:"reason"`
	}{r.NodeID, r.Filter, r.Reason()})
}

func regionName(r string) string {
	if r == "" {
		return `""`
	}
	return r
}
