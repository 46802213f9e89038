package consensus

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"reflect"
	"slices"
	"testing"
	"testing/synctest"
	"time"

	"github.com/meridian-mesh/meridian/netsim"
)

func TestRegionCommitsAndForwardsFromFollowers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newCluster(t, 3, nil)
		defer c.close()
		c.startAll()
		f := c.followers()[0]
		// Written through a follower: forwarded to the leader.
		res := mustPropose(t, f, gpuNode("n1"), SubmitJob{Job: job("j1", 60, 2)}, PlaceJob{JobID: "j1", NodeID: "n1"})
		if res[2].ID == "" || res[2].Epoch != 1 || res[0].Index == 0 || res[0].Index != res[2].Index {
			t.Fatalf("results = %+v", res)
		}
		if f.Stats().ForwardedProposals == 0 {
			t.Fatal("the follower did not forward")
		}
		// Errors cross the forwarding hop and still match their sentinels.
		ctx, cancel := ctxTimeout(10 * time.Second)
		defer cancel()
		out, err := f.Propose(ctx, SubmitJob{Job: job("j2", 60, 2)}, PlaceJob{JobID: "j2", NodeID: "n1"}, PlaceJob{JobID: "j1", NodeID: "n1"})
		if err != nil {
			t.Fatal(err)
		}
		if out[0].Err != nil || !errors.Is(out[1].Err, ErrOvercommit) || !errors.Is(out[2].Err, ErrDoubleAllocation) {
			t.Fatalf("results = %+v", out)
		}
		var ce *CommandError
		if !errors.As(out[1].Err, &ce) || ce.Subject != "n1" {
			t.Fatalf("overcommit error = %#v", out[1].Err)
		}
		// A consistent read on the other follower sees every acknowledged write.
		other := c.followers()[1]
		l, err := other.ConsistentLedger(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if a, ok := l.JobAllocation(testRegion, "j1"); !ok || a.ID != res[2].ID {
			t.Fatalf("consistent read on %s: allocation %+v %v", other.ID(), a, ok)
		}
		c.waitConverged()
		for _, s := range c.running() {
			dataDirHasBolt(t, s.cfg.DataDir)
		}
	})
}

func TestConcurrentProposalsArePacked(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newCluster(t, 3, nil)
		defer c.close()
		leader := c.startAll()
		mustPropose(t, leader, RegisterNode{ID: "big", Total: res(1e9, 1e9, 1e9, 0), PricePerHour: 1})
		const clients, perClient = 32, 20
		errs := make(chan error, clients)
		for i := range clients {
			s := c.running()[i%3]
			go func() {
				for k := range perClient {
					id := fmt.Sprintf("j-%d-%d", i, k)
					ctx, cancel := ctxTimeout(time.Minute)
					res, err := s.Propose(ctx, SubmitJob{Job: job(id, 1, 0)}, PlaceJob{JobID: id, NodeID: "big"})
					cancel()
					if err == nil {
						err = errors.Join(res[0].Err, res[1].Err)
					}
					if err != nil {
						errs <- err
						return
					}
				}
				errs <- nil
			}()
		}
		for range clients {
			if err := <-errs; err != nil {
				t.Fatal(err)
			}
		}
		st := c.leader().Stats()
		if st.Ledger.LiveAllocations != clients*perClient {
			t.Fatalf("live allocations = %d, want %d", st.Ledger.LiveAllocations, clients*perClient)
		}
		if st.ProposedEntries >= st.ProposedCommands/2 {
			t.Fatalf("%d commands in %d entries: concurrent proposals were not packed", st.ProposedCommands, st.ProposedEntries)
		}
		c.waitConverged()
	})
}

func TestLeaderCrashLosesNothingCommitted(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newCluster(t, 3, nil)
		defer c.close()
		old := c.startAll()
		mustPropose(t, old, bigNode("n1"))
		var allocs []string
		for i := range 10 {
			id := fmt.Sprintf("j%d", i)
			res := mustPropose(t, c.followers()[0], SubmitJob{Job: job(id, 5, 0)}, PlaceJob{JobID: id, NodeID: "n1"})
			allocs = append(allocs, res[1].ID)
		}
		oldID := old.ID()
		c.crash(oldID)
		leader := c.waitLeader()
		if leader.ID() == oldID {
			t.Fatal("crashed leader still leads")
		}
		for _, s := range c.running() {
			l, err := s.ConsistentLedger(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			for _, id := range allocs {
				if a, ok := l.Allocation(id); !ok || !a.Live() {
					t.Fatalf("%s lost committed allocation %s", s.ID(), id)
				}
			}
		}
		mustPropose(t, leader, SubmitJob{Job: job("after", 5, 0)}, PlaceJob{JobID: "after", NodeID: "n1"})
		// The old leader comes back from its bolt files and catches up.
		c.net.Restart(oldID)
		c.start(oldID)
		c.observeAll()
		c.waitConverged()
		if _, ok := c.srv[oldID].Ledger().Job("after"); !ok {
			t.Fatal("restarted server did not catch up")
		}
	})
}

