package chaos

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/meridian-mesh/meridian/netsim"
	"github.com/meridian-mesh/meridian/node"
	"github.com/meridian-mesh/meridian/node/api"
	"github.com/meridian-mesh/meridian/node/simcluster"
	"github.com/meridian-mesh/meridian/placement"
)

// DefaultRegions are the four regions of the default cluster: one per
// continent of the world topology, each with p4d.24xlarge prices.
var DefaultRegions = []string{"ap-northeast-1", "ap-southeast-2", "eu-west-1", "us-east-1"}

// LoadShape sizes a run's client load against the cluster.
type LoadShape struct {
	// JobsPerMinute is each region's submit rate; the hot region's is
	// HotFactor times it.
	JobsPerMinute, HotFactor float64
	// HotBurst is how many times its own capacity the hot region submits
	// in size-1 jobs in the first BurstWindow: 1 fills it at once.
	HotBurst float64
	// StatusPerMinute is each region's rate of status reads.
	StatusPerMinute float64
	// CancelFraction is the share of jobs cancelled after a while.
	CancelFraction float64
	// Slots is how many size-1 jobs fill the smallest node.
	Slots int
	// MinRun and MaxRun bound a job's duration.
	MinRun, MaxRun time.Duration
}

// Config configures one run.
type Config struct {
	// Seed makes the run: the fault schedule, the load, the hot region,
	// the network's drops and the agents' randomness all derive from it.
	Seed int64
	// Scenario names the scenario (see ScenarioNames).
	Scenario string
	// Duration is the fault phase, during which the load runs too.
	Duration time.Duration
	// Regions, Servers and Workers shape the cluster.
	Regions          []string
	Servers, Workers int
	// Market lets the regions trade capacity.
	Market bool
	// Load shapes the client load.
	Load LoadShape
	// Settle bounds how long the run waits, after the final heal, for the
	// mesh to settle: every region led, no escrow or open trade left, every
	// replica caught up, every gossip view converged.
	Settle time.Duration
	// ConvergeBound is the most a gossip view may take to converge after a
	// heal (checker 4).
	ConvergeBound time.Duration
	// EscrowGrace is how long past its expiry an escrow may linger on a
	// leader (checker 3): the ledger's expiry check interval (1 s) plus
	// slack for the commit and the snapshot interval.
	EscrowGrace time.Duration
	// SnapshotEvery is how often every server's ledger replica is checked.
	SnapshotEvery time.Duration
	// OpTimeout bounds each client call.
	OpTimeout time.Duration
	// ReadyTimeout bounds the cluster's start.
	ReadyTimeout time.Duration
	// Logger receives the run's own logs and the agents'; nil discards.
	Logger *slog.Logger
}

// DefaultConfig is the default run: 4 regions of the world topology × (3
// servers + 2 workers), 5 virtual minutes of random faults, the market on.
func DefaultConfig() Config {
	return Config{
		Scenario: "random",
		Duration: 5 * time.Minute,
		Regions:  slices.Clone(DefaultRegions),
		Servers:  3,
		Workers:  2,
		Market:   true,
		Load: LoadShape{
			JobsPerMinute: 2, HotFactor: 3, HotBurst: 1, StatusPerMinute: 6, CancelFraction: 0.15,
			Slots: 4, MinRun: 30 * time.Second, MaxRun: 3 * time.Minute,
		},
		Settle:        4 * time.Minute,
		ConvergeBound: time.Minute,
		EscrowGrace:   10 * time.Second,
		SnapshotEvery: time.Second,
		OpTimeout:     20 * time.Second,
		ReadyTimeout:  5 * time.Minute,
	}
}

func (c Config) validate() error {
	if _, err := LookupScenario(c.Scenario); err != nil {
		return err
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"settle", c.Settle}, {"converge bound", c.ConvergeBound}, {"escrow grace", c.EscrowGrace},
		{"snapshot interval", c.SnapshotEvery}, {"op timeout", c.OpTimeout}, {"ready timeout", c.ReadyTimeout}} {
		if d.v <= 0 {
			return fmt.Errorf("config %s %v: must be positive", d.name, d.v)
		}
	}
	if c.Load.Slots < 1 {
		return fmt.Errorf("config load slots %d: must be at least 1", c.Load.Slots)
	}
	return nil
}

