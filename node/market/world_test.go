package market

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"go.uber.org/goleak"

	"github.com/meridian-mesh/meridian/consensus"
	"github.com/meridian-mesh/meridian/gossip"
	"github.com/meridian-mesh/meridian/netsim"
	"github.com/meridian-mesh/meridian/placement"
	"github.com/meridian-mesh/meridian/placement/auction"
)

// The tests of this package run whole regions inside testing/synctest
// bubbles: real Raft servers (hashicorp/raft on raft-boltdb) over netsim's
// stream layer, real memberlist gossip agents over netsim's transport and
// real libp2p hosts on netsim, so elections, gossip, auctions, partitions and
// timeouts play out in virtual time.

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const (
	raftPort   = 7000
	gossipPort = 7946
)

// nodeSpec is the capacity and price of a region server's node.
type nodeSpec struct {
	compute float64
	price   float64
}

func (n nodeSpec) total() placement.Resources {
	return placement.Resources{ComputePerHour: n.compute, StorageGB: 1000, BandwidthGBps: 10}
}

// flatPricing asks each node's own price, whatever the load, so that tests
// can predict bids exactly.
func flatPricing(n placement.Node, _ float64) float64 { return n.PricePerHour }

// world is a mesh of region servers on a simulated network.
type world struct {
	t    *testing.T
	net  *netsim.Network
	dir  string
	tune func(region string, c *Config)
	// fsync makes the Raft servers sync their logs to disk (the tests turn
	// it off: inside a bubble the disk is the only thing that takes real
	// time).
	fsync bool
	// realTime says the world runs outside a synctest bubble; before
	// holds the goroutines that were running before it started, so close
	// can wait for its own to end instead of sleeping through memberlist's
	// probe timeouts.
	realTime bool
	before   goleak.Option

	mu      sync.Mutex
	servers map[string]*server
	names   []string            // in start order
	regions map[string][]string // region → its servers
}

// server is one region server: Raft, gossip, libp2p host, market, and a
// publisher that plays the node agent's part (capacity record with the
// market's advertisement).
type server struct {
	w      *world
	name   string
	region string
	spec   nodeSpec
	ep     *netsim.Endpoint
	srv    *consensus.Server
	g      *gossip.Agent
	h      host.Host
	m      *Market
	cancel context.CancelFunc
	done   sync.WaitGroup
	closed bool

	mu     sync.Mutex
	events []auction.Event
}

func testLogger(name string) *slog.Logger {
	lv := os.Getenv("MARKET_TEST_LOG")
	if lv == "" {
		return slog.New(slog.DiscardHandler)
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(lv)); err != nil {
		level = slog.LevelInfo
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})).With("test_node", name)
}

// newWorld creates the network of a topology given as CSV rows
// "from,to,rtt_ms".
func newWorld(t *testing.T, rows string, tune func(region string, c *Config)) *world {
	t.Helper()
	topo, err := netsim.ParseTopology(strings.NewReader("from,to,rtt_ms\n"+rows), "test")
	if err != nil {
		t.Fatal(err)
	}
	return newWorldOn(t, topo, tune)
}

// newWorldOn creates the network of a topology.
func newWorldOn(t *testing.T, topo *netsim.Topology, tune func(region string, c *Config)) *world {
	t.Helper()
	nw, err := netsim.New(netsim.Config{Topology: topo, Seed: 7})
	if err != nil {
		t.Fatal(err)
	}
	return &world{t: t, net: nw, dir: t.TempDir(), tune: tune, servers: map[string]*server{}, regions: map[string][]string{}}
}

// addRegion starts n servers of a region, each with a node of spec.
func (w *world) addRegion(region string, n int, spec nodeSpec) {
	w.t.Helper()
	var started []*server
	for i := range n {
		started = append(started, w.start(fmt.Sprintf("%s-%d", region, i), region, n, spec))
	}
	for _, s := range started {
		for _, o := range started {
			s.srv.ObserveServer(consensus.ServerInfo{ID: o.name, Region: region, RaftAddr: fmt.Sprintf("%s:%d", o.ep.IP(), raftPort), Alive: true})
		}
	}
}

