package consensus

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// The procs mode of BenchmarkCommitAtRate runs the region's three servers
// as three processes, as they run in production (one per machine), here
// all on one machine over loopback TCP. Each process has its own heap and
// garbage collector: a collection marks one ledger, not three, and a
// follower's collection does not stall a commit that the other follower
// can acknowledge. The in-process mode keeps all three in one heap, which
// no deployment does.
//
// The benchmark's process runs server s0 and makes it the leader; the test
// binary, started again with benchServerEnv set, runs s1 and s2. They talk
// over their standard input and output, one command or answer per line:
//
//	child:  addr ADDR                       its Raft address, once started
//	parent: peer ID ADDR                    a server of the region   → ok
//	parent: lead ID ADDR                    if leading, hand over to ID → ok
//	parent: load START JOBS INTERVAL PLAN SHARE OF FILE
//	        of the proposals placing jobs 0..JOBS-1, PLAN a proposal, send
//	        those p with p%OF == SHARE at START+p×INTERVAL (unix ns, ns)
//	        to this server; write
//	        "p latency_ns" lines to FILE    → done, or err TEXT
//	parent: cpu                             → cpu USER_NS SYS_NS used so far
//
// End of input closes the server and ends the process.
const (
	benchServerEnv         = "MERIDIAN_BENCH_SERVER"
	benchServerDirEnv      = "MERIDIAN_BENCH_SERVER_DIR"
	benchServerBatchEnv    = "MERIDIAN_BENCH_SERVER_BATCH"
	benchServerInflightEnv = "MERIDIAN_BENCH_SERVER_INFLIGHT"
)

// benchNodes is how many nodes the commit benchmarks register; placements
// go round-robin over them.
const benchNodes = 64

// benchPlacements is the plan of proposal p: placements p×plan ... of the
// n jobs submitted beforehand.
func benchPlacements(p, plan, n int) []Command {
	cmds := make([]Command, 0, plan)
	for i := p * plan; i < min((p+1)*plan, n); i++ {
		cmds = append(cmds, PlaceJob{JobID: fmt.Sprintf("j%d", i), NodeID: fmt.Sprintf("n%d", i%benchNodes)})
	}
	return cmds
}

// seedBenchLedger registers the benchmark's nodes and submits its b.N jobs
// through the leader, in large entries, ahead of the timed part.
func seedBenchLedger(b *testing.B, leader *Server, maxBatch int) {
	ctx := context.Background()
	for i := range benchNodes {
		if _, err := leader.Propose(ctx, RegisterNode{ID: fmt.Sprintf("n%d", i), Total: res(1e9, 1e9, 1e9, 1<<20), PricePerHour: 1}); err != nil {
			b.Fatal(err)
		}
	}
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
}

// proposePlan proposes a plan on s and returns its first error.
func proposePlan(ctx context.Context, s *Server, cmds []Command) error {
	out, err := s.Propose(ctx, cmds...)
	for _, r := range out {
		if err == nil {
			err = r.Err
		}
	}
	return err
}

// benchServerMain runs one server of the procs mode in a child process
// and returns its exit code.
func benchServerMain(id string) int {
	fail := func(err error) int {
		fmt.Fprintf(os.Stderr, "bench server %s: %v\n", id, err)
		return 1
	}
	batch, err := strconv.Atoi(os.Getenv(benchServerBatchEnv))
	if err != nil {
		return fail(fmt.Errorf("%s: %w", benchServerBatchEnv, err))
	}
	inflight, err := strconv.Atoi(os.Getenv(benchServerInflightEnv))
	if err != nil {
		return fail(fmt.Errorf("%s: %w", benchServerInflightEnv, err))
	}
	layer, err := NewTCPStreamLayer("127.0.0.1:0", "")
	if err != nil {
		return fail(err)
	}
	cfg := Config{NodeID: id, Region: testRegion, DataDir: os.Getenv(benchServerDirEnv), StreamLayer: layer, BootstrapExpect: 3}
	benchServerConfig(&cfg, batch, inflight)
	s, err := Open(cfg)
	if err != nil {
		return fail(err)
	}
	defer s.Close()
	out := bufio.NewWriter(os.Stdout)
	answer := func(format string, args ...any) {
		fmt.Fprintf(out, format+"\n", args...)
		out.Flush()
	}
	answer("addr %s", s.Addr())
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		f := strings.Fields(in.Text())
		switch {
		case len(f) == 3 && f[0] == "peer":
			s.ObserveServer(ServerInfo{ID: f[1], RaftAddr: f[2], Alive: true})
			answer("ok")
		case len(f) == 3 && f[0] == "lead":
			if s.IsLeader() {
				if err := s.raft.LeadershipTransferToServer(raft.ServerID(f[1]), raft.ServerAddress(f[2])).Error(); err != nil {
					return fail(fmt.Errorf("hand the leadership to %s: %w", f[1], err))
				}
			}
			answer("ok")
		case len(f) == 1 && f[0] == "cpu":
			user, sys, err := processCPU()
			if err != nil {
				return fail(err)
			}
			answer("cpu %d %d", user.Nanoseconds(), sys.Nanoseconds())
		case len(f) == 8 && f[0] == "load":
			if err := benchServerLoad(s, f[1:], answer); err != nil {
				answer("err %s", strings.ReplaceAll(err.Error(), "\n", " "))
			}
		default:
			return fail(fmt.Errorf("unknown command %q", in.Text()))
		}
	}
	return 0
}