// hotRegion draws the region the load overloads.
func hotRegion(seed int64, regions []string) string {
	return regions[rand.New(rand.NewPCG(uint64(seed), 0x686f74)).IntN(len(regions))] // "hot"
}

// Run carries out one chaos run and checks it. Call it inside a
// testing/synctest bubble: the mesh, the faults and the load run in
// virtual time, and Run waits a virtual minute after closing the cluster
// for memberlist's goroutines to end. The result's Error is set when the
// run could not be carried out; its Failures when a check failed.
func Run(ctx context.Context, cfg Config) *RunResult {
	res := &RunResult{Seed: cfg.Seed, Scenario: cfg.Scenario, Minutes: cfg.Duration.Minutes(), Ops: map[string]int{}}
	if err := run(ctx, cfg, res); err != nil {
		res.Error = err.Error()
	}
	return res
}

func run(ctx context.Context, cfg Config, res *RunResult) error {
	if err := cfg.validate(); err != nil {
		return err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	regions := slices.Sorted(slices.Values(cfg.Regions))
	sc, err := LookupScenario(cfg.Scenario)
	if err != nil {
		return err
	}
	env := Env{Regions: regions, Servers: cfg.Servers, Workers: cfg.Workers, Duration: cfg.Duration, HotRegion: hotRegion(cfg.Seed, regions)}
	sched, err := sc.Generate(cfg.Seed, env)
	if err != nil {
		return err
	}
	res.Schedule = sched.Lines()
	topo, err := netsim.WorldTopology().Subset(regions...)
	if err != nil {
		return fmt.Errorf("topology: %w", err)
	}

	simcfg := simcluster.Config{Topology: topo, Regions: regions, Servers: cfg.Servers, Workers: cfg.Workers,
		Seed: cfg.Seed, Market: cfg.Market, Logger: log,
		// Crashes here are of agents, restarted in this process: what they
		// wrote survives without a sync, as it does a process crash. (A
		// machine crash is not simulated.) In the bubble a sync only holds
		// the virtual clock.
		NoSync: true}
	cl, err := simcluster.Start(ctx, simcfg)
	if err != nil {
		return fmt.Errorf("starting the cluster: %w", err)
	}
	defer func() {
		if err := cl.Close(); err != nil {
			res.Notes = append(res.Notes, "closing the cluster: "+err.Error())
		}
		// memberlist's probe goroutines notice the shutdown on their next
		// tick; the bubble must not end before they do.
		time.Sleep(time.Minute)
	}()
	rctx, cancel := context.WithTimeout(ctx, cfg.ReadyTimeout)
	err = cl.WaitReady(rctx)
	cancel()
	if err != nil {
		return fmt.Errorf("cluster not ready: %w", err)
	}
	unit, hotSlots, err := loadUnit(cl, regions, env.HotRegion, cfg.Load.Slots)
	if err != nil {
		return err
	}
	plan, err := PlanLoad(cfg.Seed, LoadConfig{
		Regions: regions, HotRegion: env.HotRegion, HotFactor: cfg.Load.HotFactor, Duration: cfg.Duration,
		HotBurst:      int(math.Ceil(cfg.Load.HotBurst * float64(hotSlots))),
		JobsPerMinute: cfg.Load.JobsPerMinute, StatusPerMinute: cfg.Load.StatusPerMinute, CancelFraction: cfg.Load.CancelFraction,
		Unit: unit, MinRun: cfg.Load.MinRun, MaxRun: cfg.Load.MaxRun,
	})
	if err != nil {
		return err
	}
	log.Info("chaos run", "seed", cfg.Seed, "scenario", cfg.Scenario, "hot", env.HotRegion, "ops", len(plan), "unit", fmtRes(unit))

	// Every goroutine of the run stops, and is waited for, before the
	// cluster closes (the deferred close above runs after this one).
	runCtx, cancelRun := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		cancelRun()
		wg.Wait()
	}()
	bg, stopBG := context.WithCancel(runCtx)
	defer stopBG()
	loadCtx, stopLoad := context.WithCancel(runCtx)
	defer stopLoad()

	mesh := &clusterMesh{cl: cl, regions: regions}
	hist := &History{}
	snaps := &snapshotter{cl: cl, grace: cfg.EscrowGrace, leaderSince: map[string]time.Time{}, lastIndex: map[string]uint64{},
		seen: map[string]bool{}, stopped: make(chan struct{})}
	conv := newConvMonitor(cl, bg.Done())
	exec := NewExecutor(mesh, env, cfg.Seed, log)
	exec.OnChange = conv.change
	wg.Go(func() { snaps.run(bg, cfg.SnapshotEvery) })
	wg.Go(func() { conv.run(bg) })

	start := time.Now()
	ld := &loader{cl: cl, hist: hist, timeout: cfg.OpTimeout, sem: make(chan struct{}, 256)}
	loadDone := make(chan struct{})
	wg.Go(func() {
		defer close(loadDone)
		ld.run(loadCtx, runCtx, plan, start)
	})
	var execErr error
	execDone := make(chan struct{})
	wg.Go(func() {
		defer close(execDone)
		execErr = exec.Run(runCtx, sched, start)
	})
	select {
	case <-execDone:
	case <-ctx.Done():
		return ctx.Err()
	}
	if d := time.Until(start.Add(cfg.Duration)); d > 0 {
		time.Sleep(d)
	}
	stopLoad()
	<-loadDone
	res.Ops["shed"] = ld.shedCount()

	// Heal everything, settle, read every job once more, and take the
	// final snapshots.
	healErr := exec.HealAll(ctx)
	healed := time.Now()
	conv.final(healed)
	settleReasons := settle(ctx, cl, regions, conv, cfg.Settle)
	res.SettleS = time.Since(healed).Seconds()
	finalReads(ctx, cl, hist, cfg.OpTimeout)
	final := finalSnapshots(cl)
	stopBG()
	<-conv.stopped
	snaps.wait()
	hist.Close()

	// Checks.
	for _, a := range exec.Applied() {
		res.Applied = append(res.Applied, a.String())
		if a.Step.Kind == StepCrashLeader {
			if a.MidAuction {
				res.MidAuctionKills++
			} else {
				res.KillsWithoutAuction++
			}
		}
	}
	if execErr != nil {
		res.Failures = append(res.Failures, "a fault step failed: "+execErr.Error())
	}
	if healErr != nil {
		res.Failures = append(res.Failures, "final heal: "+healErr.Error())
	}
	if len(settleReasons) > 0 {
		res.Failures = append(res.Failures, fmt.Sprintf("the mesh did not settle within %v of the final heal: %s", cfg.Settle, strings.Join(first(settleReasons, 8), "; ")))
	}
	ops := hist.Ops()
	for _, o := range ops {
		res.Ops[string(o.Kind)+"/"+string(o.Outcome)]++
	}
	submitted, acked := JobCounts(ops)
	res.JobsSubmitted, res.JobsAcked = len(submitted), len(acked)
	res.Trades = countTrades(cl, regions)
	res.FinalJobs = map[string]int{}
	for _, s := range final {
		if s.LeaderSince.IsZero() {
			continue
		}
		for _, j := range s.Jobs {
			res.FinalJobs[j.State.String()]++
		}
		for _, a := range s.Live {
			if a.JobRegion != s.Region {
				res.FinalJobs["served-for-another-region"]++
			}
		}
	}

	// (1) and (3): the snapshots taken during the run, and the final ones.
	for _, s := range final {
		snaps.record(CheckOvercommit(s))
	}
	snaps.record(CheckFinalEscrows(final, cfg.EscrowGrace))
	res.Snapshots = snaps.count + len(final)
	res.Overcommits, res.EscrowLeaks = snaps.overcommits, snaps.leaks
	var accounting []Violation
	for _, v := range snaps.violations {
		if v.Check == "accounting" {
			accounting = append(accounting, v)
		}
	}
	res.Violations = append(res.Violations, snaps.violations...)
	if res.Overcommits > 0 {
		res.Failures = append(res.Failures, fmt.Sprintf("overcommits: %d node(s) held more than their capacity", res.Overcommits))
		res.Evidence = append(res.Evidence, violationsText(snaps.violations, "overcommit"))
	}
	if len(accounting) > 0 {
		res.Failures = append(res.Failures, fmt.Sprintf("accounting: %d node(s) recorded a Used that is not what they hold", len(accounting)))
		res.Evidence = append(res.Evidence, violationsText(accounting, "accounting"))
	}
	if res.EscrowLeaks > 0 {
		res.Failures = append(res.Failures, fmt.Sprintf("escrow leaks: %d escrow(s) outlived their expiry", res.EscrowLeaks))
		res.Evidence = append(res.Evidence, violationsText(snaps.violations, "escrow-leak"))
	}

	// (2) none lost, none duplicated.
	jv := CheckJobs(final, acked)
	res.JobsLost, res.JobsDuplicated, res.StaleAllocations = len(jv.Lost), len(jv.Duplicated), len(jv.Stale)
	res.Violations = append(res.Violations, jv.Violations...)
	byJob := map[string][]Op{}
	for _, o := range ops {
		byJob[o.Job] = append(byJob[o.Job], o)
	}
	for _, set := range []struct {
		name  string
		check string
		ids   []string
	}{{"jobs lost", "lost", jv.Lost}, {"jobs duplicated", "duplicated", jv.Duplicated}, {"stale allocations", "stale-allocation", jv.Stale}} {
		if len(set.ids) == 0 {
			continue
		}
		res.Failures = append(res.Failures, fmt.Sprintf("%s: %d (%s)", set.name, len(set.ids), strings.Join(first(set.ids, 10), ", ")))
		for _, id := range first(set.ids, 3) {
			res.Evidence = append(res.Evidence, jobEvidence(id, set.check, jv.Violations, byJob[id], start))
		}
	}
	var disagree []Violation
	for _, v := range jv.Violations {
		if v.Check == "replicas-disagree" {
			disagree = append(disagree, v)
		}
	}
	if len(disagree) > 0 {
		res.Failures = append(res.Failures, fmt.Sprintf("replicas disagree after settling: %d", len(disagree)))
		res.Evidence = append(res.Evidence, violationsText(disagree, "replicas-disagree"))
	}

	// (4) convergence.
	ms := conv.measurements()
	res.Convergences = ms
	var bad []string
	res.MaxConvergeS, res.MaxRecordConvergeS, bad = ConvergeVerdict(ms, cfg.ConvergeBound)
	res.Failures = append(res.Failures, bad...)

	// (5) linearizability.
	lin := CheckLinearizable(ops, time.Minute)
	res.Linearity = &lin
	res.Linearizable = lin.OK && !lin.Unknown
	if lin.Unknown {
		res.Failures = append(res.Failures, "linearizability: undecided, porcupine ran out of time on some region's history")
	}
	if !lin.OK {
		var regionsBad []string
		for _, f := range lin.Failures {
			if !slices.Contains(regionsBad, f.Region) {
				regionsBad = append(regionsBad, f.Region)
			}
		}
		res.Failures = append(res.Failures, fmt.Sprintf("linearizability: %d job histories in %v are not linearizable", len(lin.Failures), regionsBad))
		for _, f := range first(lin.Failures, 3) {
			res.Evidence = append(res.Evidence, fmt.Sprintf("job %s (home %s): a minimal non-linearizable history, %d of its %d ops (porcupine linearized ops %v):\n%s",
				f.Job, f.Region, len(f.Minimal), f.Ops, f.Linearized, FormatOps(f.Minimal, start)))
		}
	}
	return nil
}

