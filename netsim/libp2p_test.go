package netsim

import (
	"context"
	"io"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	rcmgr "github.com/libp2p/go-libp2p/p2p/host/resource-manager"
	"go.uber.org/goleak"
)

const echoProto = "/netsim-test/echo/1"

func echoHandler(s network.Stream) {
	defer s.Close()
	buf := make([]byte, 64)
	for {
		k, err := s.Read(buf)
		if k > 0 {
			if _, werr := s.Write(buf[:k]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// roundTrip writes a byte on a fresh stream and times the echo.
func roundTrip(ctx context.Context, from, to host.Host) (time.Duration, error) {
	s, err := from.NewStream(ctx, to.ID(), echoProto)
	if err != nil {
		return 0, err
	}
	defer s.Close()
	// The first exchange also negotiates the protocol; time the second.
	buf := make([]byte, 1)
	for i := range 2 {
		start := time.Now()
		if _, err := s.Write([]byte{byte(i)}); err != nil {
			return 0, err
		}
		if _, err := io.ReadFull(s, buf); err != nil {
			return 0, err
		}
		if i == 1 {
			return time.Since(start), nil
		}
	}
	return 0, nil
}

// hostKinds are the two kinds of libp2p hosts netsim makes.
var hostKinds = []struct {
	name string
	make func(n *Network, e *Endpoint) (host.Host, error)
}{
	{"libp2p", func(n *Network, e *Endpoint) (host.Host, error) { return n.NewLibp2pHost(e) }},
	{"mocknet", func(n *Network, e *Endpoint) (host.Host, error) { return n.NewMocknetHost(e) }},
}

// reachable reports whether from can open an echo stream to to within 5 s.
func reachable(from, to host.Host) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := from.Connect(ctx, PeerInfo(to)); err != nil {
		return false
	}
	_, err := roundTrip(ctx, from, to)
	return err == nil
}

// eventuallyReachable retries like an agent would: libp2p backs off from a
// peer after failed dials, and a closed connection is noticed one one-way
// delay later.
func eventuallyReachable(t *testing.T, from, to host.Host, what string) {
	t.Helper()
	waitFor(t, 2*time.Minute, time.Second, what, func() bool { return reachable(from, to) })
}

// A libp2p stream round trip takes the topology's RTT of virtual time,
// follows partitions and latency factors, and a closed network leaves no
// goroutine (synctest.Test checks).
func TestLibp2pRoundTripAndPartition(t *testing.T) {
	for _, kind := range hostKinds {
		t.Run(kind.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				n := mustNetwork(t, Config{Topology: mustTopology(t, twoRegions), Seed: 3})
				defer n.Close()
				ea, eb := mustEndpoint(t, n, "a0", "a"), mustEndpoint(t, n, "b0", "b")
				ha, err := kind.make(n, ea)
				if err != nil {
					t.Fatalf("new host: %v", err)
				}
				hb, err := kind.make(n, eb)
				if err != nil {
					t.Fatalf("new host: %v", err)
				}
				hb.SetStreamHandler(echoProto, echoHandler)
				ctx := context.Background()
				start := time.Now()
				if err := ha.Connect(ctx, PeerInfo(hb)); err != nil {
					t.Fatalf("Connect: %v", err)
				}
				t.Logf("connect (with handshakes) took %v", time.Since(start))
				rtt, err := roundTrip(ctx, ha, hb)
				if err != nil {
					t.Fatalf("round trip: %v", err)
				}
				t.Logf("stream round trip a↔b: %v", rtt)
				if want := 150 * time.Millisecond; rtt < want*9/10 || rtt > want*11/10 {
					t.Errorf("libp2p round trip = %v; want %v ±10%%", rtt, want)
				}

				n.Partition([]string{"a"}, []string{"b"})
				synctest.Wait()
				if got := ha.Network().Connectedness(hb.ID()); got == network.Connected {
					t.Errorf("after Partition: connectedness %v; want not connected", got)
				}
				if reachable(ha, hb) {
					t.Errorf("round trip across a partition succeeded")
				}

				n.Heal()
				eventuallyReachable(t, ha, hb, "reachable after Heal")

				n.SetLatencyFactor("a", "b", 2)
				rtt, err = roundTrip(ctx, ha, hb)
				if err != nil {
					t.Fatalf("round trip: %v", err)
				}
				if want := 300 * time.Millisecond; rtt < want*9/10 || rtt > want*11/10 {
					t.Errorf("libp2p round trip with latency factor 2 = %v; want %v ±10%%", rtt, want)
				}
			})
		})
	}
}

