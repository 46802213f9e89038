package auction

import (
	"errors"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/connmgr"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/protocol"
	rcmgr "github.com/libp2p/go-libp2p/p2p/host/resource-manager"
	yamux "github.com/libp2p/go-libp2p/p2p/muxer/yamux"
	noise "github.com/libp2p/go-libp2p/p2p/security/noise"
	tcp "github.com/libp2p/go-libp2p/p2p/transport/tcp"
	ma "github.com/multiformats/go-multiaddr"
)

// HostConfig configures the libp2p host of a server node.
type HostConfig struct {
	// ListenAddrs are the multiaddrs to listen on, TCP only, e.g.
	// "/ip4/10.0.0.5/tcp/7946". Required: the host binds nothing else.
	ListenAddrs []string
	// PrivKey is the node's identity; its peer ID travels in gossip
	// metadata, so node/ keeps the key across restarts. Required.
	PrivKey crypto.PrivKey
	// MaxMemory bounds the resource manager's memory, bytes (default 64 MiB).
	MaxMemory int64
	// MaxFDs bounds the resource manager's file descriptors (default 256).
	MaxFDs int
	// MarketStreams bounds concurrent market streams (default 512 each way).
	MarketStreams int
	// DialTimeout bounds a dial (default 10s).
	DialTimeout time.Duration
}

// NewHost returns a slim libp2p host for the market: TCP only, Noise, yamux,
// listening on exactly cfg.ListenAddrs, with no relay, no QUIC, WebTransport
// or WebRTC, no NAT port mapping or hole punching, no AutoNAT probing (a
// region server is reachable by definition), no ping service, no metrics,
// a null connection manager (leaders keep few long-lived connections), and a
// resource manager with fixed limits, the same on every machine.
func NewHost(cfg HostConfig) (host.Host, error) {
	if len(cfg.ListenAddrs) == 0 {
		return nil, errors.New("market host: field \"listen_addrs\" is required")
	}
	for i, a := range cfg.ListenAddrs {
		m, err := ma.NewMultiaddr(a)
		if err != nil {
			return nil, fmt.Errorf("market host: field \"listen_addrs[%d]\": %w", i, err)
		}
		if _, err := m.ValueForProtocol(ma.P_TCP); err != nil {
			return nil, fmt.Errorf("market host: field \"listen_addrs[%d]\": %q is not a TCP address", i, a)
		}
	}
	if cfg.PrivKey == nil {
		return nil, errors.New("market host: field \"priv_key\" is required")
	}
	if cfg.MaxMemory <= 0 {
		cfg.MaxMemory = 64 << 20
	}
	if cfg.MaxFDs <= 0 {
		cfg.MaxFDs = 256
	}
	if cfg.MarketStreams <= 0 {
		cfg.MarketStreams = 512
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 10 * time.Second
	}
	limits := rcmgr.DefaultLimits
	libp2p.SetDefaultServiceLimits(&limits)
	n := cfg.MarketStreams
	limits.AddProtocolLimit(protocol.ID(ProtocolID),
		rcmgr.BaseLimit{StreamsInbound: n, StreamsOutbound: n, Streams: 2 * n, Memory: int64(2*n) * MaxMessageSize},
		rcmgr.BaseLimitIncrease{})
	limiter := rcmgr.NewFixedLimiter(limits.Scale(cfg.MaxMemory, cfg.MaxFDs))
	mgr, err := rcmgr.NewResourceManager(limiter)
	if err != nil {
		return nil, fmt.Errorf("market host: resource manager: %w", err)
	}
	h, err := libp2p.New(
		libp2p.Identity(cfg.PrivKey),
		libp2p.ListenAddrStrings(cfg.ListenAddrs...),
		libp2p.Transport(tcp.NewTCPTransport),
		libp2p.Security(noise.ID, noise.New),
		libp2p.Muxer(yamux.ID, yamux.DefaultTransport),
		libp2p.DisableRelay(),
		libp2p.ResourceManager(mgr),
		libp2p.ConnectionManager(connmgr.NullConnMgr{}),
		libp2p.DisableMetrics(),
		libp2p.Ping(false),
		libp2p.ForceReachabilityPublic(),
		libp2p.DisableIdentifyAddressDiscovery(),
		libp2p.WithDialTimeout(cfg.DialTimeout),
	)
	if err != nil {
		_ = mgr.Close()
		return nil, fmt.Errorf("market host: %w", err)
	}
	return h, nil
}