func first[T any](s []T, n int) []T {
	if len(s) > n {
		return s[:n]
	}
	return s
}

func violationsText(vs []Violation, check string) string {
	var b strings.Builder
	n := 0
	for _, v := range vs {
		if v.Check != check {
			continue
		}
		if n++; n > 5 {
			fmt.Fprintf(&b, "… and more\n")
			break
		}
		b.WriteString(v.String())
		b.WriteByte('\n')
	}
	return b.String()
}

func jobEvidence(id, check string, vs []Violation, ops []Op, start time.Time) string {
	var b strings.Builder
	fmt.Fprintf(&b, "job %s:\n", id)
	for _, v := range vs {
		if v.Check == check && v.Subject == "job "+id {
			fmt.Fprintf(&b, "  %s\n", v)
		}
	}
	b.WriteString("  its client history:\n")
	b.WriteString(FormatOps(ops, start))
	return b.String()
}

// loadUnit sizes a size-1 job: a Slots-th of the smallest node that offers
// capacity, as the leaders' ledgers registered it. It also returns how many
// size-1 jobs the hot region holds.
func loadUnit(cl *simcluster.Cluster, regions []string, hot string, slots int) (placement.Resources, int, error) {
	var smallest placement.Resources
	var hotNodes []placement.Resources
	for _, r := range regions {
		l, ok := cl.Leader(r)
		if !ok {
			return placement.Resources{}, 0, fmt.Errorf("sizing the load: region %s has no leader", r)
		}
		for _, n := range l.Ledger().Nodes() {
			if n.Total.ComputePerHour <= 0 {
				continue
			}
			if smallest.ComputePerHour == 0 || n.Total.ComputePerHour < smallest.ComputePerHour {
				smallest = n.Total
			}
			if r == hot {
				hotNodes = append(hotNodes, n.Total)
			}
		}
	}
	if smallest.ComputePerHour == 0 {
		return placement.Resources{}, 0, errors.New("sizing the load: no node offers capacity")
	}
	u, err := UnitFor(smallest, slots)
	if err != nil {
		return placement.Resources{}, 0, fmt.Errorf("sizing the load: %w", err)
	}
	hotSlots := 0
	for _, n := range hotNodes {
		k := int(n.ComputePerHour / u.ComputePerHour)
		if u.GPUs > 0 {
			k = min(k, n.GPUs/u.GPUs)
		}
		hotSlots += k
	}
	return u, hotSlots, nil
}

