package netsim

import (
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// TestMain fails the package if any test leaves a goroutine behind.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// Outside a bubble the same code runs in real time: delays are at least the
// topology's (a loaded machine may add to them, never subtract), and Close
// leaves no goroutine.
func TestRealTime(t *testing.T) {
	defer goleak.VerifyNone(t)
	topo := mustTopology(t, "from,to,rtt_ms\na,a,1\nb,b,1\na,b,40\n")
	n := mustNetwork(t, Config{Topology: topo, Seed: 1})
	a, b := mustEndpoint(t, n, "a0", "a"), mustEndpoint(t, n, "b0", "b")
	pa, pb := mustListenPacket(t, a, 1), mustListenPacket(t, b, 1)
	for range 5 {
		start := time.Now()
		if _, err := pa.WriteTo([]byte("x"), pb.LocalAddr()); err != nil {
			t.Fatal(err)
		}
		pb.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, _, err := pb.ReadFrom(make([]byte, 1)); err != nil {
			t.Fatalf("ReadFrom: %v", err)
		}
		if d := time.Since(start); d < 20*time.Millisecond {
			t.Errorf("datagram arrived after %v; want at least the one-way 20ms", d)
		}
	}
	ln, err := b.Listen(80)
	if err != nil {
		t.Fatal(err)
	}
	go echoServer(ln)
	start := time.Now()
	c, err := a.DialTimeout("b0:80", 10*time.Second)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	if d := time.Since(start); d < 40*time.Millisecond {
		t.Errorf("dial took %v; want at least one RTT (40ms)", d)
	}
	start = time.Now()
	c.Write([]byte("ping"))
	if _, err := io.ReadFull(c, make([]byte, 4)); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 40*time.Millisecond {
		t.Errorf("round trip took %v; want at least one RTT (40ms)", d)
	}
	// An idle reader is released by Close, as is the echo server.
	idle, err := a.DialTimeout("b0:80", 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { _, err := idle.Read(make([]byte, 1)); errc <- err }()
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err == nil {
		t.Errorf("Read returned no error after Network.Close")
	}
	if _, err := a.Dial(context.Background(), "b0:80"); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Dial after Close: %v; want net.ErrClosed", err)
	}
}
