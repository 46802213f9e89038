package netsim

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"time"
)

// ScheduledFault is a fault to apply At after the start of a run.
type ScheduledFault struct {
	At    time.Duration
	Fault Fault
}

// Schedule is a list of faults in time order. A schedule generated from a
// seed is the same for the same seed and config, so a failing chaos run
// replays.
type Schedule []ScheduledFault

// FaultApplier applies faults: *Network applies them to the network,
// *Cluster also stops and restarts nodes on crash and restart.
type FaultApplier interface {
	Apply(Fault) error
}

var (
	_ FaultApplier = (*Network)(nil)
	_ FaultApplier = (*Cluster)(nil)
)

// ScheduleConfig shapes a random fault schedule: episodes of one fault each,
// separated by exponentially distributed quiet gaps, each undone after a
// hold time drawn uniformly from [MinHold, MaxHold].
type ScheduleConfig struct {
	// Duration is the span the schedule covers; every fault it starts is
	// undone within it.
	Duration time.Duration
	// MeanGap is the mean quiet time between episodes; 0 means 1 minute.
	MeanGap time.Duration
	// MinHold and MaxHold bound how long a fault lasts; 0 means 10 s and
	// 2 min.
	MinHold, MaxHold time.Duration
	// Regions are the regions partitions and region cuts may involve.
	Regions []string
	// Endpoints are the endpoints isolations, crashes and endpoint cuts may
	// involve.
	Endpoints []string
	// Kinds are the fault kinds to draw from: FaultPartition,
	// FaultIsolate, FaultCut, FaultLoss, FaultLatency, FaultCrash. Empty
	// means all of those the Regions and Endpoints allow.
	Kinds []FaultKind
	// MaxLoss bounds the loss of FaultLoss episodes; 0 means 0.3.
	MaxLoss float64
	// MaxLatencyFactor bounds the factor of FaultLatency episodes (drawn
	// from [1.5, MaxLatencyFactor]); 0 means 4.
	MaxLatencyFactor float64
}

