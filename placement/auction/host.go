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
	// MaxMemory is the memory, bytes, to which libp2p's default limits
	// are scaled (rcmgr's ScalingLimitConfig.Scale; default 64 MiB). Up
	// to 128 MiB libp2p's base limits hold, so by default the host as a
	// whole (the system scope) may use 128 MiB and 64 inbound connections
	// (128 in all).
	MaxMemory int64
	// MaxFDs is the file descriptors the host may use; libp2p never sets
	// fewer than its base of 256 (default 256).
	MaxFDs int
	// MarketStreams bounds concurrent market streams (default 512 each way).
	MarketStreams int
	// DialTimeout bounds a dial (default 10s).
	DialTimeout time.Duration
}

// The HostConfig defaults. netsim's NewLibp2pHost mirrors the memory and
// file descriptors (it may not import this package).
const (
	defaultHostMaxMemory     = 64 << 20
	defaultHostMaxFDs        = 256
	defaultHostMarketStreams = 512
	defaultHostDialTimeout   = 10 * time.Second
)

func (cfg *HostConfig) setDefaults() {
	if cfg.MaxMemory <= 0 {
		cfg.MaxMemory = defaultHostMaxMemory
	}
	if cfg.MaxFDs <= 0 {
		cfg.MaxFDs = defaultHostMaxFDs
	}
	if cfg.MarketStreams <= 0 {
		cfg.MarketStreams = defaultHostMarketStreams
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = defaultHostDialTimeout
	}
}

// HostLimits returns the resource manager limits of a market host: libp2p's
// default limits and service limits scaled to cfg.MaxMemory and cfg.MaxFDs
// (defaults filled in), plus a limit of cfg.MarketStreams streams each way
// for ProtocolID. They are fixed — never scaled to the machine's memory
// or file descriptors as libp2p's default resource manager does — so every
// region server admits the same load.
func HostLimits(cfg HostConfig) rcmgr.ConcreteLimitConfig {
	cfg.setDefaults()
	limits := rcmgr.DefaultLimits
	libp2p.SetDefaultServiceLimits(&limits)
	n := cfg.MarketStreams
	limits.AddProtocolLimit(protocol.ID(ProtocolID),
		rcmgr.BaseLimit{StreamsInbound: n, StreamsOutbound: n, Streams: 2 * n, Memory: int64(2*n) * MaxMessageSize},
		rcmgr.BaseLimitIncrease{})
	return limits.Scale(cfg.MaxMemory, cfg.MaxFDs)
}

// HostOptions returns the libp2p options that make a host slim, everything
// NewHost sets but the identity, the listen addresses and the wire
// (transport, Noise, yamux): no relay, no ping service, no metrics, a null
// connection manager (leaders keep few long-lived connections), public
// reachability (a region server is reachable by definition, so no AutoNAT
// probing), no address discovery by identify, cfg's dial timeout, and a
// resource manager with HostLimits. cfg's listen addresses and key are
// ignored.
//
// They exist so that a host on another transport — netsim's simulated
// network — runs the production configuration: pass them to
// netsim.Network.NewLibp2pHost.
//
// The resource manager is created when the options are applied. libp2p.New
// does not close it when it fails after that; a caller that builds the host
// itself from a libp2p.Config must close Config.ResourceManager on failure,
// as NewHost does.
func HostOptions(cfg HostConfig) []libp2p.Option {
	cfg.setDefaults()
	limits := HostLimits(cfg)
	return []libp2p.Option{
		libp2p.DisableRelay(),
		func(c *libp2p.Config) error {
			mgr, err := rcmgr.NewResourceManager(rcmgr.NewFixedLimiter(limits))
			if err != nil {
				return fmt.Errorf("market host: resource manager: %w", err)
			}
			if err := c.Apply(libp2p.ResourceManager(mgr)); err != nil {
				_ = mgr.Close()
				return fmt.Errorf("market host: resource manager: %w", err)
			}
			return nil
		},
		libp2p.ConnectionManager(connmgr.NullConnMgr{}),
		libp2p.DisableMetrics(),
		libp2p.Ping(false),
		libp2p.ForceReachabilityPublic(),
		libp2p.DisableIdentifyAddressDiscovery(),
		libp2p.WithDialTimeout(cfg.DialTimeout),
	}
}

// NewHost returns a slim libp2p host for the market: TCP only, Noise, yamux,
// listening on exactly cfg.ListenAddrs, with no QUIC, WebTransport or
// WebRTC, no NAT port mapping or hole punching, and HostOptions: no relay,
// no AutoNAT probing, no ping service, no metrics, a null connection
// manager, and a resource manager with fixed limits (HostLimits), the same
// on every machine.
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
	opts := append([]libp2p.Option{
		libp2p.Identity(cfg.PrivKey),
		libp2p.ListenAddrStrings(cfg.ListenAddrs...),
		libp2p.Transport(tcp.NewTCPTransport),
		libp2p.Security(noise.ID, noise.New),
		libp2p.Muxer(yamux.ID, yamux.DefaultTransport),
	}, HostOptions(cfg)...)
	// libp2p.New, built by hand so that a failure closes the resource
	// manager, which libp2p leaves running.
	var c libp2p.Config
	err := c.Apply(append(opts, libp2p.FallbackDefaults)...)
	var h host.Host
	if err == nil {
		h, err = c.NewNode()
	}
	if err != nil {
		if c.ResourceManager != nil {
			_ = c.ResourceManager.Close()
		}
		return nil, fmt.Errorf("market host: %w", err)
	}
	return h, nil
}
