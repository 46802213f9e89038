package netsim

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	mocknet "github.com/libp2p/go-libp2p/p2p/net/mock"
	ma "github.com/multiformats/go-multiaddr"
)

// libp2pNet mirrors the network's reachability and latencies onto a libp2p
// mocknet, for NewMocknetHost. Each endpoint has at most one live host; a
// pair of hosts is linked while both directions between their endpoints are
// open, with the mean one-way latency of the two directions (a mocknet link
// is symmetric), so a one-way cut cuts both ways.
type libp2pNet struct {
	n  *Network
	mn mocknet.Mocknet

	// mu serializes changes of the mocknet's links. It is taken while
	// holding Network.mu and released after it, so link changes apply in
	// the order of the faults.
	mu     sync.Mutex
	hosts  map[*Endpoint]*netsimHost
	links  map[[2]*Endpoint]linkState // current state, key ordered by endpoint index
	closed bool
}

type linkState struct {
	linked    bool
	latency   time.Duration
	bandwidth float64
}

// netsimHost is a mocknet host bound to an endpoint; closing it unlinks it.
type netsimHost struct {
	host.Host
	p  *libp2pNet
	ep *Endpoint
}

// Close closes the host and removes its links. The other hosts drop their
// connections to it before Close returns (mocknet closes the remote ends
// asynchronously), so a replacement host with the same peer ID starts clean.
func (h *netsimHost) Close() error {
	err := h.Host.Close()
	h.p.remove(h)
	return err
}

// NewMocknetHost returns a lightweight libp2p host for endpoint e on the
// network's libp2p mocknet (p2p/net/mock): no transport, security or muxer,
// for simulations too large for NewLibp2pHost's real stack. Its identity is
// the one NewLibp2pHost would use (Libp2pKey), its address
// /ip4/<e's ip>/tcp/4001. Streams to other mocknet hosts of the network have
// the one-way latency of the regions' link (a mocknet link is symmetric: the
// mean of both directions) and follow the faults: a partition, cut,
// isolation or crash between two endpoints closes their connections and
// refuses new ones until the fault is undone; a one-way cut cuts both ways.
// Jitter, loss and the stream window do not apply and connection setup is
// instant. Mocknet hosts cannot reach NewLibp2pHost hosts. Closing the host
// unlinks it; an endpoint gets a new mocknet host only after closing the
// old one. Network.Close closes every host.
func (n *Network) NewMocknetHost(e *Endpoint) (host.Host, error) {
	if e == nil || e.net != n {
		return nil, errors.New("netsim: mocknet host: endpoint is not of this network")
	}
	key, err := n.Libp2pKey(e)
	if err != nil {
		return nil, fmt.Errorf("netsim: mocknet host %s: %w", e.name, err)
	}
	addr, err := ma.NewMultiaddr(fmt.Sprintf("/ip4/%s/tcp/%d", e.ip, Libp2pPort))
	if err != nil {
		return nil, fmt.Errorf("netsim: mocknet host %s: %w", e.name, err)
	}

	n.mu.Lock()
	if n.isClosed {
		n.mu.Unlock()
		return nil, ErrNetworkClosed
	}
	if n.p2p == nil {
		n.p2p = &libp2pNet{
			n:     n,
			mn:    mocknet.New(),
			hosts: map[*Endpoint]*netsimHost{},
			links: map[[2]*Endpoint]linkState{},
		}
	}
	p := n.p2p
	n.mu.Unlock()

	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, ErrNetworkClosed
	}
	if p.hosts[e] != nil {
		p.mu.Unlock()
		return nil, fmt.Errorf("netsim: mocknet host %s: the endpoint already has a live host; close it first", e.name)
	}
	h, err := p.mn.AddPeer(key, addr)
	if err != nil {
		p.mu.Unlock()
		return nil, fmt.Errorf("netsim: mocknet host %s: %w", e.name, err)
	}
	nh := &netsimHost{Host: h, p: p, ep: e}
	p.hosts[e] = nh
	p.mu.Unlock()

	// Link the new host under the current faults.
	n.mu.Lock()
	sync := p.planLocked()
	n.mu.Unlock()
	if sync != nil {
		sync()
	}
	return nh, nil
}