// clusterMesh adapts a simcluster to the executor's Mesh.
type clusterMesh struct {
	cl      *simcluster.Cluster
	regions []string
}

var _ Mesh = (*clusterMesh)(nil)

// Network implements Mesh.
func (m *clusterMesh) Network() *netsim.Network { return m.cl.Network() }

// Crash implements Mesh.
func (m *clusterMesh) Crash(name string) error { return m.cl.Crash(name) }

// Restart implements Mesh.
func (m *clusterMesh) Restart(ctx context.Context, name string) error {
	return m.cl.Restart(ctx, name)
}

// Leader implements Mesh.
func (m *clusterMesh) Leader(region string) (string, bool) {
	a, ok := m.cl.Leader(region)
	if !ok {
		return "", false
	}
	return a.Name(), true
}

// Auctions implements Mesh from the leaders' ledgers: every escrow a
// seller holds, and every open trade of a buyer.
func (m *clusterMesh) Auctions() []Auction {
	var out []Auction
	for _, r := range m.regions {
		a, ok := m.cl.Leader(r)
		if !ok {
			continue
		}
		l := a.Ledger()
		if l == nil {
			continue
		}
		for _, e := range l.Escrows() {
			out = append(out, Auction{Buyer: e.BuyerRegion, Seller: r})
		}
		for _, t := range l.Trades() {
			if t.State.Open() {
				out = append(out, Auction{Buyer: r, Seller: t.SellerRegion})
			}
		}
	}
	return out
}