func TestMinorityPartitionCannotCommit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newCluster(t, 3, func(cfg *Config) { cfg.HoldTimeout = 3 * time.Second })
		defer c.close()
		leader := c.startAll()
		mustPropose(t, leader, bigNode("n1"))
		c.waitConverged()

		// Cut the leader off: it is the minority.
		c.net.Isolate(leader.ID())
		ctx, cancel := ctxTimeout(5 * time.Second)
		res, err := leader.Propose(ctx, SubmitJob{Job: job("lost", 5, 0)})
		cancel()
		if err == nil {
			t.Fatalf("the isolated leader committed: %+v", res)
		}
		if !errors.Is(err, ErrOutcomeUnknown) && !errors.Is(err, ErrNoLeader) && !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("isolated leader: error %v", err)
		}
		// The majority elects a leader and goes on.
		var newLeader *Server
		waitFor(t, "a leader in the majority", 30*time.Second, func() bool {
			for _, s := range c.running() {
				if s != leader && s.IsLeader() {
					newLeader = s
					return true
				}
			}
			return false
		})
		for i := range 5 {
			id := fmt.Sprintf("maj%d", i)
			mustPropose(t, newLeader, SubmitJob{Job: job(id, 5, 0)}, PlaceJob{JobID: id, NodeID: "n1"})
		}
		if _, ok := leader.Ledger().Job("maj0"); ok {
			t.Fatal("the minority saw a majority write while partitioned")
		}
		// Heal: the old leader steps down, drops its uncommitted entry and
		// catches up.
		c.net.Heal()
		waitFor(t, "the old leader to step down", 30*time.Second, func() bool { return !leader.IsLeader() })
		c.waitConverged()
		if _, ok := leader.Ledger().Job("maj4"); !ok {
			t.Fatal("minority did not catch up")
		}
		for _, s := range c.running() {
			if j, ok := s.Ledger().Job("lost"); ok {
				// Outcome unknown means it may still have committed, but
				// only if a majority got it, which isolation prevented.
				t.Fatalf("%s holds the minority's uncommitted job %+v", s.ID(), j)
			}
		}
	})
}

func TestIsolatedFollowerCatchesUp(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newCluster(t, 3, nil)
		defer c.close()
		leader := c.startAll()
		mustPropose(t, leader, gpuNode("n1"))
		f := c.followers()[0]
		c.net.Isolate(f.ID())
		ctx, cancel := ctxTimeout(3 * time.Second)
		if _, err := f.Propose(ctx, Expire{}); err == nil {
			t.Fatal("an isolated follower committed")
		}
		cancel()
		for i := range 20 {
			mustPropose(t, leader, SubmitJob{Job: job(fmt.Sprintf("j%d", i), 1, 0)})
		}
		c.net.Heal()
		c.waitConverged()
	})
}

func TestIsolatedFollowerRefusesConsistentReads(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newCluster(t, 3, func(cfg *Config) { cfg.HoldTimeout = 2 * time.Second })
		defer c.close()
		leader := c.startAll()
		mustPropose(t, leader, bigNode("n1"))
		f := c.followers()[0]
		c.net.Isolate(f.ID())
		mustPropose(t, leader, SubmitJob{Job: job("while-isolated", 1, 0)})
		// A stale read answers at once, without the new job; a consistent
		// read cannot be served and says so.
		if _, ok := f.Ledger().Job("while-isolated"); ok {
			t.Fatal("an isolated follower saw a write it cannot have received")
		}
		ctx, cancel := ctxTimeout(10 * time.Second)
		defer cancel()
		if l, err := f.ConsistentLedger(ctx); err == nil {
			t.Fatalf("isolated follower served a consistent read at index %d", l.Index())
		} else if !errors.Is(err, ErrNoLeader) && !errors.Is(err, ErrOutcomeUnknown) && !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("isolated follower: %v", err)
		}
		c.net.Heal()
		// Raft backs off a follower that kept failing, so the leader may
		// take a few seconds to reach it again.
		waitFor(t, "the follower to hear from the leader", time.Minute, func() bool {
			id, _, _ := f.Leader()
			return id != ""
		})
		l, err := f.ConsistentLedger(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := l.Job("while-isolated"); !ok {
			t.Fatal("consistent read after heal misses an acknowledged write")
		}
	})
}

