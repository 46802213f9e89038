package placement

import (
	"fmt"
	"math"
	"time"
)

// Model selects the score formula (see the package documentation).
type Model uint8

const (
	// ModelCostEfficiency scores E = C·D/c: compute (the node's total, or
	// its free compute under PackSpread) times demand per dollar of the
	// node's hourly price. It is the zero value and the default.
	ModelCostEfficiency Model = iota
	// ModelWeighted scores w_C·C·f(D) + w_S·S·g(D) + w_B·B·h(D) − λ·c.
	ModelWeighted
)

// String returns the model's name as ParseModel accepts it.
func (m Model) String() string {
	switch m {
	case ModelCostEfficiency:
		return "cost-efficiency"
	case ModelWeighted:
		return "weighted"
	}
	return fmt.Sprintf("Model(%d)", uint8(m))
}

// ParseModel returns the model named name ("cost-efficiency" or "weighted").
func ParseModel(name string) (Model, error) {
	switch name {
	case "cost-efficiency":
		return ModelCostEfficiency, nil
	case "weighted":
		return ModelWeighted, nil
	}
	return 0, &FieldError{Field: "model", Reason: fmt.Sprintf("unknown model %q (want cost-efficiency or weighted)", name)}
}

// Efficiency is an efficiency function of the weighted model: how much of a
// node's capacity X turns into value for a demand d. The term a resource adds
// to the score is weight·X·f(d).
type Efficiency uint8

const (
	// EfficiencyLinear is f(d) = d: value grows with capacity and demand
	// without bound, so the compute term is C·D, the numerator of E. It is
	// the zero value.
	EfficiencyLinear Efficiency = iota
	// EfficiencySaturating is f(d) = min(d, X)/X: capacity beyond the demand
	// is worth nothing, so the term is the part of the demand the node can
	// serve, min(d, X).
	EfficiencySaturating
)

// String returns the function's name as ParseEfficiency accepts it.
func (e Efficiency) String() string {
	switch e {
	case EfficiencyLinear:
		return "linear"
	case EfficiencySaturating:
		return "saturating"
	}
	return fmt.Sprintf("Efficiency(%d)", uint8(e))
}

// ParseEfficiency returns the efficiency function named name ("linear" or
// "saturating").
func ParseEfficiency(name string) (Efficiency, error) {
	switch name {
	case "linear":
		return EfficiencyLinear, nil
	case "saturating":
		return EfficiencySaturating, nil
	}
	return 0, &FieldError{Field: "efficiency", Reason: fmt.Sprintf("unknown efficiency function %q (want linear or saturating)", name)}
}

// Apply returns f(demand) for a node with capacity of the resource.
func (e Efficiency) Apply(demand, capacity float64) float64 {
	if e == EfficiencySaturating {
		if capacity <= 0 {
			return 0
		}
		return math.Min(demand, capacity) / capacity
	}
	return demand
}

// term returns capacity·f(demand), computed so that the saturating term is
// exactly min(demand, capacity) rather than a rounded product.
func (e Efficiency) term(demand, capacity float64) float64 {
	if e == EfficiencySaturating {
		if capacity <= 0 {
			return 0
		}
		return math.Min(demand, capacity)
	}
	return capacity * demand
}

// Packing says which capacity a node is scored on, and so how a region's
// jobs spread over its nodes.
type Packing uint8

const (
	// PackBinpack scores a node on its total capacity — E = C·D/c is then
	// a property of the machine, the same whether it is empty or nearly
	// full — and, among equal scores, prefers the node with the least
	// free compute that fits (best fit). Identical nodes fill one after
	// another, which keeps whole nodes free for large jobs: spreading jobs
	// of up to half a node over every node strands capacity in slivers no
	// later job fits (docs/benchmark.md measures it). It is the zero value
	// and the default, as bin packing is Nomad's.
	PackBinpack Packing = iota
	// PackSpread scores a node on its free capacity, so the emptiest of
	// equally priced nodes wins: load spreads evenly, at the cost of
	// fragmentation.
	PackSpread
)