// Libp2pKey returns the libp2p identity of endpoint e: an Ed25519 key
// derived from the network's seed and the endpoint's name, so it is the same
// in every run with that seed and across restarts of the node.
func (n *Network) Libp2pKey(e *Endpoint) (crypto.PrivKey, error) {
	var buf [8]byte
	binary.BigEndian.PutUint64(buf[:], uint64(n.cfg.Seed))
	h := sha256.New()
	h.Write([]byte("netsim libp2p identity\x00"))
	h.Write(buf[:])
	h.Write([]byte(e.name))
	priv := ed25519.NewKeyFromSeed(h.Sum(nil))
	return crypto.UnmarshalEd25519PrivateKey(priv)
}

// linkChange is one step of bringing the mocknet in line with the faults.
type linkChange struct {
	a, b     *netsimHost
	old, new linkState
}

// diffLocked computes the link changes the current faults require. The
// caller holds Network.mu and p.mu.
func (p *libp2pNet) diffLocked() []linkChange {
	n := p.n
	hosts := make([]*netsimHost, 0, len(p.hosts))
	for _, h := range p.hosts {
		hosts = append(hosts, h)
	}
	var plan []linkChange
	for i, a := range hosts {
		for _, b := range hosts[i+1:] {
			if a.ep.index > b.ep.index {
				a, b = b, a
			}
			key := [2]*Endpoint{a.ep, b.ep}
			want := p.wantLocked(n, a.ep, b.ep)
			have := p.links[key]
			if want != have {
				plan = append(plan, linkChange{a: a, b: b, old: have, new: want})
				if want.linked {
					p.links[key] = want
				} else {
					delete(p.links, key)
				}
			}
		}
	}
	return plan
}

func (p *libp2pNet) wantLocked(n *Network, a, b *Endpoint) linkState {
	ab, ba := n.pathLocked(a, b), n.pathLocked(b, a)
	if ab.blocked || ba.blocked {
		return linkState{}
	}
	s := linkState{linked: true, latency: (ab.oneWay + ba.oneWay) / 2}
	for _, q := range [...]*bwQueue{ab.bw, ba.bw} {
		if q != nil && (s.bandwidth == 0 || q.rate < s.bandwidth) {
			s.bandwidth = q.rate
		}
	}
	return s
}

// apply performs link changes; the caller holds p.mu but not Network.mu,
// since closing libp2p connections waits for their goroutines.
func (p *libp2pNet) apply(plan []linkChange) {
	for _, c := range plan {
		a, b := c.a.ID(), c.b.ID()
		switch {
		case c.new.linked && !c.old.linked:
			l, err := p.mn.LinkPeers(a, b)
			if err == nil {
				l.SetOptions(mocknet.LinkOptions{Latency: c.new.latency, Bandwidth: c.new.bandwidth})
			}
		case c.new.linked:
			for _, l := range p.mn.LinksBetweenPeers(a, b) {
				l.SetOptions(mocknet.LinkOptions{Latency: c.new.latency, Bandwidth: c.new.bandwidth})
			}
		default:
			_ = p.mn.UnlinkPeers(a, b)
			_ = p.mn.DisconnectPeers(a, b)
			_ = p.mn.DisconnectPeers(b, a)
		}
	}
}

// planLocked is called by Network.Apply with Network.mu held: it takes p.mu,
// computes the changes, and returns the function that applies them and
// releases p.mu, to be called after Network.mu is released.
func (p *libp2pNet) planLocked() func() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	plan := p.diffLocked()
	return func() {
		defer p.mu.Unlock()
		p.apply(plan)
	}
}

// remove unlinks a closing host.
func (p *libp2pNet) remove(h *netsimHost) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.hosts[h.ep] != h {
		return
	}
	delete(p.hosts, h.ep)
	for key := range p.links {
		if key[0] == h.ep || key[1] == h.ep {
			delete(p.links, key)
		}
	}
	for _, other := range p.hosts {
		_ = p.mn.UnlinkPeers(h.ID(), other.ID())
		_ = other.Network().ClosePeer(h.ID())
	}
}

func (p *libp2pNet) close() error {
	p.mu.Lock()
	p.closed = true
	clear(p.hosts)
	clear(p.links)
	p.mu.Unlock()
	if err := p.mn.Close(); err != nil {
		return fmt.Errorf("netsim: close libp2p mocknet: %w", err)
	}
	return nil
}
