package chaos

import (
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/meridian-mesh/meridian/netsim"
)

// Scenario turns a seed into a fault schedule for a cluster.
type Scenario struct {
	// Name is what -scenario takes.
	Name string
	// Summary says what the scenario does, in one sentence.
	Summary string
	// episodes are the kinds of fault episode the scenario strings
	// together, one after another, drawn with equal chance.
	episodes []episode
	// once makes the scenario a single episode spanning the fault phase.
	once bool
}

// episode appends one fault episode starting at `at`, taking at most
// budget, and returns how long it takes; 0 when budget is too short for it.
type episode func(g *gen, at, budget time.Duration) time.Duration

// Episode lengths. Holds are long enough for memberlist to declare the
// other side dead (a few seconds on the WAN profile) and for Raft to elect,
// and short enough for several episodes in a few virtual minutes.
const (
	minHold = 20 * time.Second
	maxHold = 90 * time.Second
	minGap  = 10 * time.Second
	maxGap  = 40 * time.Second
	// warmupMax is how long the load runs before the first fault, at most:
	// jobs are placed and traded before the mesh is broken.
	warmupMax = 20 * time.Second
	// triggerWait bounds how long a kill-leader step waits for an auction.
	triggerWait = 45 * time.Second
	// awaitLeaderWait bounds how long a rolling restart waits for a leader
	// before it goes on with the next node.
	awaitLeaderWait = 60 * time.Second
	// lossyWANLoss and lossyWANLatency are the lossy-wan scenario's link
	// degradation.
	lossyWANLoss    = 0.05
	lossyWANLatency = 2.0
)

var scenarios = []Scenario{
	{Name: "partition-region", Summary: "partitions one region from all the others, then heals, episode after episode",
		episodes: []episode{partitionRegion}},
	{Name: "cut-one-way", Summary: "cuts the traffic from one region to another in one direction only, then uncuts it",
		episodes: []episode{cutOneWay}},
	{Name: "split-servers", Summary: "cuts a minority of one region's servers (the leader, or a follower) off from its majority, then rejoins them",
		episodes: []episode{splitServers}},
	{Name: "kill-buyer-leader", Summary: "crashes the hot region's leader while it has an auction in flight, then restarts it",
		episodes: []episode{killBuyerLeader}},
	{Name: "kill-seller-leader", Summary: "crashes the leader of a region holding an escrow for the hot region's auction, then restarts it",
		episodes: []episode{killSellerLeader}},
	{Name: "lossy-wan", Summary: "5% datagram loss and doubled latency on every link between regions, for the whole fault phase",
		episodes: []episode{lossyWAN}, once: true},
	{Name: "crash-restart", Summary: "crashes one or two servers of a region (two lose the quorum) and restarts them on their data directories",
		episodes: []episode{crashRestart}},
	{Name: "rolling-restart", Summary: "restarts every node of one region, one after another, waiting for a leader between nodes",
		episodes: []episode{rollingRestart}},
	{Name: "random", Summary: "a seeded mix of every other scenario's episodes, plus isolations of single nodes",
		episodes: []episode{partitionRegion, cutOneWay, splitServers, killBuyerLeader, killSellerLeader,
			lossyWANEpisode, crashRestart, rollingRestart, isolateNode}},
}

// Scenarios returns every scenario, in the order of the docs.
func Scenarios() []Scenario { return slices.Clone(scenarios) }

// ScenarioNames returns the names -scenario accepts.
func ScenarioNames() []string {
	out := make([]string, len(scenarios))
	for i, s := range scenarios {
		out[i] = s.Name
	}
	return out
}

// LookupScenario returns the scenario with the name.
func LookupScenario(name string) (Scenario, error) {
	for _, s := range scenarios {
		if s.Name == name {
			return s, nil
		}
	}
	return Scenario{}, fmt.Errorf("scenario %q: unknown; want one of %s", name, strings.Join(ScenarioNames(), ", "))
}

