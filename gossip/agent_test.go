package gossip

import (
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/hashicorp/memberlist"
	"go.uber.org/goleak"

	"github.com/meridian-mesh/meridian/netsim"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// threeRegions is a small slice of the world for the cheaper tests.
var threeRegions = []string{"eu-west-1", "us-east-1", "ap-southeast-1"}

func stateOf(a *Agent, name string) MemberState {
	for _, m := range a.Members() {
		if m.Name == name {
			return m.State
		}
	}
	return 0
}

// TestCrashedNodeFailsAndReconnects crashes a node (its endpoint drops all
// traffic while the agent keeps running, like a machine that froze or lost
// its network), checks that every other node marks it failed within
// memberlist's suspicion bounds and publishes the event, then restarts it:
// it comes back without any manual join (memberlist alone may manage this
// one, as the restarted node still gossips to peers it did not yet mark
// failed; TestPartitionHealsOnlyWithReconnect covers the case it cannot).
func TestCrashedNodeFailsAndReconnects(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newTestCluster(t, netsim.WorldTopology(), 11)
		defer c.close()
		c.grow(threeRegions, 4)
		total := 12
		observer := c.agent(nodeName("eu-west-1", 0))
		events, cancel := observer.Subscribe(256)
		defer cancel()

		victim := nodeName("us-east-1", 2)
		c.net.Crash(victim)
		conf := observer.mlConf
		lower := suspicionMinTimeout(conf, total)
		upper := suspicionMaxTimeout(conf, total) + 2*conf.ProbeInterval
		d, ok := waitFor(2*upper, 100*time.Millisecond, func() bool {
			for _, a := range c.all() {
				if a.cfg.Name != victim && stateOf(a, victim) != StateFailed {
					return false
				}
			}
			return true
		})
		if !ok {
			t.Fatalf("crashed %s not marked failed by everyone within %v", victim, d)
		}
		t.Logf("crashed node marked failed by all after %v (suspicion bounds %v–%v)", d, lower, upper)
		if d < lower || d > upper {
			t.Errorf("crashed node marked failed after %v; want within memberlist's suspicion bounds [%v, %v]", d, lower, upper)
		}
		var sawFail bool
		for len(events) > 0 {
			if ev := <-events; ev.Type == EventMemberFailed && ev.Member.Name == victim {
				sawFail = true
			}
		}
		if !sawFail {
			t.Error("the observer's subscriber got no member-failed event for the crashed node")
		}
		for _, s := range observer.RegionSummaries() {
			if s.Region == "us-east-1" && (s.Alive != 3 || s.Failed != 1 || s.Nodes != 3) {
				t.Errorf("summary of us-east-1 with one node down = alive %d failed %d nodes %d; want 3 1 3", s.Alive, s.Failed, s.Nodes)
			}
		}

		// Stay down past GossipToTheDeadTime, after which memberlist no
		// longer gossips to the dead node and would not take it back by
		// itself.
		time.Sleep(2 * conf.GossipToTheDeadTime)
		c.net.Restart(victim)
		backoffMax := observer.cfg.ReconnectBackoffMax
		d, ok = waitFor(backoffMax+time.Minute, 100*time.Millisecond, func() bool { return c.everyoneSees(total) })
		if !ok {
			t.Fatalf("after the restart not every node sees all %d: %s", total, c.describe())
		}
		t.Logf("restarted node back in every view after %v", d)
	})
}

// TestGracefulLeave checks that a node that leaves is marked left (not
// failed) quickly, that its record goes, and that no one tries to reconnect
// to it.
func TestGracefulLeave(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newTestCluster(t, netsim.WorldTopology(), 12)
		defer c.close()
		c.grow(threeRegions, 2)
		leaver := c.agent(nodeName("us-east-1", 1))
		if err := leaver.Leave(5 * time.Second); err != nil {
			t.Fatalf("Leave: %v", err)
		}
		if err := leaver.Leave(5 * time.Second); err != nil {
			t.Fatalf("second Leave: %v", err)
		}
		if _, err := leaver.Join([]string{c.addr(nodeName("eu-west-1", 0))}); !errors.Is(err, ErrLeft) {
			t.Fatalf("Join after Leave = %v; want ErrLeft", err)
		}
		d, ok := waitFor(30*time.Second, 100*time.Millisecond, func() bool {
			for _, a := range c.all() {
				if a == leaver {
					continue
				}
				if _, has := a.Record(leaver.cfg.Name); stateOf(a, leaver.cfg.Name) != StateLeft || has {
					return false
				}
			}
			return true
		})
		if !ok {
			t.Fatalf("not every node saw %s leave within %v", leaver.cfg.Name, d)
		}
		for _, a := range c.all() {
			if st := a.Stats(); a != leaver && st.PendingReconnects != 0 {
				t.Errorf("%s is reconnecting to %d members after a graceful leave", a.cfg.Name, st.PendingReconnects)
			}
		}
		c.stop(leaver.cfg.Name)
		if err := leaver.Leave(time.Second); !errors.Is(err, ErrShutdown) {
			t.Errorf("Leave after Shutdown = %v; want ErrShutdown", err)
		}
		if _, err := leaver.SetCapacity(testCapacity(1)); !errors.Is(err, ErrShutdown) {
			t.Errorf("SetCapacity after Shutdown = %v; want ErrShutdown", err)
		}
	})
}