// String returns the packing's name as ParsePacking accepts it.
func (p Packing) String() string {
	switch p {
	case PackBinpack:
		return "binpack"
	case PackSpread:
		return "spread"
	}
	return fmt.Sprintf("Packing(%d)", uint8(p))
}

// ParsePacking returns the packing named name ("binpack" or "spread").
func ParsePacking(name string) (Packing, error) {
	switch name {
	case "binpack":
		return PackBinpack, nil
	case "spread":
		return PackSpread, nil
	}
	return 0, &FieldError{Field: "packing", Reason: fmt.Sprintf("unknown packing %q (want binpack or spread)", name)}
}

// Term weighs one resource in the weighted model.
type Term struct {
	// Weight multiplies the term; zero drops the resource from the score.
	Weight float64 `json:"weight"`
	// Efficiency is the term's efficiency function.
	Efficiency Efficiency `json:"efficiency"`
}

// ScoreConfig configures how nodes are scored. The zero value is the
// cost-efficiency model E = C·D/c with no latency penalty, bin packing.
type ScoreConfig struct {
	// Model selects the formula.
	Model Model
	// Packing selects the capacity the formula reads (total or free) and
	// the tie-break among equal scores.
	Packing Packing
	// Compute, Storage and Bandwidth weigh the resources in ModelWeighted.
	Compute, Storage, Bandwidth Term
	// Lambda is λ, the weight of the node's hourly price in ModelWeighted.
	Lambda float64
	// LatencyPenaltyPerMs is subtracted from the score per millisecond of
	// RTT from the job's origin region, for jobs that have a latency SLO.
	LatencyPenaltyPerMs float64
}

// WeightedConfig returns the weighted model with every resource at weight 1
// and efficiency function eff, and price weight lambda.
func WeightedConfig(eff Efficiency, lambda float64) ScoreConfig {
	return ScoreConfig{
		Model:     ModelWeighted,
		Compute:   Term{Weight: 1, Efficiency: eff},
		Storage:   Term{Weight: 1, Efficiency: eff},
		Bandwidth: Term{Weight: 1, Efficiency: eff},
		Lambda:    lambda,
	}
}

// Validate checks that the configuration names a known model and functions
// and that every weight is a finite number that is not negative.
func (c ScoreConfig) Validate() error {
	if c.Model > ModelWeighted {
		return &FieldError{Field: "model", Reason: fmt.Sprintf("unknown model %d", c.Model)}
	}
	if c.Packing > PackSpread {
		return &FieldError{Field: "packing", Reason: fmt.Sprintf("unknown packing %d", c.Packing)}
	}
	for _, t := range []struct {
		name string
		t    Term
	}{{"compute", c.Compute}, {"storage", c.Storage}, {"bandwidth", c.Bandwidth}} {
		if t.t.Efficiency > EfficiencySaturating {
			return &FieldError{Field: "weights." + t.name + ".efficiency", Reason: fmt.Sprintf("unknown efficiency function %d", t.t.Efficiency)}
		}
		if err := nonNegative("weights."+t.name, t.t.Weight); err != nil {
			return err
		}
	}
	if err := nonNegative("lambda", c.Lambda); err != nil {
		return err
	}
	return nonNegative("latency_penalty_per_ms", c.LatencyPenaltyPerMs)
}

// basis is the capacity a node is scored on: its total under bin packing,
// what is free of it under spreading.
func (c *ScoreConfig) basis(n *Node, free *Resources) *Resources {
	if c.Packing == PackBinpack {
		return &n.Total
	}
	return free
}

// Components is a score taken apart, so a decision can say what made it.
// Score = Compute + Storage + Bandwidth − Price − Latency.
type Components struct {
	// Compute is the compute term: E = C·D/c in ModelCostEfficiency (which
	// has no other term), w_C·C·f(D) in ModelWeighted.
	Compute float64 `json:"compute"`
	// Storage is the storage term w_S·S·g(D) (ModelWeighted only).
	Storage float64 `json:"storage"`
	// Bandwidth is the bandwidth term w_B·B·h(D) (ModelWeighted only).
	Bandwidth float64 `json:"bandwidth"`
	// Price is the price term λ·c subtracted from the score (ModelWeighted only).
	Price float64 `json:"price"`
	// Latency is the latency penalty subtracted from the score.
	Latency float64 `json:"latency"`
	// RTT is the round-trip time from the job's origin that the latency
	// penalty was computed from; zero for jobs without a latency SLO.
	RTT time.Duration `json:"rtt_ns"`
}