// snapshotter checks every running server's ledger replica every interval
// (checkers 1 and 3) and keeps each distinct violation once. One mutex
// guards it; run owns the per-server bookkeeping.
type snapshotter struct {
	cl    *simcluster.Cluster
	grace time.Duration

	leaderSince map[string]time.Time
	lastIndex   map[string]uint64
	stopped     chan struct{}

	mu          sync.Mutex
	seen        map[string]bool
	violations  []Violation
	count       int
	overcommits int
	leaks       int
}

func (s *snapshotter) run(ctx context.Context, every time.Duration) {
	defer close(s.stopped)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.pass()
		}
	}
}

// wait returns once run has returned.
func (s *snapshotter) wait() { <-s.stopped }

func (s *snapshotter) pass() {
	now := time.Now()
	running := map[string]bool{}
	for _, a := range s.cl.Agents() {
		if !a.IsServer() {
			continue
		}
		l := a.Ledger()
		if l == nil {
			continue
		}
		name := a.Name()
		running[name] = true
		if a.IsLeader() {
			if _, ok := s.leaderSince[name]; !ok {
				s.leaderSince[name] = now
			}
		} else {
			delete(s.leaderSince, name)
		}
		snap := TakeSnapshot(now, name, s.leaderSince[name], l, false)
		var vs []Violation
		if last, ok := s.lastIndex[name]; !ok || last != l.Index() {
			vs = CheckOvercommit(snap)
			s.lastIndex[name] = l.Index()
		}
		vs = append(vs, CheckEscrows(snap, s.grace)...)
		s.record(vs)
		s.mu.Lock()
		s.count++
		s.mu.Unlock()
	}
	for name := range s.leaderSince {
		if !running[name] {
			delete(s.leaderSince, name)
		}
	}
}

