package netsim

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults of Config.
const (
	// DefaultStreamWindow bounds the bytes of one direction of a stream
	// connection that are in flight or unread, like a TCP window.
	DefaultStreamWindow = 1 << 20
	// DefaultDatagramQueue is the receive queue of a datagram socket, in
	// datagrams; a datagram arriving at a full queue is dropped.
	DefaultDatagramQueue = 1024
	// DefaultConnectTimeout is how long a dial into a black hole (a cut,
	// partitioned or crashed destination) retransmits its SYN: Linux gives
	// up after 6 retransmissions, about 127 s.
	DefaultConnectTimeout = 127 * time.Second
	// DefaultMaxQueueDelay bounds how long a datagram may wait for a
	// bandwidth-limited link before the link drops it, like a router buffer.
	DefaultMaxQueueDelay = 250 * time.Millisecond
)

// MaxDatagramSize is the largest datagram payload, as for UDP over IPv4.
const MaxDatagramSize = 65507

// Config configures a Network. The zero value is the world topology, seed 0,
// no jitter and no logs.
type Config struct {
	// Topology is the set of regions and links; nil means WorldTopology().
	Topology *Topology
	// Seed is the source of all randomness (jitter, loss, libp2p keys):
	// the same seed and the same sequence of sends give the same drops.
	Seed int64
	// Jitter is the ± fraction of the one-way latency by which each delivery
	// varies uniformly, for links whose topology sets no jitter_ms. 0 = none.
	Jitter float64
	// Logger receives one record per fault, stamped with the (virtual)
	// time. nil discards.
	Logger *slog.Logger
	// StreamWindow is the per-direction window of a stream connection in
	// bytes; 0 means DefaultStreamWindow.
	StreamWindow int
	// DatagramQueue is the receive queue of each datagram socket in
	// datagrams; 0 means DefaultDatagramQueue.
	DatagramQueue int
	// ConnectTimeout is how long a dial keeps retransmitting its SYN into
	// a black hole before it times out (a shorter ctx deadline ends it
	// sooner); 0 means DefaultConnectTimeout.
	ConnectTimeout time.Duration
	// MaxQueueDelay bounds the queueing delay of a datagram on a
	// bandwidth-limited link; 0 means DefaultMaxQueueDelay.
	MaxQueueDelay time.Duration
}

// Network is a simulated wide-area network of endpoints placed in regions.
// It carries datagrams and stream connections with the latency, jitter, loss
// and bandwidth of the topology, under faults that can change at any time.
// Time is whatever time.Now says: inside a testing/synctest bubble it is the
// bubble's virtual clock, outside it is real time. All methods are safe for
// concurrent use.
//
// One mutex (mu) guards the endpoints, their sockets, the faults and the
// random sources; each stream direction has its own small lock, always taken
// after mu.
type Network struct {
	cfg    Config
	topo   *Topology
	log    *slog.Logger
	closed chan struct{}

	// epoch changes whenever reachability may have changed, so a datagram
	// in flight re-checks its path at delivery only when needed.
	epoch atomic.Uint64
	stats counters

	mu        sync.Mutex
	isClosed  bool
	endpoints map[string]*Endpoint
	byIP      map[netip.Addr]*Endpoint
	order     []*Endpoint
	faults    faultState
	rngs      map[uint64]*rand.Rand // per directed endpoint pair
	topoBW    map[[2]int]*bwQueue   // per directed region pair with topology bandwidth
	conns     map[*connPair]struct{}
	events    []FaultEvent
	p2p       *libp2pNet                // mocknet hosts
	hosts     map[*trackedHost]struct{} // open NewLibp2pHost hosts
	courier   courier                   // datagrams in flight
}

