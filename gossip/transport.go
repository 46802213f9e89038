package gossip

import (
	"net"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// meteredTransport counts what memberlist sends: packets (probes, acks,
// gossip) and both directions of the streams this node opens (push/pull,
// joins, TCP fallback probes). Streams opened by peers are counted by the
// peer that opened them, so summing over all nodes counts every byte once.
type meteredTransport struct {
	memberlist.NodeAwareTransport
	packets, packetBytes atomic.Uint64
	streamOut, streamIn  atomic.Uint64
	streams              atomic.Uint64
}

var _ memberlist.NodeAwareTransport = (*meteredTransport)(nil)

func (t *meteredTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	t.packets.Add(1)
	t.packetBytes.Add(uint64(len(b)))
	return t.NodeAwareTransport.WriteTo(b, addr)
}

func (t *meteredTransport) WriteToAddress(b []byte, addr memberlist.Address) (time.Time, error) {
	t.packets.Add(1)
	t.packetBytes.Add(uint64(len(b)))
	return t.NodeAwareTransport.WriteToAddress(b, addr)
}

func (t *meteredTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	c, err := t.NodeAwareTransport.DialTimeout(addr, timeout)
	return t.wrap(c, err)
}

func (t *meteredTransport) DialAddressTimeout(addr memberlist.Address, timeout time.Duration) (net.Conn, error) {
	c, err := t.NodeAwareTransport.DialAddressTimeout(addr, timeout)
	return t.wrap(c, err)
}

func (t *meteredTransport) wrap(c net.Conn, err error) (net.Conn, error) {
	if err != nil {
		return nil, err
	}
	t.streams.Add(1)
	return &meteredConn{Conn: c, t: t}, nil
}

type meteredConn struct {
	net.Conn
	t *meteredTransport
}

func (c *meteredConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.t.streamIn.Add(uint64(n))
	return n, err
}

func (c *meteredConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	c.t.streamOut.Add(uint64(n))
	return n, err
}
