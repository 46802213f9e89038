package consensus

import (
	"fmt"
	"net"
	"time"

	"github.com/hashicorp/raft"
)

// TCPStreamLayer is the production network of a server: a TCP listener
// that Raft and the forwarding RPC share.
type TCPStreamLayer struct {
	ln        net.Listener
	advertise net.Addr
}

var _ raft.StreamLayer = (*TCPStreamLayer)(nil)

// NewTCPStreamLayer listens on bind ("host:port"; port 0 picks one). The
// other servers dial advertise, which defaults to the bound address and
// must not be an unspecified address (0.0.0.0 or ::).
func NewTCPStreamLayer(bind, advertise string) (*TCPStreamLayer, error) {
	ln, err := net.Listen("tcp", bind)
	if err != nil {
		return nil, fmt.Errorf("raft listen on %q: %w", bind, err)
	}
	addr := ln.Addr()
	if advertise != "" {
		a, err := net.ResolveTCPAddr("tcp", advertise)
		if err != nil {
			ln.Close()
			return nil, fmt.Errorf("raft advertise address %q: %w", advertise, err)
		}
		addr = a
	}
	if ta, ok := addr.(*net.TCPAddr); !ok || ta.IP == nil || ta.IP.IsUnspecified() {
		ln.Close()
		return nil, fmt.Errorf("raft advertise address %q is not one other servers can dial; set it", addr.String())
	}
	return &TCPStreamLayer{ln: ln, advertise: addr}, nil
}

// Accept implements net.Listener.
func (t *TCPStreamLayer) Accept() (net.Conn, error) { return t.ln.Accept() }

// Close implements net.Listener.
func (t *TCPStreamLayer) Close() error { return t.ln.Close() }

// Addr returns the advertised address.
func (t *TCPStreamLayer) Addr() net.Addr { return t.advertise }

// Dial implements raft.StreamLayer.
func (t *TCPStreamLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	d := net.Dialer{Timeout: timeout}
	return d.Dial("tcp", string(address))
}