// New creates a network. Create it inside a synctest bubble to run it in
// virtual time.
func New(cfg Config) (*Network, error) {
	if cfg.Topology == nil {
		cfg.Topology = WorldTopology()
	}
	if cfg.Jitter < 0 || cfg.Jitter > 1 {
		return nil, fmt.Errorf("netsim: config Jitter %v: want a fraction in [0,1]", cfg.Jitter)
	}
	if cfg.StreamWindow < 0 || cfg.DatagramQueue < 0 || cfg.ConnectTimeout < 0 || cfg.MaxQueueDelay < 0 {
		return nil, errors.New("netsim: config StreamWindow, DatagramQueue, ConnectTimeout and MaxQueueDelay must not be negative")
	}
	if cfg.StreamWindow == 0 {
		cfg.StreamWindow = DefaultStreamWindow
	}
	if cfg.DatagramQueue == 0 {
		cfg.DatagramQueue = DefaultDatagramQueue
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = DefaultConnectTimeout
	}
	if cfg.MaxQueueDelay == 0 {
		cfg.MaxQueueDelay = DefaultMaxQueueDelay
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return &Network{
		cfg:       cfg,
		topo:      cfg.Topology,
		log:       log,
		closed:    make(chan struct{}),
		endpoints: map[string]*Endpoint{},
		byIP:      map[netip.Addr]*Endpoint{},
		rngs:      map[uint64]*rand.Rand{},
		topoBW:    map[[2]int]*bwQueue{},
		conns:     map[*connPair]struct{}{},
	}, nil
}

// Topology returns the network's topology.
func (n *Network) Topology() *Topology { return n.topo }

// Seed returns the seed the network was created with.
func (n *Network) Seed() int64 { return n.cfg.Seed }

// Close closes every endpoint: the libp2p hosts made by NewLibp2pHost and
// NewMocknetHost are closed, listeners and datagram sockets stop, and stream
// connections are reset. No goroutine of the network stays blocked. Close is idempotent.
func (n *Network) Close() error {
	// Libp2p hosts first, while their connections can still close cleanly;
	// a host's Close takes n.mu.
	n.mu.Lock()
	hosts := make([]*trackedHost, 0, len(n.hosts))
	for h := range n.hosts {
		hosts = append(hosts, h)
	}
	n.mu.Unlock()
	var errs []error
	for _, h := range hosts {
		if err := h.Close(); err != nil {
			errs = append(errs, fmt.Errorf("netsim: close libp2p host %s: %w", h.ID(), err))
		}
	}

	n.mu.Lock()
	if n.isClosed {
		n.mu.Unlock()
		return errors.Join(errs...)
	}
	n.isClosed = true
	close(n.closed)
	n.epoch.Add(1)
	for _, e := range n.order {
		e.closeSocketsLocked()
	}
	for p := range n.conns {
		p.resetLocked(errReset)
	}
	clear(n.conns)
	p2p := n.p2p
	n.mu.Unlock()
	if p2p != nil {
		errs = append(errs, p2p.close())
	}
	return errors.Join(errs...)
}

// AddEndpoint adds a node named name in region. Names are unique and must
// not be region names (faults accept both). Endpoints get consecutive virtual
// IPv4 addresses from 198.18.0.0/15 in the order they are added.
func (n *Network) AddEndpoint(name, region string) (*Endpoint, error) {
	if err := validRegionName(name); err != nil {
		return nil, fmt.Errorf("netsim: endpoint name: %w", err)
	}
	ri, ok := n.topo.index[region]
	if !ok {
		return nil, fmt.Errorf("netsim: endpoint %q region %q: %w", name, region, ErrUnknownRegion)
	}
	if n.topo.HasRegion(name) {
		return nil, fmt.Errorf("netsim: endpoint name %q is a region name; faults could not tell them apart", name)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.isClosed {
		return nil, ErrNetworkClosed
	}
	if _, dup := n.endpoints[name]; dup {
		return nil, fmt.Errorf("netsim: endpoint %q already exists", name)
	}
	idx := len(n.order)
	if idx >= 1<<17-2 {
		return nil, fmt.Errorf("netsim: endpoint %q: 198.18.0.0/15 exhausted", name)
	}
	base := netip.AddrFrom4([4]byte{198, 18, 0, 0}).As4()
	v := uint32(base[0])<<24 | uint32(base[1])<<16 | uint32(base[2])<<8 | uint32(base[3])
	v += uint32(idx) + 1
	ip := netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
	e := &Endpoint{
		net:       n,
		name:      name,
		region:    region,
		regionIdx: ri,
		index:     idx,
		ip:        ip,
		down:      make(chan struct{}),
		nextPort:  firstEphemeralPort,
	}
	n.endpoints[name] = e
	n.byIP[ip] = e
	n.order = append(n.order, e)
	return e, nil
}

// Endpoint returns the endpoint named name.
func (n *Network) Endpoint(name string) (*Endpoint, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	e, ok := n.endpoints[name]
	return e, ok
}

// Endpoints returns all endpoints in the order they were added.
func (n *Network) Endpoints() []*Endpoint {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]*Endpoint(nil), n.order...)
}

