package node

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"

	"github.com/hashicorp/raft"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"

	"github.com/meridian-mesh/meridian/consensus"
	"github.com/meridian-mesh/meridian/gossip"
	"github.com/meridian-mesh/meridian/netsim"
	"github.com/meridian-mesh/meridian/placement/auction"
)

// Network binds an agent's four channels — gossip, Raft, libp2p and the
// node-to-node HTTP API — on one kind of network, so that every call between
// nodes crosses the same links and suffers the same faults. NetsimNetwork and
// TCPNetwork are the two kinds.
type Network interface {
	// configureGossip sets the transport or bind addresses of cfg.
	configureGossip(cfg *gossip.Config) error
	// raftLayer binds the Raft and forwarding stream layer.
	raftLayer() (raft.StreamLayer, error)
	// p2pHost starts the libp2p host the market runs on.
	p2pHost(dataDir string) (host.Host, error)
	// listenHTTP binds the node-to-node HTTP API and returns the address
	// other nodes dial for it.
	listenHTTP() (net.Listener, string, error)
	// dial connects to another node's HTTP API.
	dial(ctx context.Context, network, addr string) (net.Conn, error)
	// p2pAdvertise is the libp2p multiaddr to publish for h instead of
	// one of the host's own, or "".
	p2pAdvertise(h host.Host) (string, error)
}

// Ports a netsim node binds on its endpoint. They match the real defaults so
// that addresses read the same in a simulation and on a machine.
const (
	netsimGossipPort = gossip.DefaultBindPort
	netsimRaftPort   = DefaultRaftPort
	netsimHTTPPort   = DefaultHTTPPort
)

// Default ports of a real agent.
const (
	DefaultHTTPPort = 4646
	DefaultRaftPort = 4647
	DefaultP2PPort  = 4001
)

// NetsimNetwork binds an agent on a netsim endpoint: memberlist over
// netsim's datagram and stream transport, Raft over its stream layer, a real
// libp2p host over its streams, and node-to-node HTTP over its streams.
func NetsimNetwork(ep *netsim.Endpoint) Network { return netsimNetwork{ep: ep} }

// NetsimGossipAddr is the gossip address ("ip:port") of an agent started on
// ep with NetsimNetwork, as Config.Join takes it.
func NetsimGossipAddr(ep *netsim.Endpoint) string {
	return net.JoinHostPort(ep.IP().String(), strconv.Itoa(netsimGossipPort))
}

type netsimNetwork struct{ ep *netsim.Endpoint }

func (n netsimNetwork) configureGossip(cfg *gossip.Config) error {
	tr, err := netsim.NewMemberlistTransport(n.ep, netsimGossipPort)
	if err != nil {
		return fmt.Errorf("gossip transport: %w", err)
	}
	ip := n.ep.IP().String()
	cfg.Transport = tr
	cfg.BindAddr, cfg.AdvertiseAddr = ip, ip
	cfg.BindPort, cfg.AdvertisePort = netsimGossipPort, netsimGossipPort
	// In a simulation the CPU, not bandwidth, is scarce: LZW compression was
	// an eighth of a chaos run's CPU.
	cfg.DisableCompression = true
	return nil
}

func (n netsimNetwork) raftLayer() (raft.StreamLayer, error) {
	return netsim.NewRaftStreamLayer(n.ep, netsimRaftPort)
}

// p2pHost gives the simulated agent the production host's options
// (auction.NewHost's limits, no ping, no metrics, no relay) over netsim's
// wire, so a simulation runs the configuration a real server runs.
func (n netsimNetwork) p2pHost(string) (host.Host, error) {
	return n.ep.Network().NewLibp2pHost(n.ep, auction.HostOptions(auction.HostConfig{})...)
}

func (n netsimNetwork) listenHTTP() (net.Listener, string, error) {
	ln, err := n.ep.Listen(netsimHTTPPort)
	if err != nil {
		return nil, "", err
	}
	return ln, net.JoinHostPort(n.ep.IP().String(), strconv.Itoa(netsimHTTPPort)), nil
}

func (n netsimNetwork) dial(ctx context.Context, _, addr string) (net.Conn, error) {
	return n.ep.Dial(ctx, addr)
}

func (netsimNetwork) p2pAdvertise(host.Host) (string, error) { return "", nil }

