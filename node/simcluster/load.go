package simcluster

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/meridian-mesh/meridian/node/api"
	"github.com/meridian-mesh/meridian/placement/workload"
)

// Batching turns a stream of requests into jobs a mesh can place at a
// sustainable rate. A trace request lasts about a second; placing each one
// through Raft would measure the ledger, not the scheduler. Instead, the
// requests of one origin and latency class within one block of workload
// time become jobs whose demand is the block's mean concurrent demand and
// which run for the block: the capacity the region needs over that block.
type Batching struct {
	// Block is the workload time one batch covers.
	Block time.Duration
	// RealDuration is how long a batch's jobs run in the cluster's time:
	// Block divided by the workload's speed-up.
	RealDuration time.Duration
	// MaxJobCompute splits a batch into jobs of at most this much compute
	// (tasks/hour), so one job fits one node.
	MaxJobCompute float64
	// Scale multiplies every demand, to size the load against the cluster
	// (see ScaleFor).
	Scale float64
}

// Validate checks b, naming the field at fault.
func (b Batching) Validate() error {
	switch {
	case b.Block <= 0:
		return errors.New("batching: field \"block\" must be positive")
	case b.RealDuration < time.Second:
		return fmt.Errorf("batching: field \"real_duration\" %v: must be at least 1s", b.RealDuration)
	case !(b.MaxJobCompute > 0) || math.IsInf(b.MaxJobCompute, 0):
		return errors.New("batching: field \"max_job_compute\" must be a positive number")
	case !(b.Scale > 0) || math.IsInf(b.Scale, 0):
		return errors.New("batching: field \"scale\" must be a positive number")
	}
	return nil
}

type batchKey struct {
	origin string
	class  workload.SLOClass
	capped bool // the requests carry a price limit
}

// Batch turns the arrivals of one block into job specs, in a deterministic
// order (origin, class, price limit, part): requests with a price limit are
// batched apart from those without, so one limit does not bind the whole
// batch. IDs are prefix-origin-class[-capped]-blockIndex-part.
func (b Batching) Batch(arrivals []workload.Arrival, blockIndex int, prefix string) []api.JobSpec {
	type acc struct {
		compute, storage, bandwidth float64
		slo                         time.Duration
		maxPrice                    float64
		priced                      bool
	}
	sums := map[batchKey]*acc{}
	block := b.Block.Seconds()
	for _, a := range arrivals {
		k := batchKey{a.Job.OriginRegion, a.Class, a.Job.MaxPricePerHour > 0}
		s := sums[k]
		if s == nil {
			s = &acc{}
			sums[k] = s
		}
		d := a.Job.Duration.Seconds()
		s.compute += a.Job.Demand.ComputePerHour * d / block
		s.storage += a.Job.Demand.StorageGB * d / block
		s.bandwidth += a.Job.Demand.BandwidthGBps * d / block
		if a.Job.LatencySLO > 0 && (s.slo == 0 || a.Job.LatencySLO < s.slo) {
			s.slo = a.Job.LatencySLO
		}
		if a.Job.MaxPricePerHour > 0 {
			if !s.priced || a.Job.MaxPricePerHour < s.maxPrice {
				s.maxPrice = a.Job.MaxPricePerHour
			}
			s.priced = true
		}
	}
	keys := make([]batchKey, 0, len(sums))
	for k := range sums {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(x, y batchKey) int {
		if c := strings.Compare(x.origin, y.origin); c != 0 {
			return c
		}
		if c := strings.Compare(string(x.class), string(y.class)); c != 0 {
			return c
		}
		if x.capped != y.capped {
			if x.capped {
				return 1
			}
			return -1
		}
		return 0
	})
	var out []api.JobSpec
	for _, k := range keys {
		s := sums[k]
		total := s.compute * b.Scale
		if total <= 0 {
			continue
		}
		parts := int(math.Ceil(total / b.MaxJobCompute))
		for p := range parts {
			spec := api.JobSpec{
				ID:              fmt.Sprintf("%s-%s-%s%s-%d-%d", prefix, k.origin, k.class, map[bool]string{true: "-capped"}[k.capped], blockIndex, p),
				OriginRegion:    k.origin,
				LatencySLOMs:    int64(math.Ceil(float64(s.slo) / float64(time.Millisecond))),
				MaxPricePerHour: s.maxPrice,
				DurationS:       int64(b.RealDuration / time.Second),
			}
			spec.Demand.ComputePerHour = total / float64(parts)
			spec.Demand.StorageGB = s.storage * b.Scale / float64(parts)
			spec.Demand.BandwidthGBps = s.bandwidth * b.Scale / float64(parts)
			out = append(out, spec)
		}
	}
	return out
}

// ScaleFor returns the demand scale that makes a region of weight 1 demand,
// on average over a day, load × capacity (tasks/hour): it measures the
// generator's mean concurrent demand on a sample day. gen must be fresh
// (ScaleFor consumes a day of its arrivals).
func ScaleFor(gen *workload.Generator, load, capacity float64) (float64, error) {
	cfg := gen.Config()
	if len(cfg.Regions) == 0 {
		return 0, errors.New("scale: the workload has no region")
	}
	start := cfg.Start
	var work float64
	for _, a := range gen.Between(start, start.Add(24*time.Hour)) {
		work += a.Job.Demand.ComputePerHour * a.Job.Duration.Seconds()
	}
	var weight float64
	for _, r := range cfg.Regions {
		weight += r.Weight
	}
	mean := work / (24 * 3600) / weight
	if !(mean > 0) {
		return 0, errors.New("scale: the workload generates no demand")
	}
	return load * capacity / mean, nil
}