// TestEncryptionAndKeyRotation runs gossip encrypted end to end over
// netsim, shows that a node with another key cannot join, and rotates the
// cluster to that key without a restart.
func TestEncryptionAndKeyRotation(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		oldKey, newKey := testKey, []byte("fedcba9876543210fedcba9876543210")
		c := newTestCluster(t, netsim.WorldTopology(), 13)
		defer c.close()
		c.grow([]string{"eu-west-1", "us-east-1"}, 2)
		seed := c.addr(nodeName("eu-west-1", 0))

		c.tune = func(cfg *Config) { cfg.SecretKey = newKey }
		outsider := c.start("outsider", "eu-west-1")
		if n, err := outsider.Join([]string{seed}); err == nil {
			t.Fatalf("a node with another key joined (%d contacted); want refused", n)
		}

		// Rotate: install the new key everywhere, switch to it, drop the old.
		members := c.all()[:4]
		for _, a := range members {
			if err := a.Keyring().AddKey(newKey); err != nil {
				t.Fatalf("AddKey: %v", err)
			}
		}
		for _, a := range members {
			if err := a.Keyring().UseKey(newKey); err != nil {
				t.Fatalf("UseKey: %v", err)
			}
		}
		for _, a := range members {
			if err := a.Keyring().RemoveKey(oldKey); err != nil {
				t.Fatalf("RemoveKey: %v", err)
			}
		}
		if _, err := outsider.Join([]string{seed}); err != nil {
			t.Fatalf("after the rotation, Join with the new key: %v", err)
		}
		if d, ok := waitFor(time.Minute, 100*time.Millisecond, func() bool { return c.everyoneSees(5) }); !ok {
			t.Fatalf("after the rotation the 5 nodes did not converge within %v: %s", d, c.describe())
		}
	})
}

// TestDefaultAgentEncrypts checks that an agent with no key configured
// generates one rather than gossiping in clear text.
func TestDefaultAgentEncrypts(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n, err := netsim.New(netsim.Config{})
		if err != nil {
			t.Fatal(err)
		}
		defer n.Close()
		ep, _ := n.AddEndpoint("solo", "eu-west-1")
		tr, err := netsim.NewMemberlistTransport(ep, gossipPort)
		if err != nil {
			t.Fatal(err)
		}
		a, err := Start(Config{Name: "solo", Region: "eu-west-1", Transport: tr, BindAddr: ep.IP().String(), BindPort: gossipPort})
		if err != nil {
			t.Fatalf("Start: %v", err)
		}
		defer a.Shutdown()
		if kr := a.Keyring(); kr == nil || len(kr.GetPrimaryKey()) != KeySize {
			t.Fatalf("default agent keyring = %v; want a generated %d-byte key", kr, KeySize)
		}
		if m := a.LocalMember(); m.State != StateAlive || m.Region != "eu-west-1" || m.Role != RoleWorker {
			t.Fatalf("LocalMember = %+v; want alive worker in eu-west-1", m)
		}
	})
}

// TestSlowSubscriberDoesNotStallGossip subscribes without ever reading and
// checks that the mesh still converges and the drops are counted.
func TestSlowSubscriberDoesNotStallGossip(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newTestCluster(t, netsim.WorldTopology(), 14)
		defer c.close()
		first := c.start("first", "eu-west-1")
		_, cancel := first.Subscribe(0) // never read
		defer cancel()
		all, cancelAll := first.Subscribe(1024)
		c.grow(threeRegions, 2)
		total := 7
		if d, ok := waitFor(time.Minute, 100*time.Millisecond, func() bool {
			return c.everyoneSees(total) && c.recordsConverged()
		}); !ok {
			t.Fatalf("mesh with a stuck subscriber did not converge within %v: %s", d, c.describe())
		}
		if st := first.Stats(); st.EventsDropped == 0 {
			t.Fatal("EventsDropped = 0 with a subscriber that never reads; want drops counted")
		}
		cancelAll()
		joins, records := map[string]bool{}, map[string]bool{}
		for ev := range all {
			switch ev.Type {
			case EventMemberJoin:
				joins[ev.Member.Name] = true
			case EventRecordUpdate:
				records[ev.Record.Node] = true
			}
		}
		// The first node joined itself before subscribing; it sees the
		// other six join and publish.
		if len(joins) != total-1 || len(records) != total-1 {
			t.Fatalf("subscriber saw %d joins and %d records; want %d of each", len(joins), len(records), total-1)
		}
	})
}

