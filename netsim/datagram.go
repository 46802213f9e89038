package netsim

import (
	"container/heap"
	"net"
	"net/netip"
	"time"
)

// datagramSink receives the datagrams addressed to one bound port. The
// network calls its methods with n.mu held; they must not block.
type datagramSink interface {
	// deliverLocked queues one datagram and reports whether there was room.
	deliverLocked(from *net.UDPAddr, payload []byte) bool
	// flushLocked discards the queued datagrams (the host crashed).
	flushLocked()
	// closeLocked unbinds the sink.
	closeLocked()
}

// inflight is a datagram on the wire, delivered at its arrival by the
// network's courier.
type inflight struct {
	n       *Network
	src     *Endpoint
	dst     *Endpoint
	from    *net.UDPAddr
	dstPort int
	data    []byte
	epoch   uint64
	at      time.Time // arrival
	seq     uint64    // send order, which breaks ties between equal arrivals
}

// sendDatagram sends b from (src, from) to address. Like UDP, it never
// blocks and reports no loss: a datagram that is lost, blocked by a fault,
// addressed to a port nobody bound or to a full queue simply disappears.
func (n *Network) sendDatagram(src *Endpoint, from *net.UDPAddr, address string, b []byte) error {
	// Fast path: a literal ip:port, as memberlist and most callers send.
	if ap, err := netip.ParseAddrPort(address); err == nil && ap.Port() != 0 {
		return n.sendDatagramTo(src, from, ap.Addr().Unmap(), "", int(ap.Port()), b)
	}
	host, port, err := splitHostPort(address)
	if err != nil {
		return opError("write", "udp", from, nil, err)
	}
	return n.sendDatagramTo(src, from, netip.Addr{}, host, port, b)
}

// sendDatagramTo sends to ip (or, if ip is invalid, to host) and port.
func (n *Network) sendDatagramTo(src *Endpoint, from *net.UDPAddr, ip netip.Addr, host string, port int, b []byte) error {
	if len(b) > MaxDatagramSize {
		return opError("write", "udp", from, nil, errMsgSize)
	}
	now := time.Now()
	n.mu.Lock()
	if n.isClosed {
		n.mu.Unlock()
		return opError("write", "udp", from, nil, net.ErrClosed)
	}
	if src.crashed {
		n.mu.Unlock()
		return opError("write", "udp", from, nil, errNetDown)
	}
	n.stats.sent.Add(1)
	var dst *Endpoint
	if ip.IsValid() {
		dst = n.byIP[ip]
	} else {
		dst = n.resolveLocked(host)
	}
	if dst == nil {
		n.mu.Unlock()
		n.stats.blocked.Add(1)
		return nil
	}
	p := n.pathLocked(src, dst)
	if p.blocked {
		n.mu.Unlock()
		n.stats.blocked.Add(1)
		return nil
	}
	// 28 bytes of IPv4 and UDP headers count against the bandwidth.
	lost, delay := n.sampleLocked(src, dst, p, len(b)+28, now, true)
	if lost {
		n.mu.Unlock()
		n.stats.lost.Add(1)
		return nil
	}
	d := &inflight{n: n, src: src, dst: dst, from: from, dstPort: port, epoch: n.epoch.Load()}
	if delay <= 0 {
		// Loopback: deliver now, still holding mu.
		d.data = b
		d.deliverLocked()
		n.mu.Unlock()
		return nil
	}
	d.data = make([]byte, len(b))
	copy(d.data, b)
	d.at = now.Add(delay)
	n.courier.pushLocked(n, d)
	n.mu.Unlock()
	return nil
}

func (d *inflight) deliverLocked() {
	n := d.n
	if n.isClosed {
		return
	}
	// A fault that started while the datagram was in flight drops it.
	if n.epoch.Load() != d.epoch && !n.reachableLocked(d.src, d.dst) {
		n.stats.blocked.Add(1)
		return
	}
	sink := d.dst.packets[d.dstPort]
	if sink == nil {
		n.stats.noListener.Add(1)
		return
	}
	data := d.data
	if d.src == d.dst {
		data = append([]byte(nil), data...)
	}
	if !sink.deliverLocked(d.from, data) {
		n.stats.overflow.Add(1)
		return
	}
	n.stats.delivered.Add(1)
}

// datagram is a received datagram.
type datagram struct {
	from *net.UDPAddr
	data []byte
}

// packetConn is a datagram socket; it implements net.PacketConn.
type packetConn struct {
	ep     *Endpoint
	addr   *net.UDPAddr
	queue  chan datagram
	done   chan struct{}
	closed bool // guarded by ep.net.mu
	rd, wd *deadline
}

var _ net.PacketConn = (*packetConn)(nil)

func (pc *packetConn) deliverLocked(from *net.UDPAddr, payload []byte) bool {
	select {
	case pc.queue <- datagram{from: from, data: payload}:
		return true
	default:
		return false
	}
}

func (pc *packetConn) flushLocked() {
	for {
		select {
		case <-pc.queue:
		default:
			return
		}
	}
}

func (pc *packetConn) closeLocked() {
	if pc.closed {
		return
	}
	pc.closed = true
	close(pc.done)
	if pc.ep.packets[pc.addr.Port] == pc {
		delete(pc.ep.packets, pc.addr.Port)
	}
	pc.flushLocked()
}