// TCPConfig is where a real agent binds and what it advertises. Bind
// addresses are "host:port"; an advertise address left empty is derived from
// the bind address, and for a bind address on every interface (0.0.0.0)
// from gossip.AdvertiseIP, one choice for every channel (a private IPv4
// address of the machine). An advertise address given always wins.
type TCPConfig struct {
	// GossipBind and GossipAdvertise: memberlist's UDP and TCP address
	// (default 0.0.0.0:7946).
	GossipBind, GossipAdvertise string
	// RaftBind and RaftAdvertise: Raft's TCP address (default
	// 0.0.0.0:4647).
	RaftBind, RaftAdvertise string
	// P2PBind and P2PAdvertise: the market's libp2p TCP address (default
	// 0.0.0.0:4001).
	P2PBind, P2PAdvertise string
	// HTTP is the API's address, for operators and other nodes alike
	// (default 127.0.0.1:4646); HTTPAdvertise is what other nodes dial.
	HTTP, HTTPAdvertise string
}

// TCPNetwork binds an agent on the machine's real network.
func TCPNetwork(cfg TCPConfig) Network {
	def := func(s *string, v string) {
		if *s == "" {
			*s = v
		}
	}
	def(&cfg.GossipBind, "0.0.0.0:"+strconv.Itoa(gossip.DefaultBindPort))
	def(&cfg.RaftBind, "0.0.0.0:"+strconv.Itoa(DefaultRaftPort))
	def(&cfg.P2PBind, "0.0.0.0:"+strconv.Itoa(DefaultP2PPort))
	def(&cfg.HTTP, "127.0.0.1:"+strconv.Itoa(DefaultHTTPPort))
	return tcpNetwork{cfg: cfg}
}

type tcpNetwork struct{ cfg TCPConfig }

func splitAddr(field, addr string) (string, int, error) {
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, fmt.Errorf("%s %q: %w", field, addr, err)
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("%s %q: port must be a number in 0..65535", field, addr)
	}
	return h, port, nil
}

func (n tcpNetwork) configureGossip(cfg *gossip.Config) error {
	h, p, err := splitAddr("gossip bind address", n.cfg.GossipBind)
	if err != nil {
		return err
	}
	cfg.BindAddr, cfg.BindPort = h, p
	switch {
	case n.cfg.GossipAdvertise != "":
		ah, ap, err := splitAddr("gossip advertise address", n.cfg.GossipAdvertise)
		if err != nil {
			return err
		}
		cfg.AdvertiseAddr, cfg.AdvertisePort = ah, ap
	case wildcard(h):
		// The same address Raft, libp2p and the API advertise; gossip
		// keeps the bound port.
		cfg.AdvertiseAddr = gossip.AdvertiseIP().String()
	}
	return nil
}

// wildcard reports whether a bind host means every interface.
func wildcard(host string) bool {
	ip := net.ParseIP(host)
	return host == "" || ip != nil && ip.IsUnspecified()
}

// advertised returns the address other nodes dial for a listener bound at
// bind: adv if given, else the bound address, which must not be a wildcard.
func advertised(field string, bound net.Addr, adv string) (string, error) {
	if adv != "" {
		if _, _, err := splitAddr(field+" advertise address", adv); err != nil {
			return "", err
		}
		return adv, nil
	}
	ta, ok := bound.(*net.TCPAddr)
	if !ok || ta.IP == nil {
		return "", fmt.Errorf("%s is bound to %s, which other nodes cannot dial: set its advertise address", field, bound)
	}
	if ta.IP.IsUnspecified() {
		// Bound to every interface: advertise the address every other
		// channel of the node advertises.
		return net.JoinHostPort(gossip.AdvertiseIP().String(), strconv.Itoa(ta.Port)), nil
	}
	return ta.String(), nil
}

func (n tcpNetwork) raftLayer() (raft.StreamLayer, error) {
	adv := n.cfg.RaftAdvertise
	if adv == "" {
		h, p, err := splitAddr("raft bind address", n.cfg.RaftBind)
		if err != nil {
			return nil, err
		}
		if wildcard(h) {
			if p == 0 {
				// The address is advertised before the listener picks
				// a port.
				return nil, fmt.Errorf("raft bind address %q: give a port, or a raft advertise address, when bound to every interface", n.cfg.RaftBind)
			}
			adv = net.JoinHostPort(gossip.AdvertiseIP().String(), strconv.Itoa(p))
		}
	}
	return consensus.NewTCPStreamLayer(n.cfg.RaftBind, adv)
}