// TestLoopbackNetwork runs two agents on memberlist's real UDP/TCP transport
// on 127.0.0.1 (ephemeral ports), the path production uses.
func TestLoopbackNetwork(t *testing.T) {
	if testing.Short() {
		t.Skip("uses real sockets")
	}
	start := func(name string) *Agent {
		a, err := Start(Config{Name: name, Region: "local", Profile: ProfileLocal, BindAddr: "127.0.0.1", SecretKey: testKey, Logger: testLogger()})
		if err != nil {
			t.Fatalf("Start(%s): %v", name, err)
		}
		return a
	}
	a, b := start("a"), start("b")
	if _, err := b.Join([]string{a.LocalMember().Address()}); err != nil {
		t.Fatalf("Join: %v", err)
	}
	if _, err := a.SetCapacity(testCapacity(3)); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		r, ok := b.Record("a")
		if len(a.Members()) == 2 && len(b.Members()) == 2 && ok && r.QueueLength == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("over loopback: a sees %d, b sees %d members, b has a's record: %v", len(a.Members()), len(b.Members()), ok)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := b.Leave(2 * time.Second); err != nil {
		t.Fatalf("Leave: %v", err)
	}
	for stateOf(a, "b") != StateLeft {
		if time.Now().After(deadline) {
			t.Fatalf("a sees b as %v after b left; want left", stateOf(a, "b"))
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, x := range []*Agent{a, b} {
		if err := x.Shutdown(); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	}
	// memberlist's Shutdown does not wait for a probe in flight; give it
	// the probe interval and TCP timeout of the local profile to finish.
	conf := memberlist.DefaultLocalConfig()
	wait := time.Now().Add(2*(conf.ProbeInterval+conf.TCPTimeout) + time.Second)
	for goleak.Find() != nil && time.Now().Before(wait) {
		time.Sleep(50 * time.Millisecond)
	}
	goleak.VerifyNone(t)
}

// TestPartitionHealsOnlyWithReconnect splits two regions until each side
// has marked the other failed and memberlist has stopped gossiping to the
// dead, then heals the network. With the reconnect loop the mesh is whole
// again within 60 s; with reconnection disabled (a reconnect timeout so
// short that failed members are forgotten at once) it stays split, which
// shows that the reconnect loop, not memberlist, does the healing.
func TestPartitionHealsOnlyWithReconnect(t *testing.T) {
	for _, tc := range []struct {
		name      string
		reconnect bool
	}{{"reconnect", true}, {"no-reconnect", false}} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				c := newTestCluster(t, netsim.WorldTopology(), 15)
				if !tc.reconnect {
					c.tune = func(cfg *Config) { cfg.ReconnectTimeout = time.Nanosecond }
				}
				defer c.close()
				regions := []string{"eu-west-1", "us-east-1"}
				c.grow(regions, 3)
				c.net.Partition([]string{regions[0]})
				d, ok := waitFor(10*time.Minute, time.Second, func() bool {
					for _, a := range c.all() {
						for _, m := range a.Members() {
							if m.Region != a.cfg.Region && m.State != StateFailed {
								return false
							}
						}
					}
					return true
				})
				if !ok {
					t.Fatalf("the two sides did not mark each other failed within %v", d)
				}
				conf := c.all()[0].mlConf
				time.Sleep(conf.GossipToTheDeadTime + conf.ProbeInterval)
				c.net.Heal()
				healed := time.Now()
				within := time.Minute
				if !tc.reconnect {
					within = 5 * time.Minute
				}
				d, ok = waitFor(within, 100*time.Millisecond, func() bool { return c.everyoneSees(6) })
				switch {
				case tc.reconnect && !ok:
					t.Fatalf("60 s after the heal the mesh is still split: %s", c.describe())
				case tc.reconnect:
					t.Logf("whole again %v after the heal", d)
				case ok:
					t.Fatalf("without reconnection the mesh re-merged %v after the heal; the reconnect test proves nothing", time.Since(healed))
				}
			})
		})
	}
}

// TestCompressionIsPerNode mixes nodes with and without LZW compression:
// memberlist marks compressed messages, so they still share members and
// records.
func TestCompressionIsPerNode(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newTestCluster(t, netsim.WorldTopology(), 5)
		defer c.close()
		odd := false
		c.tune = func(cfg *Config) {
			cfg.DisableCompression = odd
			odd = !odd
		}
		c.grow([]string{"eu-west-1", "us-east-1"}, 2)
		if d, ok := waitFor(time.Minute, 100*time.Millisecond, func() bool {
			if !c.everyoneSees(4) {
				return false
			}
			for _, a := range c.all() {
				if len(a.Records()) != 4 {
					return false
				}
			}
			return true
		}); !ok {
			t.Fatalf("not converged within %v: %s", d, c.describe())
		}
		compressed := 0
		for _, a := range c.all() {
			if a.mlConf.EnableCompression {
				compressed++
			}
		}
		if compressed != 2 {
			t.Fatalf("%d agents compress; want 2 of 4", compressed)
		}
	})
}
