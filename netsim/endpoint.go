package netsim

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"time"
)

const (
	firstEphemeralPort = 49152
	listenBacklog      = 128
)

// Endpoint is one node's attachment to the network: a virtual IPv4 address
// in a region, with stream listeners and datagram sockets bound to ports.
// Nothing here opens a real socket. Methods are safe for concurrent use.
type Endpoint struct {
	net       *Network
	name      string
	region    string
	regionIdx int
	index     int
	ip        netip.Addr

	// Guarded by net.mu.
	crashed   bool
	down      chan struct{} // closed while crashed, so dials from it stop
	listeners map[int]*listener
	packets   map[int]datagramSink
	nextPort  int
}

// Name returns the endpoint's unique name.
func (e *Endpoint) Name() string { return e.name }

// Region returns the region the endpoint is placed in.
func (e *Endpoint) Region() string { return e.region }

// IP returns the endpoint's virtual IPv4 address, from 198.18.0.0/15.
func (e *Endpoint) IP() net.IP { return net.IP(e.ip.AsSlice()) }

// Addr returns the endpoint's virtual IPv4 address.
func (e *Endpoint) Addr() netip.Addr { return e.ip }

// Network returns the network the endpoint belongs to.
func (e *Endpoint) Network() *Network { return e.net }

// Crashed reports whether the endpoint is crashed (see Network.Crash).
func (e *Endpoint) Crashed() bool {
	e.net.mu.Lock()
	defer e.net.mu.Unlock()
	return e.crashed
}

// String returns "name@region/ip".
func (e *Endpoint) String() string { return e.name + "@" + e.region + "/" + e.ip.String() }

// Listen binds a stream listener to port (0 picks a free ephemeral port).
// Its Addr is ip:port. Closing it resets the connections not yet accepted.
func (e *Endpoint) Listen(port int) (net.Listener, error) {
	return e.listen(port)
}

func (e *Endpoint) listen(port int) (*listener, error) {
	n := e.net
	n.mu.Lock()
	defer n.mu.Unlock()
	addr := &net.TCPAddr{IP: e.IP(), Port: port}
	if n.isClosed {
		return nil, opError("listen", "tcp", nil, addr, net.ErrClosed)
	}
	if port < 0 || port > 65535 {
		return nil, opError("listen", "tcp", nil, addr, errInvalidPort)
	}
	if e.listeners == nil {
		e.listeners = map[int]*listener{}
	}
	if port == 0 {
		port = e.ephemeralPortLocked(func(p int) bool { return e.listeners[p] != nil })
		addr.Port = port
	} else if e.listeners[port] != nil {
		return nil, opError("listen", "tcp", nil, addr, errAddrInUse)
	}
	l := &listener{
		ep:     e,
		addr:   addr,
		accept: make(chan net.Conn, listenBacklog),
		done:   make(chan struct{}),
	}
	e.listeners[port] = l
	return l, nil
}

// ListenPacket binds a datagram socket to port (0 picks a free ephemeral
// port). Datagrams arriving while its queue is full are dropped.
func (e *Endpoint) ListenPacket(port int) (net.PacketConn, error) {
	n := e.net
	addr := &net.UDPAddr{IP: e.IP(), Port: port}
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := e.bindPacketLocked(addr); err != nil {
		return nil, err
	}
	pc := &packetConn{
		ep:    e,
		addr:  addr,
		queue: make(chan datagram, n.cfg.DatagramQueue),
		done:  make(chan struct{}),
		rd:    newDeadline(),
		wd:    newDeadline(),
	}
	e.packets[addr.Port] = pc
	return pc, nil
}