// Generate returns the scenario's schedule for the seed and cluster. The
// same seed and env give the same schedule.
func (s Scenario) Generate(seed int64, env Env) (Schedule, error) {
	if err := env.Validate(); err != nil {
		return nil, fmt.Errorf("scenario %s: %w", s.Name, err)
	}
	h := fnv.New64a()
	h.Write([]byte(s.Name))
	g := &gen{r: rand.New(rand.NewPCG(uint64(seed), h.Sum64())), env: env}
	warmup := min(warmupMax, env.Duration/6)
	end := env.Duration
	if s.once {
		s.episodes[0](g, warmup, end-warmup-minGap)
	} else {
		at := warmup
		for {
			ep := s.episodes[g.r.IntN(len(s.episodes))]
			n := ep(g, at, end-at)
			if n == 0 {
				break
			}
			at += n + g.between(minGap, maxGap)
			if at >= end {
				break
			}
		}
	}
	sched := g.steps
	slices.SortStableFunc(sched, func(a, b Step) int {
		if a.At < b.At {
			return -1
		}
		if a.At > b.At {
			return 1
		}
		return 0
	})
	if err := sched.Validate(env); err != nil {
		return nil, fmt.Errorf("scenario %s, seed %d: generated an invalid schedule: %w", s.Name, seed, err)
	}
	return sched, nil
}

// gen is the state of one schedule's generation.
type gen struct {
	r     *rand.Rand
	env   Env
	steps Schedule
	refs  int
}

func (g *gen) add(s Step) { g.steps = append(g.steps, s) }

func (g *gen) fault(at time.Duration, f netsim.Fault) {
	g.add(Step{At: at, Kind: StepFault, Fault: &f})
}

func (g *gen) ref(prefix string) string {
	g.refs++
	return fmt.Sprintf("%s%d", prefix, g.refs)
}

// between draws a duration uniformly from [lo, hi], in whole seconds so
// that schedules read well.
func (g *gen) between(lo, hi time.Duration) time.Duration {
	if hi <= lo {
		return lo
	}
	s := int64(lo/time.Second) + g.r.Int64N(int64((hi-lo)/time.Second)+1)
	return time.Duration(s) * time.Second
}

// hold draws a fault's hold time, shortened to fit budget; 0 if even the
// shortest useful hold does not fit.
func (g *gen) hold(budget time.Duration) time.Duration {
	if budget < minHold/2 {
		return 0
	}
	return min(g.between(minHold, maxHold), budget)
}

func (g *gen) region() string { return g.env.Regions[g.r.IntN(len(g.env.Regions))] }

func (g *gen) otherRegion(not string) string {
	var others []string
	for _, r := range g.env.Regions {
		if r != not {
			others = append(others, r)
		}
	}
	return others[g.r.IntN(len(others))]
}

func partitionRegion(g *gen, at, budget time.Duration) time.Duration {
	h := g.hold(budget)
	if h == 0 {
		return 0
	}
	g.fault(at, netsim.Fault{Kind: netsim.FaultPartition, Groups: [][]string{{g.region()}}})
	g.fault(at+h, netsim.Fault{Kind: netsim.FaultHeal})
	return h
}

func cutOneWay(g *gen, at, budget time.Duration) time.Duration {
	h := g.hold(budget)
	if h == 0 {
		return 0
	}
	a := g.region()
	b := g.otherRegion(a)
	g.fault(at, netsim.Fault{Kind: netsim.FaultCut, A: a, B: b})
	g.fault(at+h, netsim.Fault{Kind: netsim.FaultUncut, A: a, B: b})
	return h
}

func splitServers(g *gen, at, budget time.Duration) time.Duration {
	h := g.hold(budget)
	if h == 0 || g.env.Servers < 2 {
		return 0
	}
	m := MinorityFollower
	if g.r.IntN(2) == 0 {
		m = MinorityLeader
	}
	ref := g.ref("s")
	g.add(Step{At: at, Kind: StepSplit, Region: g.region(), Minority: m, Ref: ref})
	g.add(Step{At: at + h, Kind: StepUnsplit, Ref: ref})
	return h
}

// killLeader crashes a leader once an auction is in flight and restarts it
// after it has been down for a while. The crash may come any time within
// the trigger's wait, so the restart is planned after the whole wait.
func killLeader(g *gen, at, budget time.Duration, seller bool) time.Duration {
	wait := min(triggerWait, budget/2).Truncate(time.Second)
	down := min(g.between(10*time.Second, 40*time.Second), budget-wait)
	if wait < 5*time.Second || down < 5*time.Second {
		return 0
	}
	ref := g.ref("k")
	s := Step{At: at, Kind: StepCrashLeader, Region: g.env.HotRegion, Trigger: TriggerBuyerAuction, Wait: wait, Ref: ref}
	if seller {
		s.Region, s.Trigger, s.Buyer = g.otherRegion(g.env.HotRegion), TriggerSellerAuction, g.env.HotRegion
	}
	g.add(s)
	g.add(Step{At: at + wait + down, Kind: StepRestartRef, Ref: ref})
	return wait + down
}