func (w *world) start(name, region string, peers int, spec nodeSpec) *server {
	w.t.Helper()
	ep, err := w.net.AddEndpoint(name, region)
	if err != nil {
		w.t.Fatal(err)
	}
	s := &server{w: w, name: name, region: region, spec: spec, ep: ep}
	log := testLogger(name)
	// The production host's options (auction.NewHost's) over netsim's wire.
	if s.h, err = w.net.NewLibp2pHost(ep, auction.HostOptions(auction.HostConfig{})...); err != nil {
		w.t.Fatal(err)
	}
	layer, err := netsim.NewRaftStreamLayer(ep, raftPort)
	if err != nil {
		w.t.Fatal(err)
	}
	s.srv, err = consensus.Open(consensus.Config{
		NodeID: name, Region: region, DataDir: filepath.Join(w.dir, name), StreamLayer: layer,
		BootstrapExpect: peers, NoSync: !w.fsync, Logger: log,
	})
	if err != nil {
		w.t.Fatalf("open %s: %v", name, err)
	}
	tr, err := netsim.NewMemberlistTransport(ep, gossipPort)
	if err != nil {
		w.t.Fatal(err)
	}
	ip := ep.IP().String()
	w.mu.Lock()
	idx := len(w.names)
	w.mu.Unlock()
	s.g, err = gossip.Start(gossip.Config{
		Name: name, Region: region, Role: gossip.RoleServer, RaftAddr: layer.Addr().String(),
		P2PAddr: s.h.Addrs()[0].String(), P2PPeerID: s.h.ID().String(),
		Transport: tr, BindAddr: ip, BindPort: gossipPort, AdvertiseAddr: ip, AdvertisePort: gossipPort,
		DisableEncryption: true, ReconnectInterval: 2 * time.Second, ReconnectBackoffMax: 8 * time.Second,
		Logger: log, Rand: rand.New(rand.NewPCG(7, uint64(idx))),
	})
	if err != nil {
		w.t.Fatalf("gossip %s: %v", name, err)
	}
	cfg := Config{
		Region: region, NodeName: name, Server: s.srv, Gossip: s.g, Host: s.h, Pricing: flatPricing,
		OnEvent: s.record, Logger: log, DutyInterval: 2 * time.Second,
	}
	if w.tune != nil {
		w.tune(region, &cfg)
	}
	s.m, err = New(cfg)
	if err != nil {
		w.t.Fatalf("market %s: %v", name, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	s.done.Add(2)
	go func() {
		defer s.done.Done()
		_ = s.m.Run(ctx)
	}()
	go func() {
		defer s.done.Done()
		s.publish(ctx)
	}()
	w.mu.Lock()
	if len(w.names) > 0 {
		first := w.servers[w.names[0]]
		if _, err := s.g.Join([]string{fmt.Sprintf("%s:%d", first.ep.IP(), gossipPort)}); err != nil {
			w.mu.Unlock()
			w.t.Fatalf("join %s: %v", name, err)
		}
	}
	w.servers[name] = s
	w.names = append(w.names, name)
	w.regions[region] = append(w.regions[region], name)
	w.mu.Unlock()
	return s
}

func (s *server) record(e auction.Event) {
	s.mu.Lock()
	s.events = append(s.events, e)
	s.mu.Unlock()
}

func (s *server) eventsOf(k auction.EventKind) []auction.Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []auction.Event
	for _, e := range s.events {
		if e.Kind == k {
			out = append(out, e)
		}
	}
	return out
}

// publish plays the node agent: it keeps the node's capacity record (free
// capacity from the ledger, the market's advertisement) up to date.
func (s *server) publish(ctx context.Context) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		total := s.spec.total()
		c := gossip.Capacity{Total: total, Free: total, PricePerHour: s.spec.price}
		if n, ok := s.srv.Ledger().Node(s.name); ok {
			c.Free = n.Placement().Free
			c.Utilization = 1 - c.Free.ComputePerHour/total.ComputePerHour
		}
		adv := s.m.Advertisement()
		c.Market = &adv
		if _, err := s.g.SetCapacity(c); err != nil && ctx.Err() == nil {
			s.w.t.Errorf("%s: publish capacity: %v", s.name, err)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-s.m.AdvertisementChanged():
		}
	}
}