// bindPacketLocked validates and, for port 0, assigns addr.Port; the caller
// then stores its sink in e.packets.
func (e *Endpoint) bindPacketLocked(addr *net.UDPAddr) error {
	n := e.net
	if n.isClosed {
		return opError("listen", "udp", nil, addr, net.ErrClosed)
	}
	if addr.Port < 0 || addr.Port > 65535 {
		return opError("listen", "udp", nil, addr, errInvalidPort)
	}
	if e.packets == nil {
		e.packets = map[int]datagramSink{}
	}
	if addr.Port == 0 {
		addr.Port = e.ephemeralPortLocked(func(p int) bool { return e.packets[p] != nil })
	} else if e.packets[addr.Port] != nil {
		return opError("listen", "udp", nil, addr, errAddrInUse)
	}
	return nil
}

// ephemeralPortLocked returns the next port of the ephemeral range that used
// does not reject.
func (e *Endpoint) ephemeralPortLocked(used func(int) bool) int {
	for range 65536 - firstEphemeralPort {
		p := e.nextPort
		e.nextPort++
		if e.nextPort > 65535 {
			e.nextPort = firstEphemeralPort
		}
		if used == nil || !used(p) {
			return p
		}
	}
	return 0
}

// closeSocketsLocked closes every listener and datagram socket of e.
func (e *Endpoint) closeSocketsLocked() {
	for _, l := range e.listeners {
		l.closeLocked()
	}
	for _, s := range e.packets {
		s.closeLocked()
	}
	clear(e.packets)
}

// Dial opens a stream connection to address ("ip:port", or "name:port" with
// an endpoint name). It takes one round trip of virtual time. A port nobody
// listens on is refused after one round trip (syscall.ECONNREFUSED). A
// destination behind a cut, partition, isolation or crash is a black hole:
// the SYN is retransmitted after 1 s, 2 s, 4 s... and the dial connects if the
// fault ends meanwhile, or times out at ctx's deadline or after
// Config.ConnectTimeout. An address no endpoint has fails at once with
// syscall.EHOSTUNREACH.
func (e *Endpoint) Dial(ctx context.Context, address string) (net.Conn, error) {
	return e.dial(ctx, address)
}

// DialTimeout is Dial with a timeout; 0 means no timeout beyond
// Config.ConnectTimeout for black holes.
func (e *Endpoint) DialTimeout(address string, timeout time.Duration) (net.Conn, error) {
	ctx := context.Background()
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	return e.dial(ctx, address)
}

// synSize is the size of a TCP handshake segment, for bandwidth accounting.
const synSize = 60

func (e *Endpoint) dial(ctx context.Context, address string) (net.Conn, error) {
	n := e.net
	host, port, err := splitHostPort(address)
	if err != nil {
		return nil, opError("dial", "tcp", nil, nil, err)
	}
	n.mu.Lock()
	if n.isClosed {
		n.mu.Unlock()
		return nil, opError("dial", "tcp", nil, nil, net.ErrClosed)
	}
	laddr := &net.TCPAddr{IP: e.IP()}
	if e.crashed {
		n.mu.Unlock()
		return nil, opError("dial", "tcp", laddr, nil, errNetDown)
	}
	dst := n.resolveLocked(host)
	if dst == nil {
		n.mu.Unlock()
		return nil, opError("dial", "tcp", laddr, &net.TCPAddr{IP: net.ParseIP(host), Port: port}, errNoRoute)
	}
	laddr.Port = e.ephemeralPortLocked(nil)
	raddr := &net.TCPAddr{IP: dst.IP(), Port: port}
	n.stats.dials.Add(1)
	rtt, blocked := n.handshakeLocked(e, dst)
	n.mu.Unlock()

	// A SYN into a black hole is lost; like a kernel, retransmit it after
	// 1 s, 2 s, 4 s... (Linux: initial RTO 1 s, doubling) until
	// Config.ConnectTimeout, and connect if the path opened meanwhile.
	giveUp := time.Now().Add(n.cfg.ConnectTimeout)
	for rto := time.Second; blocked; rto *= 2 {
		wait := min(rto, time.Until(giveUp))
		if wait <= 0 {
			return nil, opError("dial", "tcp", laddr, raddr, errTimeout)
		}
		if err := n.wait(ctx, e, wait); err != nil {
			if errors.Is(err, context.DeadlineExceeded) {
				err = errTimeout
			}
			return nil, opError("dial", "tcp", laddr, raddr, err)
		}
		n.mu.Lock()
		rtt, blocked = n.handshakeLocked(e, dst)
		n.mu.Unlock()
	}
	if err := n.wait(ctx, e, rtt); err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			err = errTimeout
		}
		return nil, opError("dial", "tcp", laddr, raddr, err)
	}

	n.mu.Lock()
	defer n.mu.Unlock()
	switch {
	case n.isClosed:
		return nil, opError("dial", "tcp", laddr, raddr, net.ErrClosed)
	case e.crashed:
		return nil, opError("dial", "tcp", laddr, raddr, errNetDown)
	case !n.reachableLocked(e, dst) || !n.reachableLocked(dst, e):
		// A fault struck during the handshake.
		return nil, opError("dial", "tcp", laddr, raddr, errNoRoute)
	}
	l := dst.listeners[port]
	if l == nil || l.closed || len(l.accept) == cap(l.accept) {
		n.stats.refused.Add(1)
		return nil, opError("dial", "tcp", laddr, raddr, errRefused)
	}
	p := n.newConnPairLocked(e, dst, laddr, raddr)
	l.accept <- p.b // never blocks: checked for room under mu
	return p.a, nil
}