func TestRestartRecoversFromBoltFiles(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newCluster(t, 3, nil)
		defer c.close()
		leader := c.startAll()
		mustPropose(t, leader, bigNode("n1"))
		for i := range 30 {
			id := fmt.Sprintf("j%d", i)
			mustPropose(t, leader, SubmitJob{Job: job(id, 1, 0)}, PlaceJob{JobID: id, NodeID: "n1"})
		}
		// A snapshot in the middle, so recovery takes both paths: the
		// snapshot, then the log after it.
		if err := leader.Snapshot(); err != nil {
			t.Fatal(err)
		}
		mustPropose(t, leader, SubmitJob{Job: job("tail", 1, 0)})
		c.waitConverged()
		want := leader.Ledger().Export()
		for _, n := range c.names {
			c.stop(n)
		}
		// Restart in reverse order; no server bootstraps again.
		for i := len(c.names) - 1; i >= 0; i-- {
			c.start(c.names[i])
		}
		c.observeAll()
		leader = c.waitLeader()
		waitFor(t, "the ledger to be recovered", 30*time.Second, func() bool {
			return leader.Ledger().Index() >= want.Index
		})
		got := leader.Ledger().Export()
		got.Index, got.Now = want.Index, want.Now
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("recovered ledger differs:\n got %+v\nwant %+v", got, want)
		}
		mustPropose(t, leader, SubmitJob{Job: job("after-restart", 1, 0)})
		c.waitConverged()
		if v, _ := voters(t, leader); len(v) != 3 {
			t.Fatalf("voters after restart = %v", v)
		}
	})
}

func TestFarBehindFollowerGetsSnapshot(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newCluster(t, 3, func(cfg *Config) {
			cfg.SnapshotThreshold = 16
			cfg.TrailingLogs = 4
			cfg.SnapshotInterval = 500 * time.Millisecond
		})
		defer c.close()
		leader := c.startAll()
		mustPropose(t, leader, bigNode("n1"))
		behind := c.followers()[0]
		c.crash(behind.ID())
		for i := range 60 {
			id := fmt.Sprintf("j%d", i)
			mustPropose(t, leader, SubmitJob{Job: job(id, 1, 0)}, PlaceJob{JobID: id, NodeID: "n1"})
		}
		if err := leader.Snapshot(); err != nil {
			t.Fatal(err)
		}
		first, err := leader.store.FirstIndex()
		if err != nil {
			t.Fatal(err)
		}
		c.net.Restart(behind.ID())
		restarted := c.start(behind.ID())
		if restarted.raft.LastIndex() >= first {
			t.Fatalf("the follower is not far behind: its last index %d, leader's first %d", restarted.raft.LastIndex(), first)
		}
		c.observeAll()
		c.waitConverged()
		if st := restarted.Stats(); st.LastSnapshotIndex < first-1 {
			t.Fatalf("follower caught up without installing a snapshot (its snapshot index %d, leader's first log %d)", st.LastSnapshotIndex, first)
		}
	})
}

func TestBootstrapExpectInAnyOrder(t *testing.T) {
	for seed := range 4 {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				r := rand.New(rand.NewPCG(uint64(seed), 1))
				c := newCluster(t, 3, nil)
				defer c.close()
				order := r.Perm(3)
				// Servers start one by one, seconds apart, and learn of
				// each other in a random order, as gossip would tell them.
				for _, i := range order {
					s := c.start(c.names[i])
					s.ObserveServer(c.info(s.ID(), true))
					time.Sleep(time.Duration(r.IntN(3000)) * time.Millisecond)
					for _, j := range r.Perm(3) {
						if o := c.srv[c.names[j]]; o != nil && o != s {
							s.ObserveServer(c.info(o.ID(), true))
							o.ObserveServer(c.info(s.ID(), true))
						}
					}
				}
				leader := c.waitLeader()
				time.Sleep(5 * time.Second) // let any rival election show itself
				leaders := 0
				for _, s := range c.running() {
					if s.IsLeader() {
						leaders++
					}
					v, nv := voters(t, s)
					if !reflect.DeepEqual(v, []string{"s0", "s1", "s2"}) || len(nv) != 0 {
						t.Fatalf("%s: voters %v non-voters %v", s.ID(), v, nv)
					}
				}
				if leaders != 1 {
					t.Fatalf("%d leaders", leaders)
				}
				mustPropose(t, c.followers()[0], gpuNode("n1"))
				c.waitConverged()
				_ = leader
			})
		})
	}
}