func killBuyerLeader(g *gen, at, budget time.Duration) time.Duration {
	return killLeader(g, at, budget, false)
}

func killSellerLeader(g *gen, at, budget time.Duration) time.Duration {
	return killLeader(g, at, budget, true)
}

// degradeWAN sets loss and latency on every link between two regions (not
// within a region) for hold.
func degradeWAN(g *gen, at, hold time.Duration) {
	rs := g.env.Regions
	for i := range rs {
		for j := i + 1; j < len(rs); j++ {
			g.fault(at, netsim.Fault{Kind: netsim.FaultLoss, A: rs[i], B: rs[j], Value: lossyWANLoss})
			g.fault(at, netsim.Fault{Kind: netsim.FaultLatency, A: rs[i], B: rs[j], Value: lossyWANLatency})
			g.fault(at+hold, netsim.Fault{Kind: netsim.FaultClearLink, A: rs[i], B: rs[j]})
		}
	}
}

// lossyWAN degrades the WAN for the whole budget: the lossy-wan scenario.
func lossyWAN(g *gen, at, budget time.Duration) time.Duration {
	if budget < minHold/2 {
		return 0
	}
	degradeWAN(g, at, budget)
	return budget
}

// lossyWANEpisode degrades the WAN for one hold: random's version.
func lossyWANEpisode(g *gen, at, budget time.Duration) time.Duration {
	h := g.hold(budget)
	if h == 0 {
		return 0
	}
	degradeWAN(g, at, h)
	return h
}

func crashRestart(g *gen, at, budget time.Duration) time.Duration {
	down := g.between(10*time.Second, 60*time.Second)
	n := 1
	if g.env.Servers >= 3 && g.r.IntN(10) < 3 {
		n = 2 // a majority of 3: the region loses its quorum
	}
	stagger := time.Second
	total := down + time.Duration(n-1)*stagger
	if total > budget {
		down = budget - time.Duration(n-1)*stagger
		if down < 5*time.Second {
			return 0
		}
		total = budget
	}
	servers := g.env.ServerNames(g.region())
	g.r.Shuffle(len(servers), func(i, j int) { servers[i], servers[j] = servers[j], servers[i] })
	for i, s := range servers[:n] {
		g.add(Step{At: at + time.Duration(i)*stagger, Kind: StepCrash, Node: s})
		g.add(Step{At: at + down + time.Duration(i)*stagger, Kind: StepRestart, Node: s})
	}
	return total
}

// rollingRestart restarts every node of a region in turn — workers first,
// then the servers, as an operator upgrading a region would — and waits for
// the region to have a leader after each one.
func rollingRestart(g *gen, at, budget time.Duration) time.Duration {
	r := g.region()
	workers, servers := g.env.WorkerNames(r), g.env.ServerNames(r)
	g.r.Shuffle(len(workers), func(i, j int) { workers[i], workers[j] = workers[j], workers[i] })
	g.r.Shuffle(len(servers), func(i, j int) { servers[i], servers[j] = servers[j], servers[i] })
	nodes := append(workers, servers...)
	slot := min(40*time.Second, budget/time.Duration(len(nodes))).Truncate(time.Second)
	if slot < 8*time.Second {
		return 0
	}
	down := max(slot*3/10, 3*time.Second).Truncate(time.Second)
	for i, n := range nodes {
		t := at + time.Duration(i)*slot
		g.add(Step{At: t, Kind: StepCrash, Node: n})
		g.add(Step{At: t + down, Kind: StepRestart, Node: n})
		g.add(Step{At: t + down, Kind: StepAwaitLeader, Region: r, Wait: awaitLeaderWait})
	}
	return time.Duration(len(nodes)-1)*slot + down
}

func isolateNode(g *gen, at, budget time.Duration) time.Duration {
	h := g.hold(budget)
	if h == 0 {
		return 0
	}
	nodes := g.env.AllNodes()
	n := nodes[g.r.IntN(len(nodes))]
	g.fault(at, netsim.Fault{Kind: netsim.FaultIsolate, A: n})
	g.fault(at+h, netsim.Fault{Kind: netsim.FaultUnisolate, A: n})
	return h
}
