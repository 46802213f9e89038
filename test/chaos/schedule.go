package chaos

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/meridian-mesh/meridian/netsim"
)

// StepKind names what one step of a fault schedule does.
type StepKind string

// The step kinds. Network faults are netsim's own (StepFault); the others
// act on nodes, or pick their target when they run (the leader of a region
// at that moment), which a static netsim.Fault cannot express.
const (
	// StepFault applies Step.Fault to the network as it is: partition,
	// heal, cut, uncut, isolate, unisolate, loss, latency, clear-link.
	StepFault StepKind = "fault"
	// StepCrash crashes Step.Node as a process crash would: its endpoint
	// drops all traffic and its agent stops, losing its memory; its data
	// directory stays.
	StepCrash StepKind = "crash"
	// StepRestart starts the crashed Step.Node again on its data directory.
	StepRestart StepKind = "restart"
	// StepCrashLeader crashes whichever server leads Step.Region when the
	// step runs. With a Trigger it first waits, up to Step.Wait, for an
	// auction to be in flight (see Trigger). The node it crashed is
	// remembered under Step.Ref.
	StepCrashLeader StepKind = "crash-leader"
	// StepRestartRef restarts the node the crash-leader step with the same
	// Ref crashed.
	StepRestartRef StepKind = "restart-ref"
	// StepSplit cuts a minority of Step.Region's servers off from its
	// majority, both ways; every other node still reaches both sides.
	// Step.Minority says whether the minority holds the leader of the
	// moment or a follower. The cuts are remembered under Step.Ref.
	StepSplit StepKind = "split"
	// StepUnsplit removes the cuts of the split with the same Ref.
	StepUnsplit StepKind = "unsplit"
	// StepAwaitLeader waits, up to Step.Wait, until Step.Region has a
	// leader: what an operator does between the nodes of a rolling restart.
	StepAwaitLeader StepKind = "await-leader"
)

// Trigger delays a crash-leader step until an auction is in flight, so
// that the crash lands in the middle of one.
type Trigger string

// The triggers.
const (
	// TriggerNone crashes at once.
	TriggerNone Trigger = ""
	// TriggerBuyerAuction waits until Step.Region, as a buyer, has an
	// auction in flight: a seller's leader holds an escrow for it, or its
	// own ledger holds an award the seller has not acknowledged. Then it
	// crashes Step.Region's leader.
	TriggerBuyerAuction Trigger = "buyer-auction"
	// TriggerSellerAuction waits until some region's leader holds an escrow
	// for an auction of Step.Buyer, and crashes that region's leader; if
	// none does within Step.Wait it crashes Step.Region's leader.
	TriggerSellerAuction Trigger = "seller-auction"
)

// Minority says which server a split puts on the minority side.
type Minority string

// The minorities.
const (
	// MinorityLeader puts the leader of the moment in the minority, so it
	// must step down and the majority elect another.
	MinorityLeader Minority = "leader"
	// MinorityFollower puts a follower in the minority; the leader keeps
	// its quorum.
	MinorityFollower Minority = "follower"
)

// Step is one action of a fault schedule, At after the start of the fault
// phase of a run.
type Step struct {
	At   time.Duration `json:"at_ns"`
	Kind StepKind      `json:"kind"`
	// Fault is the network fault of a StepFault.
	Fault *netsim.Fault `json:"fault,omitempty"`
	// Node names the node of a crash or restart.
	Node string `json:"node,omitempty"`
	// Region is the region of a crash-leader, split or await-leader.
	Region string `json:"region,omitempty"`
	// Buyer is the buying region a seller-auction trigger waits for.
	Buyer string `json:"buyer,omitempty"`
	// Trigger delays a crash-leader until an auction is in flight.
	Trigger Trigger `json:"trigger,omitempty"`
	// Minority says who a split isolates.
	Minority Minority `json:"minority,omitempty"`
	// Wait bounds how long a trigger or an await-leader waits.
	Wait time.Duration `json:"wait_ns,omitempty"`
	// Ref ties a step that picks its target when it runs to the step that
	// undoes it.
	Ref string `json:"ref,omitempty"`
}

