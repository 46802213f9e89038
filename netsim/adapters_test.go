package netsim

import (
	"fmt"
	"testing"
	"testing/synctest"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/raft"
)

// Real memberlist nodes in two regions 150 ms apart measure ~150 ms ping
// RTTs to the other region and ~2 ms inside their own.
func TestMemberlistPingRTT(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := mustNetwork(t, Config{Topology: mustTopology(t, twoRegions), Seed: 1})
		defer n.Close()
		names := []struct{ name, region string }{{"a0", "a"}, {"a1", "a"}, {"b0", "b"}, {"b1", "b"}}
		var members []*memberlist.Memberlist
		recs := map[string]*rttRecorder{}
		var eps []*Endpoint
		for _, nm := range names {
			e := mustEndpoint(t, n, nm.name, nm.region)
			eps = append(eps, e)
			rec := &rttRecorder{}
			recs[nm.name] = rec
			conf := memberlist.DefaultLANConfig()
			conf.Ping = rec
			members = append(members, startMember(t, e, conf))
		}
		for _, m := range members[1:] {
			if _, err := m.Join([]string{memberAddr(eps[0])}); err != nil {
				t.Fatalf("Join: %v", err)
			}
		}
		waitFor(t, time.Minute, 100*time.Millisecond, "all members alive", func() bool {
			for _, m := range members {
				if aliveCount(m) != len(members) {
					return false
				}
			}
			return true
		})
		time.Sleep(30 * time.Second) // virtual: let each node probe the others
		check := func(from, to string, want time.Duration) {
			t.Helper()
			s := recs[from].samples(to)
			if len(s) == 0 {
				t.Errorf("%s has no ping RTT sample for %s", from, to)
				return
			}
			for _, rtt := range s {
				if d := rtt - want; d < -want/10 || d > want/10 {
					t.Errorf("ping RTT %s→%s = %v; want %v ±10%%", from, to, rtt, want)
				}
			}
		}
		t.Logf("a0→b0 ping RTTs: %v; a0→a1: %v", recs["a0"].samples("b0"), recs["a0"].samples("a1"))
		check("a0", "b0", 150*time.Millisecond)
		check("b1", "a1", 150*time.Millisecond)
		check("a0", "a1", 2*time.Millisecond)
		check("b0", "b1", 2*time.Millisecond)
		for _, m := range members {
			if err := m.Shutdown(); err != nil {
				t.Errorf("Shutdown: %v", err)
			}
		}
		n.Close()
		time.Sleep(time.Minute) // let memberlist's probes in progress time out
	})
}

