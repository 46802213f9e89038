package netsim

import (
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// MemberlistTransport carries one memberlist node's traffic over netsim:
// its packets (memberlist's UDP) as datagrams and its streams (TCP push/pull,
// fallback probes) as stream connections, both bound to one port of one
// endpoint.
//
// Use it as:
//
//	tr, err := netsim.NewMemberlistTransport(ep, 7946)
//	conf.Transport = tr
//	conf.BindAddr, conf.AdvertiseAddr = ep.IP().String(), ep.IP().String()
//	conf.BindPort, conf.AdvertisePort = 7946, 7946
//
// Packets carry their delivery time as Timestamp, so memberlist's ping RTTs
// measure the simulated path. A packet arriving while PacketCh holds
// Config.DatagramQueue unread packets is dropped, as a full UDP socket
// buffer drops it.
type MemberlistTransport struct {
	ep       *Endpoint
	addr     *net.UDPAddr
	ln       *listener
	packetCh chan *memberlist.Packet

	mu     sync.Mutex // guards closed; Shutdown may race with itself
	closed bool
}

var _ memberlist.NodeAwareTransport = (*MemberlistTransport)(nil)

// NewMemberlistTransport binds port (both the stream and datagram port) on e.
func NewMemberlistTransport(e *Endpoint, port int) (*MemberlistTransport, error) {
	if port <= 0 || port > 65535 {
		return nil, fmt.Errorf("netsim: memberlist transport port %d: want 1..65535", port)
	}
	ln, err := e.listen(port)
	if err != nil {
		return nil, fmt.Errorf("netsim: memberlist transport: %w", err)
	}
	n := e.net
	t := &MemberlistTransport{
		ep:       e,
		addr:     &net.UDPAddr{IP: e.IP(), Port: port},
		ln:       ln,
		packetCh: make(chan *memberlist.Packet, n.cfg.DatagramQueue),
	}
	n.mu.Lock()
	err = e.bindPacketLocked(t.addr)
	if err == nil {
		e.packets[port] = (*memberlistSink)(t)
	}
	n.mu.Unlock()
	if err != nil {
		_ = ln.Close()
		return nil, fmt.Errorf("netsim: memberlist transport: %w", err)
	}
	return t, nil
}

// FinalAdvertiseAddr returns the endpoint's IP and the transport's port. A
// non-empty ip or non-zero port that differ from them is an error, since
// no other address reaches this transport.
func (t *MemberlistTransport) FinalAdvertiseAddr(ip string, port int) (net.IP, int, error) {
	if ip != "" && ip != "0.0.0.0" && !net.ParseIP(ip).Equal(t.addr.IP) {
		return nil, 0, fmt.Errorf("netsim: memberlist AdvertiseAddr %q: the endpoint's address is %s", ip, t.addr.IP)
	}
	if port != 0 && port != t.addr.Port {
		return nil, 0, fmt.Errorf("netsim: memberlist AdvertisePort %d: the transport is bound to %d", port, t.addr.Port)
	}
	return t.addr.IP, t.addr.Port, nil
}

// WriteTo sends a packet to addr ("ip:port") and returns the send time.
func (t *MemberlistTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	now := time.Now()
	if err := t.ep.net.sendDatagram(t.ep, t.addr, addr, b); err != nil {
		return time.Time{}, err
	}
	return now, nil
}

// WriteToAddress sends a packet to a.Addr.
func (t *MemberlistTransport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	return t.WriteTo(b, a.Addr)
}

// PacketCh returns the channel of received packets. It is never closed:
// memberlist stops reading it through its own shutdown channel.
func (t *MemberlistTransport) PacketCh() <-chan *memberlist.Packet { return t.packetCh }

// DialTimeout opens a stream connection to addr.
func (t *MemberlistTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	return t.ep.DialTimeout(addr, timeout)
}

// DialAddressTimeout opens a stream connection to a.Addr.
func (t *MemberlistTransport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	return t.ep.DialTimeout(a.Addr, timeout)
}

// StreamCh returns the channel of accepted stream connections. It is never
// closed (see PacketCh).
func (t *MemberlistTransport) StreamCh() <-chan net.Conn { return t.ln.accept }

// Shutdown unbinds the port: connections not yet taken from StreamCh are
// reset and no more packets are queued. It is idempotent.
func (t *MemberlistTransport) Shutdown() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil
	}
	t.closed = true
	n := t.ep.net
	n.mu.Lock()
	defer n.mu.Unlock()
	t.ln.closeLocked()
	(*memberlistSink)(t).closeLocked()
	return nil
}

// memberlistSink is the datagram side of a MemberlistTransport.
type memberlistSink MemberlistTransport

func (s *memberlistSink) deliverLocked(from *net.UDPAddr, payload []byte) bool {
	select {
	case s.packetCh <- &memberlist.Packet{Buf: payload, From: from, Timestamp: time.Now()}:
		return true
	default:
		return false
	}
}

func (s *memberlistSink) flushLocked() {
	for {
		select {
		case <-s.packetCh:
		default:
			return
		}
	}
}

func (s *memberlistSink) closeLocked() {
	if s.ep.packets[s.addr.Port] == datagramSink(s) {
		delete(s.ep.packets, s.addr.Port)
	}
	s.flushLocked()
}