// record keeps each violation the first time it is seen: an overcommitted
// node counts once however many snapshots and replicas show it, an escrow
// leak once per escrow.
func (s *snapshotter) record(vs []Violation) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, v := range vs {
		key := v.Check + "|" + v.Region + "|" + v.Subject
		if s.seen[key] {
			continue
		}
		s.seen[key] = true
		s.violations = append(s.violations, v)
		switch v.Check {
		case "overcommit":
			s.overcommits++
		case "escrow-leak":
			s.leaks++
		}
	}
}

// convMonitor measures how long gossip views take to converge after each
// heal (checker 4). The executor reports changes from its goroutine; run
// owns the measurement in progress.
type convMonitor struct {
	cl     *simcluster.Cluster
	events chan convEvent
	// stop ends the monitor; stopped is closed when run has returned.
	stop    <-chan struct{}
	stopped chan struct{}

	mu        sync.Mutex
	ms        []Convergence
	finalDone chan struct{}
}

type convEvent struct {
	clean, final bool
	at           time.Time
}

func newConvMonitor(cl *simcluster.Cluster, stop <-chan struct{}) *convMonitor {
	return &convMonitor{cl: cl, events: make(chan convEvent, 64), stop: stop, stopped: make(chan struct{}), finalDone: make(chan struct{})}
}

func (c *convMonitor) send(ev convEvent) {
	select {
	case c.events <- ev:
	case <-c.stop:
	}
}

// change is the executor's OnChange hook.
func (c *convMonitor) change(clean bool, at time.Time) { c.send(convEvent{clean: clean, at: at}) }

// final starts the measurement after the final heal.
func (c *convMonitor) final(at time.Time) { c.send(convEvent{clean: true, final: true, at: at}) }

// done is closed once the members have converged in the final
// measurement, or the monitor has stopped.
func (c *convMonitor) done() <-chan struct{} { return c.finalDone }

func (c *convMonitor) measurements() []Convergence {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.ms)
}

func (c *convMonitor) run(ctx context.Context) {
	defer close(c.stopped)
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	var cur *Convergence
	var baseline map[string]uint64
	ticks := 0
	closed := false
	closeFinal := func() {
		if !closed {
			close(c.finalDone)
			closed = true
		}
	}
	finish := func() {
		c.mu.Lock()
		c.ms = append(c.ms, *cur)
		c.mu.Unlock()
		if cur.Final {
			closeFinal()
		}
		cur = nil
	}
	defer func() {
		if cur != nil {
			finish()
		}
		closeFinal()
	}()
	for {
		select {
		case <-ctx.Done():
			return
		case ev := <-c.events:
			switch {
			case ev.final && cur != nil:
				// The mesh was whole already: the measurement under way,
				// from the real heal, becomes the final one.
				cur.Final = true
				if !cur.Converged.IsZero() {
					closeFinal()
				}
			case ev.clean && cur == nil:
				cur = &Convergence{Healed: ev.at, Final: ev.final}
				baseline = c.baseline()
			case !ev.clean && cur != nil:
				cur.Interrupted = true
				finish()
			}
		case <-t.C:
			if cur == nil {
				continue
			}
			// Once the members have converged, the records are looked at
			// every 5 s only: they take minutes, and a look costs a pass
			// over every agent's view.
			if ticks++; !cur.Converged.IsZero() && ticks%10 != 0 {
				continue
			}
			members, records, missing := c.check(baseline)
			now := time.Now()
			if members && cur.Converged.IsZero() {
				cur.Converged = now
				if cur.Final {
					closeFinal()
				}
			}
			cur.Missing = first(missing, 10)
			if members && records {
				cur.RecordsConverged = now
				finish()
			}
		}
	}
}

