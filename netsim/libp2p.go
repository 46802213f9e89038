package netsim

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/connmgr"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/transport"
	rcmgr "github.com/libp2p/go-libp2p/p2p/host/resource-manager"
	yamux "github.com/libp2p/go-libp2p/p2p/muxer/yamux"
	"github.com/libp2p/go-libp2p/p2p/security/noise"
	ma "github.com/multiformats/go-multiaddr"
	mafmt "github.com/multiformats/go-multiaddr-fmt"
	manet "github.com/multiformats/go-multiaddr/net"
)

// Libp2pPort is the TCP port libp2p hosts made by NewLibp2pHost listen on
// and the port in the address of NewMocknetHost hosts.
const Libp2pPort = 4001

// The resource manager limits and dial timeout of NewLibp2pHost hosts,
// mirroring placement/auction.NewHost's defaults (HostConfig.MaxMemory,
// MaxFDs, DialTimeout): a change there belongs here too.
const (
	libp2pMaxMemory   = 64 << 20
	libp2pMaxFDs      = 256
	libp2pDialTimeout = 10 * time.Second
)

// libp2pLimits are the fixed limits of NewLibp2pHost's resource manager:
// libp2p's default and service limits scaled to libp2pMaxMemory and
// libp2pMaxFDs, as placement/auction.HostLimits computes them but for the
// market protocol's own stream limit, which only that package knows.
func libp2pLimits() rcmgr.ConcreteLimitConfig {
	limits := rcmgr.DefaultLimits
	libp2p.SetDefaultServiceLimits(&limits)
	return limits.Scale(libp2pMaxMemory, libp2pMaxFDs)
}

// NewLibp2pHost returns a real go-libp2p host for endpoint e whose transport
// is netsim's stream connections: the production stack — TCP-style
// connections upgraded with Noise and yamux, identify — with every netsim
// property: handshake round trips, one-way latencies per direction,
// jitter, bandwidth, stream windows, and all faults (a fault resets the
// connections across it; a dial into it times out). It runs inside a
// synctest bubble.
//
// The host listens on /ip4/<e's ip>/tcp/4001 and its identity is
// Libp2pKey(e), so a restarted node keeps its peer ID. It is as slim as the
// market's production host (placement/auction.NewHost), whose options this
// package may not import and so mirrors: relay, ping, metrics, AutoNAT
// probing and identify's address discovery are off, the connection manager
// is the null one, dials time out after 10 s, and the resource manager has
// fixed limits — libp2p's default and service limits scaled to 64 MiB and
// 256 file descriptors, whatever the machine — with its per-IP connection
// limits and rate limits, as in production.
//
// opts are applied after these options and so override them; a resource or
// connection manager in opts replaces the mirrored one. Pass placement/auction's
// HostOptions to run exactly the production configuration (it adds the
// market protocol's stream limit). opts must not set the identity, listen
// addresses, transports, security or muxers. Close the host before making
// another for the same endpoint; Network.Close closes every host still open.
func (n *Network) NewLibp2pHost(e *Endpoint, opts ...libp2p.Option) (host.Host, error) {
	if e == nil || e.net != n {
		return nil, errors.New("netsim: libp2p host: endpoint is not of this network")
	}
	key, err := n.Libp2pKey(e)
	if err != nil {
		return nil, fmt.Errorf("netsim: libp2p host %s: %w", e.name, err)
	}
	laddr, err := ma.NewMultiaddr(fmt.Sprintf("/ip4/%s/tcp/%d", e.ip, Libp2pPort))
	if err != nil {
		return nil, fmt.Errorf("netsim: libp2p host %s: %w", e.name, err)
	}
	// A failed libp2p.New leaks goroutines (its rollback does not stop the
	// peerstore, dial backoff and connection manager), so refuse the
	// predictable failure first: the port is taken.
	n.mu.Lock()
	inUse := e.listeners[Libp2pPort] != nil
	closed := n.isClosed
	n.mu.Unlock()
	if closed {
		return nil, ErrNetworkClosed
	}
	if inUse {
		return nil, fmt.Errorf("netsim: libp2p host %s: port %d is in use (close the previous host first): %w", e.name, Libp2pPort, errAddrInUse)
	}
	base := []libp2p.Option{
		libp2p.Identity(key),
		libp2p.ListenAddrs(laddr),
		libp2p.Transport(func(u transport.Upgrader, rcmgr network.ResourceManager) (*Libp2pTransport, error) {
			return &Libp2pTransport{ep: e, upgrader: u, rcmgr: rcmgr}, nil
		}),
		libp2p.Security(noise.ID, noise.New),
		libp2p.Muxer(yamux.ID, yamux.DefaultTransport),
		libp2p.DisableRelay(),
		libp2p.DisableMetrics(),
		libp2p.Ping(false),
		libp2p.ForceReachabilityPublic(),
		libp2p.DisableIdentifyAddressDiscovery(),
		libp2p.WithDialTimeout(libp2pDialTimeout),
	}
	// libp2p.New, built by hand: libp2p refuses a second resource or
	// connection manager, so the mirrored ones go in only if opts brought
	// none, and a failure closes the resource manager (libp2p leaves it
	// running).
	var cfg libp2p.Config
	err = cfg.Apply(append(base, opts...)...)
	if err == nil && cfg.ConnManager == nil {
		cfg.ConnManager = connmgr.NullConnMgr{}
	}
	if err == nil && cfg.ResourceManager == nil {
		var mgr network.ResourceManager
		if mgr, err = rcmgr.NewResourceManager(rcmgr.NewFixedLimiter(libp2pLimits())); err == nil {
			cfg.ResourceManager = mgr
		}
	}
	if err == nil {
		err = cfg.Apply(libp2p.FallbackDefaults)
	}
	var h host.Host
	if err == nil {
		h, err = cfg.NewNode()
	}
	if err != nil {
		if cfg.ResourceManager != nil {
			_ = cfg.ResourceManager.Close()
		}
		return nil, fmt.Errorf("netsim: libp2p host %s: %w", e.name, err)
	}
	th := &trackedHost{Host: h, n: n}
	n.mu.Lock()
	if n.isClosed {
		n.mu.Unlock()
		_ = h.Close()
		return nil, ErrNetworkClosed
	}
	if n.hosts == nil {
		n.hosts = map[*trackedHost]struct{}{}
	}
	n.hosts[th] = struct{}{}
	n.mu.Unlock()
	return th, nil
}