func TestNonvoterPromotedWhenVoterFails(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newCluster(t, 3, nil)
		defer c.close()
		leader := c.startAll()
		mustPropose(t, leader, gpuNode("n1"))
		// A fourth server joins: the group exists, so it waits to be added,
		// and joins as a non-voter (MaxVoters is 3).
		c.addEndpoint("s3")
		c.start("s3")
		c.observeAll()
		waitFor(t, "s3 to join as non-voter", 30*time.Second, func() bool {
			_, nv := voters(t, c.leader())
			return slices.Equal(nv, []string{"s3"})
		})
		time.Sleep(3 * c.config("s3").ServerStabilizationTime)
		if v, nv := voters(t, c.leader()); len(v) != 3 || len(nv) != 1 {
			t.Fatalf("a healthy fourth server was promoted past MaxVoters: voters %v non-voters %v", v, nv)
		}
		// A follower voter fails; gossip says so; after DeadServerTimeout
		// the leader promotes s3 and removes the failed server.
		var failed string
		for _, f := range c.followers() {
			if f.ID() != "s3" {
				failed = f.ID()
				break
			}
		}
		c.crash(failed)
		for _, s := range c.running() {
			s.ObserveServer(c.info(failed, false))
		}
		waitFor(t, "s3 to replace the failed voter", time.Minute, func() bool {
			l := c.leader()
			if l == nil {
				return false
			}
			v, nv := voters(t, l)
			return slices.Contains(v, "s3") && !slices.Contains(v, failed) && len(v) == 3 && len(nv) == 0
		})
		mustPropose(t, c.waitLeader(), SubmitJob{Job: job("after-promotion", 1, 0)})
		c.waitConverged()
	})
}

func TestLeaveRemovesTheServer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newCluster(t, 3, nil)
		defer c.close()
		leader := c.startAll()
		ctx, cancel := ctxTimeout(30 * time.Second)
		defer cancel()
		// The leader leaves: it hands leadership over first.
		if err := leader.Leave(ctx); err != nil {
			t.Fatal(err)
		}
		id := leader.ID()
		c.stop(id)
		for _, s := range c.running() {
			s.ServerLeft(id)
		}
		l := c.waitLeader()
		if v, _ := voters(t, l); slices.Contains(v, id) || len(v) != 2 {
			t.Fatalf("voters after leave = %v", v)
		}
		mustPropose(t, l, gpuNode("n1"))
		c.waitConverged()
	})
}

func TestIdleLedgerExpiresEscrows(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newCluster(t, 3, nil)
		defer c.close()
		leader := c.startAll()
		mustPropose(t, leader, gpuNode("n1"))
		res := mustPropose(t, leader, HoldEscrow{NodeID: "n1", Resources: res(50, 0, 0, 0), BuyerRegion: "us-east-1",
			AuctionID: "auc", ItemID: "i", Expiry: time.Now().Add(10 * time.Second)})
		// Nobody writes; the leader notices the expiry and proposes Expire.
		waitFor(t, "the escrow to expire", 30*time.Second, func() bool {
			for _, s := range c.running() {
				if _, ok := s.Ledger().Escrow(res[0].ID); ok {
					return false
				}
			}
			return true
		})
		if n, _ := leader.Ledger().Node("n1"); !n.Used.IsZero() {
			t.Fatalf("used after expiry = %+v", n.Used)
		}
	})
}

func TestProposeLimitsAndShutdown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newCluster(t, 3, func(cfg *Config) { cfg.MaxEntryCommands = 4 })
		defer c.close()
		leader := c.startAll()
		ctx, cancel := ctxTimeout(10 * time.Second)
		defer cancel()
		cmds := make([]Command, 5)
		for i := range cmds {
			cmds[i] = Expire{}
		}
		if _, err := leader.Propose(ctx, cmds...); !errors.Is(err, ErrTooLarge) {
			t.Fatalf("5 commands with MaxEntryCommands 4: %v", err)
		}
		if _, err := leader.Propose(ctx, nil); !errors.Is(err, ErrInvalid) {
			t.Fatalf("nil command: %v", err)
		}
		f := c.followers()[0]
		c.stop(f.ID())
		if _, err := f.Propose(ctx, Expire{}); !errors.Is(err, ErrShutdown) {
			t.Fatalf("propose after close: %v", err)
		}
		if _, err := f.ConsistentLedger(ctx); !errors.Is(err, ErrShutdown) {
			t.Fatalf("consistent read after close: %v", err)
		}
		if err := f.Close(); err != nil {
			t.Fatalf("second close: %v", err)
		}
	})
}

