package auction

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	mocknet "github.com/libp2p/go-libp2p/p2p/net/mock"

	"github.com/meridian-mesh/meridian/netsim"
	"github.com/meridian-mesh/meridian/placement"
)

// testMesh is the gossip view of a simulated mesh: which peers serve which
// region, who leads it under which term, and the RTTs. It implements
// Directory and Authority for every region's Driver (each sees it through a
// regionView that knows its own region). Real node/ code reads these facts
// from memberlist metadata.
type testMesh struct {
	mu      sync.Mutex
	servers map[string][]peer.ID // region → server peers
	leader  map[string]peer.ID
	term    map[string]uint64
	surplus map[string]placement.Resources
	rtt     RTTTable
}

func newTestMesh() *testMesh {
	return &testMesh{
		servers: make(map[string][]peer.ID), leader: make(map[string]peer.ID),
		term: make(map[string]uint64), surplus: make(map[string]placement.Resources), rtt: RTTTable{},
	}
}

func (g *testMesh) addServer(region string, p peer.ID) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.servers[region] = append(g.servers[region], p)
}

func (g *testMesh) setLeader(region string, p peer.ID, term uint64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.leader[region], g.term[region] = p, term
}

func (g *testMesh) setSurplus(region string, r placement.Resources) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.surplus[region] = r
}

// Regions implements Directory.
func (g *testMesh) Regions() []RegionInfo {
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []RegionInfo
	for _, r := range sortedKeys(g.servers) {
		_, led := g.leader[r]
		out = append(out, RegionInfo{Region: r, Surplus: g.surplus[r], Reachable: led})
	}
	return out
}

// Leader implements Directory.
func (g *testMesh) Leader(region string) (peer.AddrInfo, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	p, ok := g.leader[region]
	return peer.AddrInfo{ID: p}, ok
}

// RTT implements Directory.
func (g *testMesh) RTT(from, to string) (time.Duration, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.rtt.Get(from, to)
}

// Authorize implements Authority.
func (g *testMesh) Authorize(p peer.ID, region string, term uint64) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !slices.Contains(g.servers[region], p) {
		return fmt.Errorf("peer %s is not a server of region %q", p, region)
	}
	if g.leader[region] != p {
		return fmt.Errorf("peer %s is not the leader of region %q", p, region)
	}
	if g.term[region] != term {
		return fmt.Errorf("region %q is at term %d, message claims %d", region, g.term[region], term)
	}
	return nil
}

// meshRegion is one region's leader server: host, transport, driver, ledger.
type meshRegion struct {
	name   string
	host   host.Host
	tr     *StreamTransport
	drv    *Driver
	ledger *memLedger

	mu     sync.Mutex
	events []Event
	counts map[EventKind]int
	notify chan struct{}
}

func (r *meshRegion) onEvent(e Event) {
	r.mu.Lock()
	r.events = append(r.events, e)
	if r.counts == nil {
		r.counts = make(map[EventKind]int)
	}
	r.counts[e.Kind]++
	r.mu.Unlock()
	select {
	case r.notify <- struct{}{}:
	default:
	}
}

func (r *meshRegion) eventsOf(k EventKind) []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []Event
	for _, e := range r.events {
		if e.Kind == k {
			out = append(out, e)
		}
	}
	return out
}

// summary counts the events by kind, with the last one's reason.
func (r *meshRegion) summary() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	counts := map[EventKind]int{}
	last := map[EventKind]string{}
	for _, e := range r.events {
		counts[e.Kind]++
		last[e.Kind] = e.Reason
	}
	var b strings.Builder
	for k := EventAllocated; k <= EventAllocationCancelled; k++ {
		if counts[k] > 0 {
			fmt.Fprintf(&b, "%s×%d (last: %q) ", k, counts[k], last[k])
		}
	}
	return b.String()
}

// waitEvent waits for n events of kind k, up to timeout (virtual time
// inside a synctest bubble), and returns them.
func (r *meshRegion) waitEvent(t testing.TB, k EventKind, n int, timeout time.Duration) []Event {
	t.Helper()
	r.waitCount(t, k, n, timeout)
	return r.eventsOf(k)
}

// waitCount waits for n events of kind k, up to timeout.
func (r *meshRegion) waitCount(t testing.TB, k EventKind, n int, timeout time.Duration) {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		r.mu.Lock()
		got := r.counts[k]
		r.mu.Unlock()
		if got >= n {
			return
		}
		select {
		case <-r.notify:
		case <-deadline.C:
			t.Fatalf("%s: %d %s events after %v, want %d; seen: %s", r.name, len(r.eventsOf(k)), k, timeout, n, r.summary())
		}
	}
}

// simMesh is a set of regions' leaders over either libp2p's mocknet (with
// per-link latencies set by link) or netsim's network (real libp2p over the
// simulated WAN, latencies from its topology, faults by netsim).
type simMesh struct {
	t       testing.TB
	mn      mocknet.Mocknet
	net     *netsim.Network
	g       *testMesh
	regions map[string]*meshRegion
	cancel  context.CancelFunc
	ctx     context.Context
	done    sync.WaitGroup
}

func newSimMesh(t testing.TB) *simMesh {
	ctx, cancel := context.WithCancel(context.Background())
	return &simMesh{t: t, mn: mocknet.New(), g: newTestMesh(), regions: make(map[string]*meshRegion), ctx: ctx, cancel: cancel}
}

