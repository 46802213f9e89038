package chaos

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/meridian-mesh/meridian/netsim"
)

// netMesh is a Mesh over a real netsim network of bare endpoints: crashes
// and restarts act on the endpoints, leaders and auctions are set by the
// test.
type netMesh struct {
	net *netsim.Network

	mu       sync.Mutex
	leaders  map[string]string
	auctions func() []Auction
	crashes  []string
	restarts []string
}

func newNetMesh(t *testing.T, env Env) *netMesh {
	t.Helper()
	var topo strings.Builder
	topo.WriteString("from,to,rtt_ms\n")
	for _, a := range env.Regions {
		for _, b := range env.Regions {
			fmt.Fprintf(&topo, "%s,%s,%d\n", a, b, map[bool]int{true: 2, false: 80}[a == b])
		}
	}
	tp, err := netsim.ParseTopology(strings.NewReader(topo.String()), "test")
	if err != nil {
		t.Fatal(err)
	}
	n, err := netsim.New(netsim.Config{Topology: tp, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	for _, name := range env.AllNodes() {
		if _, err := n.AddEndpoint(name, name[:strings.LastIndexByte(name, '-')]); err != nil {
			t.Fatal(err)
		}
	}
	m := &netMesh{net: n, leaders: map[string]string{}}
	for _, r := range env.Regions {
		m.leaders[r] = NodeName(r, 1)
	}
	return m
}

func (m *netMesh) Network() *netsim.Network { return m.net }

func (m *netMesh) Crash(name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.crashes = append(m.crashes, name)
	return m.net.Apply(netsim.Fault{Kind: netsim.FaultCrash, A: name})
}

func (m *netMesh) Restart(_ context.Context, name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.restarts = append(m.restarts, name)
	return m.net.Apply(netsim.Fault{Kind: netsim.FaultRestart, A: name})
}

func (m *netMesh) Leader(region string) (string, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	l, ok := m.leaders[region]
	return l, ok && l != ""
}

func (m *netMesh) setLeader(region, name string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.leaders[region] = name
}

func (m *netMesh) Auctions() []Auction {
	m.mu.Lock()
	f := m.auctions
	m.mu.Unlock()
	if f == nil {
		return nil
	}
	return f()
}

func execEnv() Env {
	return Env{Regions: []string{"eu-west-1", "us-east-1"}, Servers: 3, Workers: 1, Duration: 2 * time.Minute, HotRegion: "eu-west-1"}
}

func faultStep(at time.Duration, f netsim.Fault) Step {
	return Step{At: at, Kind: StepFault, Fault: &f}
}

func TestExecutorRunsASchedule(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		env := execEnv()
		m := newNetMesh(t, env)
		start := time.Now()
		m.auctions = func() []Auction {
			if time.Since(start) >= 13*time.Second {
				return []Auction{{Buyer: "eu-west-1", Seller: "us-east-1"}}
			}
			return nil
		}
		sched := Schedule{
			faultStep(time.Second, netsim.Fault{Kind: netsim.FaultPartition, Groups: [][]string{{"eu-west-1"}}}),
			{At: 2 * time.Second, Kind: StepCrash, Node: "us-east-1-3"},
			faultStep(5*time.Second, netsim.Fault{Kind: netsim.FaultHeal}),
			{At: 6 * time.Second, Kind: StepRestart, Node: "us-east-1-3"},
			{At: 7 * time.Second, Kind: StepSplit, Region: "eu-west-1", Minority: MinorityLeader, Ref: "s1"},
			{At: 9 * time.Second, Kind: StepUnsplit, Ref: "s1"},
			{At: 10 * time.Second, Kind: StepCrashLeader, Region: "eu-west-1", Trigger: TriggerBuyerAuction, Wait: 10 * time.Second, Ref: "k1"},
			{At: 25 * time.Second, Kind: StepRestartRef, Ref: "k1"},
			{At: 26 * time.Second, Kind: StepAwaitLeader, Region: "us-east-1", Wait: 30 * time.Second},
		}
		if err := sched.Validate(env); err != nil {
			t.Fatal(err)
		}
		x := NewExecutor(m, env, 1, nil)
		var changes []bool
		x.OnChange = func(clean bool, _ time.Time) { changes = append(changes, clean) }
		m.setLeader("us-east-1", "")
		go func() {
			time.Sleep(30 * time.Second)
			m.setLeader("us-east-1", "us-east-1-2")
		}()
		if err := x.Run(context.Background(), sched, start); err != nil {
			t.Fatal(err)
		}
		applied := x.Applied()
		if len(applied) != len(sched) {
			t.Fatalf("%d steps applied; want %d", len(applied), len(sched))
		}
		for i, a := range applied {
			if a.Err != "" {
				t.Errorf("step %d: %s", i, a)
			}
			if a.At < sched[i].At {
				t.Errorf("step %d ran at %v, before its time %v", i, a.At, sched[i].At)
			}
		}
		// The kill waited for the auction and crashed the leader of the
		// moment.
		k := applied[6]
		if !k.MidAuction || k.At != 13*time.Second || !strings.Contains(k.Detail, "eu-west-1-1") {
			t.Errorf("crash-leader: %s (mid-auction %v); want eu-west-1-1 crashed at 13s mid-auction", k, k.MidAuction)
		}
		if !strings.Contains(applied[7].Detail, "restarted eu-west-1-1") {
			t.Errorf("restart-ref: %s", applied[7])
		}
		// The await waited for the leader.
		// (The poll and the leader change may fall on the same instant in
		// either order.)
		if a := applied[8]; a.At < 30*time.Second || a.At > 30*time.Second+x.Poll || !strings.Contains(a.Detail, "us-east-1-2 leads") {
			t.Errorf("await-leader: %s", a)
		}
		// The split cut the leader off from both followers, both ways, and
		// the unsplit undid exactly that.
		if d := applied[4].Detail; d != "minority [eu-west-1-1] | majority [eu-west-1-0 eu-west-1-2]" {
			t.Errorf("split: %q", d)
		}
		var cuts, uncuts []string
		for _, e := range m.net.FaultLog() {
			switch e.Fault.Kind {
			case netsim.FaultCut:
				cuts = append(cuts, e.Fault.String())
			case netsim.FaultUncut:
				uncuts = append(uncuts, e.Fault.String())
			}
		}
		if len(cuts) != 2 || len(uncuts) != 2 {
			t.Errorf("cuts %v, uncuts %v; want 2 of each", cuts, uncuts)
		}
		if !slices.Equal(m.crashes, []string{"us-east-1-3", "eu-west-1-1"}) || !slices.Equal(m.restarts, []string{"us-east-1-3", "eu-west-1-1"}) {
			t.Errorf("crashes %v restarts %v", m.crashes, m.restarts)
		}
		want := []bool{false, false, false, true, false, true, false, true, true}
		if !slices.Equal(changes, want) {
			t.Errorf("clean after each step: %v; want %v", changes, want)
		}
		if len(x.Down()) != 0 {
			t.Errorf("down after the schedule: %v", x.Down())
		}
	})
}

