package consensus

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// Raft and the forwarding RPC share one listener, as Consul's and Nomad's
// servers share their RPC port: the dialer writes one byte naming the
// protocol when it opens a connection, and the accepting side hands the
// connection to Raft's transport or to the RPC server by that byte.
const (
	connRaft byte = 'R'
	connRPC  byte = 'M'
)

// firstByteTimeout bounds how long an accepted connection may take to say
// which protocol it speaks.
const firstByteTimeout = 10 * time.Second

var errMuxClosed = errors.New("connection multiplexer closed")

// mux splits a raft.StreamLayer into a stream layer for Raft and a
// connection handler for the RPC. It owns every connection it accepts or
// dials, and closes them all on close, so that no goroutine is left
// blocked on a connection of a closed server.
type mux struct {
	under  raft.StreamLayer
	logger *slog.Logger
	serve  func(net.Conn) // serves one RPC connection until it closes

	raftCh chan net.Conn
	done   chan struct{}
	wg     sync.WaitGroup

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
}

func newMux(under raft.StreamLayer, logger *slog.Logger, serve func(net.Conn)) *mux {
	m := &mux{
		under:  under,
		logger: logger,
		serve:  serve,
		raftCh: make(chan net.Conn),
		done:   make(chan struct{}),
		conns:  make(map[net.Conn]struct{}),
	}
	m.wg.Add(1)
	go m.acceptLoop()
	return m
}

// track registers a connection; it returns false (and closes it) when the
// mux is already closed.
func (m *mux) track(c net.Conn) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		c.Close()
		return false
	}
	m.conns[c] = struct{}{}
	return true
}

func (m *mux) untrack(c net.Conn) {
	m.mu.Lock()
	delete(m.conns, c)
	m.mu.Unlock()
}

func (m *mux) acceptLoop() {
	defer m.wg.Done()
	backoff := 5 * time.Millisecond
	for {
		c, err := m.under.Accept()
		if err != nil {
			select {
			case <-m.done:
				return
			default:
			}
			m.logger.Warn("accept failed", "err", err, "retry_in", backoff)
			t := time.NewTimer(backoff)
			select {
			case <-m.done:
				t.Stop()
				return
			case <-t.C:
			}
			backoff = min(2*backoff, time.Second)
			continue
		}
		backoff = 5 * time.Millisecond
		tc := &trackedConn{Conn: c, m: m}
		if !m.track(tc) {
			return
		}
		m.wg.Add(1)
		go m.dispatch(tc)
	}
}

func (m *mux) dispatch(c net.Conn) {
	defer m.wg.Done()
	var b [1]byte
	c.SetReadDeadline(time.Now().Add(firstByteTimeout))
	if _, err := c.Read(b[:]); err != nil {
		c.Close()
		return
	}
	c.SetReadDeadline(time.Time{})
	switch b[0] {
	case connRaft:
		select {
		case m.raftCh <- c:
		case <-m.done:
			c.Close()
		}
	case connRPC:
		m.serve(c)
		c.Close()
	default:
		m.logger.Warn("closing connection of unknown protocol", "remote", c.RemoteAddr().String(), "first_byte", b[0])
		c.Close()
	}
}

// dial opens a connection to a server and names the protocol.
func (m *mux) dial(address string, proto byte, timeout time.Duration) (net.Conn, error) {
	c, err := m.under.Dial(raft.ServerAddress(address), timeout)
	if err != nil {
		return nil, err
	}
	tc := &trackedConn{Conn: c, m: m}
	if !m.track(tc) {
		return nil, errMuxClosed
	}
	if timeout > 0 {
		tc.SetWriteDeadline(time.Now().Add(timeout))
	}
	if _, err := tc.Write([]byte{proto}); err != nil {
		tc.Close()
		return nil, fmt.Errorf("write protocol byte to %s: %w", address, err)
	}
	tc.SetWriteDeadline(time.Time{})
	return tc, nil
}

// close stops accepting, closes every connection, and waits for the
// accept loop and the RPC handlers to end.
func (m *mux) close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	close(m.done)
	conns := make([]net.Conn, 0, len(m.conns))
	for c := range m.conns {
		conns = append(conns, c)
	}
	m.conns = nil
	m.mu.Unlock()
	err := m.under.Close()
	for _, c := range conns {
		c.Close()
	}
	m.wg.Wait()
	return err
}

// raftLayer returns the stream layer Raft's NetworkTransport runs on.
func (m *mux) raftLayer() raft.StreamLayer { return (*raftStream)(m) }

type raftStream mux

var _ raft.StreamLayer = (*raftStream)(nil)

// Accept implements net.Listener for Raft's transport.
func (r *raftStream) Accept() (net.Conn, error) {
	select {
	case c := <-r.raftCh:
		return c, nil
	case <-r.done:
		return nil, errMuxClosed
	}
}

// Close is called by the transport's Close; the server closes the mux
// itself afterwards, so this only stops the transport's accept loop.
func (r *raftStream) Close() error { return nil }

// Addr implements net.Listener.
func (r *raftStream) Addr() net.Addr { return r.under.Addr() }

// Dial implements raft.StreamLayer: it names the Raft protocol.
func (r *raftStream) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	return (*mux)(r).dial(string(address), connRaft, timeout)
}

// trackedConn removes itself from the mux when closed.
type trackedConn struct {
	net.Conn
	m    *mux
	once sync.Once
}

// Close closes the connection and forgets it.
func (c *trackedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.m.untrack(c) })
	return err
}