// benchServerLoad runs a child's share of the load (the arguments of a
// load command) and answers done.
func benchServerLoad(s *Server, args []string, answer func(string, ...any)) error {
	var v [6]int64
	for i := range v {
		n, err := strconv.ParseInt(args[i], 10, 64)
		if err != nil {
			return fmt.Errorf("load argument %d: %w", i+1, err)
		}
		v[i] = n
	}
	start, jobs, interval, plan, share, of := time.Unix(0, v[0]), int(v[1]), time.Duration(v[2]), int(v[3]), int(v[4]), int(v[5])
	if plan <= 0 || of <= 0 {
		return fmt.Errorf("load: plan %d and share count %d must be positive", plan, of)
	}
	n := (jobs + plan - 1) / plan
	latencies := make([]time.Duration, (n+of-1)/of)
	err := openLoopFrom(start, func(p int, due time.Time) error {
		err := proposePlan(context.Background(), s, benchPlacements(p, plan, jobs))
		latencies[p/of] = time.Since(due)
		return err
	}, n, interval, share, of)
	if err != nil {
		return err
	}
	var sb strings.Builder
	for i, l := range latencies {
		if p := i*of + share; p < n {
			fmt.Fprintf(&sb, "%d %d\n", p, l.Nanoseconds())
		}
	}
	if err := os.WriteFile(args[6], []byte(sb.String()), 0o644); err != nil {
		return err
	}
	answer("done")
	return nil
}

// benchChild is a server process of the procs mode.
type benchChild struct {
	id   string
	cmd  *exec.Cmd
	in   io.WriteCloser
	out  *bufio.Scanner
	addr string
}

// startBenchChild starts server id in a new process of the test binary.
func startBenchChild(tb testing.TB, id, dir string, maxBatch, maxInflight int) *benchChild {
	tb.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), benchServerEnv+"="+id, benchServerDirEnv+"="+filepath.Join(dir, id),
		fmt.Sprintf("%s=%d", benchServerBatchEnv, maxBatch), fmt.Sprintf("%s=%d", benchServerInflightEnv, maxInflight))
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		tb.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatalf("start server process %s: %v", id, err)
	}
	c := &benchChild{id: id, cmd: cmd, in: in, out: bufio.NewScanner(out)}
	line, err := c.read()
	if err != nil || !strings.HasPrefix(line, "addr ") {
		c.close(tb)
		tb.Fatalf("server process %s: want its address, got %q (%v)", id, line, err)
	}
	c.addr = strings.TrimPrefix(line, "addr ")
	return c
}

func (c *benchChild) read() (string, error) {
	if !c.out.Scan() {
		err := c.out.Err()
		if err == nil {
			err = io.ErrUnexpectedEOF
		}
		return "", fmt.Errorf("server process %s ended: %w", c.id, err)
	}
	return c.out.Text(), nil
}

// call sends one command and returns the answer.
func (c *benchChild) call(format string, args ...any) (string, error) {
	if _, err := fmt.Fprintf(c.in, format+"\n", args...); err != nil {
		return "", fmt.Errorf("server process %s: %w", c.id, err)
	}
	return c.read()
}