// String describes the step for logs and reports, e.g.
// "1m20s partition {eu-west-1} | rest" or "2m0s crash-leader us-east-1 on buyer-auction (≤45s) #k1".
func (s Step) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%v ", s.At)
	switch s.Kind {
	case StepFault:
		if s.Fault == nil {
			b.WriteString("fault <nil>")
		} else {
			b.WriteString(s.Fault.String())
		}
	case StepCrash, StepRestart:
		fmt.Fprintf(&b, "%s %s", s.Kind, s.Node)
	case StepCrashLeader:
		fmt.Fprintf(&b, "crash-leader %s", s.Region)
		if s.Trigger != TriggerNone {
			fmt.Fprintf(&b, " on %s", s.Trigger)
			if s.Buyer != "" {
				fmt.Fprintf(&b, " of %s", s.Buyer)
			}
			fmt.Fprintf(&b, " (≤%v)", s.Wait)
		}
	case StepSplit:
		fmt.Fprintf(&b, "split %s servers, %s in the minority", s.Region, s.Minority)
	case StepAwaitLeader:
		fmt.Fprintf(&b, "await-leader %s (≤%v)", s.Region, s.Wait)
	default:
		b.WriteString(string(s.Kind))
	}
	if s.Ref != "" {
		fmt.Fprintf(&b, " #%s", s.Ref)
	}
	return b.String()
}

// Schedule is a fault schedule: steps in time order.
type Schedule []Step

// String lists the schedule one step per line.
func (s Schedule) String() string {
	var b strings.Builder
	for _, st := range s {
		b.WriteString(st.String())
		b.WriteByte('\n')
	}
	return b.String()
}

// Lines returns the schedule one step per string, for reports.
func (s Schedule) Lines() []string {
	out := make([]string, len(s))
	for i, st := range s {
		out[i] = st.String()
	}
	return out
}

// Env is the cluster a schedule is made for.
type Env struct {
	// Regions are the cluster's regions, sorted.
	Regions []string
	// Servers and Workers are the nodes per region; node names are
	// "<region>-<i>", ordinals 0..Servers-1 being the servers.
	Servers, Workers int
	// Duration is the length of the fault phase: every fault a schedule
	// starts is undone within it.
	Duration time.Duration
	// HotRegion is the region the load overloads, so that it buys capacity
	// from the others: the buyer of the kill-leader scenarios.
	HotRegion string
}

// minDuration is the shortest fault phase a schedule can be made for.
const minDuration = time.Minute

// Validate checks the environment.
func (e Env) Validate() error {
	if len(e.Regions) < 2 {
		return fmt.Errorf("env regions: need at least 2, got %d", len(e.Regions))
	}
	if !slices.IsSorted(e.Regions) {
		return errors.New("env regions: must be sorted")
	}
	for i := 1; i < len(e.Regions); i++ {
		if e.Regions[i] == e.Regions[i-1] {
			return fmt.Errorf("env regions: %q appears twice", e.Regions[i])
		}
	}
	if e.Servers < 1 {
		return fmt.Errorf("env servers: need at least 1 per region, got %d", e.Servers)
	}
	if e.Workers < 0 {
		return fmt.Errorf("env workers: must not be negative, got %d", e.Workers)
	}
	if e.Duration < minDuration {
		return fmt.Errorf("env duration: need at least %v of faults, got %v", minDuration, e.Duration)
	}
	if !slices.Contains(e.Regions, e.HotRegion) {
		return fmt.Errorf("env hot region %q: not one of the regions %v", e.HotRegion, e.Regions)
	}
	return nil
}

// NodeName returns the name of a region's node with the ordinal.
func NodeName(region string, ordinal int) string { return fmt.Sprintf("%s-%d", region, ordinal) }

// ServerNames returns the names of a region's servers.
func (e Env) ServerNames(region string) []string {
	out := make([]string, e.Servers)
	for i := range out {
		out[i] = NodeName(region, i)
	}
	return out
}

// WorkerNames returns the names of a region's workers.
func (e Env) WorkerNames(region string) []string {
	out := make([]string, e.Workers)
	for i := range out {
		out[i] = NodeName(region, e.Servers+i)
	}
	return out
}

// AllNodes returns every node name, region by region.
func (e Env) AllNodes() []string {
	var out []string
	for _, r := range e.Regions {
		out = append(out, e.ServerNames(r)...)
		out = append(out, e.WorkerNames(r)...)
	}
	return out
}

func (e Env) hasNode(name string) bool { return slices.Contains(e.AllNodes(), name) }

func (e Env) hasRegion(r string) bool { return slices.Contains(e.Regions, r) }