// resolveLocked maps a host (virtual IP or endpoint name) to an endpoint.
func (n *Network) resolveLocked(host string) *Endpoint {
	if ip, err := netip.ParseAddr(host); err == nil {
		return n.byIP[ip.Unmap()]
	}
	return n.endpoints[host]
}

// path is the state of the directed path between two endpoints at one
// instant, before random sampling.
type path struct {
	blocked bool
	oneWay  time.Duration // base one-way latency, latency factor applied
	jitter  time.Duration // ± bound
	loss    float64
	bw      *bwQueue // nil: unlimited
}

// pathLocked evaluates the faults and topology for src→dst.
func (n *Network) pathLocked(src, dst *Endpoint) path {
	if n.isClosed || src.crashed || dst.crashed {
		return path{blocked: true}
	}
	if src == dst {
		return path{} // loopback: immediate, never lost, never cut
	}
	f := &n.faults
	if f.isolated[src.name] || f.isolated[dst.name] {
		return path{blocked: true}
	}
	if f.partition != nil && f.partition[src.region] != f.partition[dst.region] {
		return path{blocked: true}
	}
	keys := [4][2]string{{src.name, dst.name}, {src.name, dst.region}, {src.region, dst.name}, {src.region, dst.region}}
	for _, k := range keys {
		if f.cuts[k] {
			return path{blocked: true}
		}
	}
	link := n.topo.links[src.regionIdx][dst.regionIdx]
	p := path{oneWay: link.OneWay(), loss: link.Loss}
	for _, k := range keys {
		if v, ok := f.latency[k]; ok {
			p.oneWay = time.Duration(float64(p.oneWay) * v)
			break
		}
	}
	for _, k := range keys {
		if v, ok := f.loss[k]; ok {
			p.loss = v
			break
		}
	}
	if link.Jitter > 0 {
		p.jitter = link.Jitter
	} else {
		p.jitter = time.Duration(n.cfg.Jitter * float64(p.oneWay))
	}
	bwSet := false
	for _, k := range keys {
		if q, ok := f.bandwidth[k]; ok {
			p.bw, bwSet = q, true // a nil queue is an explicit "unlimited"
			break
		}
	}
	if !bwSet && link.Bandwidth > 0 {
		rk := [2]int{src.regionIdx, dst.regionIdx}
		q := n.topoBW[rk]
		if q == nil {
			q = &bwQueue{rate: link.Bandwidth}
			n.topoBW[rk] = q
		}
		p.bw = q
	}
	return p
}

// reachableLocked reports whether src→dst is open now.
func (n *Network) reachableLocked(src, dst *Endpoint) bool {
	return !n.pathLocked(src, dst).blocked
}

// rngLocked returns the random source of the directed pair src→dst. Each
// pair has its own stream derived from the seed and both names, so the
// decisions on one pair do not depend on traffic elsewhere.
func (n *Network) rngLocked(src, dst *Endpoint) *rand.Rand {
	k := uint64(src.index)<<32 | uint64(dst.index)
	r := n.rngs[k]
	if r == nil {
		h := fnv.New64a()
		h.Write([]byte(src.name))
		h.Write([]byte{0})
		h.Write([]byte(dst.name))
		r = rand.New(rand.NewPCG(uint64(n.cfg.Seed), h.Sum64()))
		n.rngs[k] = r
	}
	return r
}

