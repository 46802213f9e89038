package netsim

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/raft"
)

// twoRegions is a small topology: regions a and b, 150 ms apart.
const twoRegions = "from,to,rtt_ms\na,a,2\nb,b,2\na,b,150\n"

func mustTopology(t testing.TB, csv string) *Topology {
	t.Helper()
	topo, err := ParseTopology(strings.NewReader(csv), t.Name())
	if err != nil {
		t.Fatalf("ParseTopology: %v", err)
	}
	return topo
}

func mustNetwork(t testing.TB, cfg Config) *Network {
	t.Helper()
	n, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return n
}

func mustEndpoint(t testing.TB, n *Network, name, region string) *Endpoint {
	t.Helper()
	e, err := n.AddEndpoint(name, region)
	if err != nil {
		t.Fatalf("AddEndpoint(%q, %q): %v", name, region, err)
	}
	return e
}

// waitFor polls cond every step until it holds or timeout passes (virtual
// time inside a bubble).
func waitFor(t testing.TB, timeout, step time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(step)
	}
}

// rttRecorder is a memberlist.PingDelegate that keeps the last ping RTT to
// each node.
type rttRecorder struct {
	mu   sync.Mutex
	rtts map[string][]time.Duration
}

func (r *rttRecorder) AckPayload() []byte { return nil }

func (r *rttRecorder) NotifyPingComplete(other *memberlist.Node, rtt time.Duration, _ []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.rtts == nil {
		r.rtts = map[string][]time.Duration{}
	}
	r.rtts[other.Name] = append(r.rtts[other.Name], rtt)
}

func (r *rttRecorder) samples(node string) []time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]time.Duration(nil), r.rtts[node]...)
}

const memberlistPort = 7946

// startMember starts a real memberlist node on e.
func startMember(t testing.TB, e *Endpoint, conf *memberlist.Config) *memberlist.Memberlist {
	t.Helper()
	tr, err := NewMemberlistTransport(e, memberlistPort)
	if err != nil {
		t.Fatalf("NewMemberlistTransport(%s): %v", e.Name(), err)
	}
	conf.Name = e.Name()
	conf.Transport = tr
	conf.BindAddr, conf.AdvertiseAddr = e.IP().String(), e.IP().String()
	conf.BindPort, conf.AdvertisePort = memberlistPort, memberlistPort
	conf.LogOutput = io.Discard
	m, err := memberlist.Create(conf)
	if err != nil {
		t.Fatalf("memberlist.Create(%s): %v", e.Name(), err)
	}
	return m
}

func memberAddr(e *Endpoint) string { return fmt.Sprintf("%s:%d", e.IP(), memberlistPort) }

// aliveCount counts the members m sees as alive.
func aliveCount(m *memberlist.Memberlist) int {
	n := 0
	for _, node := range m.Members() {
		if node.State == memberlist.StateAlive {
			n++
		}
	}
	return n
}

// counterFSM is a raft FSM that records the applied commands.
type counterFSM struct {
	mu      sync.Mutex
	applied []string
}

func (f *counterFSM) Apply(l *raft.Log) any {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.applied = append(f.applied, string(l.Data))
	return len(f.applied)
}

func (f *counterFSM) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.applied)
}

func (f *counterFSM) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return &counterSnapshot{data: strings.Join(f.applied, "\n")}, nil
}

func (f *counterFSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.applied = nil
	if len(b) > 0 {
		f.applied = strings.Split(string(b), "\n")
	}
	return nil
}

type counterSnapshot struct{ data string }

func (s *counterSnapshot) Persist(sink raft.SnapshotSink) error {
	if _, err := io.WriteString(sink, s.data); err != nil {
		_ = sink.Cancel()
		return err
	}
	return sink.Close()
}

func (s *counterSnapshot) Release() {}

const raftPort = 7000

// raftNode is one member of a raft group over netsim.
type raftNode struct {
	ep    *Endpoint
	raft  *raft.Raft
	fsm   *counterFSM
	trans *raft.NetworkTransport
}

// startRaftGroup starts a bootstrapped raft group with one server per
// endpoint, on in-memory stores.
func startRaftGroup(t testing.TB, eps []*Endpoint) []*raftNode {
	t.Helper()
	var servers []raft.Server
	for _, e := range eps {
		servers = append(servers, raft.Server{
			ID:      raft.ServerID(e.Name()),
			Address: raft.ServerAddress(fmt.Sprintf("%s:%d", e.IP(), raftPort)),
		})
	}
	var nodes []*raftNode
	for _, e := range eps {
		layer, err := NewRaftStreamLayer(e, raftPort)
		if err != nil {
			t.Fatalf("NewRaftStreamLayer(%s): %v", e.Name(), err)
		}
		trans := raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
			Stream:  layer,
			MaxPool: 3,
			Timeout: 2 * time.Second,
			Logger:  hclog.NewNullLogger(),
		})
		conf := raft.DefaultConfig()
		conf.LocalID = raft.ServerID(e.Name())
		conf.Logger = hclog.NewNullLogger()
		store := raft.NewInmemStore()
		fsm := &counterFSM{}
		r, err := raft.NewRaft(conf, fsm, store, store, raft.NewInmemSnapshotStore(), trans)
		if err != nil {
			t.Fatalf("raft.NewRaft(%s): %v", e.Name(), err)
		}
		if err := r.BootstrapCluster(raft.Configuration{Servers: servers}).Error(); err != nil {
			t.Fatalf("BootstrapCluster(%s): %v", e.Name(), err)
		}
		nodes = append(nodes, &raftNode{ep: e, raft: r, fsm: fsm, trans: trans})
	}
	return nodes
}

func stopRaftGroup(t testing.TB, nodes []*raftNode) {
	t.Helper()
	for _, nd := range nodes {
		if err := nd.raft.Shutdown().Error(); err != nil {
			t.Errorf("raft shutdown %s: %v", nd.ep.Name(), err)
		}
		_ = nd.trans.Close()
	}
}

// leaderOf returns the node that is leader, or nil.
func leaderOf(nodes []*raftNode) *raftNode {
	for _, nd := range nodes {
		if nd.raft.State() == raft.Leader {
			return nd
		}
	}
	return nil
}