// Validate checks that the schedule fits env: steps in time order within
// the fault phase, every name known, every value sane, every Ref undone by
// the step that should undo it, and the network and nodes healed by the
// last step.
func (s Schedule) Validate(env Env) error {
	var st faultState
	var last time.Duration
	for i, step := range s {
		if step.At < last {
			return fmt.Errorf("step %d (%s): at %v is before the previous step's %v", i, step, step.At, last)
		}
		if step.At < 0 || step.At > env.Duration {
			return fmt.Errorf("step %d (%s): at %v is outside the fault phase [0, %v]", i, step, step.At, env.Duration)
		}
		last = step.At
		if err := step.validate(env); err != nil {
			return fmt.Errorf("step %d (%s): %w", i, step, err)
		}
		if err := st.apply(step); err != nil {
			return fmt.Errorf("step %d (%s): %w", i, step, err)
		}
	}
	if !st.clean() {
		return fmt.Errorf("schedule ends with faults still active: %s", strings.Join(st.active(), ", "))
	}
	return nil
}

func (s Step) validate(env Env) error {
	needRegion := func(r, field string) error {
		if !env.hasRegion(r) {
			return fmt.Errorf("%s %q: not a region of the cluster", field, r)
		}
		return nil
	}
	needRef := func() error {
		if s.Ref == "" {
			return errors.New("ref: must not be empty")
		}
		return nil
	}
	switch s.Kind {
	case StepFault:
		if s.Fault == nil {
			return errors.New("fault: missing")
		}
		return validateFault(*s.Fault, env)
	case StepCrash, StepRestart:
		if !env.hasNode(s.Node) {
			return fmt.Errorf("node %q: not a node of the cluster", s.Node)
		}
		return nil
	case StepCrashLeader:
		if err := needRegion(s.Region, "region"); err != nil {
			return err
		}
		switch s.Trigger {
		case TriggerNone, TriggerBuyerAuction:
		case TriggerSellerAuction:
			if err := needRegion(s.Buyer, "buyer"); err != nil {
				return err
			}
		default:
			return fmt.Errorf("trigger %q: unknown", s.Trigger)
		}
		if s.Trigger != TriggerNone && s.Wait <= 0 {
			return fmt.Errorf("wait %v: a trigger needs a positive wait", s.Wait)
		}
		return needRef()
	case StepRestartRef, StepUnsplit:
		return needRef()
	case StepSplit:
		if err := needRegion(s.Region, "region"); err != nil {
			return err
		}
		if env.Servers < 2 {
			return fmt.Errorf("region %q: a split needs at least 2 servers, the cluster has %d", s.Region, env.Servers)
		}
		if s.Minority != MinorityLeader && s.Minority != MinorityFollower {
			return fmt.Errorf("minority %q: want %q or %q", s.Minority, MinorityLeader, MinorityFollower)
		}
		return needRef()
	case StepAwaitLeader:
		if err := needRegion(s.Region, "region"); err != nil {
			return err
		}
		if s.Wait <= 0 {
			return fmt.Errorf("wait %v: must be positive", s.Wait)
		}
		return nil
	}
	return fmt.Errorf("kind %q: unknown", s.Kind)
}

// validateFault checks the names and values of a network fault; netsim
// checks them again when it applies it.
func validateFault(f netsim.Fault, env Env) error {
	name := func(n, field string) error {
		if env.hasRegion(n) || env.hasNode(n) {
			return nil
		}
		return fmt.Errorf("fault %s %q: neither a region nor a node of the cluster", field, n)
	}
	switch f.Kind {
	case netsim.FaultPartition:
		seen := map[string]bool{}
		for gi, g := range f.Groups {
			for _, r := range g {
				if !env.hasRegion(r) {
					return fmt.Errorf("fault group %d: %q is not a region of the cluster", gi, r)
				}
				if seen[r] {
					return fmt.Errorf("fault group %d: region %q is in two groups", gi, r)
				}
				seen[r] = true
			}
		}
		return nil
	case netsim.FaultHeal:
		return nil
	case netsim.FaultIsolate, netsim.FaultUnisolate:
		if !env.hasNode(f.A) {
			return fmt.Errorf("fault a %q: not a node of the cluster", f.A)
		}
		return nil
	case netsim.FaultCut, netsim.FaultUncut, netsim.FaultClearLink:
		if err := name(f.A, "a"); err != nil {
			return err
		}
		return name(f.B, "b")
	case netsim.FaultLoss:
		if !(f.Value >= 0 && f.Value <= 1) {
			return fmt.Errorf("fault value %v: a loss is a probability in [0,1]", f.Value)
		}
		if err := name(f.A, "a"); err != nil {
			return err
		}
		return name(f.B, "b")
	case netsim.FaultLatency:
		if !(f.Value > 0) || f.Value > 1e6 {
			return fmt.Errorf("fault value %v: a latency factor must be > 0", f.Value)
		}
		if err := name(f.A, "a"); err != nil {
			return err
		}
		return name(f.B, "b")
	case netsim.FaultCrash, netsim.FaultRestart:
		return fmt.Errorf("fault kind %q: crash nodes with StepCrash, which stops the agent too", f.Kind)
	}
	return fmt.Errorf("fault kind %q: not supported in a schedule", f.Kind)
}

