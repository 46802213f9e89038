package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/node/api"
)

// The multi-process test runs the real binary: several `meridian agent`
// processes on 127.0.0.1 with real UDP/TCP gossip (encrypted), Raft over
// TCP, the market over libp2p (TCP + Noise) and the HTTP API, driven through
// the CLI the way an operator would.

const (
	// mpWait bounds every wait for the cluster to reach a state. Nothing
	// here takes more than a few seconds on an idle machine; the margin is
	// for a loaded 2-core CI runner.
	mpWait = 30 * time.Second
	// mpLeaveWait bounds a graceful leave: the agent gives itself 30 s.
	mpLeaveWait = 45 * time.Second
)

// mpAgent is one agent process.
type mpAgent struct {
	name, region string
	httpAddr     string // host:port of the API
	gossipAddr   string // host:port of gossip, for --join
	logPath      string
	cmd          *exec.Cmd
	done         chan struct{} // closed when the process has exited
	waitErr      error         // the process's exit, once done is closed
}

func (a *mpAgent) url() string { return "http://" + a.httpAddr }

func (a *mpAgent) exited() bool {
	select {
	case <-a.done:
		return true
	default:
		return false
	}
}

// mpCluster starts agents and runs CLI commands against them.
type mpCluster struct {
	t      *testing.T
	bin    string
	dir    string
	key    string // --gossip-key shared by every agent
	token  string // --acl-token of every agent, --token of the CLI
	agents []*mpAgent
	used   map[int]bool // ports handed out, so no two listeners share one
}

func newMPCluster(t *testing.T) *mpCluster {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go tool is needed to build the binary: %v", err)
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "meridian")
	// Build as this test binary was built: under -race the packages are
	// compiled for it already (a build without it recompiles every
	// dependency, minutes on a cold CI cache), and the agents then run
	// with the race detector too.
	args := []string{"build", "-o", bin}
	if raceEnabled() {
		args = append(args, "-race")
	}
	start := time.Now()
	build := exec.Command(goTool, append(args, ".")...)
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	t.Logf("go %s . (%.1fs)", strings.Join(args, " "), time.Since(start).Seconds())
	key := make([]byte, 32)
	tok := make([]byte, 16)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	if _, err := rand.Read(tok); err != nil {
		t.Fatal(err)
	}
	c := &mpCluster{t: t, bin: bin, dir: dir, key: base64.StdEncoding.EncodeToString(key),
		token: hex.EncodeToString(tok), used: map[int]bool{}}
	t.Cleanup(c.cleanup)
	return c
}

// raceEnabled reports whether this test binary was built with -race.
func raceEnabled() bool {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return false
	}
	for _, s := range bi.Settings {
		if s.Key == "-race" {
			return s.Value == "true"
		}
	}
	return false
}

// cleanup kills what is still running, fails the test if the race detector
// reported anything in an agent, and, when the test failed, prints every
// agent's log (they stay in the test's temporary directory until then).
func (c *mpCluster) cleanup() {
	for _, a := range c.agents {
		if !a.exited() {
			_ = a.cmd.Process.Kill()
			<-a.done
		}
	}
	// An agent started again after losing a port shares its log.
	var logs []*mpAgent
	for _, a := range c.agents {
		if !slices.ContainsFunc(logs, func(l *mpAgent) bool { return l.logPath == a.logPath }) {
			logs = append(logs, a)
		}
	}
	for _, a := range logs {
		if b, err := os.ReadFile(a.logPath); err == nil && bytes.Contains(b, []byte("WARNING: DATA RACE")) {
			c.t.Errorf("agent %s: the race detector found a data race (see its log)", a.name)
		}
	}
	if !c.t.Failed() {
		return
	}
	for _, a := range logs {
		b, err := os.ReadFile(a.logPath)
		if err != nil {
			c.t.Logf("log of %s: %v", a.name, err)
			continue
		}
		c.t.Logf("===== log of agent %s (%s) =====\n%s", a.name, a.logPath, b)
	}
}