func TestExecutorFallbacks(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		env := execEnv()
		m := newNetMesh(t, env)
		start := time.Now()
		sched := Schedule{
			// No auction ever: the seller kill falls back to its region.
			{At: 0, Kind: StepCrashLeader, Region: "us-east-1", Trigger: TriggerSellerAuction, Buyer: "eu-west-1", Wait: 5 * time.Second, Ref: "k1"},
			// A follower minority keeps the leader in the majority.
			{At: 6 * time.Second, Kind: StepSplit, Region: "eu-west-1", Minority: MinorityFollower, Ref: "s1"},
			// A region without a leader: nothing to crash.
			{At: 7 * time.Second, Kind: StepCrashLeader, Region: "us-east-1", Ref: "k2"},
			{At: 30 * time.Second, Kind: StepRestartRef, Ref: "k2"},
		}
		x := NewExecutor(m, env, 1, nil)
		go func() {
			time.Sleep(6500 * time.Millisecond)
			m.setLeader("us-east-1", "")
		}()
		if err := x.Run(context.Background(), sched, start); err != nil {
			t.Fatal(err)
		}
		a := x.Applied()
		if a[0].MidAuction || a[0].At != 5*time.Second || !strings.Contains(a[0].Detail, "crashed us-east-1-1") || !strings.Contains(a[0].Detail, "no auction") {
			t.Errorf("seller kill without an auction: %s", a[0])
		}
		if minority, majority, _ := strings.Cut(a[1].Detail, "|"); strings.Contains(minority, "eu-west-1-1") || !strings.Contains(majority, "eu-west-1-1") {
			t.Errorf("follower split: %q; want the leader eu-west-1-1 in the majority", a[1].Detail)
		}
		if !strings.Contains(a[2].Detail, "no leader") || a[3].Detail != "nothing to restart" {
			t.Errorf("leaderless kill: %s / %s", a[2], a[3])
		}
		// us-east-1-1 is still down (k1 was never restarted) and the split
		// is still in place: HealAll undoes both.
		if got := x.Down(); !slices.Equal(got, []string{"us-east-1-1"}) {
			t.Fatalf("down: %v", got)
		}
		var clean []bool
		x.OnChange = func(c bool, _ time.Time) { clean = append(clean, c) }
		if err := x.HealAll(context.Background()); err != nil {
			t.Fatal(err)
		}
		if len(x.Down()) != 0 || !slices.Equal(clean, []bool{true}) || m.restarts[len(m.restarts)-1] != "us-east-1-1" {
			t.Errorf("after HealAll: down %v, changes %v, restarts %v", x.Down(), clean, m.restarts)
		}
		ep, _ := m.net.Endpoint("us-east-1-1")
		if ep.Crashed() {
			t.Error("us-east-1-1 still crashed after HealAll")
		}
		last := m.net.FaultLog()
		if k := last[len(last)-1].Fault.Kind; k != netsim.FaultRestart {
			t.Errorf("last fault %s", k)
		}
	})
}

// A step the network refuses is reported, and the schedule goes on.
func TestExecutorReportsFailedSteps(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		env := execEnv()
		m := newNetMesh(t, env)
		sched := Schedule{
			faultStep(0, netsim.Fault{Kind: netsim.FaultLoss, A: "eu-west-1", B: "mars-1", Value: 0.1}),
			{At: time.Second, Kind: StepCrash, Node: "eu-west-1-0"},
		}
		x := NewExecutor(m, env, 1, nil)
		err := x.Run(context.Background(), sched, time.Now())
		if err == nil || !strings.Contains(err.Error(), "mars-1") {
			t.Fatalf("Run = %v; want the refused fault", err)
		}
		a := x.Applied()
		if len(a) != 2 || a[0].Err == "" || a[1].Err != "" || !slices.Equal(x.Down(), []string{"eu-west-1-0"}) {
			t.Fatalf("applied %v, down %v", a, x.Down())
		}
		x.HealAll(context.Background())
	})
}
