package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
	"go.uber.org/goleak"

	"github.com/meridian-mesh/meridian/gossip"
	"github.com/meridian-mesh/meridian/node/api"
	"github.com/meridian-mesh/meridian/placement"
)

// These tests run real agents on the machine's network: UDP/TCP gossip,
// Raft over TCP, libp2p over TCP and the HTTP API. They run in real time
// (memberlist's and Raft's go-metrics sink, and real sockets, do not belong
// in a testing/synctest bubble), and wait for each state with a deadline.

// tcpWait bounds every wait for real agents: a second or two on an idle
// machine, with margin for a loaded 2-core one.
const tcpWait = 30 * time.Second

var testGossipKey = []byte("0123456789abcdef0123456789abcdef")

func testLog() *slog.Logger {
	if os.Getenv("NODE_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// freePort returns a TCP port free on all interfaces now, for a listener
// that must know its port before it binds (Raft on 0.0.0.0).
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// loopback binds every channel of an agent to 127.0.0.1 on ports the
// kernel picks.
func loopback() TCPConfig {
	return TCPConfig{GossipBind: "127.0.0.1:0", RaftBind: "127.0.0.1:0", P2PBind: "127.0.0.1:0", HTTP: "127.0.0.1:0"}
}

func startTCPAgent(t *testing.T, cfg Config, tcp TCPConfig) *Agent {
	t.Helper()
	cfg.Region = "local"
	cfg.DataDir = t.TempDir()
	cfg.Network = TCPNetwork(tcp)
	cfg.GossipKey = testGossipKey
	cfg.Logger = testLog().With("test_agent", cfg.Name)
	ctx, cancel := context.WithTimeout(context.Background(), tcpWait)
	defer cancel()
	a, err := Start(ctx, cfg)
	if err != nil {
		t.Fatalf("start %s: %v", cfg.Name, err)
	}
	return a
}

// eventually polls cond until it holds or tcpWait passes.
func eventually(t *testing.T, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(tcpWait)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v: %v", what, tcpWait, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func hostOf(t *testing.T, field, addr string) net.IP {
	t.Helper()
	h, _, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("%s %q: %v", field, addr, err)
	}
	return net.ParseIP(h)
}

// TestWildcardAgentJoinedFromLoopback starts a server on every interface
// with no advertise address: gossip, Raft, libp2p and the API must all
// advertise the same IPv4 address, gossip.AdvertiseIP. (memberlist left to
// itself advertised a private IPv6 address while Raft advertised IPv4; a
// peer bound to 127.0.0.1 then could not send to it: "write udp
// 127.0.0.1:7950->[fd00::2]:7946: non-IPv4 address".) A worker bound to
// 127.0.0.1 then joins it through 127.0.0.1, takes a job, and hands it
// back when it leaves.
func TestWildcardAgentJoinedFromLoopback(t *testing.T) {
	if testing.Short() {
		t.Skip("uses real sockets")
	}
	ctx := context.Background()
	srv := startTCPAgent(t, Config{Name: "s1", Server: true, BootstrapExpect: 1, Market: true}, TCPConfig{
		GossipBind: "0.0.0.0:0", RaftBind: "0.0.0.0:" + strconv.Itoa(freePort(t)), P2PBind: "0.0.0.0:0", HTTP: "0.0.0.0:0"})
	defer srv.Close()

	want := gossip.AdvertiseIP()
	if want.To4() == nil {
		t.Fatalf("gossip.AdvertiseIP() = %v, want an IPv4 address", want)
	}
	me := srv.Gossip().LocalMember()
	p2p, err := ma.NewMultiaddr(me.P2PAddr)
	if err != nil {
		t.Fatalf("p2p address %q: %v", me.P2PAddr, err)
	}
	p2pIP, err := manet.ToIP(p2p)
	if err != nil {
		t.Fatalf("p2p address %q: %v", me.P2PAddr, err)
	}
	for _, ch := range []struct {
		name string
		ip   net.IP
	}{
		{"gossip", hostOf(t, "gossip address", me.Address())},
		{"raft", hostOf(t, "raft address", me.RaftAddr)},
		{"http", hostOf(t, "http address", me.HTTPAddr)},
		{"p2p", p2pIP},
	} {
		if !ch.ip.Equal(want) {
			t.Errorf("%s advertises %v, want %v like every channel", ch.name, ch.ip, want)
		}
	}

	_, gossipPort, _ := net.SplitHostPort(me.Address())
	w := startTCPAgent(t, Config{Name: "w1", Resources: placement.Resources{ComputePerHour: 10}, PricePerHour: 1,
		Join: []string{net.JoinHostPort("127.0.0.1", gossipPort)}}, loopback())
	defer w.Close()
	eventually(t, "server registers the worker", func() error {
		if n, ok := srv.Ledger().Node("w1"); !ok || n.Total.ComputePerHour != 10 {
			return fmt.Errorf("ledger has w1: %v", ok)
		}
		return nil
	})
	if _, _, err := srv.SubmitJob(ctx, api.JobSpec{ID: "j1", OriginRegion: "local", Demand: placement.Resources{ComputePerHour: 5}, DurationS: 600}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "job runs on the worker", func() error {
		st, err := srv.Job(ctx, "j1")
		if err == nil && (st.State != api.JobRunning || st.Node != "w1") {
			err = fmt.Errorf("state %s on %q (%s)", st.State, st.Node, st.Reason)
		}
		return err
	})
	// Both ends must still see each other alive: the worker reaches the
	// server at its advertised address over UDP as well as TCP.
	for _, pair := range [][2]*Agent{{srv, w}, {w, srv}} {
		for _, m := range pair[0].Gossip().Members() {
			if m.Name == pair[1].Name() && m.State != gossip.StateAlive {
				t.Errorf("%s sees %s %v", pair[0].Name(), m.Name, m.State)
			}
		}
	}
	lctx, cancel := context.WithTimeout(ctx, tcpWait)
	defer cancel()
	if err := w.Leave(lctx); err != nil {
		t.Fatalf("worker leave: %v", err)
	}
	st, err := srv.Job(ctx, "j1")
	if err != nil || st.Node == "w1" {
		t.Errorf("after the worker left, j1 is %s on %q (%v); want it taken off w1", st.State, st.Node, err)
	}
}

// TestBridgedMetricsServed: with the go-metrics bridge on, /metrics serves
// memberlist's and Raft's own metrics beside the agent's.
func TestBridgedMetricsServed(t *testing.T) {
	if testing.Short() {
		t.Skip("uses real sockets")
	}
	a := startTCPAgent(t, Config{Name: "m1", Server: true, BootstrapExpect: 1, BridgeMetrics: true}, loopback())
	defer a.Close()
	eventually(t, "bridged memberlist and raft metrics on /metrics", func() error {
		rec := httptest.NewRecorder()
		a.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
		if rec.Code != http.StatusOK {
			return fmt.Errorf("GET /metrics: %d", rec.Code)
		}
		body, _ := io.ReadAll(rec.Body)
		var missing []string
		for _, prefix := range []string{"\nmeridian_memberlist_", "\nmeridian_raft_", "\nmeridian_jobs_submitted_total"} {
			if !strings.Contains(string(body), prefix) {
				missing = append(missing, strings.TrimSpace(prefix))
			}
		}
		if len(missing) > 0 {
			return fmt.Errorf("no %s metric", strings.Join(missing, ", "))
		}
		return nil
	})
}

// TestRealAgentLeaksNoGoroutines runs one real agent — server with the
// market, and a worker running one job — on loopback, closes it, and
// checks that every goroutine it started has ended.
func TestRealAgentLeaksNoGoroutines(t *testing.T) {
	if testing.Short() {
		t.Skip("uses real sockets")
	}
	ignore := goleak.IgnoreCurrent()
	ctx := context.Background()
	a := startTCPAgent(t, Config{Name: "g1", Server: true, BootstrapExpect: 1, Market: true,
		Resources: placement.Resources{ComputePerHour: 10}, PricePerHour: 1}, loopback())
	closed := false
	defer func() {
		if !closed {
			a.Close()
		}
	}()
	eventually(t, "leader", func() error {
		if !a.IsLeader() {
			return errors.New("not the leader yet")
		}
		return nil
	})
	if _, _, err := a.SubmitJob(ctx, api.JobSpec{ID: "j1", OriginRegion: "local", Demand: placement.Resources{ComputePerHour: 5}, DurationS: 600}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "job runs", func() error {
		st, err := a.Job(ctx, "j1")
		if err == nil && st.State != api.JobRunning {
			err = fmt.Errorf("state %s (%s)", st.State, st.Reason)
		}
		return err
	})
	closed = true
	if err := a.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	// memberlist's Shutdown does not wait for a probe or push/pull in
	// flight; they end within its TCP timeout.
	deadline := time.Now().Add(memberlist.DefaultWANConfig().TCPTimeout + 5*time.Second)
	for goleak.Find(ignore) != nil && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	goleak.VerifyNone(t, ignore)
}
