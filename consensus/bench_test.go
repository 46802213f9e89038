package consensus

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// tcpRegion starts three servers in this process, each with its own bolt
// files (fsync on unless noSync) and a loopback TCP listener, and waits
// for a leader. This is the production network layer.
func tcpRegion(tb testing.TB, dir string, noSync bool, mod func(*Config)) []*Server {
	tb.Helper()
	var servers []*Server
	for i := range 3 {
		layer, err := NewTCPStreamLayer("127.0.0.1:0", "")
		if err != nil {
			tb.Fatal(err)
		}
		cfg := Config{
			NodeID:          fmt.Sprintf("s%d", i),
			Region:          testRegion,
			DataDir:         filepath.Join(dir, fmt.Sprintf("s%d", i)),
			StreamLayer:     layer,
			BootstrapExpect: 3,
			NoSync:          noSync,
			Logger:          testLogger(fmt.Sprintf("s%d", i)),
			RaftLogLevel:    os.Getenv("MERIDIAN_TEST_RAFT_LOG"),
		}
		if mod != nil {
			mod(&cfg)
		}
		s, err := Open(cfg)
		if err != nil {
			tb.Fatal(err)
		}
		servers = append(servers, s)
	}
	for _, s := range servers {
		for _, o := range servers {
			s.ObserveServer(ServerInfo{ID: o.ID(), RaftAddr: o.Addr(), Alive: true})
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for leaderOf(servers) == nil {
		if time.Now().After(deadline) {
			tb.Fatal("no leader within 30s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return servers
}

func leaderOf(servers []*Server) *Server {
	for _, s := range servers {
		if s.IsLeader() {
			return s
		}
	}
	return nil
}

func closeAll(tb testing.TB, servers []*Server) {
	for _, s := range servers {
		if err := s.Close(); err != nil {
			tb.Errorf("close %s: %v", s.ID(), err)
		}
	}
}

// TestTCPRegion runs a region over real loopback TCP in real time:
// proposals forwarded by followers, a consistent read, a leader change.
func TestTCPRegion(t *testing.T) {
	servers := tcpRegion(t, t.TempDir(), true, nil)
	defer closeAll(t, servers)
	var follower *Server
	for _, s := range servers {
		if !s.IsLeader() {
			follower = s
			break
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := follower.Propose(ctx, bigNode("n1"), SubmitJob{Job: job("j1", 1, 0)}, PlaceJob{JobID: "j1", NodeID: "n1"})
	if err != nil || res[2].Err != nil {
		t.Fatalf("propose through follower: %v %+v", err, res)
	}
	l, err := follower.ConsistentLedger(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if a, ok := l.JobAllocation(testRegion, "j1"); !ok || a.ID != res[2].ID {
		t.Fatalf("consistent read: %+v %v", a, ok)
	}
	// Hand leadership over and keep writing through the same follower.
	old := leaderOf(servers)
	if err := old.raft.LeadershipTransfer().Error(); err != nil {
		t.Fatal(err)
	}
	res, err = follower.Propose(ctx, SubmitJob{Job: job("j2", 1, 0)}, PlaceJob{JobID: "j2", NodeID: "n1"})
	if err != nil || res[1].Err != nil {
		t.Fatalf("propose after leadership transfer: %v %+v", err, res)
	}
}

// BenchmarkCommit measures committed placements per second in one region
// of three servers in this process, talking over loopback TCP, each with
// its own raft-boltdb file on disk, fsync on. 64 concurrent clients are
// spread over the three servers (two thirds of them are forwarded by
// followers). A placement is one PlaceJob command (its job was submitted
// during setup).
//
//   - single: one placement per proposal and one command per log entry,
//     each proposal handed to Raft as it comes (plain raft.Apply; Raft still
//     writes concurrent entries to disk together).
//   - batched: one placement per proposal; the proposal queue packs
//     concurrent proposals into shared entries.
//   - plan16: each proposal is a plan of 16 placements (as a scheduler
//     commits the placements of one evaluation together), packed likewise.
//
// With one command per client in flight, throughput cannot exceed
// 64 / commit latency; plans keep more commands in flight.
//
// Reported: placements/s, p50 and p99 commit latency of a proposal (from
// Propose to its result), mean commands per log entry, and the heap of the
// whole group (three replicas with their ledgers) after the run.
func BenchmarkCommit(b *testing.B) {
	for _, mode := range []struct {
		name     string
		maxBatch int
		plan     int
	}{{"single", 1, 1}, {"batched", 512, 1}, {"plan16", 512, 16}} {
		b.Run(mode.name, func(b *testing.B) {
			benchmarkCommit(b, mode.maxBatch, mode.plan, 64)
		})
	}
}

func benchmarkCommit(b *testing.B, maxBatch, plan, clients int) {
	dir, err := os.MkdirTemp("", "meridian-bench-")
	if err != nil {
		b.Fatal(err)
	}
	defer os.RemoveAll(dir)
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)

	servers := tcpRegion(b, dir, false, func(c *Config) {
		c.MaxEntryCommands = maxBatch
		if maxBatch == 1 {
			c.MaxInflightEntries = 4096 // every proposal goes to Raft at once
		}
		// Three servers and 64 clients share two cores here: use the
		// timing of Consul's default raft_multiplier (5), as for servers
		// on small shared machines, so that CPU starvation is not taken
		// for a failed leader.
		c.HeartbeatTimeout, c.ElectionTimeout, c.LeaderLeaseTimeout = 5*time.Second, 5*time.Second, 2500*time.Millisecond
	})
	defer closeAll(b, servers)
	leader := leaderOf(servers)
	ctx := context.Background()
	const nodes = 64
	for i := range nodes {
		if _, err := leader.Propose(ctx, RegisterNode{ID: fmt.Sprintf("n%d", i), Total: res(1e9, 1e9, 1e9, 1<<20), PricePerHour: 1}); err != nil {
			b.Fatal(err)
		}
	}
	// Submit the jobs ahead, in large entries, outside the timed part.
	for lo := 0; lo < b.N; {
		hi := min(lo+500, b.N)
		cmds := make([]Command, 0, hi-lo)
		for i := lo; i < hi; i++ {
			cmds = append(cmds, SubmitJob{Job: job(fmt.Sprintf("j%d", i), 1, 0)})
		}
		if err := proposeChunks(ctx, leader, cmds, maxBatch); err != nil {
			b.Fatal(err)
		}
		lo = hi
	}
	entries0, cmds0 := leader.prop.entries.Load(), leader.prop.commands.Load()

	proposals := (b.N + plan - 1) / plan
	latencies := make([]time.Duration, proposals)
	var next atomic.Int64
	var wg sync.WaitGroup
	var failed atomic.Value
	b.ResetTimer()
	start := time.Now()
	for c := range clients {
		s := servers[c%len(servers)]
		wg.Add(1)
		go func() {
			defer wg.Done()
			cmds := make([]Command, 0, plan)
			for {
				p := int(next.Add(1)) - 1
				if p >= proposals {
					return
				}
				cmds = cmds[:0]
				for i := p * plan; i < min((p+1)*plan, b.N); i++ {
					cmds = append(cmds, PlaceJob{JobID: fmt.Sprintf("j%d", i), NodeID: fmt.Sprintf("n%d", i%nodes)})
				}
				t := time.Now()
				out, err := s.Propose(ctx, cmds...)
				latencies[p] = time.Since(t)
				for _, r := range out {
					if err == nil {
						err = r.Err
					}
				}
				if err != nil {
					failed.Store(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	if err, _ := failed.Load().(error); err != nil {
		b.Fatal(err)
	}
	slices.Sort(latencies)
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "placements/s")
	b.ReportMetric(float64(latencies[proposals/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(latencies[min(proposals-1, proposals*99/100)].Microseconds())/1000, "p99-ms")
	if e := leader.prop.entries.Load() - entries0; e > 0 {
		b.ReportMetric(float64(leader.prop.commands.Load()-cmds0)/float64(e), "cmds/entry")
	}
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	heap := float64(int64(after.HeapInuse) - int64(before.HeapInuse))
	b.ReportMetric(heap/(1<<20), "heap-MiB/group")
	b.ReportMetric(heap/float64(b.N), "heap-B/placement")
	b.ReportMetric(0, "ns/op")
}

// proposeChunks proposes cmds in proposals of at most max commands.
func proposeChunks(ctx context.Context, s *Server, cmds []Command, max int) error {
	for len(cmds) > 0 {
		n := min(max, len(cmds))
		out, err := s.Propose(ctx, cmds[:n]...)
		if err != nil {
			return err
		}
		for _, r := range out {
			if r.Err != nil {
				return r.Err
			}
		}
		cmds = cmds[n:]
	}
	return nil
}

// BenchmarkFSMApply measures the state machine alone, without Raft or
// disk: log entries of PlaceJob commands applied by the FSM, one command
// per entry and 512 per entry.
func BenchmarkFSMApply(b *testing.B) {
	for _, per := range []int{1, 512} {
		b.Run(fmt.Sprintf("cmds-per-entry=%d", per), func(b *testing.B) {
			f := NewFSM(testRegion)
			index := uint64(0)
			apply := func(cmds []Command) {
				envs := make([]Envelope, len(cmds))
				for i, c := range cmds {
					env, err := EncodeCommand(c)
					if err != nil {
						b.Fatal(err)
					}
					env.Now = t0
					envs[i] = env
				}
				data, err := encodeEntry(envs)
				if err != nil {
					b.Fatal(err)
				}
				index++
				out := f.Apply(&raft.Log{Index: index, Type: raft.LogCommand, Data: data}).(*EntryResult)
				for _, r := range out.Results {
					if r.Err != nil {
						b.Fatal(r.Err)
					}
				}
			}
			var cmds []Command
			for i := range 64 {
				cmds = append(cmds, RegisterNode{ID: fmt.Sprintf("n%d", i), Total: res(1e12, 1e12, 1e12, 1<<30), PricePerHour: 1})
			}
			apply(cmds)
			for lo := 0; lo < b.N; lo += 512 {
				cmds = cmds[:0]
				for i := lo; i < min(lo+512, b.N); i++ {
					cmds = append(cmds, SubmitJob{Job: job(fmt.Sprintf("j%d", i), 1, 0)})
				}
				apply(cmds)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for lo := 0; lo < b.N; lo += per {
				cmds = cmds[:0]
				for i := lo; i < min(lo+per, b.N); i++ {
					cmds = append(cmds, PlaceJob{JobID: fmt.Sprintf("j%d", i), NodeID: fmt.Sprintf("n%d", i%64)})
				}
				apply(cmds)
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "placements/s")
		})
	}
}
