package auction

import (
	"context"
	"crypto/rand"
	"errors"
	"io"
	"maps"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	rcmgr "github.com/libp2p/go-libp2p/p2p/host/resource-manager"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"
)

func newTestHost(t *testing.T) host.Host {
	t.Helper()
	key, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	h, err := NewHost(HostConfig{ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, PrivKey: key})
	if err != nil {
		t.Fatalf("NewHost: %v", err)
	}
	return h
}

// A real host binds only what it is told: one TCP listener on loopback, no
// QUIC, WebTransport, WebRTC, relay or other interface. And two of them
// trade a market request over TCP + Noise + yamux.
func TestRealHostListensOnlyOnConfiguredTCP(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	before := runtime.NumGoroutine()
	a := newTestHost(t)
	b := newTestHost(t)
	perHost := (runtime.NumGoroutine() - before) / 2
	t.Logf("goroutines per idle host: %d", perHost)

	for _, h := range []host.Host{a, b} {
		addrs := h.Addrs()
		if len(addrs) != 1 {
			t.Fatalf("Addrs() = %v, want exactly one", addrs)
		}
		s := addrs[0].String()
		if !strings.HasPrefix(s, "/ip4/127.0.0.1/tcp/") || strings.Count(s, "/") != 4 {
			t.Errorf("listening on %s, want /ip4/127.0.0.1/tcp/<port> only", s)
		}
		for _, p := range h.Network().ListenAddresses() {
			if _, err := p.ValueForProtocol(ma.P_TCP); err != nil {
				t.Errorf("listener %s is not TCP", p)
			}
		}
		for _, proto := range h.Mux().Protocols() {
			if strings.Contains(string(proto), "relay") || strings.Contains(string(proto), "autonat") || strings.Contains(string(proto), "ping") {
				t.Errorf("host speaks %s", proto)
			}
		}
	}

	ta, tb := NewStreamTransport(a, StreamTransportConfig{}), NewStreamTransport(b, StreamTransportConfig{})
	tb.Serve(func(ctx context.Context, from peer.ID, env *Envelope) *Envelope {
		if from != a.ID() {
			t.Errorf("request from %s, want %s", from, a.ID())
		}
		r := statusQuery("eu", "us", 1, time.Now())
		r.Kind, r.StatusQuery = KindStatusReply, nil
		r.StatusReply = &StatusReply{Items: []ItemStatus{{Item: "job-1", Status: StatusHeld}}}
		return r
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	reply, err := ta.Request(ctx, peer.AddrInfo{ID: b.ID(), Addrs: b.Addrs()}, statusQuery("us", "eu", 1, time.Now()))
	if err != nil {
		t.Fatalf("Request over TCP: %v", err)
	}
	if reply.StatusReply.Items[0].Status != StatusHeld {
		t.Errorf("reply = %+v", reply)
	}
	conns := a.Network().ConnsToPeer(b.ID())
	if len(conns) != 1 || conns[0].ConnState().Security != "/noise" || conns[0].ConnState().StreamMultiplexer != "/yamux/1.0.0" {
		t.Errorf("connection state = %+v, want noise + yamux", conns[0].ConnState())
	}
	_ = ta.Close()
	_ = tb.Close()
	if err := a.Close(); err != nil {
		t.Error(err)
	}
	if err := b.Close(); err != nil {
		t.Error(err)
	}
}

func TestNewHostValidates(t *testing.T) {
	key, _, _ := crypto.GenerateEd25519Key(rand.Reader)
	for _, tc := range []struct {
		name  string
		cfg   HostConfig
		field string
	}{
		{"no addresses", HostConfig{PrivKey: key}, "listen_addrs"},
		{"not a multiaddr", HostConfig{PrivKey: key, ListenAddrs: []string{"127.0.0.1:4001"}}, "listen_addrs[0]"},
		{"QUIC", HostConfig{PrivKey: key, ListenAddrs: []string{"/ip4/127.0.0.1/udp/0/quic-v1"}}, "listen_addrs[0]"},
		{"no key", HostConfig{ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}}, "priv_key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, err := NewHost(tc.cfg)
			if err == nil {
				h.Close()
				t.Fatal("NewHost accepted it")
			}
			if !strings.Contains(err.Error(), tc.field) {
				t.Errorf("NewHost = %v, want it to name %q", err, tc.field)
			}
		})
	}
}

