package consensus

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	rtmetrics "runtime/metrics"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	metrics "github.com/hashicorp/go-metrics/compat"
	"github.com/hashicorp/raft"
	"go.uber.org/goleak"
)

// commitRate is the offered load of BenchmarkCommitAtRate; the default is
// the target.
var commitRate = flag.Int("commit-rate", 20000, "placements/s offered by BenchmarkCommitAtRate")

// commitMaxInflight overrides Config.MaxInflightEntries in the commit
// benchmarks, to try other pipeline depths.
var commitMaxInflight = flag.Int("commit-max-inflight", 0, "MaxInflightEntries of the servers in the commit benchmarks (0: the default)")

// commitLatencyFile, when set, is where BenchmarkCommitAtRate writes every
// proposal's latency.
var commitLatencyFile = flag.String("commit-latency-file", "", "write each proposal's latency, in the order they were due, to this file (BenchmarkCommitAtRate)")

// commitCPUProfile, when set, is where BenchmarkCommit and
// BenchmarkCommitAtRate write a CPU profile of their timed part only
// (-test.cpuprofile also covers starting the servers and submitting the
// jobs, which is a large share of a short run).
// commitAtLeader sends every proposal to the leader, as the region's
// placement loop does (it runs on the leader), instead of a third to each
// server, as clients spread over the servers would.
var commitAtLeader = flag.Bool("commit-at-leader", false, "commit benchmarks: send every proposal to the leader instead of a third to each server")

var commitCPUProfile = flag.String("commit-cpuprofile", "", "write a CPU profile of the timed part of the commit benchmarks to this file")

func TestMain(m *testing.M) {
	if id := os.Getenv(benchServerEnv); id != "" {
		// A server process of BenchmarkCommitAtRate's procs mode.
		os.Exit(benchServerMain(id))
	}
	goleak.VerifyTestMain(m)
}

