package netsim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
)

// raftBoltStart is a StartFunc running a raft server on raft-boltdb/v2 in
// the node's data directory, bootstrapping the group on first start only.
func raftBoltStart(peers []string, fsms map[string]*counterFSM, rafts map[string]*raft.Raft) StartFunc {
	return func(_ context.Context, ep *Endpoint, spec NodeSpec) (io.Closer, error) {
		store, err := raftboltdb.NewBoltStore(filepath.Join(spec.DataDir, "raft.db"))
		if err != nil {
			return nil, err
		}
		snaps, err := raft.NewFileSnapshotStore(spec.DataDir, 2, io.Discard)
		if err != nil {
			store.Close()
			return nil, err
		}
		layer, err := NewRaftStreamLayer(ep, raftPort)
		if err != nil {
			store.Close()
			return nil, err
		}
		trans := raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
			Stream: layer, MaxPool: 3, Timeout: 2 * time.Second, Logger: hclog.NewNullLogger(),
		})
		conf := raft.DefaultConfig()
		conf.LocalID = raft.ServerID(spec.Name)
		conf.Logger = hclog.NewNullLogger()
		fsm := &counterFSM{} // in-memory state: fresh on every start
		r, err := raft.NewRaft(conf, fsm, store, store, snaps, trans)
		if err != nil {
			trans.Close()
			store.Close()
			return nil, err
		}
		existing, err := raft.HasExistingState(store, store, snaps)
		if err != nil {
			return nil, err
		}
		if !existing {
			var servers []raft.Server
			for _, p := range peers {
				pe, _ := ep.Network().Endpoint(p)
				servers = append(servers, raft.Server{
					ID:      raft.ServerID(p),
					Address: raft.ServerAddress(fmt.Sprintf("%s:%d", pe.IP(), raftPort)),
				})
			}
			if err := r.BootstrapCluster(raft.Configuration{Servers: servers}).Error(); err != nil {
				return nil, err
			}
		}
		fsms[spec.Name], rafts[spec.Name] = fsm, r
		return CloserFunc(func() error {
			delete(rafts, spec.Name)
			err := r.Shutdown().Error()
			trans.Close()
			return errors.Join(err, store.Close())
		}), nil
	}
}

// A cluster of raft servers on raft-boltdb survives a follower crash and a
// leader crash: crashed nodes lose their in-memory FSM, keep their data
// directory, and catch up after Restart.
func TestClusterRaftCrashRestart(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fsms := map[string]*counterFSM{}
		rafts := map[string]*raft.Raft{}
		peers := []string{"us-east-1-0", "us-east-1-1", "us-east-1-2"}
		ctx := context.Background()
		c, err := NewCluster(ctx, ClusterConfig{
			Regions:        []string{"us-east-1"},
			NodesPerRegion: 3,
			Seed:           4,
			Jitter:         0.1,
			DataDir:        t.TempDir(),
			Start:          raftBoltStart(peers, fsms, rafts),
		})
		if err != nil {
			t.Fatalf("NewCluster: %v", err)
		}
		defer c.Close()
		leader := func() string {
			var name string
			waitFor(t, time.Minute, 50*time.Millisecond, "a leader", func() bool {
				for n, r := range rafts {
					if r.State() == raft.Leader {
						name = n
						return true
					}
				}
				return false
			})
			return name
		}
		total := 0
		commit := func(k int) {
			t.Helper()
			l := leader()
			for range k {
				if err := rafts[l].Apply([]byte("x"), 5*time.Second).Error(); err != nil {
					t.Fatalf("Apply on %s: %v", l, err)
				}
				total++
			}
		}
		converged := func(what string) {
			t.Helper()
			waitFor(t, time.Minute, 50*time.Millisecond, what, func() bool {
				for _, p := range peers {
					if fsms[p].count() != total {
						return false
					}
				}
				return true
			})
		}
		commit(10)
		l := leader()
		var follower string
		for _, p := range peers {
			if p != l {
				follower = p
				break
			}
		}
		if err := c.Crash(follower); err != nil {
			t.Fatalf("Crash(%s): %v", follower, err)
		}
		if c.Component(follower) != nil || !c.Endpoint(follower).Crashed() {
			t.Errorf("after Crash: component %v, crashed %v", c.Component(follower), c.Endpoint(follower).Crashed())
		}
		commit(10)
		if err := c.Restart(ctx, follower); err != nil {
			t.Fatalf("Restart(%s): %v", follower, err)
		}
		if err := c.Restart(ctx, follower); err == nil {
			t.Errorf("Restart of a running node succeeded")
		}
		if _, err := os.Stat(filepath.Join(c.Nodes()[0].DataDir, "raft.db")); err != nil {
			t.Errorf("data dir lost: %v", err)
		}
		converged("the restarted follower to catch up")

		if err := c.Apply(Fault{Kind: FaultCrash, A: l}); err != nil {
			t.Fatalf("crash leader: %v", err)
		}
		commit(10) // a new leader among the two others
		if err := c.Apply(Fault{Kind: FaultRestart, A: l}); err != nil {
			t.Fatalf("restart old leader: %v", err)
		}
		converged("the old leader to catch up")
	})
}