func TestContactRoundTrip(t *testing.T) {
	key, _, _ := crypto.GenerateEd25519Key(rand.Reader)
	id, err := peer.IDFromPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	a1, _ := ma.NewMultiaddr("/ip4/10.1.2.3/tcp/4001")
	a2, _ := ma.NewMultiaddr("/ip6/2001:db8::1/tcp/4001")
	ai := peer.AddrInfo{ID: id, Addrs: []ma.Multiaddr{a1, a2}}
	b, err := EncodeContact(ai)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) > 100 {
		t.Errorf("a contact with two addresses takes %d bytes, want ≤ 100", len(b))
	}
	got, err := DecodeContact(b)
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != id || len(got.Addrs) != 2 || !got.Addrs[0].Equal(a1) || !got.Addrs[1].Equal(a2) {
		t.Errorf("DecodeContact = %v, want %v", got, ai)
	}
	for _, bad := range [][]byte{nil, {0x92, 0xc4, 0x01, 0x00, 0x90}, b[:len(b)-1], {0xdd, 0xff, 0xff, 0xff, 0xff}} {
		if _, err := DecodeContact(bad); !errors.Is(err, ErrMalformed) {
			t.Errorf("DecodeContact(%x) = %v, want ErrMalformed", bad, err)
		}
	}
	if _, err := EncodeContact(peer.AddrInfo{ID: id}); err == nil {
		t.Errorf("encoded a contact without addresses")
	}
}

// scopeLimit returns the limit of a resource manager scope.
func scopeLimit(t *testing.T, s network.ResourceScope) rcmgr.Limit {
	t.Helper()
	l, ok := s.(rcmgr.ResourceScopeLimiter)
	if !ok {
		t.Fatalf("scope %T does not expose its limit", s)
	}
	return l.Limit()
}

// A host's resource manager has fixed limits: the file descriptors and
// the market protocol's streams are what HostConfig says, whatever the
// machine (libp2p's default manager would scale them to its memory and
// file descriptor limit: 10,000 descriptors on a machine whose limit is
// 20,000), and the whole system scope is HostLimits'.
func TestNewHostHasFixedLimits(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	key, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		cfg     HostConfig
		fds     int
		streams int
	}{
		{"defaults", HostConfig{}, 256, 512},
		{"configured", HostConfig{MaxFDs: 1000, MarketStreams: 7}, 1000, 7},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tc.cfg
			cfg.ListenAddrs, cfg.PrivKey = []string{"/ip4/127.0.0.1/tcp/0"}, key
			h, err := NewHost(cfg)
			if err != nil {
				t.Fatalf("NewHost: %v", err)
			}
			defer h.Close()
			rm := h.Network().ResourceManager()
			want := HostLimits(cfg).ToPartialLimitConfig()
			if err := rm.ViewSystem(func(s network.ResourceScope) error {
				got := scopeLimit(t, s)
				if got.GetFDLimit() != tc.fds {
					t.Errorf("system FD limit = %d, want %d", got.GetFDLimit(), tc.fds)
				}
				if w := want.System.Build(rcmgr.BaseLimit{}); *got.(*rcmgr.BaseLimit) != w {
					t.Errorf("system limits = %+v, want HostLimits' %+v", got, w)
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			if err := rm.ViewProtocol(ProtocolID, func(s network.ProtocolScope) error {
				got := scopeLimit(t, s)
				if in, out, all := got.GetStreamLimit(network.DirInbound), got.GetStreamLimit(network.DirOutbound), got.GetStreamTotalLimit(); in != tc.streams || out != tc.streams || all != 2*tc.streams {
					t.Errorf("market streams limit = %d in, %d out, %d in all; want %d, %d, %d", in, out, all, tc.streams, tc.streams, 2*tc.streams)
				}
				if got.GetMemoryLimit() != int64(2*tc.streams)*MaxMessageSize {
					t.Errorf("market memory limit = %d, want %d", got.GetMemoryLimit(), int64(2*tc.streams)*MaxMessageSize)
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// libp2pMetrics returns every libp2p metric in Prometheus's default
// registry (where libp2p registers when metrics are on) with its value, but
// for the event bus's, which libp2p registers even with metrics off.
func libp2pMetrics(t *testing.T) map[string]string {
	t.Helper()
	mfs, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, mf := range mfs {
		name := mf.GetName()
		if !strings.HasPrefix(name, "libp2p_") || strings.HasPrefix(name, "libp2p_eventbus_") {
			continue
		}
		for _, m := range mf.GetMetric() {
			out[name+m.String()] = m.String()
		}
	}
	return out
}

// A host keeps no metrics: connecting two hosts and trading a stream leaves
// libp2p's Prometheus metrics (swarm, identify, resource manager) as they
// were.
func TestNewHostKeepsNoMetrics(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	before := libp2pMetrics(t)
	a, b := newTestHost(t), newTestHost(t)
	defer a.Close()
	defer b.Close()
	b.SetStreamHandler(ProtocolID, func(s network.Stream) {
		defer s.Close()
		_, _ = io.Copy(s, s)
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := a.NewStream(ctx, b.ID(), ProtocolID)
	if err != nil {
		// NewStream dials with the addresses in the peerstore.
		a.Peerstore().AddAddrs(b.ID(), b.Addrs(), time.Minute)
		if s, err = a.NewStream(ctx, b.ID(), ProtocolID); err != nil {
			t.Fatalf("NewStream: %v", err)
		}
	}
	if _, err := s.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(s, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	_ = s.Close()
	after := libp2pMetrics(t)
	if !maps.Equal(before, after) {
		for k := range after {
			if before[k] != after[k] {
				t.Errorf("libp2p recorded metric %s", k)
			}
		}
	}
}