// benchServerConfig sets what the commit benchmarks change in a server's
// configuration: entry size and pipeline depth (maxInflight 0 keeps the
// default), and Raft's timing.
func benchServerConfig(c *Config, maxBatch, maxInflight int) {
	c.MaxEntryCommands = maxBatch
	if maxBatch == 1 {
		c.MaxInflightEntries = 4096 // every proposal goes to Raft at once
	}
	if maxInflight > 0 {
		c.MaxInflightEntries = maxInflight
	}
	// Three servers and their clients share two cores here: use the
	// timing of Consul's default raft_multiplier (5), as for servers on
	// small shared machines, so that CPU starvation is not taken for a
	// failed leader.
	c.HeartbeatTimeout, c.ElectionTimeout, c.LeaderLeaseTimeout = 5*time.Second, 5*time.Second, 2500*time.Millisecond
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
// These are closed loops: each client sends its next proposal when the
// last one returns, so they measure capacity, and the latency they report
// is set by Little's law (commands in flight ÷ throughput), not by the
// commit path. BenchmarkCommitAtRate measures latency at a given rate.
//
// Reported: placements/s, p50 and p99 commit latency of a proposal (from
// Propose to its result), mean commands per log entry, the leader's
// per-stage timings (see reportStages), and the heap of the whole group
// (three replicas with their ledgers) after the run.
func BenchmarkCommit(b *testing.B) {
	for _, mode := range []struct {
		name     string
		maxBatch int
		plan     int
	}{{"single", 1, 1}, {"batched", 512, 1}, {"plan16", 512, 16}} {
		b.Run(mode.name, func(b *testing.B) {
			benchmarkCommit(b, mode.maxBatch, mode.plan, func(send sendFunc, proposals int) error {
				return closedLoop(send, proposals, 64)
			})
		})
	}
}

// BenchmarkCommitAtRate offers placements at a fixed rate (an open loop,
// as a region's schedulers do: a proposal is sent when it is due, whether
// or not earlier ones have returned), in plans of 1 or 16 placements, and
// reports the commit latency at that rate. Latency is measured from when a
// proposal was due, so a stalled sender does not hide a stall (coordinated
// omission). If the region cannot keep up, placements/s falls below the
// offered rate and latency grows with the run.
func BenchmarkCommitAtRate(b *testing.B) {
	rate := *commitRate
	if rate <= 0 {
		b.Fatalf("-commit-rate must be positive, got %d", rate)
	}
	for _, plan := range []int{16, 1} {
		interval := time.Duration(float64(time.Second) * float64(plan) / float64(rate))
		// One name element (no "/"), so that -bench 'BenchmarkCommitAtRate/.*plan16' selects it.
		b.Run(fmt.Sprintf("rate=%dk-plan%d", rate/1000, plan), func(b *testing.B) {
			benchmarkCommit(b, 512, plan, func(send sendFunc, proposals int) error {
				return openLoop(send, proposals, interval)
			})
		})
		// The same with one process per server (see bench_procs_test.go).
		b.Run(fmt.Sprintf("rate=%dk-plan%d-procs", rate/1000, plan), func(b *testing.B) {
			benchmarkCommitProcs(b, 512, plan, interval)
		})
	}
}

// closedLoop sends proposals 0..n-1 from the given number of clients, each
// sending its next proposal when the previous one returned.
func closedLoop(send sendFunc, n, clients int) error {
	var (
		next   atomic.Int64
		wg     sync.WaitGroup
		failed atomic.Value
	)
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				p := int(next.Add(1)) - 1
				if p >= n {
					return
				}
				if err := send(p, time.Now()); err != nil {
					failed.Store(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	err, _ := failed.Load().(error)
	return err
}

// openLoop sends proposal p at start + p×interval, each on its own
// goroutine, and waits for them all.
func openLoop(send sendFunc, n int, interval time.Duration) error {
	return openLoopFrom(time.Now(), send, n, interval, 0, 1)
}

// openLoopFrom sends the proposals p < n with p%of == share at start +
// p×interval, each on its own goroutine, and waits for them all: one
// process's share of a load spread over several.
func openLoopFrom(start time.Time, send sendFunc, n int, interval time.Duration, share, of int) error {
	var (
		wg     sync.WaitGroup
		failed atomic.Value
	)
	for p := share; p < n; {
		// Send everything due, then sleep until the next one is.
		now := time.Since(start)
		for ; p < n && time.Duration(p)*interval <= now; p += of {
			wg.Add(1)
			go func(p int) {
				defer wg.Done()
				if err := send(p, start.Add(time.Duration(p)*interval)); err != nil {
					failed.Store(err)
				}
			}(p)
		}
		if p < n {
			time.Sleep(time.Duration(p)*interval - time.Since(start))
		}
		if failed.Load() != nil {
			break
		}
	}
	wg.Wait()
	err, _ := failed.Load().(error)
	return err
}

// loadFunc drives a benchmark: it calls send for proposals 0..n-1, each
// with the time it was due (its latency counts from then), and returns
// the first error.
type loadFunc func(send sendFunc, proposals int) error

type sendFunc func(p int, due time.Time) error

func benchmarkCommit(b *testing.B, maxBatch, plan int, load loadFunc) {
	dir, err := os.MkdirTemp("", "meridian-bench-")
	if err != nil {
		b.Fatal(err)
	}
	defer os.RemoveAll(dir)
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)

	servers := tcpRegion(b, dir, false, func(c *Config) { benchServerConfig(c, maxBatch, *commitMaxInflight) })
	defer closeAll(b, servers)
	leader := leaderOf(servers)
	ctx := context.Background()
	seedBenchLedger(b, leader, maxBatch)
	entries0, cmds0 := leader.prop.entries.Load(), leader.prop.commands.Load()
	stages := newStageRecorder(leader)
	defer stages.stop()

	proposals := (b.N + plan - 1) / plan
	latencies := make([]time.Duration, proposals)
	stopProfile := startCPUProfile(b)
	var mem0 runtime.MemStats
	runtime.ReadMemStats(&mem0)
	user0, sys0 := cpuTimes(b)
	b.ResetTimer()
	start := time.Now()
	send := func(p int, due time.Time) error {
		to := servers[p%len(servers)]
		if *commitAtLeader {
			to = leader
		}
		err := proposePlan(ctx, to, benchPlacements(p, plan, b.N))
		latencies[p] = time.Since(due)
		return err
	}
	err = load(send, proposals)
	elapsed := time.Since(start)
	b.StopTimer()
	user1, sys1 := cpuTimes(b)
	cpu, sys := user1-user0+sys1-sys0, sys1-sys0
	var mem1 runtime.MemStats
	runtime.ReadMemStats(&mem1)
	stopProfile()
	if err != nil {
		b.Fatal(err)
	}
	if *commitLatencyFile != "" {
		writeLatencies(b, *commitLatencyFile, latencies, time.Duration(float64(time.Second)*float64(plan)/float64(*commitRate)))
	}
	slices.Sort(latencies)
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "placements/s")
	// CPU per placement (user + system, the whole group and its clients)
	// counts only this process: 2 cores ÷ this is the group's ceiling on a
	// dedicated 2-core machine. It still moves with the load, a little: a
	// starved group packs more commands per entry and per forwarding RPC,
	// which costs less per placement.
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/placement")
	// The kernel's part of it: the disk syncs (fdatasync takes CPU in
	// proportion to the bytes written) and the loopback TCP.
	b.ReportMetric(float64(sys.Microseconds())/float64(b.N), "sys-µs/placement")
	// Bytes allocated per placement (the whole process): what drives the
	// garbage collector, whose mark phases over the three ledgers are
	// where the latency tail comes from once the CPU is not saturated.
	b.ReportMetric(float64(mem1.TotalAlloc-mem0.TotalAlloc)/float64(b.N), "alloc-B/placement")
	b.ReportMetric(float64(mem1.NumGC-mem0.NumGC), "gc-cycles")
	b.ReportMetric(ms(latencies[proposals/2]), "p50-ms")
	b.ReportMetric(ms(latencies[min(proposals-1, proposals*99/100)]), "p99-ms")
	var fwdProps, fwdRPCs uint64
	for _, s := range servers {
		st := s.Stats()
		fwdProps += st.ForwardedProposals
		fwdRPCs += st.ForwardRPCs
	}
	if fwdRPCs > 0 {
		b.ReportMetric(float64(fwdProps)/float64(fwdRPCs), "proposals/forward")
	}
	if e := leader.prop.entries.Load() - entries0; e > 0 {
		b.ReportMetric(float64(leader.prop.commands.Load()-cmds0)/float64(e), "cmds/entry")
	}
	stages.report(b)
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	heap := float64(int64(after.HeapInuse) - int64(before.HeapInuse))
	b.ReportMetric(heap/(1<<20), "heap-MiB/group")
	b.ReportMetric(heap/float64(b.N), "heap-B/placement")
	b.ReportMetric(0, "ns/op")
}

// writeLatencies writes one line per proposal: when it was due (ms from the
// start, at the offered rate) and its latency (ms), to see whether the tail
// is spread or comes in bursts (GC cycles, slow syncs).
func writeLatencies(b *testing.B, path string, latencies []time.Duration, interval time.Duration) {
	var sb strings.Builder
	sb.WriteString("due_ms latency_ms\n")
	for p, l := range latencies {
		fmt.Fprintf(&sb, "%.3f %.3f\n", ms(time.Duration(p)*interval), ms(l))
	}
	if err := os.WriteFile(path, []byte(sb.String()), 0o644); err != nil {
		b.Errorf("-commit-latency-file: %v", err)
	}
}

// startCPUProfile starts the -commit-cpuprofile profile, if asked for, and
// returns what stops it.
func startCPUProfile(b *testing.B) func() {
	if *commitCPUProfile == "" {
		return func() {}
	}
	f, err := os.Create(*commitCPUProfile)
	if err != nil {
		b.Fatalf("-commit-cpuprofile: %v", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		b.Fatalf("-commit-cpuprofile %s: %v", *commitCPUProfile, err)
	}
	return func() {
		pprof.StopCPUProfile()
		if err := f.Close(); err != nil {
			b.Errorf("-commit-cpuprofile %s: %v", *commitCPUProfile, err)
		}
	}
}

// cpuTimes is the user and the system CPU time this process has used.
func cpuTimes(b *testing.B) (user, system time.Duration) {
	user, system, err := processCPU()
	if err != nil {
		b.Fatal(err)
	}
	return user, system
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// stageRecorder collects where proposals spend their time: the leader's
// proposal queue reports each proposal's wait for the packer and its time
// in Raft, and Raft's own metrics (go-metrics, in memory) split the
// latter into the leader's disk write, the followers' disk writes, the
// commit and the state machine.
type stageRecorder struct {
	leader   *Server
	sink     *metrics.InmemSink
	entries0 uint64

	mu     sync.Mutex
	queued []time.Duration
	raft   []time.Duration
}

// metricsConfig starts no goroutine (no runtime metrics), so that goleak
// stays quiet.
func metricsConfig() *metrics.Config {
	cfg := metrics.DefaultConfig("bench")
	cfg.EnableHostname, cfg.EnableRuntimeMetrics, cfg.EnableServiceLabel = false, false, false
	return cfg
}

func newStageRecorder(leader *Server) *stageRecorder {
	r := &stageRecorder{leader: leader, sink: metrics.NewInmemSink(time.Hour, time.Hour), entries0: leader.prop.entries.Load()}
	metrics.NewGlobal(metricsConfig(), r.sink)
	obs := func(t proposalTiming) {
		r.mu.Lock()
		r.queued = append(r.queued, t.Queued)
		r.raft = append(r.raft, t.Raft)
		r.mu.Unlock()
	}
	leader.prop.observe.Store(&obs)
	return r
}

func (r *stageRecorder) stop() {
	r.leader.prop.observe.Store(nil)
	metrics.NewGlobal(metricsConfig(), &metrics.BlackholeSink{})
}

// report adds the per-stage metrics to b:
//
//   - queue-p50/p99-ms: Propose on the leader → packed into an entry;
//   - raft-p50/p99-ms: raft.Apply → result (leader write, replication,
//     follower write, commit, the leader's state machine), per proposal;
//   - leader-fsync-ms: mean of the leader's StoreLogs (raft.leader.dispatchLog),
//     and entries/fsync the mean proposal-queue entries per such write;
//   - follower-store-ms: mean of a follower's StoreLogs for an AppendEntries;
//   - replicate-ms: mean AppendEntries round trip as the leader sees it;
//   - commit-ms: mean from the leader's dispatch to commit (raft.commitTime);
//   - fsm-ms: mean time of one state machine batch (all three replicas).
func (r *stageRecorder) report(b *testing.B) {
	r.leader.prop.observe.Store(nil)
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, st := range []struct {
		name string
		d    []time.Duration
	}{{"queue", r.queued}, {"raft", r.raft}} {
		if len(st.d) == 0 {
			continue
		}
		slices.Sort(st.d)
		b.ReportMetric(ms(st.d[len(st.d)/2]), st.name+"-p50-ms")
		b.ReportMetric(ms(st.d[min(len(st.d)-1, len(st.d)*99/100)]), st.name+"-p99-ms")
	}
	samples := map[string]metrics.AggregateSample{}
	for _, iv := range r.sink.Data() {
		iv.RLock()
		for key, s := range iv.Samples {
			// Labelled samples (per peer) are keyed "name;label=value".
			name, _, _ := strings.Cut(key, ";")
			a := samples[name]
			if s.AggregateSample != nil {
				a.Count += s.Count
				a.Sum += s.Sum
			}
			samples[name] = a
		}
		iv.RUnlock()
	}
	mean := func(name string) float64 {
		a := samples[name]
		if a.Count == 0 {
			return 0
		}
		return a.Sum / float64(a.Count)
	}
	b.ReportMetric(mean("bench.raft.leader.dispatchLog"), "leader-fsync-ms")
	b.ReportMetric(mean("bench.raft.rpc.appendEntries.storeLogs"), "follower-store-ms")
	b.ReportMetric(mean("bench.raft.replication.appendEntries.rpc"), "replicate-ms")
	b.ReportMetric(mean("bench.raft.commitTime"), "commit-ms")
	b.ReportMetric(mean("bench.raft.fsm.applyBatch"), "fsm-ms")
	if n := samples["bench.raft.leader.dispatchLog"].Count; n > 0 {
		b.ReportMetric(float64(r.leader.prop.entries.Load()-r.entries0)/float64(n), "entries/fsync")
	}
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
// per entry and 512 per entry. live-B/job is the heap the ledger holds per
// job, submitted and placed, after a collection: what every collection of
// a server's heap has to mark.
func BenchmarkFSMApply(b *testing.B) {
	for _, per := range []int{1, 32, 512} {
		b.Run(fmt.Sprintf("cmds-per-entry=%d", per), func(b *testing.B) {
			before := readHeapCost()
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
			b.StopTimer()
			l := f.Ledger() // the published ledger, as readers hold it
			after := readHeapCost()
			n := float64(b.N)
			perJob := func(x, y uint64) float64 { return float64(int64(x)-int64(y)) / n }
			b.ReportMetric(perJob(after.live, before.live), "live-B/job")
			b.ReportMetric(perJob(after.scan, before.scan), "scan-B/job")
			b.ReportMetric(perJob(after.objects, before.objects), "objects/job")
			b.ReportMetric(float64(after.markCPU.Nanoseconds())/n, "mark-ns/job")
			runtime.KeepAlive(l)
			runtime.KeepAlive(f)
		})
	}
}

// heapCost is what the collector has to do for the live heap.
type heapCost struct {
	live, scan, objects uint64
	// markCPU is the CPU time the collector spent marking in one full
	// collection of the heap as it stands.
	markCPU time.Duration
}

// readHeapCost runs full collections and reads the live heap they left,
// and the CPU their marking took.
func readHeapCost() heapCost {
	runtime.GC() // finish any cycle in progress, so the next one is whole
	names := []string{"/gc/heap/live:bytes", "/gc/scan/heap:bytes", "/gc/heap/objects:objects",
		"/cpu/classes/gc/mark/assist:cpu-seconds", "/cpu/classes/gc/mark/dedicated:cpu-seconds", "/cpu/classes/gc/mark/idle:cpu-seconds"}
	read := func() []rtmetrics.Sample {
		s := make([]rtmetrics.Sample, len(names))
		for i, n := range names {
			s[i].Name = n
		}
		rtmetrics.Read(s)
		return s
	}
	mark := func(s []rtmetrics.Sample) float64 {
		return s[3].Value.Float64() + s[4].Value.Float64() + s[5].Value.Float64()
	}
	// The least of a few collections: a cycle's marking time varies with
	// what else the machine does.
	var c heapCost
	for i := range 5 {
		s0 := read()
		runtime.GC()
		s1 := read()
		m := time.Duration((mark(s1) - mark(s0)) * float64(time.Second))
		if i == 0 || m < c.markCPU {
			c = heapCost{live: s1[0].Value.Uint64(), scan: s1[1].Value.Uint64(), objects: s1[2].Value.Uint64(), markCPU: m}
		}
	}
	return c
}
