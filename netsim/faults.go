package netsim

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"time"
)

// FaultKind names a kind of fault.
type FaultKind string

// The fault kinds. Every fault is reversible: Heal undoes partitions,
// isolations and cuts; Unisolate and Uncut undo one of them; ClearLink and
// ClearLinks undo loss, latency and bandwidth overrides; Restart undoes Crash.
const (
	FaultPartition FaultKind = "partition"  // Groups of regions
	FaultIsolate   FaultKind = "isolate"    // A: endpoint
	FaultUnisolate FaultKind = "unisolate"  // A: endpoint
	FaultCut       FaultKind = "cut"        // A→B (and B→A if BothWays); endpoints or regions
	FaultUncut     FaultKind = "uncut"      // A→B (and B→A if BothWays)
	FaultLoss      FaultKind = "loss"       // A↔B: Value = loss probability
	FaultLatency   FaultKind = "latency"    // A↔B: Value = latency factor
	FaultBandwidth FaultKind = "bandwidth"  // A↔B: Value = bytes/s, 0 = unlimited
	FaultClearLink FaultKind = "clear-link" // A↔B: drop loss, latency and bandwidth overrides
	FaultCrash     FaultKind = "crash"      // A: endpoint
	FaultRestart   FaultKind = "restart"    // A: endpoint
	FaultHeal      FaultKind = "heal"       // undo partitions, isolations and cuts
)

// Fault is one change to the network, as a value: faults can be logged,
// scheduled (Schedule) and replayed.
type Fault struct {
	Kind FaultKind
	// Groups are the region groups of a partition.
	Groups [][]string `json:",omitempty"`
	// A and B name endpoints or regions, as the kind requires.
	A string `json:",omitempty"`
	B string `json:",omitempty"`
	// BothWays makes a cut or uncut apply in both directions.
	BothWays bool `json:",omitempty"`
	// Value is the loss probability, latency factor or bandwidth.
	Value float64 `json:",omitempty"`
}

// String describes the fault for logs, e.g. "cut a0->b" or "partition {a,b} | {c}".
func (f Fault) String() string {
	switch f.Kind {
	case FaultPartition:
		gs := make([]string, len(f.Groups))
		for i, g := range f.Groups {
			gs[i] = "{" + strings.Join(g, ",") + "}"
		}
		return "partition " + strings.Join(gs, " | ")
	case FaultIsolate, FaultUnisolate, FaultCrash, FaultRestart:
		return string(f.Kind) + " " + f.A
	case FaultCut, FaultUncut:
		arrow := "->"
		if f.BothWays {
			arrow = "<->"
		}
		return fmt.Sprintf("%s %s%s%s", f.Kind, f.A, arrow, f.B)
	case FaultLoss, FaultLatency, FaultBandwidth:
		return fmt.Sprintf("%s %s<->%s %g", f.Kind, f.A, f.B, f.Value)
	case FaultClearLink:
		return fmt.Sprintf("%s %s<->%s", f.Kind, f.A, f.B)
	}
	return string(f.Kind)
}

// FaultEvent is a fault applied to the network, with the (virtual) time it
// was applied.
type FaultEvent struct {
	At    time.Time
	Fault Fault
}

// faultState is the set of active faults; guarded by Network.mu.
type faultState struct {
	partition map[string]int // region → group; nil: no partition
	isolated  map[string]bool
	cuts      map[[2]string]bool // directed (from, to), endpoint or region names
	loss      map[[2]string]float64
	latency   map[[2]string]float64
	bandwidth map[[2]string]*bwQueue
}

// Partition splits the regions into groups that cannot reach each other;
// the regions named in no group form one more group. It replaces any
// earlier partition; Partition() with no groups ends it. Errors (an unknown
// region, a region in two groups) are logged and leave the network as is;
// use Apply to get them.
func (n *Network) Partition(groups ...[]string) {
	n.applyLogged(Fault{Kind: FaultPartition, Groups: groups})
}

// Isolate cuts an endpoint off from every other endpoint, both ways.
func (n *Network) Isolate(endpoint string) {
	n.applyLogged(Fault{Kind: FaultIsolate, A: endpoint})
}

// Unisolate undoes Isolate for one endpoint.
func (n *Network) Unisolate(endpoint string) {
	n.applyLogged(Fault{Kind: FaultUnisolate, A: endpoint})
}