// trackedHost is a libp2p host that Network.Close closes if its owner did not.
type trackedHost struct {
	host.Host
	n    *Network
	once sync.Once
	err  error
}

// Close closes the host once.
func (h *trackedHost) Close() error {
	h.once.Do(func() {
		h.n.mu.Lock()
		delete(h.n.hosts, h)
		h.n.mu.Unlock()
		h.err = h.Host.Close()
	})
	return h.err
}

// PeerInfo returns the address info other hosts need to connect to h.
func PeerInfo(h host.Host) peer.AddrInfo {
	return peer.AddrInfo{ID: h.ID(), Addrs: h.Addrs()}
}

// Libp2pTransport is a libp2p transport.Transport over an endpoint's stream
// connections, for /ip4/<ip>/tcp/<port> addresses. NewLibp2pHost installs
// it; libp2p's upgrader adds security and multiplexing on top.
type Libp2pTransport struct {
	ep       *Endpoint
	upgrader transport.Upgrader
	rcmgr    network.ResourceManager
}

var _ transport.Transport = (*Libp2pTransport)(nil)

var tcpAddrMatcher = mafmt.And(mafmt.IP, mafmt.Base(ma.P_TCP))

// Dial connects to raddr and upgrades the connection, authenticating p.
func (t *Libp2pTransport) Dial(ctx context.Context, raddr ma.Multiaddr, p peer.ID) (transport.CapableConn, error) {
	if p == "" {
		return nil, errors.New("netsim: libp2p dial: no peer ID")
	}
	_, addr, err := manet.DialArgs(raddr)
	if err != nil {
		return nil, fmt.Errorf("netsim: libp2p dial %s: %w", raddr, err)
	}
	scope, err := t.rcmgr.OpenConnection(network.DirOutbound, true, raddr)
	if err != nil {
		return nil, err
	}
	if err := scope.SetPeer(p); err != nil {
		scope.Done()
		return nil, err
	}
	c, err := t.ep.Dial(ctx, addr)
	if err != nil {
		scope.Done()
		return nil, err
	}
	mc, err := manet.WrapNetConn(c)
	if err != nil {
		c.Close()
		scope.Done()
		return nil, err
	}
	// Upgrade closes the connection and ends the scope on failure.
	return t.upgrader.Upgrade(ctx, t, mc, network.DirOutbound, p, scope)
}

// CanDial reports whether addr is an /ip4|ip6/.../tcp/... address.
func (t *Libp2pTransport) CanDial(addr ma.Multiaddr) bool { return tcpAddrMatcher.Matches(addr) }

// Listen listens on laddr, whose IP must be the endpoint's (or unspecified).
func (t *Libp2pTransport) Listen(laddr ma.Multiaddr) (transport.Listener, error) {
	na, err := manet.ToNetAddr(laddr)
	if err != nil {
		return nil, fmt.Errorf("netsim: libp2p listen %s: %w", laddr, err)
	}
	ta, ok := na.(*net.TCPAddr)
	if !ok {
		return nil, fmt.Errorf("netsim: libp2p listen %s: not a TCP address", laddr)
	}
	if !ta.IP.IsUnspecified() && !ta.IP.Equal(t.ep.IP()) {
		return nil, fmt.Errorf("netsim: libp2p listen %s: endpoint %s has address %s", laddr, t.ep.name, t.ep.ip)
	}
	l, err := t.ep.Listen(ta.Port)
	if err != nil {
		return nil, err
	}
	ml, err := manet.WrapNetListener(l)
	if err != nil {
		l.Close()
		return nil, err
	}
	return t.upgrader.UpgradeGatedMaListener(t, t.upgrader.GateMaListener(ml)), nil
}

// Protocols returns the TCP protocol code.
func (t *Libp2pTransport) Protocols() []int { return []int{ma.P_TCP} }

// Proxy returns false.
func (t *Libp2pTransport) Proxy() bool { return false }