func (n tcpNetwork) p2pHost(dataDir string) (host.Host, error) {
	key, err := loadOrCreateKey(filepath.Join(dataDir, "p2p.key"))
	if err != nil {
		return nil, err
	}
	h, p, err := splitAddr("p2p bind address", n.cfg.P2PBind)
	if err != nil {
		return nil, err
	}
	ip := net.ParseIP(h)
	if ip == nil {
		return nil, fmt.Errorf("p2p bind address %q: the host must be an IP address", n.cfg.P2PBind)
	}
	proto := "ip4"
	if ip.To4() == nil {
		proto = "ip6"
	}
	return auction.NewHost(auction.HostConfig{
		ListenAddrs: []string{fmt.Sprintf("/%s/%s/tcp/%d", proto, ip, p)},
		PrivKey:     key,
	})
}

func (n tcpNetwork) listenHTTP() (net.Listener, string, error) {
	ln, err := net.Listen("tcp", n.cfg.HTTP)
	if err != nil {
		return nil, "", fmt.Errorf("http address %q: %w", n.cfg.HTTP, err)
	}
	adv, err := advertised("http address", ln.Addr(), n.cfg.HTTPAdvertise)
	if err != nil {
		ln.Close()
		return nil, "", err
	}
	return ln, adv, nil
}

func (n tcpNetwork) p2pAdvertise(h host.Host) (string, error) {
	if n.cfg.P2PAdvertise == "" {
		return n.p2pWildcardAdvertise(h)
	}
	ah, p, err := splitAddr("p2p advertise address", n.cfg.P2PAdvertise)
	if err != nil {
		return "", err
	}
	ip := net.ParseIP(ah)
	if ip == nil || ip.IsUnspecified() {
		return "", fmt.Errorf("p2p advertise address %q: the host must be an IP address other nodes can dial", n.cfg.P2PAdvertise)
	}
	if ip.To4() != nil {
		return fmt.Sprintf("/ip4/%s/tcp/%d", ip, p), nil
	}
	return fmt.Sprintf("/ip6/%s/tcp/%d", ip, p), nil
}

// p2pWildcardAdvertise is, for a host bound to every IPv4 interface, its
// port at gossip.AdvertiseIP; "" for a host bound to one address (which it
// publishes itself) or to every IPv6 one (its listener takes no IPv4).
func (n tcpNetwork) p2pWildcardAdvertise(h host.Host) (string, error) {
	bh, _, err := splitAddr("p2p bind address", n.cfg.P2PBind)
	if err != nil {
		return "", err
	}
	if ip := net.ParseIP(bh); ip == nil || !ip.Equal(net.IPv4zero) {
		return "", nil
	}
	for _, la := range h.Network().ListenAddresses() {
		port, err := la.ValueForProtocol(ma.P_TCP)
		if err != nil {
			continue
		}
		if ip, err := manet.ToIP(la); err == nil && ip.To4() != nil {
			return fmt.Sprintf("/ip4/%s/tcp/%s", gossip.AdvertiseIP(), port), nil
		}
	}
	return "", fmt.Errorf("p2p bind address %q: the libp2p host listens on no IPv4 TCP address", n.cfg.P2PBind)
}

func (n tcpNetwork) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, network, addr)
}

// loadOrCreateKey keeps the node's libp2p identity in path, so its peer ID
// survives restarts (other regions authenticate it by that ID).
func loadOrCreateKey(path string) (crypto.PrivKey, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		k, err := crypto.UnmarshalPrivateKey(b)
		if err != nil {
			return nil, fmt.Errorf("p2p identity %s: %w", path, err)
		}
		return k, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("p2p identity: %w", err)
	}
	k, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("p2p identity: %w", err)
	}
	b, err = crypto.MarshalPrivateKey(k)
	if err != nil {
		return nil, fmt.Errorf("p2p identity: %w", err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		return nil, fmt.Errorf("p2p identity: %w", err)
	}
	return k, nil
}