// port returns a loopback port that is free now for TCP and, with udp, for
// UDP too (memberlist binds both on the gossip port).
func (c *mpCluster) port(udp bool) int {
	c.t.Helper()
	for range 50 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			c.t.Fatalf("free port: %v", err)
		}
		p := l.Addr().(*net.TCPAddr).Port
		ok := !c.used[p]
		if ok && udp {
			u, err := net.ListenPacket("udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
			if err != nil {
				ok = false
			} else {
				u.Close()
			}
		}
		l.Close()
		if ok {
			c.used[p] = true
			return p
		}
	}
	c.t.Fatal("free port: none found in 50 tries")
	return 0
}

// start starts an agent and waits until its API answers. Another process
// may grab a port between the probe and the agent's bind: the agent then
// exits with "address already in use" and is started again on new ports.
func (c *mpCluster) start(name, region string, extra ...string) *mpAgent {
	c.t.Helper()
	logPath := filepath.Join(c.dir, name+".log")
	dataDir := filepath.Join(c.dir, name)
	for attempt := 1; ; attempt++ {
		a := &mpAgent{name: name, region: region, logPath: logPath, done: make(chan struct{}),
			httpAddr:   net.JoinHostPort("127.0.0.1", strconv.Itoa(c.port(false))),
			gossipAddr: net.JoinHostPort("127.0.0.1", strconv.Itoa(c.port(true)))}
		args := []string{"agent", "--name", name, "--region", region, "--data-dir", dataDir,
			"--http", a.httpAddr, "--bind-gossip", a.gossipAddr,
			"--bind-raft", net.JoinHostPort("127.0.0.1", strconv.Itoa(c.port(false))),
			"--bind-p2p", net.JoinHostPort("127.0.0.1", strconv.Itoa(c.port(false))),
			"--gossip-key", c.key, "--acl-token", c.token}
		args = append(args, extra...)
		logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			c.t.Fatal(err)
		}
		fmt.Fprintf(logFile, "### attempt %d: %s %s\n", attempt, c.bin, strings.Join(args, " "))
		a.cmd = exec.Command(c.bin, args...)
		a.cmd.Stdout, a.cmd.Stderr = logFile, logFile
		a.cmd.Env = cliEnv()
		if err := a.cmd.Start(); err != nil {
			logFile.Close()
			c.t.Fatalf("start agent %s: %v", name, err)
		}
		logFile.Close() // the child holds its own descriptor
		c.agents = append(c.agents, a)
		go func() {
			a.waitErr = a.cmd.Wait()
			close(a.done)
		}()
		err = c.poll(mpWait, func() (bool, string) {
			if a.exited() {
				return true, ""
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			_, err := c.client(a).Health(ctx)
			return err == nil, fmt.Sprint(err)
		})
		if err != nil {
			c.t.Fatalf("agent %s: API on %s never answered: %v", name, a.httpAddr, err)
		}
		if !a.exited() {
			return a
		}
		log, _ := os.ReadFile(logPath)
		if attempt < 3 && bytes.Contains(log, []byte("address already in use")) {
			c.t.Logf("agent %s lost a port to another process; starting it again", name)
			if err := os.RemoveAll(dataDir); err != nil {
				c.t.Fatal(err)
			}
			continue
		}
		c.t.Fatalf("agent %s exited at start (%v)", name, a.waitErr)
	}
}

// client is an API client for polling an agent's state.
func (c *mpCluster) client(a *mpAgent) *api.Client {
	cl, err := api.NewClient(a.url(), c.token, &http.Client{})
	if err != nil {
		c.t.Fatalf("client for %s: %v", a.name, err)
	}
	return cl
}

// poll calls cond until it reports true or timeout passes; the error then
// carries cond's last explanation.
func (c *mpCluster) poll(timeout time.Duration, cond func() (bool, string)) error {
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		ok, why := cond()
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not reached within %v; last: %s", timeout, why)
		}
		<-tick.C
	}
}

// waitFor fails the test when cond does not hold within mpWait.
func (c *mpCluster) waitFor(what string, cond func() (bool, string)) {
	c.t.Helper()
	start := time.Now()
	if err := c.poll(mpWait, cond); err != nil {
		c.t.Fatalf("%s: %v", what, err)
	}
	c.t.Logf("%s (%.1fs)", what, time.Since(start).Seconds())
}