func (c *convMonitor) baseline() map[string]uint64 {
	out := map[string]uint64{}
	for _, a := range c.cl.Agents() {
		if r, ok := a.Gossip().Record(a.Name()); ok {
			out[a.Name()] = r.Version
		}
	}
	return out
}

func (c *convMonitor) check(baseline map[string]uint64) (members, records bool, missing []string) {
	agents := c.cl.Agents()
	views := make([]GossipView, 0, len(agents))
	running := make([]string, 0, len(agents))
	for _, a := range agents {
		running = append(running, a.Name())
		views = append(views, ViewOf(a.Name(), a.Gossip()))
	}
	return Converged(views, running, baseline)
}

// loader drives the planned client operations through the agents' API.
type loader struct {
	cl      *simcluster.Cluster
	hist    *History
	timeout time.Duration
	sem     chan struct{}

	mu      sync.Mutex
	clients int
	shed    int
}

func (l *loader) shedCount() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.shed
}

func (l *loader) client() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.clients++
	return l.clients
}

// run issues the plan's operations at their times until loadCtx ends, and
// waits for those in flight (which run under opsCtx and their timeout). An
// operation that finds 256 others in flight is shed: a client that cannot
// reach the mesh does not pile up calls without end.
func (l *loader) run(loadCtx, opsCtx context.Context, plan []PlannedOp, start time.Time) {
	var wg sync.WaitGroup
	defer wg.Wait()
	for _, op := range plan {
		if d := time.Until(start.Add(op.At)); d > 0 {
			t := time.NewTimer(d)
			select {
			case <-t.C:
			case <-loadCtx.Done():
				t.Stop()
				return
			}
		}
		if loadCtx.Err() != nil {
			return
		}
		select {
		case l.sem <- struct{}{}:
		default:
			l.mu.Lock()
			l.shed++
			l.mu.Unlock()
			continue
		}
		wg.Go(func() {
			defer func() { <-l.sem }()
			l.do(loadCtx, opsCtx, op, l.client())
		})
	}
}

// entry picks the agent a client calls.
func (l *loader) entry(n int) *node.Agent {
	agents := l.cl.Agents()
	if len(agents) == 0 {
		return nil
	}
	return agents[n%len(agents)]
}

func (l *loader) do(loadCtx, opsCtx context.Context, op PlannedOp, client int) {
	switch op.Kind {
	case OpSubmit:
		spec := op.Spec.Normalized()
		for attempt := 1; attempt <= 4; attempt++ {
			a := l.entry(op.Entry + attempt - 1)
			if a == nil {
				return
			}
			i := l.hist.Call(client, OpSubmit, op.Job, op.Region, a.Name(), attempt)
			ctx, cancel := context.WithTimeout(opsCtx, l.timeout)
			st, created, err := a.SubmitJob(ctx, spec)
			cancel()
			l.hist.Return(i, st, created, err)
			if outcome, reason := Classify(err); outcome == OutcomeOK || reason == ReasonConflict {
				return
			}
			// An unknown outcome or a refusal: retry with the same ID,
			// the idempotency key, through another agent, as a client would.
			t := time.NewTimer(time.Duration(attempt) * 2 * time.Second)
			select {
			case <-t.C:
			case <-loadCtx.Done():
				t.Stop()
				return
			}
		}
	case OpStatus, OpCancel:
		a := l.entry(op.Entry)
		if a == nil {
			return
		}
		i := l.hist.Call(client, op.Kind, op.Job, op.Region, a.Name(), 0)
		ctx, cancel := context.WithTimeout(opsCtx, l.timeout)
		defer cancel()
		var st api.JobStatus
		var err error
		if op.Kind == OpStatus {
			st, err = a.Job(ctx, op.Job)
		} else {
			st, err = a.CancelJob(ctx, op.Job)
		}
		l.hist.Return(i, st, false, err)
	}
}