// sampleLocked draws the fate of one transmission of size bytes on src→dst
// sent now: whether it is lost (lossy is false for streams, which
// retransmit) and its one-way delay including jitter and serialization.
func (n *Network) sampleLocked(src, dst *Endpoint, p path, size int, now time.Time, lossy bool) (lost bool, delay time.Duration) {
	if src == dst {
		return false, 0
	}
	r := n.rngLocked(src, dst)
	if lossy && p.loss > 0 && r.Float64() < p.loss {
		return true, 0
	}
	delay = p.oneWay
	if p.jitter > 0 {
		delay += time.Duration((2*r.Float64() - 1) * float64(p.jitter))
		if delay < 0 {
			delay = 0
		}
	}
	if p.bw != nil {
		wait, ok := p.bw.reserve(now, size, n.cfg.MaxQueueDelay, lossy)
		if !ok {
			return true, 0
		}
		delay += wait
	}
	return false, delay
}

// bwQueue serializes the traffic of one bandwidth-limited link direction.
type bwQueue struct {
	rate      float64 // bytes per second
	busyUntil time.Time
}

// reserve books size bytes on the link and returns the queueing plus
// transmission delay. A datagram (droppable) that would wait more than
// maxWait is refused, as a full router buffer drops it.
func (q *bwQueue) reserve(now time.Time, size int, maxWait time.Duration, droppable bool) (time.Duration, bool) {
	start := now
	if q.busyUntil.After(now) {
		start = q.busyUntil
	}
	if droppable && start.Sub(now) > maxWait {
		return 0, false
	}
	tx := time.Duration(float64(size) / q.rate * float64(time.Second))
	q.busyUntil = start.Add(tx)
	return q.busyUntil.Sub(now), true
}

// afterFaultLocked resets every stream connection whose path is now blocked
// in either direction and bumps the epoch so datagrams in flight re-check
// their path.
func (n *Network) afterFaultLocked() {
	n.epoch.Add(1)
	for p := range n.conns {
		if !n.reachableLocked(p.a.local, p.a.remote) || !n.reachableLocked(p.a.remote, p.a.local) {
			p.resetLocked(errReset)
			delete(n.conns, p)
		}
	}
}

// waitCtx waits for d, ctx, the network's close or the endpoint's crash,
// whichever comes first; it returns nil when d elapsed.
func (n *Network) wait(ctx context.Context, e *Endpoint, d time.Duration) error {
	n.mu.Lock()
	down := e.down
	n.mu.Unlock()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-n.closed:
		return net.ErrClosed
	case <-down:
		return errNetDown
	}
}

// counters are the network's delivery statistics.
type counters struct {
	sent, delivered, lost, blocked, overflow, noListener atomic.Uint64
	streamBytes                                          atomic.Uint64
	dials, refused                                       atomic.Uint64
}

// Stats counts what the network did with the traffic offered to it.
type Stats struct {
	// DatagramsSent counts datagrams handed to the network.
	DatagramsSent uint64
	// DatagramsDelivered counts datagrams placed in a receiver's queue.
	DatagramsDelivered uint64
	// DatagramsLost counts datagrams dropped by link loss or a full
	// bandwidth-limited link.
	DatagramsLost uint64
	// DatagramsBlocked counts datagrams dropped by a fault (partition, cut,
	// isolation, crash) at send or at delivery.
	DatagramsBlocked uint64
	// DatagramsOverflowed counts datagrams dropped at a full receive queue.
	DatagramsOverflowed uint64
	// DatagramsUnbound counts datagrams that arrived at a port nobody bound.
	DatagramsUnbound uint64
	// StreamBytes counts bytes written to stream connections.
	StreamBytes uint64
	// Dials counts stream dials; DialsRefused those refused.
	Dials, DialsRefused uint64
}

// Stats returns a snapshot of the network's counters.
func (n *Network) Stats() Stats {
	c := &n.stats
	return Stats{
		DatagramsSent:       c.sent.Load(),
		DatagramsDelivered:  c.delivered.Load(),
		DatagramsLost:       c.lost.Load(),
		DatagramsBlocked:    c.blocked.Load(),
		DatagramsOverflowed: c.overflow.Load(),
		DatagramsUnbound:    c.noListener.Load(),
		StreamBytes:         c.streamBytes.Load(),
		Dials:               c.dials.Load(),
		DialsRefused:        c.refused.Load(),
	}
}
