package netsim

import (
	"fmt"
	"net"
	"time"

	"github.com/hashicorp/raft"
)

// RaftStreamLayer is a raft.StreamLayer over netsim stream connections, for
// raft.NetworkTransport:
//
//	layer, err := netsim.NewRaftStreamLayer(ep, 7000)
//	trans := raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
//		Stream: layer, MaxPool: 3, Timeout: 10 * time.Second, Logger: hclog.NewNullLogger(),
//	})
//
// The server address of the node is layer.Addr().String() ("ip:port").
// Closing the transport closes the layer; connections already accepted stay
// open until either side closes them or the network closes.
type RaftStreamLayer struct {
	ep *Endpoint
	ln *listener
}

var _ raft.StreamLayer = (*RaftStreamLayer)(nil)

// NewRaftStreamLayer listens on port of e.
func NewRaftStreamLayer(e *Endpoint, port int) (*RaftStreamLayer, error) {
	ln, err := e.listen(port)
	if err != nil {
		return nil, fmt.Errorf("netsim: raft stream layer: %w", err)
	}
	return &RaftStreamLayer{ep: e, ln: ln}, nil
}

// Accept waits for the next inbound connection.
func (l *RaftStreamLayer) Accept() (net.Conn, error) { return l.ln.Accept() }

// Close stops listening.
func (l *RaftStreamLayer) Close() error { return l.ln.Close() }

// Addr returns the listening ip:port.
func (l *RaftStreamLayer) Addr() net.Addr { return l.ln.Addr() }

// Dial opens a connection to a raft server address ("ip:port").
func (l *RaftStreamLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	return l.ep.DialTimeout(string(address), timeout)
}