// Cut blocks traffic from→to (and to→from if bothWays). Each name is an
// endpoint or a region.
func (n *Network) Cut(from, to string, bothWays bool) {
	n.applyLogged(Fault{Kind: FaultCut, A: from, B: to, BothWays: bothWays})
}

// Uncut undoes Cut.
func (n *Network) Uncut(from, to string, bothWays bool) {
	n.applyLogged(Fault{Kind: FaultUncut, A: from, B: to, BothWays: bothWays})
}

// SetLoss sets the datagram loss probability p in [0,1] between a and b,
// both ways, overriding the topology's. Each name is an endpoint or a
// region; the most specific override applies (endpoint pair, then endpoint
// and region, then region pair). Streams are not lossy: TCP retransmits.
func (n *Network) SetLoss(a, b string, p float64) {
	n.applyLogged(Fault{Kind: FaultLoss, A: a, B: b, Value: p})
}

// SetLatencyFactor multiplies the one-way latency between a and b, both
// ways, by f > 0 (1 restores the topology's latency).
func (n *Network) SetLatencyFactor(a, b string, f float64) {
	n.applyLogged(Fault{Kind: FaultLatency, A: a, B: b, Value: f})
}

// SetBandwidth limits the traffic between a and b to bytesPerSec in each
// direction, shared by all traffic the override matches; 0 removes any limit,
// including the topology's.
func (n *Network) SetBandwidth(a, b string, bytesPerSec float64) {
	n.applyLogged(Fault{Kind: FaultBandwidth, A: a, B: b, Value: bytesPerSec})
}

// ClearLink removes the loss, latency and bandwidth overrides between a and b.
func (n *Network) ClearLink(a, b string) {
	n.applyLogged(Fault{Kind: FaultClearLink, A: a, B: b})
}

// Crash takes an endpoint down: its stream connections are reset at both
// ends, its queued datagrams are discarded, and its traffic is dropped until
// Restart. Its sockets stay bound, so a process still running resumes after
// Restart; Cluster.Crash also stops the node's components, losing their
// in-memory state.
func (n *Network) Crash(endpoint string) {
	n.applyLogged(Fault{Kind: FaultCrash, A: endpoint})
}

// Restart brings a crashed endpoint back.
func (n *Network) Restart(endpoint string) {
	n.applyLogged(Fault{Kind: FaultRestart, A: endpoint})
}

// Heal undoes partitions, isolations and cuts. Loss, latency and bandwidth
// overrides and crashes stay.
func (n *Network) Heal() {
	n.applyLogged(Fault{Kind: FaultHeal})
}

// FaultLog returns the faults applied so far, in order, with their time.
func (n *Network) FaultLog() []FaultEvent {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]FaultEvent(nil), n.events...)
}

func (n *Network) applyLogged(f Fault) {
	if err := n.Apply(f); err != nil {
		n.log.Error("netsim fault rejected", "at", time.Now(), "fault", f.String(), "err", err)
	}
}

// Apply applies one fault, logs it with the current (virtual) time and
// records it in FaultLog. It returns an error naming the bad field for an
// invalid fault, which then changes nothing.
func (n *Network) Apply(f Fault) error {
	n.mu.Lock()
	if n.isClosed {
		n.mu.Unlock()
		return ErrNetworkClosed
	}
	if err := n.applyLocked(f); err != nil {
		n.mu.Unlock()
		return fmt.Errorf("netsim: fault %s: %w", f.Kind, err)
	}
	now := time.Now()
	n.events = append(n.events, FaultEvent{At: now, Fault: f})
	n.log.Info("netsim fault", "at", now, "fault", f.String())
	n.afterFaultLocked()
	var sync func()
	if n.p2p != nil {
		sync = n.p2p.planLocked()
	}
	n.mu.Unlock()
	if sync != nil {
		sync()
	}
	return nil
}

