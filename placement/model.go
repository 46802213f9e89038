package placement

import (
	"errors"
	"fmt"
	"math"
	"time"
)

// Resources is an amount of the resources the cost model prices. It is used
// both for what a node has (total or free) and for what a job asks for.
type Resources struct {
	// ComputePerHour is compute throughput in tasks per hour (C in the model).
	ComputePerHour float64 `json:"compute" msgpack:"c"`
	// StorageGB is storage in gigabytes (S in the model).
	StorageGB float64 `json:"storage_gb" msgpack:"s"`
	// BandwidthGBps is network bandwidth in gigabytes per second (B in the model).
	BandwidthGBps float64 `json:"bandwidth_gbs" msgpack:"b"`
	// GPUs is a count of whole accelerators.
	GPUs int `json:"gpus,omitempty" msgpack:"g,omitempty"`
}

// Add returns r + o, component by component.
func (r Resources) Add(o Resources) Resources {
	return Resources{
		ComputePerHour: r.ComputePerHour + o.ComputePerHour,
		StorageGB:      r.StorageGB + o.StorageGB,
		BandwidthGBps:  r.BandwidthGBps + o.BandwidthGBps,
		GPUs:           r.GPUs + o.GPUs,
	}
}

// Sub returns r − o, component by component. The result may be negative;
// use Fits to check first when that matters.
func (r Resources) Sub(o Resources) Resources {
	return Resources{
		ComputePerHour: r.ComputePerHour - o.ComputePerHour,
		StorageGB:      r.StorageGB - o.StorageGB,
		BandwidthGBps:  r.BandwidthGBps - o.BandwidthGBps,
		GPUs:           r.GPUs - o.GPUs,
	}
}

// FitsIn reports whether r ≤ capacity in every component. A tiny relative
// tolerance absorbs floating-point drift from long chains of Add and Sub, so
// that exactly filling a node is never reported as an overcommit.
func (r Resources) FitsIn(capacity Resources) bool {
	return leq(r.ComputePerHour, capacity.ComputePerHour) &&
		leq(r.StorageGB, capacity.StorageGB) &&
		leq(r.BandwidthGBps, capacity.BandwidthGBps) &&
		r.GPUs <= capacity.GPUs
}

// IsZero reports whether every component is zero.
func (r Resources) IsZero() bool { return r == Resources{} }

// Validate checks that every component is finite and not negative. The field
// names in errors are prefixed with prefix (for example "free.").
func (r Resources) Validate(prefix string) error {
	for _, f := range [...]struct {
		name string
		v    float64
	}{
		{"compute", r.ComputePerHour},
		{"storage_gb", r.StorageGB},
		{"bandwidth_gbs", r.BandwidthGBps},
		{"gpus", float64(r.GPUs)},
	} {
		// Build the field name only on failure: Validate runs for every job
		// of a packing batch.
		if math.IsNaN(f.v) || math.IsInf(f.v, 0) || f.v < 0 {
			return nonNegative(prefix+f.name, f.v)
		}
	}
	return nil
}

func leq(a, b float64) bool {
	if a <= b {
		return true // the common case, kept cheap for the packing loop
	}
	const tol = 1e-9
	scale := math.Abs(b)
	if scale < 1 {
		scale = 1
	}
	return a <= b+tol*scale
}

// ErrInvalid is wrapped by every validation error of this package, so callers
// can map it to a 400 or an exit code 2 with errors.Is.
var ErrInvalid = errors.New("invalid")

// FieldError names the field whose value is invalid.
type FieldError struct {
	Field  string
	Reason string
}

// Error implements error.
func (e *FieldError) Error() string { return fmt.Sprintf("field %q: %s", e.Field, e.Reason) }

// Unwrap lets errors.Is(err, ErrInvalid) match.
func (e *FieldError) Unwrap() error { return ErrInvalid }

