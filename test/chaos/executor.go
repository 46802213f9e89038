package chaos

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/meridian-mesh/meridian/netsim"
)

// Mesh is the cluster under test as the executor sees it. The runner adapts
// node/simcluster to it. Methods are called from the executor's goroutine
// and may block briefly (Restart until the node is back).
type Mesh interface {
	// Network is the simulated network the faults go to.
	Network() *netsim.Network
	// Crash stops a node as a process crash would; its data stays.
	Crash(name string) error
	// Restart starts a crashed node again on its data directory.
	Restart(ctx context.Context, name string) error
	// Leader names the server that leads region now, if any.
	Leader(region string) (string, bool)
	// Auctions lists the auctions in flight, as the leaders' ledgers show
	// them now.
	Auctions() []Auction
}

// Auction is an auction in flight between a buying and a selling region:
// the seller holds an escrow for it, or the buyer holds an award the
// seller has not acknowledged.
type Auction struct {
	Buyer, Seller string
}

// AppliedStep is what a step did when it ran.
type AppliedStep struct {
	Step Step `json:"step"`
	// At is when it ran, after the start of the fault phase; later than
	// Step.At when a trigger or await waited or an earlier step ran late.
	At time.Duration `json:"at_ns"`
	// Detail names what a step that picks its target picked.
	Detail string `json:"detail,omitempty"`
	// MidAuction is set on a crash-leader whose trigger fired.
	MidAuction bool `json:"mid_auction,omitempty"`
	// Err is set when the step failed.
	Err string `json:"error,omitempty"`
}

// String renders the step as it ran, with what it picked or why it failed.
func (a AppliedStep) String() string {
	s := fmt.Sprintf("%v (planned %s)", a.At.Round(time.Millisecond), a.Step)
	if a.Detail != "" {
		s += ": " + a.Detail
	}
	if a.Err != "" {
		s += ": ERROR " + a.Err
	}
	return s
}

// Executor applies a schedule to a mesh and keeps track of what is broken.
// One goroutine runs it (Run, then HealAll); Applied and Down may be called
// after Run returns.
type Executor struct {
	mesh Mesh
	env  Env
	log  *slog.Logger
	r    *rand.Rand
	// Poll is how often triggers and awaits look at the mesh.
	Poll time.Duration
	// OnChange, when set, is called after every step with whether the mesh
	// is free of faults now and the time; the convergence monitor uses it.
	OnChange func(clean bool, at time.Time)

	start     time.Time
	state     faultState
	down      map[string]bool
	refNodes  map[string]string
	splitCuts map[string][][2]string
	applied   []AppliedStep
}

// NewExecutor returns an executor for a mesh made as env describes. seed
// seeds the choices made at run time (which followers a split isolates).
func NewExecutor(mesh Mesh, env Env, seed int64, log *slog.Logger) *Executor {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Executor{
		mesh: mesh, env: env, log: log, Poll: 100 * time.Millisecond,
		r:    rand.New(rand.NewPCG(uint64(seed), 0x65786563)), // "exec"
		down: map[string]bool{}, refNodes: map[string]string{}, splitCuts: map[string][][2]string{},
	}
}

// Run applies the schedule, each step at start + Step.At or as soon after
// as the previous steps allow. A step that fails is recorded in Applied
// and the schedule goes on; Run returns the first such error, or ctx's.
func (x *Executor) Run(ctx context.Context, s Schedule, start time.Time) error {
	x.start = start
	var first error
	for _, step := range s {
		if d := time.Until(start.Add(step.At)); d > 0 {
			t := time.NewTimer(d)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return ctx.Err()
			}
		}
		a := x.apply(ctx, step)
		if err := ctx.Err(); err != nil {
			return err
		}
		x.applied = append(x.applied, a)
		if a.Err != "" {
			x.log.Warn("chaos step failed", "step", step.String(), "err", a.Err)
			if first == nil {
				first = fmt.Errorf("step %s: %s", step, a.Err)
			}
		} else {
			x.log.Info("chaos step", "step", step.String(), "detail", a.Detail)
		}
		_ = x.state.apply(step) // the schedule was validated
		x.changed()
	}
	return first
}

func (x *Executor) changed() {
	if x.OnChange != nil {
		x.OnChange(x.state.clean() && len(x.down) == 0, time.Now())
	}
}

// Applied returns what every step did.
func (x *Executor) Applied() []AppliedStep { return slices.Clone(x.applied) }