func (n *Network) applyLocked(f Fault) error {
	fs := &n.faults
	switch f.Kind {
	case FaultPartition:
		if len(f.Groups) == 0 {
			fs.partition = nil
			return nil
		}
		part := map[string]int{}
		for gi, g := range f.Groups {
			for _, r := range g {
				if !n.topo.HasRegion(r) {
					return fmt.Errorf("group %d: region %q: %w", gi, r, ErrUnknownRegion)
				}
				if prev, dup := part[r]; dup {
					return fmt.Errorf("group %d: region %q is already in group %d", gi, r, prev-1)
				}
				part[r] = gi + 1
			}
		}
		// Regions in no group share group 0.
		fs.partition = part
		return nil

	case FaultIsolate, FaultUnisolate, FaultCrash, FaultRestart:
		e, ok := n.endpoints[f.A]
		if !ok {
			return fmt.Errorf("endpoint %q: %w", f.A, ErrUnknownEndpoint)
		}
		switch f.Kind {
		case FaultIsolate:
			if fs.isolated == nil {
				fs.isolated = map[string]bool{}
			}
			fs.isolated[f.A] = true
		case FaultUnisolate:
			delete(fs.isolated, f.A)
		case FaultCrash:
			if !e.crashed {
				e.crashed = true
				close(e.down)
				for _, s := range e.packets {
					s.flushLocked()
				}
			}
		case FaultRestart:
			if e.crashed {
				e.crashed = false
				e.down = make(chan struct{})
			}
		}
		return nil

	case FaultCut, FaultUncut:
		if err := n.checkNamesLocked(f.A, f.B); err != nil {
			return err
		}
		keys := [][2]string{{f.A, f.B}}
		if f.BothWays {
			keys = append(keys, [2]string{f.B, f.A})
		}
		for _, k := range keys {
			if f.Kind == FaultCut {
				if fs.cuts == nil {
					fs.cuts = map[[2]string]bool{}
				}
				fs.cuts[k] = true
			} else {
				delete(fs.cuts, k)
			}
		}
		return nil

	case FaultLoss, FaultLatency, FaultBandwidth, FaultClearLink:
		if err := n.checkNamesLocked(f.A, f.B); err != nil {
			return err
		}
		v := f.Value
		switch {
		case f.Kind == FaultLoss && (math.IsNaN(v) || v < 0 || v > 1):
			return fmt.Errorf("loss %v: want a probability in [0,1]", v)
		case f.Kind == FaultLatency && (math.IsNaN(v) || math.IsInf(v, 0) || v <= 0):
			return fmt.Errorf("latency factor %v: want a finite number > 0", v)
		case f.Kind == FaultBandwidth && (math.IsNaN(v) || math.IsInf(v, 0) || v < 0):
			return fmt.Errorf("bandwidth %v: want bytes/s >= 0", v)
		}
		for _, k := range [][2]string{{f.A, f.B}, {f.B, f.A}} {
			switch f.Kind {
			case FaultLoss:
				if fs.loss == nil {
					fs.loss = map[[2]string]float64{}
				}
				fs.loss[k] = v
			case FaultLatency:
				if fs.latency == nil {
					fs.latency = map[[2]string]float64{}
				}
				fs.latency[k] = v
			case FaultBandwidth:
				if fs.bandwidth == nil {
					fs.bandwidth = map[[2]string]*bwQueue{}
				}
				if v == 0 {
					fs.bandwidth[k] = nil // explicit: unlimited
				} else {
					fs.bandwidth[k] = &bwQueue{rate: v}
				}
			case FaultClearLink:
				delete(fs.loss, k)
				delete(fs.latency, k)
				delete(fs.bandwidth, k)
			}
		}
		return nil

	case FaultHeal:
		fs.partition, fs.isolated, fs.cuts = nil, nil, nil
		return nil
	}
	return fmt.Errorf("unknown fault kind %q", f.Kind)
}

// ClearLinks removes every loss, latency and bandwidth override.
func (n *Network) ClearLinks() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.faults.loss, n.faults.latency, n.faults.bandwidth = nil, nil, nil
	now := time.Now()
	n.events = append(n.events, FaultEvent{At: now, Fault: Fault{Kind: FaultClearLink, A: "*", B: "*"}})
	n.log.Info("netsim fault", "at", now, "fault", "clear-links")
	n.epoch.Add(1)
}

func (n *Network) checkNamesLocked(names ...string) error {
	for i, name := range names {
		if _, ok := n.endpoints[name]; ok {
			continue
		}
		if n.topo.HasRegion(name) {
			continue
		}
		field := [...]string{"A", "B"}[i]
		if name == "" {
			return fmt.Errorf("field %s: empty name", field)
		}
		return fmt.Errorf("field %s: %q is neither an endpoint nor a region: %w", field, name, errors.Join(ErrUnknownEndpoint, ErrUnknownRegion))
	}
	return nil
}