func nonNegative(field string, v float64) error {
	switch {
	case math.IsNaN(v) || math.IsInf(v, 0):
		return &FieldError{Field: field, Reason: fmt.Sprintf("must be a finite number, got %v", v)}
	case v < 0:
		return &FieldError{Field: field, Reason: fmt.Sprintf("must not be negative, got %v", v)}
	}
	return nil
}

func positive(field string, v float64) error {
	if err := nonNegative(field, v); err != nil {
		return err
	}
	if v == 0 {
		return &FieldError{Field: field, Reason: "must be greater than zero, got 0"}
	}
	return nil
}

// Node is one machine as placement sees it: where it is, what it has, and
// what it costs.
type Node struct {
	// ID is the node's unique name in the mesh.
	ID string `json:"name" msgpack:"id"`
	// Region is the region the node runs in (for example "us-east-1").
	Region string `json:"region,omitempty" msgpack:"r"`
	// Total is the node's whole capacity.
	Total Resources `json:"total" msgpack:"t"`
	// Free is what is not yet allocated or held in escrow.
	Free Resources `json:"free" msgpack:"f"`
	// PricePerHour is what the whole node costs, in US dollars per hour (c in the model).
	PricePerHour float64 `json:"price_per_hour" msgpack:"p"`
	// GPUType names the accelerator model, empty when the node has none.
	GPUType string `json:"gpu_type,omitempty" msgpack:"gt,omitempty"`
}

// Validate checks the node for values no real machine can have.
func (n Node) Validate() error {
	if n.ID == "" {
		return &FieldError{Field: "name", Reason: "must not be empty"}
	}
	if err := n.Total.Validate("total."); err != nil {
		return err
	}
	if err := positive("total.compute", n.Total.ComputePerHour); err != nil {
		return err
	}
	if err := n.Free.Validate("free."); err != nil {
		return err
	}
	if !n.Free.FitsIn(n.Total) {
		return &FieldError{Field: "free", Reason: "exceeds total"}
	}
	return positive("price_per_hour", n.PricePerHour)
}

// Job is a unit of work to place: a steady demand for resources for a time,
// served from some region to users in its origin region.
type Job struct {
	// ID is the client's job ID; submission is idempotent by it.
	ID string `json:"id" msgpack:"id"`
	// OriginRegion is where the job's users are; latency is measured from it.
	OriginRegion string `json:"origin_region,omitempty" msgpack:"o"`
	// Demand is what the job needs; Demand.ComputePerHour is D in the model.
	Demand Resources `json:"demand" msgpack:"d"`
	// LatencySLO is the highest round-trip time from OriginRegion that the
	// job tolerates; zero means unbounded (batch work).
	LatencySLO time.Duration `json:"latency_slo,omitempty" msgpack:"l,omitempty"`
	// MaxPricePerHour is the most the job may pay for a node, in US dollars
	// per hour of the whole node; zero means no limit.
	MaxPricePerHour float64 `json:"max_price_per_hour,omitempty" msgpack:"m,omitempty"`
	// Priority orders jobs when packing a batch: higher first.
	Priority int `json:"priority,omitempty" msgpack:"pr,omitempty"`
	// Duration is how long the job runs; zero means until cancelled.
	Duration time.Duration `json:"duration,omitempty" msgpack:"du,omitempty"`
	// GPUType, when set, restricts the job to nodes with that accelerator.
	GPUType string `json:"gpu_type,omitempty" msgpack:"gt,omitempty"`
}

// Validate checks the job for values no real job can have.
func (j Job) Validate() error {
	if j.ID == "" {
		return &FieldError{Field: "id", Reason: "must not be empty"}
	}
	if err := j.Demand.Validate("demand."); err != nil {
		return err
	}
	if err := positive("demand.compute", j.Demand.ComputePerHour); err != nil {
		return err
	}
	if j.LatencySLO < 0 {
		return &FieldError{Field: "latency_slo", Reason: "must not be negative"}
	}
	if err := nonNegative("max_price_per_hour", j.MaxPricePerHour); err != nil {
		return err
	}
	if j.Duration < 0 {
		return &FieldError{Field: "duration", Reason: "must not be negative"}
	}
	return nil
}