// cpu is the CPU time the process has used so far.
func (c *benchChild) cpu() (user, sys time.Duration, err error) {
	line, err := c.call("cpu")
	if err != nil {
		return 0, 0, err
	}
	var u, s int64
	if _, err := fmt.Sscanf(line, "cpu %d %d", &u, &s); err != nil {
		return 0, 0, fmt.Errorf("server process %s: %q: %w", c.id, line, err)
	}
	return time.Duration(u), time.Duration(s), nil
}

// childrenCPU adds up the CPU time the processes have used so far.
func childrenCPU(tb testing.TB, children []*benchChild) (user, sys time.Duration) {
	for _, c := range children {
		u, s, err := c.cpu()
		if err != nil {
			tb.Fatal(err)
		}
		user, sys = user+u, sys+s
	}
	return user, sys
}

// close ends the process: end of input closes its server.
func (c *benchChild) close(tb testing.TB) {
	c.in.Close()
	done := make(chan error, 1)
	go func() { done <- c.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			tb.Errorf("server process %s: %v", c.id, err)
		}
	case <-time.After(30 * time.Second):
		c.cmd.Process.Kill()
		<-done
		tb.Errorf("server process %s did not end within 30s of its input closing", c.id)
	}
}

// procsRegion starts the procs mode's region: s0 in this process, s1 and
// s2 as child processes, with s0 leading.
func procsRegion(tb testing.TB, dir string, maxBatch, maxInflight int) (*Server, []*benchChild) {
	tb.Helper()
	layer, err := NewTCPStreamLayer("127.0.0.1:0", "")
	if err != nil {
		tb.Fatal(err)
	}
	cfg := Config{NodeID: "s0", Region: testRegion, DataDir: filepath.Join(dir, "s0"), StreamLayer: layer, BootstrapExpect: 3,
		Logger: testLogger("s0"), RaftLogLevel: os.Getenv("MERIDIAN_TEST_RAFT_LOG")}
	benchServerConfig(&cfg, maxBatch, maxInflight)
	s0, err := Open(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	var children []*benchChild
	fail := func(format string, args ...any) {
		for _, c := range children {
			c.close(tb)
		}
		s0.Close()
		tb.Fatalf(format, args...)
	}
	for _, id := range []string{"s1", "s2"} {
		children = append(children, startBenchChild(tb, id, dir, maxBatch, maxInflight))
	}
	peers := map[string]string{"s0": s0.Addr()}
	for _, c := range children {
		peers[c.id] = c.addr
	}
	for id, addr := range peers {
		s0.ObserveServer(ServerInfo{ID: id, RaftAddr: addr, Alive: true})
		for _, c := range children {
			if got, err := c.call("peer %s %s", id, addr); err != nil || got != "ok" {
				fail("peer %s to %s: %q %v", id, c.id, got, err)
			}
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for asked := false; !s0.IsLeader(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			fail("s0 did not lead within 30s")
		}
		if id, _, _ := s0.Leader(); id != "" && id != "s0" && !asked {
			for _, c := range children {
				if got, err := c.call("lead s0 %s", s0.Addr()); err != nil || got != "ok" {
					fail("hand the leadership to s0 from %s: %q %v", c.id, got, err)
				}
			}
			asked = true
		}
	}
	return s0, children
}

// processCPU is the user and system CPU time this process has used.
func processCPU() (user, system time.Duration, err error) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, 0, fmt.Errorf("getrusage: %w", err)
	}
	return time.Duration(ru.Utime.Nano()), time.Duration(ru.Stime.Nano()), nil
}