// Score returns the total the components add up to.
func (c Components) Score() float64 {
	return c.Compute + c.Storage + c.Bandwidth - c.Price - c.Latency
}

// components scores a node with free resources free and hourly price price
// for demand d. rtt is used only when withLatency is set.
func (c *ScoreConfig) components(d, free Resources, price float64, rtt time.Duration, withLatency bool) Components {
	var out Components
	switch c.Model {
	case ModelWeighted:
		// Every product is rounded on its own (the explicit conversions
		// forbid fused multiply-adds), so that components, score and the
		// packer's bounds agree to the last bit on every platform.
		out.Compute = float64(c.Compute.Weight * c.Compute.Efficiency.term(d.ComputePerHour, free.ComputePerHour))
		out.Storage = float64(c.Storage.Weight * c.Storage.Efficiency.term(d.StorageGB, free.StorageGB))
		out.Bandwidth = float64(c.Bandwidth.Weight * c.Bandwidth.Efficiency.term(d.BandwidthGBps, free.BandwidthGBps))
		out.Price = float64(c.Lambda * price)
	default:
		out.Compute = costEfficiency(free.ComputePerHour, d.ComputePerHour, price)
	}
	if withLatency {
		out.RTT = rtt
		out.Latency = c.latencyPenalty(rtt)
	}
	return out
}

// latencyPenalty is the score a job loses to an RTT.
func (c *ScoreConfig) latencyPenalty(rtt time.Duration) float64 {
	return float64(c.LatencyPenaltyPerMs*float64(rtt)) / float64(time.Millisecond)
}

// score is components(...).Score() without building the explanation; the
// packing loop calls it a million times per batch.
func (c *ScoreConfig) score(d, free Resources, price float64, rtt time.Duration, withLatency bool) float64 {
	var s float64
	if c.Model == ModelWeighted {
		s = float64(c.Compute.Weight*c.Compute.Efficiency.term(d.ComputePerHour, free.ComputePerHour)) +
			float64(c.Storage.Weight*c.Storage.Efficiency.term(d.StorageGB, free.StorageGB)) +
			float64(c.Bandwidth.Weight*c.Bandwidth.Efficiency.term(d.BandwidthGBps, free.BandwidthGBps)) -
			float64(c.Lambda*price)
	} else {
		s = costEfficiency(free.ComputePerHour, d.ComputePerHour, price)
	}
	if withLatency {
		s -= c.latencyPenalty(rtt)
	}
	return s
}

// costEfficiency is E = C·D/c, computed as (C·D)/c rather than C·(D/c):
// the worked example's 20, 18.75 and 20 then come out exact.
func costEfficiency(capacity, demand, price float64) float64 {
	return float64(capacity*demand) / price
}

// scoreTolerance is the relative difference under which two scores are
// equal, so that rounding (20.000000001 against 20) never decides a
// placement; the tie-break does.
const scoreTolerance = 1e-9

// scoresEqual reports whether a and b are equal within scoreTolerance.
func scoresEqual(a, b float64) bool {
	if a == b {
		return true
	}
	return math.Abs(a-b) <= scoreTolerance*math.Max(math.Abs(a), math.Abs(b))
}

// CostPerHour prices a job's share of the node: the node's hourly price times
// the fraction of its total compute that demand uses, c·D/C. The market and
// the benchmarks charge jobs by it; the max-price filter, by contrast,
// compares the whole-node price.
func (n Node) CostPerHour(demand Resources) float64 {
	if n.Total.ComputePerHour <= 0 {
		return math.Inf(1)
	}
	return n.PricePerHour * demand.ComputePerHour / n.Total.ComputePerHour
}