// cliEnv is the environment of child processes, without the MERIDIAN_
// variables of whoever runs the test.
func cliEnv() []string {
	return slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "MERIDIAN_") })
}

// cliRun runs the binary with args, without adding the token.
func (c *mpCluster) cliRun(args ...string) (stdout, stderr string, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), mpWait+15*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.bin, args...)
	cmd.Env = cliEnv()
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err = cmd.Run()
	return out.String(), errOut.String(), err
}

// cli runs a client command against agent a with the cluster's token and
// fails the test if it does not exit 0.
func (c *mpCluster) cli(a *mpAgent, args ...string) string {
	c.t.Helper()
	args = append(args, "--addr", a.url(), "--token", c.token)
	out, errOut, err := c.cliRun(args...)
	if err != nil {
		c.t.Fatalf("meridian %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, out, errOut)
	}
	return out
}

// jobStatus reads a job with `meridian job status ID --json`.
func (c *mpCluster) jobStatus(a *mpAgent, id string) (api.JobStatus, error) {
	out, errOut, err := c.cliRun("job", "status", id, "--json", "--addr", a.url(), "--token", c.token)
	if err != nil {
		return api.JobStatus{}, fmt.Errorf("job status %s on %s: %v: %s", id, a.name, err, strings.TrimSpace(errOut))
	}
	var st api.JobStatus
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		return api.JobStatus{}, fmt.Errorf("job status %s --json: %v in %q", id, err, out)
	}
	return st, nil
}

// waitJob polls `meridian job status` on a until ok accepts the job.
func (c *mpCluster) waitJob(a *mpAgent, id, what string, ok func(api.JobStatus) bool) api.JobStatus {
	c.t.Helper()
	var st api.JobStatus
	c.waitFor(fmt.Sprintf("job %s %s (read on %s)", id, what, a.name), func() (bool, string) {
		var err error
		if st, err = c.jobStatus(a, id); err != nil {
			return false, err.Error()
		}
		return ok(st), fmt.Sprintf("state %s on node %q in %q (%s)", st.State, st.Node, st.Region, st.Reason)
	})
	return st
}

// health reads an agent's /v1/health.
func (c *mpCluster) health(a *mpAgent) (api.Health, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return c.client(a).Health(ctx)
}

// nodes reads an agent's /v1/nodes by name.
func (c *mpCluster) nodes(a *mpAgent) (map[string]api.NodeStatus, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	list, err := c.client(a).Nodes(ctx)
	if err != nil {
		return nil, err
	}
	out := make(map[string]api.NodeStatus, len(list))
	for _, n := range list {
		out[n.Name] = n
	}
	return out, nil
}

// regionHealthy waits until every agent of servers reports its region
// healthy with one leader among them and alive members of the whole mesh,
// and returns that leader.
func (c *mpCluster) regionHealthy(what string, servers []*mpAgent, alive int) string {
	c.t.Helper()
	var leader string
	c.waitFor(what, func() (bool, string) {
		leader = ""
		for _, a := range servers {
			h, err := c.health(a)
			switch {
			case err != nil:
				return false, fmt.Sprintf("%s: %v", a.name, err)
			case h.Status != api.HealthOK || h.Leader == "":
				return false, fmt.Sprintf("%s: status %s, leader %q", a.name, h.Status, h.Leader)
			case !slices.ContainsFunc(servers, func(s *mpAgent) bool { return s.name == h.Leader }):
				return false, fmt.Sprintf("%s: leader %q is not a live server of %s", a.name, h.Leader, a.region)
			case leader != "" && h.Leader != leader:
				return false, fmt.Sprintf("%s says the leader is %s, another says %s", a.name, h.Leader, leader)
			case h.Members.Alive != alive:
				return false, fmt.Sprintf("%s sees %d alive members, want %d", a.name, h.Members.Alive, alive)
			}
			leader = h.Leader
		}
		return true, ""
	})
	return leader
}