func TestClusterConfigErrors(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		for _, tt := range []struct {
			cfg  ClusterConfig
			want string
		}{
			{ClusterConfig{NodesPerRegion: 0}, "NodesPerRegion 0"},
			{ClusterConfig{NodesPerRegion: 1, Regions: []string{"mars-1"}}, `"mars-1"`},
			{ClusterConfig{NodesPerRegion: 1, Regions: []string{"us-east-1", "us-east-1"}}, "given twice"},
			{ClusterConfig{NodesPerRegion: 1, Regions: []string{}}, "empty"},
		} {
			if _, err := NewCluster(ctx, tt.cfg); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("NewCluster(%+v) = %v; want error containing %q", tt.cfg, err, tt.want)
			}
		}

		// A failing start stops the nodes already started and names the node.
		var stopped []string
		dir := t.TempDir()
		_, err := NewCluster(ctx, ClusterConfig{
			Regions:        []string{"eu-west-1", "us-east-1"},
			NodesPerRegion: 2,
			DataDir:        dir,
			Start: func(_ context.Context, ep *Endpoint, spec NodeSpec) (io.Closer, error) {
				if spec.Name == "us-east-1-0" {
					return nil, errors.New("disk on fire")
				}
				return CloserFunc(func() error { stopped = append(stopped, spec.Name); return nil }), nil
			},
		})
		if err == nil || !strings.Contains(err.Error(), "us-east-1-0") || !strings.Contains(err.Error(), "disk on fire") {
			t.Errorf("NewCluster with a failing start: %v; want an error naming us-east-1-0", err)
		}
		if want := []string{"eu-west-1-1", "eu-west-1-0"}; !reflect.DeepEqual(stopped, want) {
			t.Errorf("stopped %v; want %v", stopped, want)
		}
		if _, err := os.Stat(filepath.Join(dir, "eu-west-1-0")); err != nil {
			t.Errorf("a caller-given data dir must be kept: %v", err)
		}
	})
}