// Crash, isolation and one-way cuts cut libp2p hosts apart; undoing them
// reconnects; a closed host can be replaced by a new one with the same peer
// ID (a restarted node).
func TestLibp2pFaultsAndRestart(t *testing.T) {
	for _, kind := range hostKinds {
		t.Run(kind.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				n := mustNetwork(t, Config{Seed: 3})
				defer n.Close()
				ea := mustEndpoint(t, n, "a0", "us-east-1")
				eb := mustEndpoint(t, n, "b0", "eu-west-1")
				ha, err := kind.make(n, ea)
				if err != nil {
					t.Fatal(err)
				}
				hb, err := kind.make(n, eb)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := kind.make(n, eb); err == nil {
					t.Errorf("a second live host for one endpoint was allowed")
				}
				if got := ha.Addrs(); len(got) != 1 || got[0].String() != "/ip4/198.18.0.1/tcp/4001" {
					t.Errorf("Addrs() = %v; want [/ip4/198.18.0.1/tcp/4001]", got)
				}
				hb.SetStreamHandler(echoProto, echoHandler)
				// us-east-1→eu-west-1 is 70 ms, eu-west-1→us-east-1 69 ms.
				eventuallyReachable(t, ha, hb, "first connection")
				if got, err := roundTrip(context.Background(), ha, hb); err != nil || got != 69500*time.Microsecond {
					t.Errorf("round trip %v, %v; want 69.5ms", got, err)
				}
				for _, fault := range []struct {
					name        string
					apply, undo func()
				}{
					{"crash", func() { n.Crash("b0") }, func() { n.Restart("b0") }},
					{"isolate", func() { n.Isolate("a0") }, func() { n.Heal() }},
					{"one-way cut", func() { n.Cut("b0", "us-east-1", false) }, func() { n.Heal() }},
				} {
					fault.apply()
					if reachable(ha, hb) {
						t.Errorf("%s: hosts still reach each other", fault.name)
					}
					fault.undo()
					eventuallyReachable(t, ha, hb, "reachable after undoing "+fault.name)
				}

				id := hb.ID()
				if err := hb.Close(); err != nil {
					t.Fatalf("Close: %v", err)
				}
				hb2, err := kind.make(n, eb)
				if err != nil {
					t.Fatalf("new host after Close: %v", err)
				}
				if hb2.ID() != id {
					t.Errorf("restarted host has peer ID %s; want %s", hb2.ID(), id)
				}
				hb2.SetStreamHandler(echoProto, echoHandler)
				eventuallyReachable(t, ha, hb2, "the replacement host reachable")
			})
		})
	}
}

// Outside a bubble, hosts run in real time and Network.Close (which closes
// the hosts left open) leaves no goroutine behind.
func TestLibp2pRealTime(t *testing.T) {
	for _, kind := range hostKinds {
		t.Run(kind.name, func(t *testing.T) {
			defer goleak.VerifyNone(t)
			n := mustNetwork(t, Config{Topology: mustTopology(t, "from,to,rtt_ms\na,a,1\nb,b,1\na,b,30\n"), Seed: 1})
			ha, err := kind.make(n, mustEndpoint(t, n, "a0", "a"))
			if err != nil {
				t.Fatal(err)
			}
			hb, err := kind.make(n, mustEndpoint(t, n, "b0", "b"))
			if err != nil {
				t.Fatal(err)
			}
			hb.SetStreamHandler(echoProto, echoHandler)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if err := ha.Connect(ctx, PeerInfo(hb)); err != nil {
				t.Fatal(err)
			}
			d, err := roundTrip(ctx, ha, hb)
			if err != nil {
				t.Fatal(err)
			}
			if d < 30*time.Millisecond {
				t.Errorf("real-time round trip %v; want at least 30ms", d)
			}
			if err := n.Close(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// systemFDLimit returns the file descriptor limit of h's resource manager,
// or -1 if the manager keeps none (the null manager).
func systemFDLimit(t *testing.T, h host.Host) int {
	t.Helper()
	fds := -1
	if err := h.Network().ResourceManager().ViewSystem(func(s network.ResourceScope) error {
		if l, ok := s.(rcmgr.ResourceScopeLimiter); ok {
			fds = l.Limit().GetFDLimit()
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return fds
}

// A NewLibp2pHost host is as slim as the market's production host: no
// ping service, and a resource manager with fixed limits (libp2p's base
// ones, 256 file descriptors, whatever the machine) — unless opts bring
// their own manager.
func TestLibp2pHostIsSlim(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := mustNetwork(t, Config{Seed: 3})
		defer n.Close()
		h, err := n.NewLibp2pHost(mustEndpoint(t, n, "a0", "us-east-1"))
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range h.Mux().Protocols() {
			if strings.Contains(string(p), "ping") || strings.Contains(string(p), "relay") || strings.Contains(string(p), "autonat") {
				t.Errorf("host speaks %s", p)
			}
		}
		if got := systemFDLimit(t, h); got != 256 {
			t.Errorf("system FD limit = %d, want the fixed 256", got)
		}

		limits := rcmgr.DefaultLimits
		limits.SystemBaseLimit.FD = 300
		mgr, err := rcmgr.NewResourceManager(rcmgr.NewFixedLimiter(limits.Scale(0, 0)))
		if err != nil {
			t.Fatal(err)
		}
		h2, err := n.NewLibp2pHost(mustEndpoint(t, n, "b0", "eu-west-1"), libp2p.ResourceManager(mgr))
		if err != nil {
			t.Fatalf("a host with its own resource manager: %v", err)
		}
		if got := systemFDLimit(t, h2); got != 300 {
			t.Errorf("system FD limit = %d, want opts' 300", got)
		}
	})
}