// RandomSchedule generates a fault schedule from seed. Every episode is
// followed by the fault that undoes it (heal, unisolate, uncut, clear-link,
// restart), so the network ends the schedule healed.
func RandomSchedule(seed int64, cfg ScheduleConfig) (Schedule, error) {
	if cfg.Duration <= 0 {
		return nil, fmt.Errorf("netsim: schedule Duration %v: want > 0", cfg.Duration)
	}
	if cfg.MeanGap == 0 {
		cfg.MeanGap = time.Minute
	}
	if cfg.MinHold == 0 {
		cfg.MinHold = 10 * time.Second
	}
	if cfg.MaxHold == 0 {
		cfg.MaxHold = 2 * time.Minute
	}
	if cfg.MeanGap < 0 || cfg.MinHold < 0 || cfg.MaxHold < cfg.MinHold {
		return nil, fmt.Errorf("netsim: schedule MeanGap %v, MinHold %v, MaxHold %v: want MeanGap > 0 and 0 < MinHold <= MaxHold",
			cfg.MeanGap, cfg.MinHold, cfg.MaxHold)
	}
	if cfg.MaxLoss == 0 {
		cfg.MaxLoss = 0.3
	}
	if cfg.MaxLoss < 0 || cfg.MaxLoss > 1 {
		return nil, fmt.Errorf("netsim: schedule MaxLoss %v: want a probability in [0,1]", cfg.MaxLoss)
	}
	if cfg.MaxLatencyFactor == 0 {
		cfg.MaxLatencyFactor = 4
	}
	if cfg.MaxLatencyFactor < 1.5 || math.IsInf(cfg.MaxLatencyFactor, 0) {
		return nil, fmt.Errorf("netsim: schedule MaxLatencyFactor %v: want a finite number >= 1.5", cfg.MaxLatencyFactor)
	}
	regions := slices.Clone(cfg.Regions)
	endpoints := slices.Clone(cfg.Endpoints)
	kinds := cfg.Kinds
	if len(kinds) == 0 {
		if len(regions) >= 2 {
			kinds = append(kinds, FaultPartition, FaultLoss, FaultLatency)
		}
		if len(endpoints) >= 1 {
			kinds = append(kinds, FaultIsolate, FaultCrash)
		}
		if len(regions)+len(endpoints) >= 2 {
			kinds = append(kinds, FaultCut)
		}
	}
	if len(kinds) == 0 {
		return nil, errors.New("netsim: schedule: no fault kind possible: give at least 2 Regions or 1 Endpoint")
	}
	for _, k := range kinds {
		switch k {
		case FaultPartition, FaultLoss, FaultLatency:
			if len(regions) < 2 {
				return nil, fmt.Errorf("netsim: schedule kind %s needs at least 2 Regions", k)
			}
		case FaultIsolate, FaultCrash:
			if len(endpoints) < 1 {
				return nil, fmt.Errorf("netsim: schedule kind %s needs Endpoints", k)
			}
		case FaultCut:
			if len(regions)+len(endpoints) < 2 {
				return nil, fmt.Errorf("netsim: schedule kind %s needs 2 Regions or Endpoints", k)
			}
		default:
			return nil, fmt.Errorf("netsim: schedule kind %q is not a schedulable fault", k)
		}
	}

	r := rand.New(rand.NewPCG(uint64(seed), 0x73636865647531)) // "schedu1"
	pick := func(names []string) string { return names[r.IntN(len(names))] }
	pickTwo := func(names []string) (string, string) {
		i := r.IntN(len(names))
		j := r.IntN(len(names) - 1)
		if j >= i {
			j++
		}
		return names[i], names[j]
	}
	var s Schedule
	at := time.Duration(0)
	for {
		at += time.Duration(r.ExpFloat64() * float64(cfg.MeanGap))
		hold := cfg.MinHold + time.Duration(r.Int64N(int64(cfg.MaxHold-cfg.MinHold)+1))
		if at+hold > cfg.Duration {
			break
		}
		var f, undo Fault
		switch kind := kinds[r.IntN(len(kinds))]; kind {
		case FaultPartition:
			// A random non-empty proper subset of the regions.
			perm := r.Perm(len(regions))
			size := 1 + r.IntN(len(regions)-1)
			group := make([]string, size)
			for i := range size {
				group[i] = regions[perm[i]]
			}
			slices.Sort(group)
			f, undo = Fault{Kind: FaultPartition, Groups: [][]string{group}}, Fault{Kind: FaultHeal}
		case FaultIsolate:
			e := pick(endpoints)
			f, undo = Fault{Kind: FaultIsolate, A: e}, Fault{Kind: FaultUnisolate, A: e}
		case FaultCrash:
			e := pick(endpoints)
			f, undo = Fault{Kind: FaultCrash, A: e}, Fault{Kind: FaultRestart, A: e}
		case FaultCut:
			a, b := pickTwo(append(slices.Clone(regions), endpoints...))
			both := r.IntN(2) == 0
			f = Fault{Kind: FaultCut, A: a, B: b, BothWays: both}
			undo = Fault{Kind: FaultUncut, A: a, B: b, BothWays: both}
		case FaultLoss:
			a, b := pickTwo(regions)
			p := math.Round(r.Float64()*cfg.MaxLoss*1000) / 1000
			f, undo = Fault{Kind: FaultLoss, A: a, B: b, Value: p}, Fault{Kind: FaultClearLink, A: a, B: b}
		case FaultLatency:
			a, b := pickTwo(regions)
			v := math.Round((1.5+r.Float64()*(cfg.MaxLatencyFactor-1.5))*100) / 100
			f, undo = Fault{Kind: FaultLatency, A: a, B: b, Value: v}, Fault{Kind: FaultClearLink, A: a, B: b}
		}
		s = append(s, ScheduledFault{At: at, Fault: f}, ScheduledFault{At: at + hold, Fault: undo})
		at += hold
	}
	return s, nil
}

// Run applies the schedule to a (a *Network or *Cluster) at its times,
// measured from the call (virtual time inside a bubble). It returns when the
// schedule is done, with ctx's error if ctx ends first, or with the first
// fault a rejects.
func (s Schedule) Run(ctx context.Context, a FaultApplier) error {
	start := time.Now()
	for i, sf := range s {
		if d := time.Until(start.Add(sf.At)); d > 0 {
			t := time.NewTimer(d)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return ctx.Err()
			}
		}
		if err := a.Apply(sf.Fault); err != nil {
			return fmt.Errorf("netsim: schedule step %d at %v (%s): %w", i, sf.At, sf.Fault, err)
		}
	}
	return nil
}

// String lists the schedule one fault per line.
func (s Schedule) String() string {
	var b []byte
	for _, sf := range s {
		b = fmt.Appendf(b, "%v\t%s\n", sf.At, sf.Fault)
	}
	return string(b)
}