func TestRandomScheduleDeterministicAndValid(t *testing.T) {
	cfg := ScheduleConfig{
		Duration:  time.Hour,
		Regions:   []string{"us-east-1", "eu-west-1", "ap-northeast-1"},
		Endpoints: []string{"us-east-1-0", "eu-west-1-0", "ap-northeast-1-0"},
	}
	s1, err := RandomSchedule(42, cfg)
	if err != nil {
		t.Fatalf("RandomSchedule: %v", err)
	}
	s2, _ := RandomSchedule(42, cfg)
	if !reflect.DeepEqual(s1, s2) {
		t.Errorf("same seed, different schedules:\n%v\n%v", s1, s2)
	}
	s3, _ := RandomSchedule(43, cfg)
	if reflect.DeepEqual(s1, s3) {
		t.Errorf("seeds 42 and 43 gave the same schedule")
	}
	if len(s1) < 10 || len(s1)%2 != 0 {
		t.Fatalf("schedule of %d steps; want many fault/undo pairs:\n%v", len(s1), s1)
	}
	undo := map[FaultKind]FaultKind{
		FaultPartition: FaultHeal, FaultIsolate: FaultUnisolate, FaultCrash: FaultRestart,
		FaultCut: FaultUncut, FaultLoss: FaultClearLink, FaultLatency: FaultClearLink,
	}
	kinds := map[FaultKind]bool{}
	for i := 0; i < len(s1); i += 2 {
		f, u := s1[i], s1[i+1]
		kinds[f.Fault.Kind] = true
		if undo[f.Fault.Kind] != u.Fault.Kind || u.At < f.At || u.At > cfg.Duration || (i > 0 && f.At < s1[i-1].At) {
			t.Errorf("step %d: %v then %v: want a fault followed by its undo, in time order within the duration", i, f, u)
		}
	}
	if len(kinds) < 5 {
		t.Errorf("schedule uses only %v", kinds)
	}
	for _, bad := range []ScheduleConfig{
		{},
		{Duration: time.Hour, MinHold: time.Minute, MaxHold: time.Second, Regions: cfg.Regions},
		{Duration: time.Hour},
		{Duration: time.Hour, Kinds: []FaultKind{FaultCrash}, Regions: cfg.Regions},
		{Duration: time.Hour, Kinds: []FaultKind{FaultHeal}, Regions: cfg.Regions},
		{Duration: time.Hour, MaxLoss: 2, Regions: cfg.Regions},
	} {
		if _, err := RandomSchedule(1, bad); err == nil {
			t.Errorf("RandomSchedule(%+v) succeeded; want an error", bad)
		}
	}
}

// A seeded schedule runs on a cluster at its virtual times, crashing and
// restarting nodes through the StartFunc, and leaves the network healed.
func TestScheduleRunsOnCluster(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		starts := map[string]int{}
		regions := []string{"us-east-1", "eu-west-1", "ap-northeast-1"}
		c, err := NewCluster(context.Background(), ClusterConfig{
			Regions:        regions,
			NodesPerRegion: 2,
			Seed:           9,
			Start: func(_ context.Context, ep *Endpoint, spec NodeSpec) (io.Closer, error) {
				starts[spec.Name]++
				pc, err := ep.ListenPacket(1)
				if err != nil {
					return nil, err
				}
				return pc, nil
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		var names []string
		for _, s := range c.Nodes() {
			names = append(names, s.Name)
		}
		sched, err := RandomSchedule(c.Network().Seed(), ScheduleConfig{
			Duration: time.Hour, Regions: regions, Endpoints: names,
		})
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		if err := sched.Run(context.Background(), c); err != nil {
			t.Fatalf("Run: %v", err)
		}
		log := c.Network().FaultLog()
		if len(log) != len(sched) {
			t.Fatalf("FaultLog has %d events; schedule %d", len(log), len(sched))
		}
		crashes := map[string]int{}
		for i, ev := range log {
			if ev.At.Sub(start) != sched[i].At || !reflect.DeepEqual(ev.Fault, sched[i].Fault) {
				t.Errorf("event %d = %v at %v; want %v at %v", i, ev.Fault, ev.At.Sub(start), sched[i].Fault, sched[i].At)
			}
			if ev.Fault.Kind == FaultCrash {
				crashes[ev.Fault.A]++
			}
		}
		for _, name := range names {
			if starts[name] != 1+crashes[name] {
				t.Errorf("%s started %d times; want 1 + %d restarts", name, starts[name], crashes[name])
			}
		}
		// Healed: every node reaches every other.
		for _, from := range names {
			src := c.Component(from).(net.PacketConn)
			for _, to := range names {
				if from == to {
					continue
				}
				if !sendOne(t, src, c.Component(to).(net.PacketConn)) {
					t.Errorf("%s→%s not delivered after the schedule", from, to)
				}
			}
		}

		// Run stops at ctx's end.
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := sched.Run(ctx, c.Network()); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Run with a short context: %v; want DeadlineExceeded", err)
		}
	})
}