// benchmarkCommitProcs is benchmarkCommit's open loop with the servers in
// three processes. Each process sends a third of the proposals to its own
// server (two thirds are forwarded to the leader, as in the in-process
// mode) and measures their latency from when they were due; CPU per
// placement adds up the three processes.
func benchmarkCommitProcs(b *testing.B, maxBatch, plan int, interval time.Duration) {
	dir, err := os.MkdirTemp("", "meridian-bench-")
	if err != nil {
		b.Fatal(err)
	}
	defer os.RemoveAll(dir)
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)

	leader, children := procsRegion(b, dir, maxBatch, *commitMaxInflight)
	defer func() {
		for _, c := range children {
			c.close(b)
		}
		if err := leader.Close(); err != nil {
			b.Errorf("close s0: %v", err)
		}
	}()
	ctx := context.Background()
	seedBenchLedger(b, leader, maxBatch)
	entries0, cmds0 := leader.prop.entries.Load(), leader.prop.commands.Load()
	stages := newStageRecorder(leader)
	defer stages.stop()

	proposals := (b.N + plan - 1) / plan
	senders := children
	if *commitAtLeader {
		senders = nil
	}
	of := 1 + len(senders)
	latencies := make([]time.Duration, proposals)
	stopProfile := startCPUProfile(b)
	var mem0 runtime.MemStats
	runtime.ReadMemStats(&mem0)
	user0, sys0 := cpuTimes(b)
	childUser0, childSys0 := childrenCPU(b, children)
	b.ResetTimer()
	// Every process starts at the same instant, a little ahead so that
	// the children have read their command by then.
	start := time.Now().Add(50 * time.Millisecond)
	answers := make(chan error, len(senders))
	files := make([]string, len(senders))
	for i, c := range senders {
		files[i] = filepath.Join(dir, c.id+".latencies")
		if _, err := fmt.Fprintf(c.in, "load %d %d %d %d %d %d %s\n", start.UnixNano(), b.N, interval.Nanoseconds(), plan, i+1, of, files[i]); err != nil {
			b.Fatal(err)
		}
		go func() {
			line, err := c.read()
			if err == nil && line != "done" {
				err = fmt.Errorf("server process %s: %s", c.id, line)
			}
			answers <- err
		}()
	}
	err = openLoopFrom(start, func(p int, due time.Time) error {
		err := proposePlan(ctx, leader, benchPlacements(p, plan, b.N))
		latencies[p] = time.Since(due)
		return err
	}, proposals, interval, 0, of)
	for range senders {
		err = errors.Join(err, <-answers)
	}
	elapsed := time.Since(start)
	b.StopTimer()
	user1, sys1 := cpuTimes(b)
	childUser1, childSys1 := childrenCPU(b, children)
	var mem1 runtime.MemStats
	runtime.ReadMemStats(&mem1)
	stopProfile()
	if err != nil {
		b.Fatal(err)
	}
	for _, f := range files {
		if err := readChildLatencies(f, latencies); err != nil {
			b.Fatal(err)
		}
	}
	cpu := user1 - user0 + sys1 - sys0 + childUser1 - childUser0 + childSys1 - childSys0
	sys := sys1 - sys0 + childSys1 - childSys0
	if *commitLatencyFile != "" {
		writeLatencies(b, *commitLatencyFile, latencies, interval)
	}
	slices.Sort(latencies)
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "placements/s")
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/placement")
	b.ReportMetric(float64(sys.Microseconds())/float64(b.N), "sys-µs/placement")
	// The leader's process only: allocation and collections there are
	// what delay commits.
	b.ReportMetric(float64(mem1.TotalAlloc-mem0.TotalAlloc)/float64(b.N), "leader-alloc-B/placement")
	b.ReportMetric(float64(mem1.NumGC-mem0.NumGC), "leader-gc-cycles")
	b.ReportMetric(ms(latencies[proposals/2]), "p50-ms")
	b.ReportMetric(ms(latencies[min(proposals-1, proposals*99/100)]), "p99-ms")
	if e := leader.prop.entries.Load() - entries0; e > 0 {
		b.ReportMetric(float64(leader.prop.commands.Load()-cmds0)/float64(e), "cmds/entry")
	}
	stages.report(b)
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	b.ReportMetric(float64(int64(after.HeapInuse)-int64(before.HeapInuse))/(1<<20), "leader-heap-MiB")
	b.ReportMetric(0, "ns/op")
}

// readChildLatencies reads a child's "p latency_ns" lines into latencies.
func readChildLatencies(path string, latencies []time.Duration) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("latencies of a server process: %w", err)
	}
	for line := range strings.Lines(string(data)) {
		var p int
		var ns int64
		if _, err := fmt.Sscanf(line, "%d %d", &p, &ns); err != nil || p < 0 || p >= len(latencies) {
			return fmt.Errorf("%s: bad line %q (%v)", path, line, err)
		}
		latencies[p] = time.Duration(ns)
	}
	return nil
}