// stop shuts the server down cleanly (market, publisher, gossip, Raft,
// host).
func (s *server) stop() {
	if s.closed {
		return
	}
	s.closed = true
	s.cancel()
	s.done.Wait()
	_ = s.g.Shutdown()
	if err := s.srv.Close(); err != nil {
		s.w.t.Errorf("close %s: %v", s.name, err)
	}
	_ = s.h.Close()
}

func (w *world) close() {
	for _, n := range slices.Backward(w.names) {
		w.servers[n].stop()
	}
	// memberlist's probe goroutines outlive Shutdown by up to a probe
	// timeout (the WAN profile's is at most a few seconds); wait them out in
	// virtual time. In real time, wait until every goroutine the world
	// started has ended, the network's too.
	if !w.realTime {
		time.Sleep(30 * time.Second)
	}
	if err := w.net.Close(); err != nil {
		w.t.Errorf("netsim close: %v", err)
	}
	if w.realTime {
		deadline := time.Now().Add(time.Minute)
		for err := goleak.Find(w.before); err != nil; err = goleak.Find(w.before) {
			if time.Now().After(deadline) {
				w.t.Errorf("the world's goroutines did not end: %v", err)
				break
			}
		}
	}
}

func (w *world) server(name string) *server {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.servers[name]
}

// leader returns the server whose market leads region.
func (w *world) leader(region string) *server {
	w.mu.Lock()
	names := slices.Clone(w.regions[region])
	w.mu.Unlock()
	var best *server
	var bestTerm uint64
	for _, n := range names {
		s := w.server(n)
		if s.closed {
			continue
		}
		if term, ok := s.m.leadership(); ok && term > bestTerm && s.srv.IsLeader() {
			best, bestTerm = s, term
		}
	}
	return best
}