// A real raft group keeps committing with a follower isolated, stops when
// its leader is isolated, elects a new leader in the majority, and
// converges after Heal.
func TestRaftGroupUnderFaults(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := mustNetwork(t, Config{Seed: 2, Jitter: 0.05})
		defer n.Close()
		var eps []*Endpoint
		for i, region := range []string{"us-east-1", "us-east-2", "us-west-2"} {
			eps = append(eps, mustEndpoint(t, n, fmt.Sprintf("r%d", i), region))
		}
		nodes := startRaftGroup(t, eps)
		defer stopRaftGroup(t, nodes)

		var leader *raftNode
		waitFor(t, time.Minute, 50*time.Millisecond, "a leader", func() bool {
			leader = leaderOf(nodes)
			return leader != nil
		})
		commit := func(nd *raftNode, i int) error {
			return nd.raft.Apply([]byte(fmt.Sprintf("cmd-%d", i)), 5*time.Second).Error()
		}
		for i := range 20 {
			if err := commit(leader, i); err != nil {
				t.Fatalf("commit %d: %v", i, err)
			}
		}

		// One follower isolated: the majority still commits.
		var follower *raftNode
		for _, nd := range nodes {
			if nd != leader {
				follower = nd
				break
			}
		}
		n.Isolate(follower.ep.Name())
		for i := 20; i < 40; i++ {
			if err := commit(leader, i); err != nil {
				t.Fatalf("commit %d with follower %s isolated: %v", i, follower.ep.Name(), err)
			}
		}
		n.Heal()
		waitFor(t, time.Minute, 50*time.Millisecond, "the follower to catch up", func() bool {
			return follower.fsm.count() == 40
		})

		// Leader isolated in a minority of one: it stops committing.
		old := leader
		n.Isolate(old.ep.Name())
		if err := commit(old, 40); err == nil {
			t.Fatalf("isolated leader %s committed an entry", old.ep.Name())
		}
		var rest []*raftNode
		for _, nd := range nodes {
			if nd != old {
				rest = append(rest, nd)
			}
		}
		waitFor(t, time.Minute, 50*time.Millisecond, "a new leader in the majority", func() bool {
			leader = leaderOf(rest)
			return leader != nil
		})
		for i := 41; i < 60; i++ {
			if err := commit(leader, i); err != nil {
				t.Fatalf("commit %d on new leader %s: %v", i, leader.ep.Name(), err)
			}
		}
		if got := old.raft.State(); got == raft.Leader {
			t.Errorf("isolated old leader is still %v", got)
		}

		n.Heal()
		if err := commit(leader, 60); err != nil {
			t.Fatalf("commit after heal: %v", err)
		}
		want := leader.fsm.count()
		t.Logf("leader %s → %s; %d entries; fault log: %v", old.ep.Name(), leader.ep.Name(), want, n.FaultLog())
		waitFor(t, time.Minute, 50*time.Millisecond, "all replicas to converge", func() bool {
			for _, nd := range nodes {
				if nd.fsm.count() != want {
					return false
				}
			}
			return true
		})
	})
}

func TestMemberlistTransportContract(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := mustNetwork(t, Config{Topology: mustTopology(t, twoRegions)})
		defer n.Close()
		e := mustEndpoint(t, n, "a0", "a")
		tr, err := NewMemberlistTransport(e, 7946)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := NewMemberlistTransport(e, 7946); err == nil {
			t.Errorf("a second transport on the same port was allowed")
		}
		if _, err := NewMemberlistTransport(e, 0); err == nil {
			t.Errorf("port 0 was allowed")
		}
		for _, tt := range []struct {
			ip   string
			port int
			ok   bool
		}{
			{"", 0, true}, {"198.18.0.1", 7946, true}, {"0.0.0.0", 0, true},
			{"10.0.0.1", 7946, false}, {"198.18.0.1", 7000, false},
		} {
			ip, port, err := tr.FinalAdvertiseAddr(tt.ip, tt.port)
			if tt.ok && (err != nil || ip.String() != "198.18.0.1" || port != 7946) {
				t.Errorf("FinalAdvertiseAddr(%q, %d) = %v, %d, %v; want 198.18.0.1, 7946", tt.ip, tt.port, ip, port, err)
			}
			if !tt.ok && err == nil {
				t.Errorf("FinalAdvertiseAddr(%q, %d) succeeded; want an error", tt.ip, tt.port)
			}
		}
		// A packet to itself arrives stamped with its delivery time.
		sent, err := tr.WriteToAddress([]byte("hi"), memberlist.Address{Addr: "198.18.0.1:7946", Name: "a0"})
		if err != nil {
			t.Fatal(err)
		}
		p := <-tr.PacketCh()
		if string(p.Buf) != "hi" || p.From.String() != "198.18.0.1:7946" || p.Timestamp.Before(sent) {
			t.Errorf("packet %q from %v at %v; want \"hi\" from 198.18.0.1:7946 at or after %v", p.Buf, p.From, p.Timestamp, sent)
		}
		if err := tr.Shutdown(); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := tr.Shutdown(); err != nil {
			t.Errorf("second Shutdown: %v", err)
		}
		if _, err := NewMemberlistTransport(e, 7946); err != nil {
			t.Errorf("rebinding after Shutdown: %v", err)
		}
	})
}
