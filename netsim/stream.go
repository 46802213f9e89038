package netsim

import (
	"io"
	"net"
	"sync"
	"time"
)

// A stream connection is two pipes, one per direction. A write appends a
// chunk stamped with its arrival time (send time + one-way delay, never
// earlier than the chunk before it, so byte order holds); a read takes the
// chunks whose arrival time has passed and otherwise waits on a timer for
// the first one. Delivery is therefore lazy: no goroutine per connection or
// per chunk. Each pipe holds at most Config.StreamWindow bytes in flight or
// unread; a writer waits on a channel for room (flow control).

// connPair is one stream connection; a is the dialer's end, b the acceptor's.
type connPair struct {
	n    *Network
	a, b *conn
}

// resetLocked aborts the connection at both ends at once (a crash, a fault,
// a network close): pending data is discarded and every operation fails with
// err. The caller holds n.mu and removes p from n.conns.
func (p *connPair) resetLocked(err error) {
	p.a.out.reset(err)
	p.b.out.reset(err)
}

func (n *Network) newConnPairLocked(client, server *Endpoint, caddr, saddr *net.TCPAddr) *connPair {
	ab, ba := newPipe(n.cfg.StreamWindow), newPipe(n.cfg.StreamWindow)
	p := &connPair{n: n}
	p.a = newConn(p, client, server, caddr, saddr, ba, ab)
	p.b = newConn(p, server, client, saddr, caddr, ab, ba)
	n.conns[p] = struct{}{}
	return p
}

// conn is one end of a stream connection; it implements net.Conn.
type conn struct {
	pair          *connPair
	local, remote *Endpoint
	laddr, raddr  *net.TCPAddr
	in, out       *pipe

	writeLock chan struct{} // one writer at a time, so each Write stays contiguous
	closed    chan struct{}
	closeOnce sync.Once
	rd, wd    *deadline
}

func newConn(p *connPair, local, remote *Endpoint, laddr, raddr *net.TCPAddr, in, out *pipe) *conn {
	return &conn{
		pair: p, local: local, remote: remote, laddr: laddr, raddr: raddr, in: in, out: out,
		writeLock: make(chan struct{}, 1),
		closed:    make(chan struct{}),
		rd:        newDeadline(),
		wd:        newDeadline(),
	}
}

var _ net.Conn = (*conn)(nil)

// LocalAddr returns the local ip:port.
func (c *conn) LocalAddr() net.Addr { return c.laddr }

// RemoteAddr returns the remote ip:port.
func (c *conn) RemoteAddr() net.Addr { return c.raddr }

// SetDeadline sets both deadlines.
func (c *conn) SetDeadline(t time.Time) error {
	if err := c.checkOpen("set deadline"); err != nil {
		return err
	}
	c.rd.set(t)
	c.wd.set(t)
	return nil
}

// SetReadDeadline sets the read deadline.
func (c *conn) SetReadDeadline(t time.Time) error {
	if err := c.checkOpen("set read deadline"); err != nil {
		return err
	}
	c.rd.set(t)
	return nil
}

// SetWriteDeadline sets the write deadline.
func (c *conn) SetWriteDeadline(t time.Time) error {
	if err := c.checkOpen("set write deadline"); err != nil {
		return err
	}
	c.wd.set(t)
	return nil
}

func (c *conn) checkOpen(op string) error {
	select {
	case <-c.closed:
		return c.opErr(op, net.ErrClosed)
	default:
		return nil
	}
}

func (c *conn) opErr(op string, err error) error {
	return opError(op, "tcp", c.laddr, c.raddr, err)
}

// Read reads the data that has arrived, waiting for the next arrival.
func (c *conn) Read(b []byte) (int, error) {
	if err := c.checkOpen("read"); err != nil {
		return 0, err
	}
	if isClosed(c.rd.wait()) {
		return 0, c.opErr("read", errTimeout) // as net.Conn: a past deadline fails even with data
	}
	if len(b) == 0 {
		return 0, nil
	}
	p := c.in
	for {
		p.mu.Lock()
		if p.err != nil {
			err := p.err
			p.mu.Unlock()
			return 0, c.opErr("read", err)
		}
		now := time.Now()
		if n := p.takeLocked(b, now); n > 0 {
			p.mu.Unlock()
			return n, nil
		}
		wait := time.Duration(-1)
		switch {
		case len(p.chunks) > 0:
			wait = p.chunks[0].at.Sub(now)
		case p.eof && !p.eofAt.After(now):
			p.mu.Unlock()
			return 0, io.EOF
		case p.eof:
			wait = p.eofAt.Sub(now)
		}
		wake := p.readWakeLocked()
		p.mu.Unlock()

		var arrival <-chan time.Time
		var t *time.Timer
		if wait >= 0 {
			t = time.NewTimer(wait)
			arrival = t.C
		}
		select {
		case <-wake:
		case <-arrival:
		case <-c.rd.wait():
			stopTimer(t)
			return 0, c.opErr("read", errTimeout)
		case <-c.closed:
			stopTimer(t)
			return 0, c.opErr("read", net.ErrClosed)
		}
		stopTimer(t)
	}
}