// newNetsimMesh returns a mesh over a netsim network with topo (nil: the
// world's 21 AWS regions).
func newNetsimMesh(t testing.TB, topo *netsim.Topology) *simMesh {
	n, err := netsim.New(netsim.Config{Topology: topo, Seed: 1})
	if err != nil {
		t.Fatalf("netsim.New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &simMesh{t: t, net: n, g: newTestMesh(), regions: make(map[string]*meshRegion), ctx: ctx, cancel: cancel}
}

func (s *simMesh) newHost(region string) host.Host {
	s.t.Helper()
	if s.net != nil {
		ep, err := s.net.AddEndpoint(region+"-leader", region)
		if err != nil {
			s.t.Fatalf("AddEndpoint: %v", err)
		}
		// The production host's options, over netsim's wire.
		h, err := s.net.NewLibp2pHost(ep, HostOptions(HostConfig{})...)
		if err != nil {
			s.t.Fatalf("NewLibp2pHost: %v", err)
		}
		return h
	}
	h, err := s.mn.GenPeer()
	if err != nil {
		s.t.Fatalf("GenPeer: %v", err)
	}
	return h
}

// addRegion starts a region's leader (term 1) with nodes in its ledger.
func (s *simMesh) addRegion(name string, cfg DriverConfig, commitDelay time.Duration, nodes ...placement.Node) *meshRegion {
	s.t.Helper()
	h := s.newHost(name)
	r := &meshRegion{name: name, host: h, ledger: newMemLedger(name, nodes...), notify: make(chan struct{}, 1)}
	r.ledger.commitDelay = commitDelay
	r.tr = NewStreamTransport(h, StreamTransportConfig{})
	cfg.Market.Region = name
	cfg.Ledger, cfg.Transport, cfg.Directory, cfg.Authority = r.ledger, r.tr, s.g, s.g
	cfg.OnEvent = r.onEvent
	var err error
	r.drv, err = NewDriver(cfg)
	if err != nil {
		s.t.Fatalf("NewDriver: %v", err)
	}
	r.tr.Serve(r.drv.Handle)
	s.g.addServer(name, h.ID())
	s.g.setLeader(name, h.ID(), 1)
	var free placement.Resources
	for _, n := range nodes {
		free = free.Add(n.Free)
	}
	s.g.setSurplus(name, free)
	s.regions[name] = r
	s.done.Add(1)
	go func() {
		defer s.done.Done()
		_ = r.drv.Run(s.ctx)
	}()
	if err := r.drv.SetLeadership(s.ctx, 1, true); err != nil {
		s.t.Fatalf("SetLeadership: %v", err)
	}
	return r
}

// link connects two regions' hosts — over mocknet with the given RTT
// (one-way latency RTT/2), over netsim with its topology's RTT (rtt is
// ignored) — and waits for identify, so later streams open without a
// negotiation round trip, as between long-lived region leaders.
func (s *simMesh) link(a, b string, rtt time.Duration) {
	s.t.Helper()
	ha, hb := s.regions[a].host, s.regions[b].host
	if s.net != nil {
		d, err := s.net.Topology().RTT(a, b)
		if err != nil {
			s.t.Fatalf("topology RTT: %v", err)
		}
		rtt = d
		if err := ha.Connect(s.ctx, netsim.PeerInfo(hb)); err != nil {
			s.t.Fatalf("Connect %s → %s: %v", a, b, err)
		}
	} else {
		l, err := s.mn.LinkPeers(ha.ID(), hb.ID())
		if err != nil {
			s.t.Fatalf("LinkPeers: %v", err)
		}
		l.SetOptions(mocknet.LinkOptions{Latency: rtt / 2})
		if _, err := s.mn.ConnectPeers(ha.ID(), hb.ID()); err != nil {
			s.t.Fatalf("ConnectPeers: %v", err)
		}
	}
	s.g.mu.Lock()
	s.g.rtt.Set(a, b, rtt)
	s.g.mu.Unlock()
	waitIdentified(s.t, ha, hb)
	waitIdentified(s.t, hb, ha)
}

// cut breaks the mocknet link between a and b and drops their connections.
func (s *simMesh) cut(a, b string) {
	ha, hb := s.regions[a].host, s.regions[b].host
	_ = s.mn.UnlinkPeers(ha.ID(), hb.ID())
	_ = s.mn.DisconnectPeers(ha.ID(), hb.ID())
}

func (s *simMesh) close() {
	s.cancel()
	s.done.Wait()
	for _, r := range s.regions {
		_ = r.tr.Close()
	}
	if s.net != nil {
		_ = s.net.Close()
	} else {
		_ = s.mn.Close()
	}
}

// waitIdentified waits (in virtual time, polling) until a knows that b
// speaks the market protocol.
func waitIdentified(t testing.TB, a, b host.Host) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
		if protos, _ := a.Peerstore().SupportsProtocols(b.ID(), ProtocolID); len(protos) > 0 {
			return
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatalf("%s never learned that %s speaks %s", a.ID(), b.ID(), ProtocolID)
}

func jobSpec(id, origin string, compute float64) placement.Job {
	return placement.Job{ID: id, OriginRegion: origin, Demand: placement.Resources{ComputePerHour: compute, StorageGB: 10, BandwidthGBps: 1}}
}

// waitFor polls cond every millisecond (virtual time in a bubble) until it
// holds or timeout passes.
func waitFor(t testing.TB, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out after %v waiting for %s", timeout, what)
}
