package consensus

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/netsim"
)

// The tests of this file run real Raft (hashicorp/raft with raft-boltdb on
// files) over netsim inside a testing/synctest bubble, so elections,
// timeouts and partitions play out in virtual time.

const (
	testRegion = "eu-west-1"
	raftPort   = 7000
)

// cluster is a region's servers on a simulated network.
type cluster struct {
	t      *testing.T
	net    *netsim.Network
	dir    string
	mod    func(*Config)
	eps    map[string]*netsim.Endpoint
	srv    map[string]*Server
	names  []string
	closed bool
}

func newCluster(t *testing.T, n int, mod func(*Config)) *cluster {
	t.Helper()
	topo, err := netsim.ParseTopology(strings.NewReader("from,to,rtt_ms\neu-west-1,eu-west-1,1\nus-east-1,us-east-1,1\neu-west-1,us-east-1,70\n"), "test")
	if err != nil {
		t.Fatal(err)
	}
	nw, err := netsim.New(netsim.Config{Topology: topo, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	c := &cluster{t: t, net: nw, dir: t.TempDir(), mod: mod, eps: map[string]*netsim.Endpoint{}, srv: map[string]*Server{}}
	for i := range n {
		c.addEndpoint(fmt.Sprintf("s%d", i))
	}
	return c
}

func (c *cluster) addEndpoint(name string) {
	ep, err := c.net.AddEndpoint(name, testRegion)
	if err != nil {
		c.t.Fatal(err)
	}
	c.eps[name] = ep
	c.names = append(c.names, name)
}

func (c *cluster) config(name string) Config {
	return Config{
		NodeID:                  name,
		Region:                  testRegion,
		DataDir:                 filepath.Join(c.dir, name),
		BootstrapExpect:         3,
		ReconcileInterval:       200 * time.Millisecond,
		DeadServerTimeout:       5 * time.Second,
		ServerStabilizationTime: 2 * time.Second,
		NoSync:                  true,
		Logger:                  testLogger(name),
		RaftLogLevel:            os.Getenv("MERIDIAN_TEST_RAFT_LOG"),
	}
}

// testLogger logs to stderr when MERIDIAN_TEST_LOG is set (to a slog level).
func testLogger(name string) *slog.Logger {
	lv := os.Getenv("MERIDIAN_TEST_LOG")
	if lv == "" {
		return nil
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(lv)); err != nil {
		level = slog.LevelInfo
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
}

func (c *cluster) start(name string) *Server {
	c.t.Helper()
	layer, err := netsim.NewRaftStreamLayer(c.eps[name], raftPort)
	if err != nil {
		c.t.Fatal(err)
	}
	cfg := c.config(name)
	cfg.StreamLayer = layer
	if c.mod != nil {
		c.mod(&cfg)
	}
	s, err := Open(cfg)
	if err != nil {
		c.t.Fatalf("open %s: %v", name, err)
	}
	c.srv[name] = s
	return s
}

func (c *cluster) info(name string, alive bool) ServerInfo {
	return ServerInfo{ID: name, Region: testRegion, RaftAddr: fmt.Sprintf("%s:%d", c.eps[name].IP(), raftPort), Alive: alive}
}

// observeAll tells every running server about every running server, as
// gossip would.
func (c *cluster) observeAll() {
	for _, s := range c.running() {
		for _, o := range c.running() {
			s.ObserveServer(c.info(o.ID(), true))
		}
	}
}

func (c *cluster) running() []*Server {
	var out []*Server
	for _, n := range c.names {
		if s := c.srv[n]; s != nil {
			out = append(out, s)
		}
	}
	return out
}

// stop closes a server (a clean process exit).
func (c *cluster) stop(name string) {
	c.t.Helper()
	if err := c.srv[name].Close(); err != nil {
		c.t.Errorf("close %s: %v", name, err)
	}
	delete(c.srv, name)
}

// crash kills a server and resets its connections.
func (c *cluster) crash(name string) {
	c.t.Helper()
	c.net.Crash(name)
	c.stop(name)
}

func (c *cluster) close() {
	if c.closed {
		return
	}
	c.closed = true
	for _, s := range c.running() {
		s.Close()
	}
	c.net.Close()
}

func (c *cluster) leader() *Server {
	for _, s := range c.running() {
		if s.IsLeader() {
			return s
		}
	}
	return nil
}

func (c *cluster) followers() []*Server {
	var out []*Server
	for _, s := range c.running() {
		if !s.IsLeader() {
			out = append(out, s)
		}
	}
	return out
}

func (c *cluster) waitLeader() *Server {
	c.t.Helper()
	// Raft draws each election timeout at random between the configured
	// timeout and twice it, and a split vote needs another round: allow
	// several, whatever a test configured.
	d := 30 * time.Second
	cfg := c.config(c.names[0])
	if c.mod != nil {
		c.mod(&cfg)
	}
	d = max(d, 4*max(cfg.HeartbeatTimeout, cfg.ElectionTimeout))
	var l *Server
	waitFor(c.t, "a leader", d, func() bool { l = c.leader(); return l != nil })
	return l
}

// waitConverged waits until the running servers hold equal ledgers at the
// leader's index.
func (c *cluster) waitConverged() {
	c.t.Helper()
	waitFor(c.t, "replicas to converge", 30*time.Second, func() bool {
		l := c.leader()
		if l == nil {
			return false
		}
		want := l.Ledger().Export()
		for _, s := range c.running() {
			if !reflect.DeepEqual(s.Ledger().Export(), want) {
				return false
			}
		}
		return true
	})
}

// waitFor polls cond until it holds; inside a synctest bubble the sleeps
// are virtual, so the deadline is virtual time too.
func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func ctxTimeout(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}

// mustPropose proposes and fails the test on any error, of the call or of
// a command.
func mustPropose(t *testing.T, s *Server, cmds ...Command) []Result {
	t.Helper()
	ctx, cancel := ctxTimeout(20 * time.Second)
	defer cancel()
	res, err := s.Propose(ctx, cmds...)
	if err != nil {
		t.Fatalf("propose on %s: %v", s.ID(), err)
	}
	for i, r := range res {
		if r.Err != nil {
			t.Fatalf("propose on %s: command %d (%s): %v", s.ID(), i, cmds[i].Kind(), r.Err)
		}
	}
	return res
}

func (c *cluster) startAll() *Server {
	for _, n := range c.names {
		c.start(n)
	}
	c.observeAll()
	return c.waitLeader()
}

func voters(t *testing.T, s *Server) (voters, nonvoters []string) {
	t.Helper()
	servers, err := s.Servers()
	if err != nil {
		t.Fatal(err)
	}
	for _, srv := range servers {
		if srv.Voter {
			voters = append(voters, srv.ID)
		} else {
			nonvoters = append(nonvoters, srv.ID)
		}
	}
	slices.Sort(voters)
	slices.Sort(nonvoters)
	return voters, nonvoters
}

func dataDirHasBolt(t *testing.T, dir string) {
	t.Helper()
	if _, err := os.Stat(filepath.Join(dir, "raft.db")); err != nil {
		t.Fatalf("no raft.db in %s: %v", dir, err)
	}
}