// settle waits, up to max, until the mesh is quiet after the final heal:
// every region has a leader, no leader holds an escrow, an open trade or
// the unacknowledged end of an allocation it sold,
// every replica has applied at least what its leader had applied a second
// before (so a replica that keeps up with a busy leader counts as caught
// up), and the final gossip measurement has seen the members converge. It
// returns what was still unsettled at the deadline.
func settle(ctx context.Context, cl *simcluster.Cluster, regions []string, conv *convMonitor, max time.Duration) []string {
	deadline := time.Now().Add(max)
	prev := map[string]uint64{}
	for _, r := range regions {
		if lead, ok := cl.Leader(r); ok {
			prev[r] = lead.Ledger().Index()
		}
	}
	var why []string
	for {
		time.Sleep(time.Second)
		why = why[:0]
		select {
		case <-conv.done():
		default:
			why = append(why, "gossip views not yet converged")
		}
		for _, r := range regions {
			lead, ok := cl.Leader(r)
			if !ok {
				why = append(why, r+" has no leader")
				delete(prev, r)
				continue
			}
			l := lead.Ledger()
			if n := len(l.Escrows()); n > 0 {
				why = append(why, fmt.Sprintf("%s holds %d escrow(s)", r, n))
			}
			for _, t := range l.Trades() {
				if t.State.Open() {
					why = append(why, fmt.Sprintf("%s has trade %s/%s %s", r, t.AuctionID, t.ItemID, t.State))
				}
			}
			if n := len(l.UnreportedSold()); n > 0 {
				why = append(why, fmt.Sprintf("%s has %d sold allocation end(s) its buyers have not acknowledged", r, n))
			}
			want, ok := prev[r]
			if !ok {
				why = append(why, r+" has a new leader")
			}
			for _, s := range cl.Servers(r) {
				if sl := s.Ledger(); sl != nil && sl.Index() < want {
					why = append(why, fmt.Sprintf("%s is at index %d, its leader was at %d a second ago", s.Name(), sl.Index(), want))
				}
			}
			prev[r] = l.Index()
		}
		if len(why) == 0 || !time.Now().Before(deadline) || ctx.Err() != nil {
			return slices.Clone(why)
		}
	}
}

// finalReads reads every job once more through the API, after settling:
// Jepsen's final reads, which tie the history to the mesh's final state.
func finalReads(ctx context.Context, cl *simcluster.Cluster, hist *History, timeout time.Duration) {
	jobs := map[string]string{}
	for _, o := range hist.Ops() {
		if o.Kind == OpSubmit {
			jobs[o.Job] = o.Region
		}
	}
	ids := make([]string, 0, len(jobs))
	for id := range jobs {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	client := 1 << 20
	for i, id := range ids {
		agents := cl.Agents()
		if len(agents) == 0 {
			return
		}
		a := agents[i%len(agents)]
		k := hist.Call(client, OpStatus, id, jobs[id], a.Name(), 0)
		cctx, cancel := context.WithTimeout(ctx, timeout)
		st, err := a.Job(cctx, id)
		cancel()
		hist.Return(k, st, false, err)
	}
}

// finalSnapshots takes every running server's replica at one virtual
// instant, retrying for a while until each region's replicas share one log
// index, so that they can be compared.
func finalSnapshots(cl *simcluster.Cluster) []Snapshot {
	deadline := time.Now().Add(30 * time.Second)
	for {
		now := time.Now()
		var out []Snapshot
		index := map[string]uint64{}
		agree := true
		for _, a := range cl.Agents() {
			if !a.IsServer() {
				continue
			}
			l := a.Ledger()
			if l == nil {
				continue
			}
			var since time.Time
			if a.IsLeader() {
				since = now // marks the leader's replica, the reference of its region
			}
			s := TakeSnapshot(now, a.Name(), since, l, true)
			if i, ok := index[s.Region]; ok && i != s.Index {
				agree = false
			}
			index[s.Region] = s.Index
			out = append(out, s)
		}
		if agree || !time.Now().Before(deadline) {
			return out
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// countTrades counts the trades the buyers' ledgers recorded.
func countTrades(cl *simcluster.Cluster, regions []string) int {
	n := 0
	for _, r := range regions {
		if a, ok := cl.Leader(r); ok {
			n += len(a.Ledger().Trades())
		}
	}
	return n
}