func stopTimer(t *time.Timer) {
	if t != nil {
		t.Stop()
	}
}

// Write sends b. It blocks only while the window is full.
func (c *conn) Write(b []byte) (int, error) {
	if isClosed(c.wd.wait()) {
		return 0, c.opErr("write", errTimeout)
	}
	select {
	case c.writeLock <- struct{}{}:
	case <-c.closed:
		return 0, c.opErr("write", net.ErrClosed)
	case <-c.wd.wait():
		return 0, c.opErr("write", errTimeout)
	}
	defer func() { <-c.writeLock }()

	n := c.pair.n
	p := c.out
	written := 0
	for written < len(b) || len(b) == 0 {
		p.mu.Lock()
		if err := p.writeErrLocked(); err != nil {
			p.mu.Unlock()
			return written, c.opErr("write", err)
		}
		if p.peerGone {
			// The peer closed: the data is discarded, and once its RST
			// is back the writer learns of it.
			resetAt := p.peerGoneAt
			p.mu.Unlock()
			if !time.Now().Before(resetAt) {
				return written, c.opErr("write", errBrokenPipe)
			}
			return len(b), nil
		}
		if len(b) == 0 {
			p.mu.Unlock()
			return 0, nil
		}
		room := p.window - p.buffered
		if room <= 0 {
			wake := p.spaceWakeLocked()
			p.mu.Unlock()
			select {
			case <-wake:
				continue
			case <-c.closed:
				return written, c.opErr("write", net.ErrClosed)
			case <-c.wd.wait():
				return written, c.opErr("write", errTimeout)
			}
		}
		p.mu.Unlock()
		k := min(room, len(b)-written)

		// Only this writer adds to p, so the room cannot shrink meanwhile.
		now := time.Now()
		n.mu.Lock()
		path := n.pathLocked(c.local, c.remote)
		var delay time.Duration
		if !path.blocked {
			_, delay = n.sampleLocked(c.local, c.remote, path, k, now, false)
		}
		p.mu.Lock()
		n.mu.Unlock()
		if path.blocked && p.err == nil {
			// Faults reset crossing connections when they start; a
			// blocked path here means the reset is already done.
			p.err = errReset
		}
		if err := p.writeErrLocked(); err != nil {
			p.mu.Unlock()
			return written, c.opErr("write", err)
		}
		data := make([]byte, k)
		copy(data, b[written:written+k])
		p.pushLocked(data, now.Add(delay))
		p.mu.Unlock()
		n.stats.streamBytes.Add(uint64(k))
		written += k
	}
	return written, nil
}

// Close closes this end: the peer reads the remaining data and then io.EOF
// after the one-way delay; data still arriving here is discarded.
func (c *conn) Close() error {
	first := false
	c.closeOnce.Do(func() {
		first = true
		close(c.closed)
	})
	if !first {
		return c.opErr("close", net.ErrClosed)
	}
	c.finish(true)
	return nil
}

// CloseWrite shuts down the writing side, like (*net.TCPConn).CloseWrite:
// the peer reads io.EOF after the data already written.
func (c *conn) CloseWrite() error {
	if err := c.checkOpen("close write"); err != nil {
		return err
	}
	c.finish(false)
	return nil
}

// finish sends the FIN and, when closing both ways, drops what arrives.
func (c *conn) finish(both bool) {
	n := c.pair.n
	now := time.Now()
	n.mu.Lock()
	defer n.mu.Unlock()
	fwd := n.pathLocked(c.local, c.remote)
	var delay time.Duration
	if !fwd.blocked {
		_, delay = n.sampleLocked(c.local, c.remote, fwd, 0, now, false)
	}
	c.out.mu.Lock()
	c.out.finLocked(now.Add(delay))
	c.out.mu.Unlock()
	if !both {
		return
	}
	back := n.pathLocked(c.remote, c.local)
	var rst time.Duration
	if !back.blocked {
		rst = back.oneWay
	}
	c.in.mu.Lock()
	c.in.readerClosedLocked(now.Add(delay + rst))
	done := c.in.finishedLocked()
	c.in.mu.Unlock()
	select {
	case <-c.peer().closed:
		done = true
	default:
	}
	if done {
		delete(n.conns, c.pair)
	}
}