// Down returns the nodes the executor has crashed and not restarted.
func (x *Executor) Down() []string {
	var out []string
	for n := range x.down {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// HealAll undoes every fault still active: heals the network, clears link
// overrides and restarts every node it crashed. It returns the restarts
// that failed, joined.
func (x *Executor) HealAll(ctx context.Context) error {
	net := x.mesh.Network()
	net.Heal()
	net.ClearLinks()
	var errs []error
	for _, n := range x.Down() {
		if err := x.mesh.Restart(ctx, n); err != nil {
			errs = append(errs, fmt.Errorf("restarting %s: %w", n, err))
			continue
		}
		delete(x.down, n)
	}
	x.state = faultState{}
	x.applied = append(x.applied, AppliedStep{Step: Step{At: time.Since(x.start), Kind: StepFault, Fault: &netsim.Fault{Kind: netsim.FaultHeal}},
		At: time.Since(x.start), Detail: "final heal: network healed, links cleared, every crashed node restarted", Err: errText(errors.Join(errs...))})
	x.changed()
	return errors.Join(errs...)
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func (x *Executor) apply(ctx context.Context, s Step) (a AppliedStep) {
	a.Step = s
	defer func() { a.At = time.Since(x.start) }()
	fail := func(err error) AppliedStep {
		a.Err = err.Error()
		return a
	}
	switch s.Kind {
	case StepFault:
		if err := x.mesh.Network().Apply(*s.Fault); err != nil {
			return fail(err)
		}
	case StepCrash:
		if err := x.crash(s.Node); err != nil {
			return fail(err)
		}
	case StepRestart:
		if err := x.restart(ctx, s.Node); err != nil {
			return fail(err)
		}
	case StepCrashLeader:
		region, mid := x.awaitAuction(ctx, s)
		a.MidAuction = mid
		leader, ok := x.awaitLeader(ctx, region, 10*time.Second)
		if !ok {
			x.refNodes[s.Ref] = ""
			a.Detail = fmt.Sprintf("%s had no leader to crash", region)
			break
		}
		x.refNodes[s.Ref] = leader
		if mid {
			a.Detail = fmt.Sprintf("crashed %s, leader of %s, mid-auction", leader, region)
		} else {
			a.Detail = fmt.Sprintf("crashed %s, leader of %s; no auction seen within %v", leader, region, s.Wait)
		}
		if err := x.crash(leader); err != nil {
			return fail(err)
		}
	case StepRestartRef:
		n := x.refNodes[s.Ref]
		if n == "" {
			a.Detail = "nothing to restart"
			break
		}
		a.Detail = "restarted " + n
		if err := x.restart(ctx, n); err != nil {
			return fail(err)
		}
	case StepSplit:
		minority, majority := x.splitSides(s)
		var cuts [][2]string
		for _, m := range minority {
			for _, j := range majority {
				if err := x.mesh.Network().Apply(netsim.Fault{Kind: netsim.FaultCut, A: m, B: j, BothWays: true}); err != nil {
					return fail(err)
				}
				cuts = append(cuts, [2]string{m, j})
			}
		}
		x.splitCuts[s.Ref] = cuts
		a.Detail = fmt.Sprintf("minority %v | majority %v", minority, majority)
	case StepUnsplit:
		for _, c := range x.splitCuts[s.Ref] {
			if err := x.mesh.Network().Apply(netsim.Fault{Kind: netsim.FaultUncut, A: c[0], B: c[1], BothWays: true}); err != nil {
				return fail(err)
			}
		}
		delete(x.splitCuts, s.Ref)
	case StepAwaitLeader:
		t0 := time.Now()
		if l, ok := x.awaitLeader(ctx, s.Region, s.Wait); ok {
			a.Detail = fmt.Sprintf("%s leads %s after %v", l, s.Region, time.Since(t0).Round(time.Millisecond))
		} else {
			a.Detail = fmt.Sprintf("%s still has no leader after %v; going on", s.Region, s.Wait)
		}
	default:
		return fail(fmt.Errorf("unknown step kind %q", s.Kind))
	}
	return a
}

func (x *Executor) crash(n string) error {
	if x.down[n] {
		return nil
	}
	if err := x.mesh.Crash(n); err != nil {
		return fmt.Errorf("crashing %s: %w", n, err)
	}
	x.down[n] = true
	return nil
}

func (x *Executor) restart(ctx context.Context, n string) error {
	if !x.down[n] {
		return nil
	}
	if err := x.mesh.Restart(ctx, n); err != nil {
		return fmt.Errorf("restarting %s: %w", n, err)
	}
	delete(x.down, n)
	return nil
}

// awaitAuction waits, up to the step's Wait, for its trigger, and returns
// the region whose leader to crash and whether the trigger fired.
func (x *Executor) awaitAuction(ctx context.Context, s Step) (string, bool) {
	if s.Trigger == TriggerNone {
		return s.Region, false
	}
	deadline := time.Now().Add(s.Wait)
	for {
		var sellers []string
		for _, a := range x.mesh.Auctions() {
			switch {
			case s.Trigger == TriggerBuyerAuction && a.Buyer == s.Region:
				return s.Region, true
			case s.Trigger == TriggerSellerAuction && a.Buyer == s.Buyer && a.Seller != s.Buyer:
				sellers = append(sellers, a.Seller)
			}
		}
		if len(sellers) > 0 {
			slices.Sort(sellers)
			return sellers[0], true
		}
		if !time.Now().Before(deadline) || !x.sleep(ctx, x.Poll) {
			return s.Region, false
		}
	}
}

// awaitLeader waits up to wait for region to have a leader.
func (x *Executor) awaitLeader(ctx context.Context, region string, wait time.Duration) (string, bool) {
	deadline := time.Now().Add(wait)
	for {
		if l, ok := x.mesh.Leader(region); ok && !x.down[l] {
			return l, true
		}
		if !time.Now().Before(deadline) || !x.sleep(ctx, x.Poll) {
			return "", false
		}
	}
}

func (x *Executor) sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// splitSides picks a split's minority — the leader of the moment and, with
// 5 or more servers, seeded followers; or only followers — and majority.
func (x *Executor) splitSides(s Step) (minority, majority []string) {
	servers := x.env.ServerNames(s.Region)
	size := max(1, (len(servers)-1)/2)
	leader, hasLeader := x.mesh.Leader(s.Region)
	var followers []string
	for _, n := range servers {
		if !hasLeader || n != leader {
			followers = append(followers, n)
		}
	}
	x.r.Shuffle(len(followers), func(i, j int) { followers[i], followers[j] = followers[j], followers[i] })
	if s.Minority == MinorityLeader && hasLeader {
		minority = append(minority, leader)
	}
	for len(minority) < size && len(followers) > 0 {
		minority, followers = append(minority, followers[0]), followers[1:]
	}
	majority = followers
	if s.Minority != MinorityLeader && hasLeader {
		majority = append(majority, leader)
	}
	slices.Sort(minority)
	slices.Sort(majority)
	return minority, majority
}