// stop sends SIGTERM (a graceful leave) and waits for the process to exit.
func (c *mpCluster) stop(a *mpAgent) {
	c.t.Helper()
	start := time.Now()
	if err := a.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		c.t.Fatalf("SIGTERM to %s: %v", a.name, err)
	}
	select {
	case <-a.done:
	case <-time.After(mpLeaveWait):
		c.t.Fatalf("agent %s still running %v after SIGTERM", a.name, mpLeaveWait)
	}
	if a.waitErr != nil {
		c.t.Fatalf("agent %s: graceful leave failed: %v", a.name, a.waitErr)
	}
	c.t.Logf("agent %s left the mesh and exited 0 (%.1fs)", a.name, time.Since(start).Seconds())
}

func byName(agents []*mpAgent, name string) *mpAgent {
	for _, a := range agents {
		if a.name == name {
			return a
		}
	}
	return nil
}

func names(agents []*mpAgent) []string {
	out := make([]string, len(agents))
	for i, a := range agents {
		out[i] = a.name
	}
	return out
}

// TestMultiProcessCluster builds the binary and runs a two-region cluster of
// real agent processes on loopback: region us-east-1 with three servers
// (each offering compute) and region eu-west-1 with one. It submits jobs
// with the CLI: one placed in its region, one forwarded to the other
// region, one bought from the other region through the market. Then it
// stops the us-east-1 leader with SIGTERM and checks that the region elects
// another, keeps its jobs running and still takes new work.
func TestMultiProcessCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-process cluster: skipped in -short mode")
	}
	if runtime.GOOS == "windows" {
		t.Skip("multi-process cluster: needs SIGTERM")
	}
	c := newMPCluster(t)

	// Region us-east-1: three servers, each offering compute, so that work
	// survives the departure of any one of them.
	server := func(expect string, compute, price string) []string {
		return []string{"--server", "--bootstrap-expect", expect, "--compute", compute, "--price-per-hour", price}
	}
	seed := c.start("use1-a", "us-east-1", server("3", "1000", "3")...)
	join := []string{"--join", seed.gossipAddr}
	east := []*mpAgent{seed,
		c.start("use1-b", "us-east-1", append(server("3", "1000", "3"), join...)...),
		c.start("use1-c", "us-east-1", append(server("3", "1000", "3"), join...)...),
	}
	// Region eu-west-1 joins the same mesh with one server of its own, a
	// bigger machine than any of us-east-1's, dearer per node-hour so that
	// us-east-1 keeps the jobs it can hold (it offers a job abroad first
	// only where the ask is clearly below its own price).
	eu := c.start("euw1-a", "eu-west-1", append(server("1", "2000", "4"), join...)...)

	leader := c.regionHealthy("us-east-1 bootstrapped its Raft group", east, 4)
	c.regionHealthy("eu-west-1 bootstrapped its Raft group", []*mpAgent{eu}, 4)
	wantCompute := map[string]float64{"use1-a": 1000, "use1-b": 1000, "use1-c": 1000, "euw1-a": 2000}
	for _, a := range []*mpAgent{seed, eu} {
		c.waitFor("every node's capacity is gossiped to "+a.name, func() (bool, string) {
			nodes, err := c.nodes(a)
			if err != nil {
				return false, err.Error()
			}
			for name, compute := range wantCompute {
				n, ok := nodes[name]
				if !ok || n.State != api.MemberAlive || n.Total.ComputePerHour != compute {
					return false, fmt.Sprintf("node %s: %+v", name, n)
				}
			}
			return true, ""
		})
	}
	var regions api.RegionsView
	if err := json.Unmarshal([]byte(c.cli(eu, "regions", "--json")), &regions); err != nil {
		t.Fatalf("regions --json: %v", err)
	}
	alive := map[string]int{}
	for _, r := range regions.Regions {
		alive[r.Region] = r.Members.Alive
	}
	if alive["us-east-1"] != 3 || alive["eu-west-1"] != 1 || len(alive) != 2 {
		t.Fatalf("regions seen from eu-west-1: alive members %v, want us-east-1:3 eu-west-1:1", alive)
	}

	// A job from a file, submitted to a follower: forwarded to the leader,
	// committed, placed in its region and started.
	follower := east[slices.IndexFunc(east, func(a *mpAgent) bool { return a.name != leader })]
	jobFile := filepath.Join(c.dir, "job.json")
	spec := `{"id": "mp-train-1", "origin_region": "us-east-1", "demand": {"compute": 100}, "priority": 60}`
	if err := os.WriteFile(jobFile, []byte(spec), 0o644); err != nil {
		t.Fatal(err)
	}
	if out := c.cli(follower, "job", "submit", "--file", jobFile); !strings.Contains(out, `Job "mp-train-1" submitted.`) {
		t.Fatalf("job submit --file on %s:\n%s", follower.name, out)
	}
	train := c.waitJob(east[2], "mp-train-1", "running", func(st api.JobStatus) bool { return st.State == api.JobRunning })
	if train.HomeRegion != "us-east-1" || train.Region != "us-east-1" || byName(east, train.Node) == nil || train.AllocationID == "" {
		t.Fatalf("mp-train-1 = %+v; want it home and running in us-east-1 on one of %v", train, names(east))
	}
	// Submitting it again is idempotent.
	if out := c.cli(seed, "job", "submit", "--file", jobFile); !strings.Contains(out, "already exists with this spec; nothing changed") {
		t.Fatalf("resubmitting mp-train-1:\n%s", out)
	}

	// A job for eu-west-1, from flags, submitted through a us-east-1 node:
	// forwarded to eu-west-1's leader and run there.
	if out := c.cli(east[1], "job", "submit", "--id", "mp-eu-1", "--origin", "eu-west-1", "--compute", "50"); !strings.Contains(out, `Job "mp-eu-1" submitted.`) {
		t.Fatalf("job submit for eu-west-1 through %s:\n%s", east[1].name, out)
	}
	euJob := c.waitJob(seed, "mp-eu-1", "running in eu-west-1", func(st api.JobStatus) bool { return st.State == api.JobRunning })
	if euJob.HomeRegion != "eu-west-1" || euJob.Region != "eu-west-1" || euJob.Node != eu.name {
		t.Fatalf("mp-eu-1 = %+v; want it home and running in eu-west-1 on %s", euJob, eu.name)
	}
	if st, err := c.jobStatus(eu, "mp-eu-1"); err != nil || st.AllocationID != euJob.AllocationID || st.State != euJob.State {
		t.Fatalf("mp-eu-1 read on %s = %+v, %v; read through us-east-1 = %+v", eu.name, st, err, euJob)
	}

	// A job no us-east-1 node can hold is bought from eu-west-1 through the
	// market: an auction between the two regions' leaders over libp2p.
	if out := c.cli(seed, "job", "submit", "--id", "mp-big-1", "--origin", "us-east-1", "--compute", "1500"); !strings.Contains(out, `Job "mp-big-1" submitted.`) {
		t.Fatalf("job submit mp-big-1:\n%s", out)
	}
	big := c.waitJob(east[1], "mp-big-1", "traded to eu-west-1", func(st api.JobStatus) bool {
		return st.State == api.JobTraded || st.State == api.JobRunning
	})
	if big.HomeRegion != "us-east-1" || big.Region != "eu-west-1" || big.Node != eu.name {
		t.Fatalf("mp-big-1 = %+v; want it home in us-east-1, served by %s in eu-west-1", big, eu.name)
	}
	var trades api.TradeList
	if err := json.Unmarshal([]byte(c.cli(east[2], "trades", "--json")), &trades); err != nil {
		t.Fatalf("trades --json: %v", err)
	}
	if i := slices.IndexFunc(trades.Trades, func(tr api.Trade) bool { return tr.JobID == "mp-big-1" }); i < 0 ||
		trades.Trades[i].BuyerRegion != "us-east-1" || trades.Trades[i].SellerRegion != "eu-west-1" || trades.Trades[i].Node != eu.name {
		t.Fatalf("trades of us-east-1 = %+v; want mp-big-1 bought from %s in eu-west-1", trades.Trades, eu.name)
	}

	// The API refuses a client without the ACL token.
	if out, errOut, err := c.cliRun("job", "status", "mp-train-1", "--addr", seed.url()); err == nil || !strings.Contains(errOut, "token") {
		t.Fatalf("job status without a token: err %v\nstdout:\n%s\nstderr:\n%s", err, out, errOut)
	}

	// The us-east-1 leader leaves gracefully (SIGTERM); the two servers
	// left elect another and carry on.
	gone := byName(east, leader)
	survivors := slices.DeleteFunc(slices.Clone(east), func(a *mpAgent) bool { return a == gone })
	c.stop(gone)
	newLeader := c.regionHealthy("us-east-1 elected a new leader among "+strings.Join(names(survivors), ", "), survivors, 3)
	t.Logf("us-east-1 leader %s left; %s leads now", gone.name, newLeader)
	c.waitFor(gone.name+" is seen as left, not failed", func() (bool, string) {
		nodes, err := c.nodes(survivors[0])
		if err != nil {
			return false, err.Error()
		}
		n := nodes[gone.name]
		return n.State == api.MemberLeft, fmt.Sprintf("state %q", n.State)
	})

	// The region still takes work: a new submission is acknowledged,
	// placed on a server that stayed, and readable through the other one.
	if out := c.cli(survivors[0], "job", "submit", "--id", "mp-after-1", "--origin", "us-east-1", "--compute", "100", "--duration", "1h"); !strings.Contains(out, `Job "mp-after-1" submitted.`) {
		t.Fatalf("job submit after the leader left:\n%s", out)
	}
	after := c.waitJob(survivors[1], "mp-after-1", "running on a server that stayed", func(st api.JobStatus) bool {
		return st.State == api.JobRunning && byName(survivors, st.Node) != nil
	})
	t.Logf("mp-after-1 runs on %s", after.Node)

	// The first job keeps running; if it ran on the server that left, it
	// was handed over to one that stayed.
	moved := c.waitJob(survivors[1], "mp-train-1", "running on a server that stayed", func(st api.JobStatus) bool {
		return st.State == api.JobRunning && byName(survivors, st.Node) != nil
	})
	if train.Node == gone.name {
		if moved.Epoch <= train.Epoch {
			t.Fatalf("mp-train-1 moved from %s to %s without a new placement epoch (%d, then %d)", train.Node, moved.Node, train.Epoch, moved.Epoch)
		}
		t.Logf("mp-train-1 was re-placed from %s to %s (epoch %d → %d)", train.Node, moved.Node, train.Epoch, moved.Epoch)
	} else if moved.Node != train.Node || moved.AllocationID != train.AllocationID {
		t.Fatalf("mp-train-1 moved from %s (%s) to %s (%s) though its node stayed", train.Node, train.AllocationID, moved.Node, moved.AllocationID)
	}

	// The job bought from eu-west-1 stays bought: the trade is in the
	// buyer's ledger, not in its old leader.
	if st, err := c.jobStatus(survivors[0], "mp-big-1"); err != nil || st.Region != "eu-west-1" || st.Node != eu.name || st.Epoch != big.Epoch {
		t.Fatalf("mp-big-1 after the us-east-1 leader left = %+v, %v; before = %+v", st, err, big)
	}

	// Cancelling the eu-west-1 job through what is left of us-east-1.
	if out := c.cli(survivors[0], "job", "cancel", "mp-eu-1"); !strings.Contains(out, `Job "mp-eu-1" cancelled.`) {
		t.Fatalf("job cancel mp-eu-1:\n%s", out)
	}
	c.waitJob(eu, "mp-eu-1", "cancelled", func(st api.JobStatus) bool { return st.State == api.JobCancelled })

	var list api.JobList
	if err := json.Unmarshal([]byte(c.cli(survivors[1], "job", "list", "--json")), &list); err != nil {
		t.Fatalf("job list --json: %v", err)
	}
	var ids []string
	for _, j := range list.Jobs {
		ids = append(ids, j.ID)
	}
	if want := []string{"mp-after-1", "mp-big-1", "mp-eu-1", "mp-train-1"}; !slices.Equal(ids, want) {
		t.Fatalf("job list = %v; want %v", ids, want)
	}
	for _, a := range append(survivors, eu) {
		if a.exited() {
			t.Fatalf("agent %s exited unexpectedly: %v", a.name, a.waitErr)
		}
	}
}