// waitFor polls cond every 10 ms of virtual time until it holds or within
// passes.
func waitFor(within time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(within)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// ready waits until every region has a market leader, every node is
// registered in its region's ledger, and every server's gossip knows every
// region's leader with its free capacity.
func (w *world) ready() {
	w.t.Helper()
	ctx := context.Background()
	for region, names := range w.regions {
		if !waitFor(time.Minute, func() bool { return w.leader(region) != nil }) {
			w.t.Fatalf("region %s has no market leader", region)
		}
		l := w.leader(region)
		for _, n := range names {
			s := w.server(n)
			res, err := l.srv.Propose(ctx, consensus.RegisterNode{ID: n, Total: s.spec.total(), PricePerHour: s.spec.price})
			if err != nil || res[0].Err != nil {
				w.t.Fatalf("register %s: %v %v", n, err, res)
			}
		}
	}
	if !waitFor(2*time.Minute, func() bool {
		for _, n := range w.names {
			s := w.server(n)
			if s.closed {
				continue
			}
			regions := s.m.dir.Regions()
			if len(regions) != len(w.regions) {
				return false
			}
			for _, ri := range regions {
				if !ri.Reachable || ri.Surplus.ComputePerHour == 0 {
					return false
				}
			}
		}
		return true
	}) {
		for _, n := range w.names {
			w.t.Logf("%s sees %+v", n, w.server(n).m.dir.Regions())
		}
		w.t.Fatal("gossip did not converge on every region's leader and capacity")
	}
}

// submit records jobs in the buyer region's ledger.
func (w *world) submit(region string, jobs ...placement.Job) []consensus.Job {
	w.t.Helper()
	l := w.leader(region)
	var out []consensus.Job
	for _, j := range jobs {
		res, err := l.srv.Propose(context.Background(), consensus.SubmitJob{Job: j})
		if err != nil || res[0].Err != nil {
			w.t.Fatalf("submit %s: %v %v", j.ID, err, res)
		}
		cj, _ := l.srv.Ledger().Job(j.ID)
		out = append(out, cj)
	}
	return out
}

func (w *world) job(region, id string) consensus.Job {
	l := w.leader(region)
	if l == nil {
		return consensus.Job{}
	}
	j, _ := l.srv.Ledger().Job(id)
	return j
}

// liveAllocations returns every live allocation of buyer's job in every
// other region's ledger (each region's leader's replica).
func (w *world) liveAllocations(buyer, jobID string) []consensus.Allocation {
	var out []consensus.Allocation
	for region := range w.regions {
		if region == buyer {
			continue
		}
		l := w.leader(region)
		if l == nil {
			continue
		}
		if a, ok := l.srv.Ledger().JobAllocation(buyer, jobID); ok {
			out = append(out, a)
		}
	}
	return out
}

// checkSettled checks the invariants once the mesh is quiet: the job runs
// under exactly one live allocation, in the region and under the epoch its
// home ledger names; no escrow outlives its expiry; no node is
// overcommitted in any ledger.
func (w *world) checkSettled(buyer, jobID string) {
	w.t.Helper()
	j := w.job(buyer, jobID)
	if j.State != consensus.JobTraded || j.Remote == nil {
		w.t.Fatalf("job %s = %+v; want traded", jobID, j)
	}
	live := w.liveAllocations(buyer, jobID)
	if len(live) != 1 {
		w.t.Fatalf("job %s has %d live allocations: %+v", jobID, len(live), live)
	}
	seller := w.leader(j.Remote.Region)
	a := live[0]
	if a.AuctionID != j.Remote.AuctionID || a.ItemID != j.Remote.ItemID || a.Epoch != j.Epoch {
		w.t.Fatalf("live allocation %+v is not the one the home ledger names (%+v, epoch %d)", a, j.Remote, j.Epoch)
	}
	if got, _ := seller.srv.Ledger().JobAllocation(buyer, jobID); got.ID != a.ID {
		w.t.Fatalf("the allocation is not in the seller %s", j.Remote.Region)
	}
	w.checkLedgers()
}

// checkLedgers checks every region leader's ledger: escrows within their
// expiry and nodes within their capacity (Import re-derives and checks
// every node's use).
func (w *world) checkLedgers() {
	w.t.Helper()
	for region := range w.regions {
		l := w.leader(region)
		if l == nil {
			continue
		}
		led := l.srv.Ledger()
		if _, err := consensus.Import(led.Export()); err != nil {
			w.t.Fatalf("ledger of %s: %v", region, err)
		}
		for _, e := range led.Escrows() {
			if !e.Expiry.After(time.Now()) {
				// The next command expires it; make sure one comes.
				if _, err := l.srv.Propose(context.Background(), consensus.Expire{}); err != nil {
					w.t.Fatal(err)
				}
			}
		}
		for _, e := range l.srv.Ledger().Escrows() {
			if !e.Expiry.After(time.Now()) {
				w.t.Fatalf("escrow %+v in %s outlived its expiry", e, region)
			}
		}
		for _, n := range led.Nodes() {
			if !n.Used.FitsIn(n.Total) {
				w.t.Fatalf("node %s of %s overcommitted: %+v of %+v", n.ID, region, n.Used, n.Total)
			}
		}
	}
}

// quietEscrows waits until no region holds an escrow: they are released
// by message or expire.
func (w *world) quietEscrows(within time.Duration) bool {
	return waitFor(within, func() bool {
		for region := range w.regions {
			if l := w.leader(region); l != nil && len(l.srv.Ledger().Escrows()) > 0 {
				return false
			}
		}
		return true
	})
}