// faultState tracks which faults are active, symbolically, as a schedule
// is applied: Validate uses it to check that a schedule ends healed, the
// executor to know when the mesh is whole again (when convergence is
// measured).
type faultState struct {
	partition bool
	cuts      map[[2]string]bool
	isolated  map[string]bool
	links     map[[2]string]bool
	crashed   map[string]bool
	// crashedRefs and splits are keyed by Ref; a split's value is false
	// once healed.
	crashedRefs map[string]bool
	splits      map[string]bool
}

func pairKey(a, b string) [2]string {
	if b < a {
		a, b = b, a
	}
	return [2]string{a, b}
}

func setAdd[K comparable](m *map[K]bool, k K) {
	if *m == nil {
		*m = map[K]bool{}
	}
	(*m)[k] = true
}

// apply records a step; it fails for a step that undoes nothing active
// (a restart of a running node, an unsplit of an unknown ref).
func (s *faultState) apply(step Step) error {
	switch step.Kind {
	case StepFault:
		f := step.Fault
		switch f.Kind {
		case netsim.FaultPartition:
			s.partition = len(f.Groups) > 0
		case netsim.FaultHeal:
			s.partition = false
			s.cuts, s.isolated = nil, nil
			for ref := range s.splits {
				s.splits[ref] = false
			}
		case netsim.FaultIsolate:
			setAdd(&s.isolated, f.A)
		case netsim.FaultUnisolate:
			delete(s.isolated, f.A)
		case netsim.FaultCut:
			setAdd(&s.cuts, [2]string{f.A, f.B})
			if f.BothWays {
				setAdd(&s.cuts, [2]string{f.B, f.A})
			}
		case netsim.FaultUncut:
			delete(s.cuts, [2]string{f.A, f.B})
			if f.BothWays {
				delete(s.cuts, [2]string{f.B, f.A})
			}
		case netsim.FaultLoss, netsim.FaultLatency:
			setAdd(&s.links, pairKey(f.A, f.B))
		case netsim.FaultClearLink:
			delete(s.links, pairKey(f.A, f.B))
		}
	case StepCrash:
		if s.crashed[step.Node] {
			return fmt.Errorf("node %s is already crashed", step.Node)
		}
		setAdd(&s.crashed, step.Node)
	case StepRestart:
		if !s.crashed[step.Node] {
			return fmt.Errorf("node %s is not crashed", step.Node)
		}
		delete(s.crashed, step.Node)
	case StepCrashLeader:
		if _, dup := s.crashedRefs[step.Ref]; dup {
			return fmt.Errorf("ref %q is used twice", step.Ref)
		}
		setAdd(&s.crashedRefs, step.Ref)
	case StepRestartRef:
		if !s.crashedRefs[step.Ref] {
			return fmt.Errorf("ref %q: no crash-leader step to undo", step.Ref)
		}
		s.crashedRefs[step.Ref] = false
	case StepSplit:
		if _, dup := s.splits[step.Ref]; dup {
			return fmt.Errorf("ref %q is used twice", step.Ref)
		}
		setAdd(&s.splits, step.Ref)
	case StepUnsplit:
		if _, ok := s.splits[step.Ref]; !ok {
			return fmt.Errorf("ref %q: no split to undo", step.Ref)
		}
		s.splits[step.Ref] = false
	}
	return nil
}

// clean reports whether no fault is active.
func (s *faultState) clean() bool { return len(s.active()) == 0 }

// active lists the active faults, sorted.
func (s *faultState) active() []string {
	var out []string
	if s.partition {
		out = append(out, "partition")
	}
	for k := range s.cuts {
		out = append(out, "cut "+k[0]+"->"+k[1])
	}
	for n := range s.isolated {
		out = append(out, "isolation of "+n)
	}
	for k := range s.links {
		out = append(out, "link override "+k[0]+"<->"+k[1])
	}
	for n := range s.crashed {
		out = append(out, "crash of "+n)
	}
	for ref, on := range s.crashedRefs {
		if on {
			out = append(out, "crash-leader #"+ref)
		}
	}
	for ref, on := range s.splits {
		if on {
			out = append(out, "split #"+ref)
		}
	}
	slices.Sort(out)
	return out
}