// handshakeLocked draws the round trip of a SYN and its answer between e
// and dst, or reports that one of the two is blocked.
func (n *Network) handshakeLocked(e, dst *Endpoint) (rtt time.Duration, blocked bool) {
	fwd, back := n.pathLocked(e, dst), n.pathLocked(dst, e)
	if fwd.blocked || back.blocked {
		return 0, true
	}
	now := time.Now()
	_, d1 := n.sampleLocked(e, dst, fwd, synSize, now, false)
	_, d2 := n.sampleLocked(dst, e, back, synSize, now, false)
	return d1 + d2, false
}

// splitHostPort parses "host:port" with a numeric port in 1..65535.
func splitHostPort(address string) (string, int, error) {
	host, ps, err := net.SplitHostPort(address)
	if err != nil {
		return "", 0, fmt.Errorf("address %q: %w", address, err)
	}
	port, err := strconv.Atoi(ps)
	if err != nil || port < 1 || port > 65535 {
		return "", 0, fmt.Errorf("address %q: port %q is not in 1..65535", address, ps)
	}
	if host == "" {
		return "", 0, fmt.Errorf("address %q: empty host", address)
	}
	return host, port, nil
}

// listener is a stream listener of an endpoint.
type listener struct {
	ep     *Endpoint
	addr   *net.TCPAddr
	accept chan net.Conn // accepted-but-not-taken connections (the backlog)
	done   chan struct{}
	closed bool // guarded by ep.net.mu
}

// Accept waits for the next connection.
func (l *listener) Accept() (net.Conn, error) {
	select {
	case c := <-l.accept:
		return c, nil
	case <-l.done:
		// A connection queued just before Close was reset by Close.
		return nil, opError("accept", "tcp", nil, l.addr, net.ErrClosed)
	}
}

// Close stops the listener and resets the connections in its backlog.
func (l *listener) Close() error {
	n := l.ep.net
	n.mu.Lock()
	defer n.mu.Unlock()
	if l.closed {
		return opError("close", "tcp", nil, l.addr, net.ErrClosed)
	}
	l.closeLocked()
	return nil
}

// Addr returns the listener's ip:port as a *net.TCPAddr.
func (l *listener) Addr() net.Addr { return l.addr }

func (l *listener) closeLocked() {
	if l.closed {
		return
	}
	l.closed = true
	close(l.done)
	if l.ep.listeners[l.addr.Port] == l {
		delete(l.ep.listeners, l.addr.Port)
	}
	for {
		select {
		case c := <-l.accept:
			p := c.(*conn).pair
			p.resetLocked(errReset)
			delete(l.ep.net.conns, p)
		default:
			return
		}
	}
}