func TestSubscribeLeadership(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newCluster(t, 3, nil)
		defer c.close()
		for _, n := range c.names {
			c.start(n)
		}
		subs := map[string]<-chan bool{}
		for _, s := range c.running() {
			ch, cancel := s.SubscribeLeadership()
			defer cancel()
			if <-ch {
				t.Fatalf("%s leads before bootstrap", s.ID())
			}
			subs[s.ID()] = ch
		}
		c.observeAll()
		leader := c.waitLeader()
		select {
		case v := <-subs[leader.ID()]:
			if !v {
				t.Fatal("leader was told false")
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the leader's subscription heard nothing")
		}
		id, addr, term := leader.Leader()
		if id != leader.ID() || addr != leader.Addr() || term == 0 {
			t.Fatalf("Leader() = %q %q %d", id, addr, term)
		}
	})
}

func TestOpenValidatesConfig(t *testing.T) {
	nw, err := netsim.New(netsim.Config{Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer nw.Close()
	ep, err := nw.AddEndpoint("s", "eu-west-1")
	if err != nil {
		t.Fatal(err)
	}
	base := Config{NodeID: "s", Region: testRegion, DataDir: t.TempDir()}
	for _, tc := range []struct {
		mod   func(*Config)
		field string
	}{
		{func(c *Config) { c.NodeID = "" }, "NodeID"},
		{func(c *Config) { c.Region = "" }, "Region"},
		{func(c *Config) { c.DataDir = "" }, "DataDir"},
		{func(c *Config) {}, "StreamLayer"},
		{func(c *Config) { c.MaxVoters = 4 }, "MaxVoters"},
		{func(c *Config) { c.BootstrapExpect = 5 }, "BootstrapExpect"},
		{func(c *Config) { c.RaftLogLevel = "loud" }, "RaftLogLevel"},
		{func(c *Config) { c.DeadServerTimeout = -1 }, "DeadServerTimeout"},
		{func(c *Config) { c.MaxEntryBytes = 10 }, "MaxEntryBytes"},
	} {
		cfg := base
		if tc.field != "StreamLayer" {
			layer, err := netsim.NewRaftStreamLayer(ep, raftPort)
			if err != nil {
				t.Fatal(err)
			}
			cfg.StreamLayer = layer // Open closes it on error
		}
		tc.mod(&cfg)
		_, err := Open(cfg)
		if !errors.Is(err, ErrInvalid) || !containsField(err, tc.field) {
			t.Errorf("Open with bad %s: %v", tc.field, err)
		}
	}
}

func containsField(err error, field string) bool {
	var ce *CommandError
	return errors.As(err, &ce) && ce.Subject == field
}

func bigNode(id string) RegisterNode {
	return RegisterNode{ID: id, Total: res(1e6, 1e6, 1e6, 64), PricePerHour: 1}
}

// TestCloseRightAfterElection closes a server the moment Raft makes it
// leader, while its leader duties start (they begin with a Barrier, which
// Raft queues while it writes the new term's first entry to disk): Close
// must return. Close used to shut Raft down first, and a barrier still
// queued then is never resolved (hashicorp/raft#498), so Close waited for
// the duties for ever: TestTCPRegion hung that way, closing the leader it
// had just handed over to.
func TestCloseRightAfterElection(t *testing.T) {
	dir := t.TempDir()
	for round := range 20 {
		layer, err := NewTCPStreamLayer("127.0.0.1:0", "")
		if err != nil {
			t.Fatal(err)
		}
		s, err := Open(Config{
			NodeID: "s0", Region: testRegion, DataDir: filepath.Join(dir, fmt.Sprint(round)),
			StreamLayer: layer, BootstrapExpect: 1, Logger: testLogger("s0"),
			// A lone server elects itself after one heartbeat timeout.
			HeartbeatTimeout: 50 * time.Millisecond, ElectionTimeout: 50 * time.Millisecond, LeaderLeaseTimeout: 50 * time.Millisecond,
		})
		if err != nil {
			t.Fatal(err)
		}
		leads, cancel := s.SubscribeLeadership()
		s.ObserveServer(ServerInfo{ID: s.ID(), RaftAddr: s.Addr(), Alive: true})
		timeout := time.After(30 * time.Second)
		for leader := false; !leader; {
			select {
			case leader = <-leads:
			case <-timeout:
				s.Close()
				t.Fatalf("round %d: no leader within 30s", round)
			}
		}
		cancel()
		closed := make(chan error, 1)
		go func() { closed <- s.Close() }()
		select {
		case err := <-closed:
			if err != nil {
				t.Fatalf("round %d: close: %v", round, err)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("round %d: Close did not return within 30s of the election", round)
		}
	}
}