func (c *conn) peer() *conn {
	if c == c.pair.a {
		return c.pair.b
	}
	return c.pair.a
}

// chunk is a piece of one write, readable from at on.
type chunk struct {
	data []byte
	at   time.Time
}

// pipe is one direction of a stream connection.
type pipe struct {
	mu       sync.Mutex
	window   int
	chunks   []chunk
	buffered int       // bytes in flight or unread
	lastAt   time.Time // arrival of the newest chunk: later chunks never overtake it
	eof      bool      // the writer sent its FIN
	eofAt    time.Time
	peerGone bool // the reader closed: writes are discarded, then refused
	// peerGoneAt is when the reader's RST reaches the writer.
	peerGoneAt time.Time
	err        error         // set by a reset: every operation fails with it
	readWake   chan struct{} // closed (and dropped) to wake waiting readers
	spaceWake  chan struct{} // closed (and dropped) to wake waiting writers
}

func newPipe(window int) *pipe { return &pipe{window: window} }

func (p *pipe) readWakeLocked() chan struct{} {
	if p.readWake == nil {
		p.readWake = make(chan struct{})
	}
	return p.readWake
}

func (p *pipe) spaceWakeLocked() chan struct{} {
	if p.spaceWake == nil {
		p.spaceWake = make(chan struct{})
	}
	return p.spaceWake
}

func (p *pipe) wakeReadersLocked() {
	if p.readWake != nil {
		close(p.readWake)
		p.readWake = nil
	}
}

func (p *pipe) wakeWritersLocked() {
	if p.spaceWake != nil {
		close(p.spaceWake)
		p.spaceWake = nil
	}
}

func (p *pipe) writeErrLocked() error {
	if p.err != nil {
		return p.err
	}
	if p.eof {
		return net.ErrClosed
	}
	return nil
}

// pushLocked appends a chunk arriving at at, or later to keep byte order.
func (p *pipe) pushLocked(data []byte, at time.Time) {
	if at.Before(p.lastAt) {
		at = p.lastAt
	}
	p.lastAt = at
	p.chunks = append(p.chunks, chunk{data: data, at: at})
	p.buffered += len(data)
	p.wakeReadersLocked()
}

// takeLocked copies into b the data that has arrived by now.
func (p *pipe) takeLocked(b []byte, now time.Time) int {
	n := 0
	for len(p.chunks) > 0 && n < len(b) && !p.chunks[0].at.After(now) {
		c := &p.chunks[0]
		k := copy(b[n:], c.data)
		n += k
		c.data = c.data[k:]
		if len(c.data) == 0 {
			p.chunks[0] = chunk{}
			p.chunks = p.chunks[1:]
		}
	}
	if len(p.chunks) == 0 {
		p.chunks = nil // let the backing array go
	}
	if n > 0 {
		p.buffered -= n
		p.wakeWritersLocked()
	}
	return n
}

func (p *pipe) finLocked(at time.Time) {
	if p.eof || p.err != nil {
		return
	}
	if at.Before(p.lastAt) {
		at = p.lastAt
	}
	p.eof, p.eofAt = true, at
	p.wakeReadersLocked()
	p.wakeWritersLocked()
}

func (p *pipe) readerClosedLocked(resetAt time.Time) {
	if p.peerGone {
		return
	}
	p.peerGone, p.peerGoneAt = true, resetAt
	p.chunks, p.buffered = nil, 0
	p.wakeWritersLocked()
}

// finishedLocked reports whether the writer side is done too.
func (p *pipe) finishedLocked() bool { return p.eof || p.err != nil }

func (p *pipe) reset(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.err == nil {
		p.err = err
	}
	p.chunks, p.buffered = nil, 0
	p.wakeReadersLocked()
	p.wakeWritersLocked()
}

// deadline is a settable point in time whose wait channel is closed when it
// passes, so it can be selected on beside other channels.
type deadline struct {
	mu    sync.Mutex
	timer *time.Timer
	ch    chan struct{}
}

func newDeadline() *deadline { return &deadline{ch: make(chan struct{})} }

func (d *deadline) set(t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.timer != nil {
		if !d.timer.Stop() {
			// The timer's func owns (has closed or will close) d.ch.
			d.ch = make(chan struct{})
		}
		d.timer = nil
	}
	expired := isClosed(d.ch)
	if t.IsZero() {
		if expired {
			d.ch = make(chan struct{})
		}
		return
	}
	dur := time.Until(t)
	if dur <= 0 {
		if !expired {
			close(d.ch)
		}
		return
	}
	if expired {
		d.ch = make(chan struct{})
	}
	ch := d.ch
	d.timer = time.AfterFunc(dur, func() { close(ch) })
}

func (d *deadline) wait() <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.ch
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}