// ReadFrom waits for the next datagram; like UDP, a datagram longer than b
// is truncated.
func (pc *packetConn) ReadFrom(b []byte) (int, net.Addr, error) {
	if isClosed(pc.rd.wait()) {
		return 0, nil, opError("read", "udp", pc.addr, nil, errTimeout)
	}
	select {
	case d := <-pc.queue:
		return copy(b, d.data), d.from, nil
	case <-pc.done:
		return 0, nil, opError("read", "udp", pc.addr, nil, net.ErrClosed)
	case <-pc.rd.wait():
		return 0, nil, opError("read", "udp", pc.addr, nil, errTimeout)
	}
}

// WriteTo sends b to addr (a *net.UDPAddr or any net.Addr whose String is
// "ip:port" or "name:port"). It never blocks.
func (pc *packetConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	if isClosed(pc.done) {
		return 0, opError("write", "udp", pc.addr, addr, net.ErrClosed)
	}
	if isClosed(pc.wd.wait()) {
		return 0, opError("write", "udp", pc.addr, addr, errTimeout)
	}
	if addr == nil {
		return 0, opError("write", "udp", pc.addr, nil, errNoRoute)
	}
	var err error
	if ua, ok := addr.(*net.UDPAddr); ok && ua.Port > 0 && ua.Port <= 65535 {
		ip, _ := netip.AddrFromSlice(ua.IP)
		err = pc.ep.net.sendDatagramTo(pc.ep, pc.addr, ip.Unmap(), "", ua.Port, b)
	} else {
		err = pc.ep.net.sendDatagram(pc.ep, pc.addr, addr.String(), b)
	}
	if err != nil {
		return 0, err
	}
	return len(b), nil
}

// Close unbinds the socket; a blocked ReadFrom returns net.ErrClosed.
func (pc *packetConn) Close() error {
	n := pc.ep.net
	n.mu.Lock()
	defer n.mu.Unlock()
	if pc.closed {
		return opError("close", "udp", pc.addr, nil, net.ErrClosed)
	}
	pc.closeLocked()
	return nil
}

// LocalAddr returns the bound ip:port as a *net.UDPAddr.
func (pc *packetConn) LocalAddr() net.Addr { return pc.addr }

// SetDeadline sets both deadlines.
func (pc *packetConn) SetDeadline(t time.Time) error {
	pc.rd.set(t)
	pc.wd.set(t)
	return nil
}

// SetReadDeadline sets the read deadline.
func (pc *packetConn) SetReadDeadline(t time.Time) error { pc.rd.set(t); return nil }

// SetWriteDeadline sets the write deadline.
func (pc *packetConn) SetWriteDeadline(t time.Time) error { pc.wd.set(t); return nil }

// courier delivers the datagrams in flight at their arrival times. One
// goroutine per network waits for the earliest arrival, instead of a timer
// and a goroutine per datagram: memberlist sends thousands of datagrams a
// virtual second, and a goroutine started by a synctest bubble's timer for
// each of them cost more CPU than the delivery itself (and, under the race
// detector, they all share the bubble's single timer race context). Arrivals
// at the same instant are delivered in send order, so a seeded run replays.
// Its fields are guarded by Network.mu.
type courier struct {
	queue   inflightHeap
	seq     uint64
	running bool
	wake    chan struct{} // a new earliest arrival; buffered, never closed
}

// pushLocked queues d and starts the courier goroutine on first use, in the
// sender's bubble, so that a network that never carries a delayed datagram
// never starts it.
func (c *courier) pushLocked(n *Network, d *inflight) {
	c.seq++
	d.seq = c.seq
	heap.Push(&c.queue, d)
	if !c.running {
		c.running = true
		c.wake = make(chan struct{}, 1)
		go c.run(n)
		return
	}
	if c.queue[0] == d {
		select {
		case c.wake <- struct{}{}:
		default:
		}
	}
}

// run delivers every due datagram, then sleeps until the next arrival, a new
// earlier one, or the network's close.
func (c *courier) run(n *Network) {
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		n.mu.Lock()
		if n.isClosed {
			clear(c.queue)
			c.queue = c.queue[:0]
			n.mu.Unlock()
			return
		}
		now := time.Now()
		for len(c.queue) > 0 && !c.queue[0].at.After(now) {
			d := heap.Pop(&c.queue).(*inflight)
			d.deliverLocked()
		}
		var next <-chan time.Time
		if len(c.queue) > 0 {
			wait := c.queue[0].at.Sub(now)
			if timer == nil {
				timer = time.NewTimer(wait)
			} else {
				timer.Reset(wait)
			}
			next = timer.C
		}
		n.mu.Unlock()
		select {
		case <-next:
		case <-c.wake:
		case <-n.closed:
		}
	}
}

// inflightHeap orders datagrams by arrival, then by send order.
type inflightHeap []*inflight

func (h inflightHeap) Len() int { return len(h) }
func (h inflightHeap) Less(i, j int) bool {
	if !h[i].at.Equal(h[j].at) {
		return h[i].at.Before(h[j].at)
	}
	return h[i].seq < h[j].seq
}
func (h inflightHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *inflightHeap) Push(x any)   { *h = append(*h, x.(*inflight)) }
func (h *inflightHeap) Pop() any {
	old := *h
	d := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return d
}
