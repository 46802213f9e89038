package netsim

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"testing/synctest"
	"time"
)

// datagramProbe is a datagram socket that records arrivals.
type arrival struct {
	seq     uint64
	latency time.Duration
	from    string
}

// stampedPayload carries a sequence number and the send time.
func stampedPayload(seq uint64) []byte {
	b := make([]byte, 16)
	binary.BigEndian.PutUint64(b, seq)
	binary.BigEndian.PutUint64(b[8:], uint64(time.Now().UnixNano()))
	return b
}

// collect reads datagrams from pc until no datagram arrives for quiet.
func collect(t testing.TB, pc net.PacketConn, quiet time.Duration) []arrival {
	t.Helper()
	var out []arrival
	buf := make([]byte, 2048)
	for {
		_ = pc.SetReadDeadline(time.Now().Add(quiet))
		k, from, err := pc.ReadFrom(buf)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return out
			}
			t.Errorf("ReadFrom: %v", err)
			return out
		}
		if k != 16 {
			t.Errorf("datagram of %d bytes; want 16", k)
			continue
		}
		sent := time.Unix(0, int64(binary.BigEndian.Uint64(buf[8:16])))
		out = append(out, arrival{seq: binary.BigEndian.Uint64(buf[:8]), latency: time.Since(sent), from: from.String()})
	}
}

func mustListenPacket(t testing.TB, e *Endpoint, port int) net.PacketConn {
	t.Helper()
	pc, err := e.ListenPacket(port)
	if err != nil {
		t.Fatalf("ListenPacket(%s, %d): %v", e.Name(), port, err)
	}
	return pc
}

func udpAddr(e *Endpoint, port int) *net.UDPAddr { return &net.UDPAddr{IP: e.IP(), Port: port} }

// Datagram and stream latencies follow the world topology within the
// jitter bound, for every ordered pair of a few far-apart regions.
func TestLatencyFollowsTopology(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const jitter = 0.1
		n := mustNetwork(t, Config{Seed: 11, Jitter: jitter})
		defer n.Close()
		regions := []string{"us-east-1", "eu-west-2", "eu-west-3", "ap-southeast-2", "af-south-1", "sa-east-1"}
		var eps []*Endpoint
		var pcs []net.PacketConn
		for i, r := range regions {
			e := mustEndpoint(t, n, fmt.Sprintf("n%d", i), r)
			eps = append(eps, e)
			pcs = append(pcs, mustListenPacket(t, e, 9000))
		}
		const perPair = 50
		// Receivers run concurrently so each arrival is timed when it lands.
		results := make([][]arrival, len(pcs))
		var wg sync.WaitGroup
		for j, dst := range pcs {
			wg.Go(func() { results[j] = collect(t, dst, time.Second) })
		}
		for i, src := range pcs {
			for j := range eps {
				for k := range perPair {
					if _, err := src.WriteTo(stampedPayload(uint64(i*1000+k)), udpAddr(eps[j], 9000)); err != nil {
						t.Fatalf("WriteTo: %v", err)
					}
				}
			}
		}
		wg.Wait()
		for j, got := range results {
			if len(got) != perPair*len(eps) {
				t.Errorf("%s received %d datagrams; want %d", eps[j].Name(), len(got), perPair*len(eps))
			}
			sums := map[int]time.Duration{}
			for _, a := range got {
				i := int(a.seq / 1000)
				link, _ := n.Topology().Link(regions[i], regions[j])
				want := link.OneWay()
				if i == j {
					want = 0 // same endpoint: loopback
				}
				bound := time.Duration(jitter*float64(want)) + want/10
				if a.latency < want-bound || a.latency > want+bound {
					t.Errorf("%s→%s latency %v; want %v ± %v", regions[i], regions[j], a.latency, want, bound)
				}
				sums[i] += a.latency
			}
			for i, sum := range sums {
				link, _ := n.Topology().Link(regions[i], regions[j])
				want := link.OneWay()
				if i == j {
					want = 0
				}
				if mean := sum / perPair; math.Abs(float64(mean-want)) > 0.05*float64(want) {
					t.Errorf("%s→%s mean latency %v; want %v ±5%%", regions[i], regions[j], mean, want)
				}
			}
		}

		// A stream echo between two regions takes one RTT to connect and
		// one RTT per round trip.
		a, b := eps[0], eps[3] // us-east-1, ap-southeast-2
		rttAB, _ := n.Topology().RTT(a.Region(), b.Region())
		rttBA, _ := n.Topology().RTT(b.Region(), a.Region())
		rtt := (rttAB + rttBA) / 2
		ln, err := b.Listen(9100)
		if err != nil {
			t.Fatal(err)
		}
		go echoServer(ln)
		start := time.Now()
		c, err := a.Dial(context.Background(), fmt.Sprintf("%s:9100", b.IP()))
		if err != nil {
			t.Fatalf("Dial: %v", err)
		}
		within(t, "dial", time.Since(start), rtt, jitter)
		for range 5 {
			start = time.Now()
			if _, err := c.Write([]byte("ping")); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 4)
			if _, err := io.ReadFull(c, buf); err != nil {
				t.Fatal(err)
			}
			within(t, "stream round trip", time.Since(start), rtt, jitter)
		}
		c.Close()
		ln.Close()
	})
}

// within checks got = want ± (jitter·want + 10%).
func within(t testing.TB, what string, got, want time.Duration, jitter float64) {
	t.Helper()
	bound := time.Duration(jitter*float64(want)) + want/10
	if got < want-bound || got > want+bound {
		t.Errorf("%s took %v; want %v ± %v", what, got, want, bound)
	}
}

// echoServer echoes every accepted connection until the listener closes.
func echoServer(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			_, _ = io.Copy(c, c)
		}()
	}
}

// Per-connection byte order holds even with heavy jitter.
func TestStreamKeepsByteOrderUnderJitter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := mustNetwork(t, Config{Topology: mustTopology(t, twoRegions), Seed: 5, Jitter: 0.9})
		defer n.Close()
		a, b := mustEndpoint(t, n, "a0", "a"), mustEndpoint(t, n, "b0", "b")
		ln, _ := b.Listen(80)
		var want bytes.Buffer
		go func() {
			c, err := a.Dial(context.Background(), "b0:80") // endpoint names resolve too
			if err != nil {
				t.Errorf("Dial: %v", err)
				return
			}
			defer c.Close()
			for i := range 2000 {
				msg := fmt.Appendf(nil, "%d,", i)
				want.Write(msg)
				if _, err := c.Write(msg); err != nil {
					t.Errorf("Write: %v", err)
					return
				}
				if i%100 == 0 {
					time.Sleep(time.Millisecond)
				}
			}
		}()
		c, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(c)
		if err != nil {
			t.Fatalf("ReadAll: %v", err)
		}
		if !bytes.Equal(got, want.Bytes()) {
			t.Errorf("stream reordered bytes: got %d bytes %.40q...; want %d bytes", len(got), got, want.Len())
		}
		c.Close()
	})
}

// isErrno reports whether err wraps errno.
func isErrno(err error, errno syscall.Errno) bool { return errors.Is(err, errno) }

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// A partition blocks datagrams and streams both ways, resets connections
// across it at once, drops datagrams in flight; Heal restores everything.
func TestPartitionBlocksBothWaysAndHealRestores(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := mustNetwork(t, Config{Topology: mustTopology(t, twoRegions), Seed: 1})
		defer n.Close()
		a, b := mustEndpoint(t, n, "a0", "a"), mustEndpoint(t, n, "b0", "b")
		a1 := mustEndpoint(t, n, "a1", "a")
		pa, pb, pa1 := mustListenPacket(t, a, 1), mustListenPacket(t, b, 1), mustListenPacket(t, a1, 1)
		ln, _ := b.Listen(80)
		go echoServer(ln)
		conn, err := a.Dial(context.Background(), b.IP().String()+":80")
		if err != nil {
			t.Fatal(err)
		}

		// A datagram in flight when the partition starts is dropped.
		pa.WriteTo(stampedPayload(1), udpAddr(b, 1))
		time.Sleep(10 * time.Millisecond)
		n.Partition([]string{"a"}, []string{"b"})
		partitionedAt := time.Now()
		readErr := make(chan error, 1)
		go func() {
			_, err := conn.Read(make([]byte, 1))
			readErr <- err
		}()
		if err := <-readErr; !isErrno(err, syscall.ECONNRESET) {
			t.Errorf("Read on a connection across the partition: %v; want ECONNRESET", err)
		}
		if d := time.Since(partitionedAt); d != 0 {
			t.Errorf("reset reached the reader %v after the partition; want at once", d)
		}
		pa.WriteTo(stampedPayload(2), udpAddr(b, 1))
		pb.WriteTo(stampedPayload(3), udpAddr(a, 1))
		pa.WriteTo(stampedPayload(4), udpAddr(a1, 1)) // same side: delivered
		if got := collect(t, pb, time.Second); len(got) != 0 {
			t.Errorf("b received %d datagrams across the partition; want 0", len(got))
		}
		if got := collect(t, pa, time.Second); len(got) != 0 {
			t.Errorf("a received %d datagrams across the partition; want 0", len(got))
		}
		if got := collect(t, pa1, time.Second); len(got) != 1 {
			t.Errorf("a1 received %d datagrams from its own side; want 1", len(got))
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		start := time.Now()
		_, err = a.Dial(ctx, b.IP().String()+":80")
		cancel()
		if !isTimeout(err) || time.Since(start) != 3*time.Second {
			t.Errorf("Dial across the partition: %v after %v; want a timeout after 3s", err, time.Since(start))
		}
		if st := n.Stats(); st.DatagramsBlocked != 3 {
			t.Errorf("DatagramsBlocked = %d; want 3 (one in flight, two sent)", st.DatagramsBlocked)
		}

		n.Heal()
		pa.WriteTo(stampedPayload(5), udpAddr(b, 1))
		pb.WriteTo(stampedPayload(6), udpAddr(a, 1))
		if got := collect(t, pb, time.Second); len(got) != 1 {
			t.Errorf("b received %d datagrams after Heal; want 1", len(got))
		}
		if got := collect(t, pa, time.Second); len(got) != 1 {
			t.Errorf("a received %d datagrams after Heal; want 1", len(got))
		}
		c2, err := a.Dial(context.Background(), b.IP().String()+":80")
		if err != nil {
			t.Fatalf("Dial after Heal: %v", err)
		}
		c2.Close()
		ln.Close()
		conn.Close()
	})
}

// sendOne sends one datagram from src to dst and reports whether it arrived.
func sendOne(t testing.TB, src, dst net.PacketConn) bool {
	t.Helper()
	if _, err := src.WriteTo(stampedPayload(0), dst.LocalAddr()); err != nil {
		t.Fatalf("WriteTo: %v", err)
	}
	return len(collect(t, dst, 2*time.Second)) == 1
}

// Cuts are directional and accept endpoint or region names; Isolate cuts an
// endpoint off from everyone; each has its undo.
func TestCutAndIsolate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := mustNetwork(t, Config{Topology: mustTopology(t, twoRegions), Seed: 1})
		defer n.Close()
		a0, a1, b0 := mustEndpoint(t, n, "a0", "a"), mustEndpoint(t, n, "a1", "a"), mustEndpoint(t, n, "b0", "b")
		p := map[string]net.PacketConn{}
		for _, e := range []*Endpoint{a0, a1, b0} {
			p[e.Name()] = mustListenPacket(t, e, 1)
		}
		ln, _ := b0.Listen(80)
		go echoServer(ln)
		type flow struct {
			from, to string
			want     bool
		}
		check := func(stage string, flows []flow) {
			t.Helper()
			for _, f := range flows {
				if got := sendOne(t, p[f.from], p[f.to]); got != f.want {
					t.Errorf("%s: %s→%s delivered = %v; want %v", stage, f.from, f.to, got, f.want)
				}
			}
		}

		n.Cut("a0", "b0", false)
		check("cut a0→b0", []flow{{"a0", "b0", false}, {"b0", "a0", true}, {"a1", "b0", true}})
		// A stream needs both directions.
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		if _, err := a0.Dial(ctx, "b0:80"); !isTimeout(err) {
			t.Errorf("Dial over a one-way cut: %v; want timeout", err)
		}
		cancel()
		n.Uncut("a0", "b0", false)
		check("uncut", []flow{{"a0", "b0", true}})

		n.Cut("b", "a", false) // region-wide, one way
		check("cut b→a", []flow{{"b0", "a0", false}, {"b0", "a1", false}, {"a0", "b0", true}, {"a0", "a1", true}})
		n.Heal()
		check("heal", []flow{{"b0", "a0", true}})

		n.Isolate("a0")
		check("isolate a0", []flow{{"a0", "a1", false}, {"a1", "a0", false}, {"a0", "b0", false}, {"a1", "b0", true}})
		n.Unisolate("a0")
		check("unisolate a0", []flow{{"a0", "a1", true}, {"a1", "a0", true}})
		ln.Close()
	})
}

// Datagram loss follows the configured probability within statistical
// bounds, from a SetLoss override and from the topology's loss column.
func TestLossWithinStatisticalBounds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		topo := mustTopology(t, "from,to,rtt_ms,loss\na,a,2,\nb,b,2,\na,b,150,0.05\n")
		n := mustNetwork(t, Config{Topology: topo, Seed: 99, DatagramQueue: 1 << 15})
		defer n.Close()
		a, b := mustEndpoint(t, n, "a0", "a"), mustEndpoint(t, n, "b0", "b")
		pa, pb := mustListenPacket(t, a, 1), mustListenPacket(t, b, 1)
		const sends = 20000
		measure := func(p float64) {
			t.Helper()
			for i := range sends {
				pa.WriteTo(stampedPayload(uint64(i)), pb.LocalAddr())
			}
			got := len(collect(t, pb, time.Second))
			rate := 1 - float64(got)/sends
			sigma := math.Sqrt(p * (1 - p) / sends)
			if math.Abs(rate-p) > 5*sigma {
				t.Errorf("loss rate %.4f; want %.4f ± %.4f (5σ)", rate, p, 5*sigma)
			}
		}
		measure(0.05) // from the topology
		n.SetLoss("a", "b", 0.3)
		measure(0.3)
		n.SetLoss("a0", "b0", 0.6) // an endpoint pair beats the region pair
		measure(0.6)
		n.ClearLink("a0", "b0")
		measure(0.3)
		n.ClearLinks()
		measure(0.05)
	})
}

// trace runs a lossy, jittery exchange among three concurrent senders and
// returns what each receiver saw, in order.
func trace(t *testing.T, seed int64) string {
	var out string
	synctest.Test(t, func(t *testing.T) {
		n := mustNetwork(t, Config{Seed: seed, Jitter: 0.5})
		defer n.Close()
		regions := []string{"us-east-1", "eu-west-1", "ap-northeast-1"}
		var pcs []net.PacketConn
		for i, r := range regions {
			pcs = append(pcs, mustListenPacket(t, mustEndpoint(t, n, fmt.Sprintf("n%d", i), r), 1))
		}
		n.SetLoss("us-east-1", "eu-west-1", 0.3)
		n.SetLoss("eu-west-1", "ap-northeast-1", 0.2)
		results := make([][]arrival, len(pcs))
		var wg sync.WaitGroup
		for j, pc := range pcs {
			wg.Go(func() { results[j] = collect(t, pc, 2*time.Second) })
		}
		for i, src := range pcs {
			wg.Go(func() {
				for k := range 200 {
					for j, dst := range pcs {
						if j != i {
							src.WriteTo(stampedPayload(uint64(i*1000+k)), dst.LocalAddr())
						}
					}
					time.Sleep(time.Millisecond)
				}
			})
		}
		wg.Wait()
		var b strings.Builder
		for j, got := range results {
			for _, a := range got {
				fmt.Fprintf(&b, "%d<-%d:%v ", j, a.seq, a.latency)
			}
		}
		out = b.String()
	})
	return out
}

// The same seed gives the same drops and delays, whatever the interleaving
// of concurrent senders; another seed gives others.
func TestDeterministicBySeed(t *testing.T) {
	first := trace(t, 7)
	if first == "" {
		t.Fatal("empty trace")
	}
	if again := trace(t, 7); again != first {
		t.Errorf("same seed, different traces:\n%.300s\n%.300s", first, again)
	}
	if other := trace(t, 8); other == first {
		t.Errorf("seeds 7 and 8 gave the same trace")
	}
}

// Crash resets an endpoint's connections at both ends at once and drops its
// traffic; Restart brings it back with its sockets still bound.
func TestCrashAndRestart(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := mustNetwork(t, Config{Topology: mustTopology(t, twoRegions), Seed: 1})
		defer n.Close()
		a, b := mustEndpoint(t, n, "a0", "a"), mustEndpoint(t, n, "b0", "b")
		pa, pb := mustListenPacket(t, a, 1), mustListenPacket(t, b, 1)
		ln, _ := b.Listen(80)
		accepted := make(chan net.Conn, 1)
		go func() {
			c, err := ln.Accept()
			if err == nil {
				accepted <- c
			}
		}()
		ca, err := a.Dial(context.Background(), "b0:80")
		if err != nil {
			t.Fatal(err)
		}
		cb := <-accepted
		errs := make(chan error, 2)
		for _, c := range []net.Conn{ca, cb} {
			go func() {
				_, err := c.Read(make([]byte, 1))
				errs <- err
			}()
		}
		synctest.Wait()
		crashedAt := time.Now()
		n.Crash("b0")
		if !b.Crashed() {
			t.Errorf("Crashed() = false after Crash")
		}
		for range 2 {
			if err := <-errs; !isErrno(err, syscall.ECONNRESET) {
				t.Errorf("Read after crash: %v; want ECONNRESET", err)
			}
		}
		if d := time.Since(crashedAt); d != 0 {
			t.Errorf("resets took %v; want at once", d)
		}
		if sendOne(t, pa, pb) {
			t.Errorf("datagram delivered to a crashed endpoint")
		}
		if _, err := pb.WriteTo([]byte("x"), pa.LocalAddr()); !isErrno(err, syscall.ENETDOWN) {
			t.Errorf("send from a crashed endpoint: %v; want ENETDOWN", err)
		}
		if _, err := b.Dial(context.Background(), "a0:80"); !isErrno(err, syscall.ENETDOWN) {
			t.Errorf("dial from a crashed endpoint: %v; want ENETDOWN", err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		if _, err := a.Dial(ctx, "b0:80"); !isTimeout(err) {
			t.Errorf("dial to a crashed endpoint: %v; want timeout", err)
		}
		cancel()

		n.Restart("b0")
		if !sendOne(t, pa, pb) || !sendOne(t, pb, pa) {
			t.Errorf("datagrams not delivered after Restart")
		}
		go echoServer(ln)
		c, err := a.Dial(context.Background(), "b0:80")
		if err != nil {
			t.Fatalf("dial after Restart: %v", err)
		}
		c.Close()
		ln.Close()
	})
}

// Dial errors: refused after one RTT, unknown host at once, malformed
// addresses named, black holes time out.
func TestDialErrors(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := mustNetwork(t, Config{Topology: mustTopology(t, twoRegions), Seed: 1, ConnectTimeout: 30 * time.Second})
		defer n.Close()
		a, b := mustEndpoint(t, n, "a0", "a"), mustEndpoint(t, n, "b0", "b")
		start := time.Now()
		_, err := a.Dial(context.Background(), b.IP().String()+":81")
		if !isErrno(err, syscall.ECONNREFUSED) {
			t.Errorf("dial to a closed port: %v; want ECONNREFUSED", err)
		}
		if d := time.Since(start); d != 150*time.Millisecond {
			t.Errorf("refusal took %v; want one RTT (150ms)", d)
		}
		start = time.Now()
		if _, err := a.Dial(context.Background(), "198.18.9.9:80"); !isErrno(err, syscall.EHOSTUNREACH) || time.Since(start) != 0 {
			t.Errorf("dial to an unknown address: %v after %v; want EHOSTUNREACH at once", err, time.Since(start))
		}
		for _, addr := range []string{"b0", "b0:0", "b0:http", ":80", "b0:70000"} {
			if _, err := a.Dial(context.Background(), addr); err == nil || !strings.Contains(err.Error(), addr) {
				t.Errorf("Dial(%q) = %v; want an error naming the address", addr, err)
			}
		}
		n.Isolate("b0")
		start = time.Now()
		if _, err := a.DialTimeout("b0:80", 0); !isTimeout(err) || time.Since(start) != 30*time.Second {
			t.Errorf("dial into a black hole without deadline: %v after %v; want timeout after ConnectTimeout", err, time.Since(start))
		}
		// The fault ends while the SYN is being retransmitted (at 1 s, 3 s,
		// 7 s...): the dial connects at the next retransmission.
		ln, _ := b.Listen(80)
		go func() {
			time.Sleep(2500 * time.Millisecond)
			n.Heal()
		}()
		start = time.Now()
		c, err := a.DialTimeout("b0:80", 10*time.Second)
		if err != nil || time.Since(start) != 3*time.Second+150*time.Millisecond {
			t.Errorf("dial healed mid-way: %v after %v; want a connection after 3.15s", err, time.Since(start))
		} else {
			c.Close()
		}
		ln.Close()
		n.Isolate("b0")
		ctx, cancel := context.WithCancel(context.Background())
		go func() {
			time.Sleep(time.Second)
			cancel()
		}()
		if _, err := a.Dial(ctx, "b0:80"); !errors.Is(err, context.Canceled) {
			t.Errorf("cancelled dial: %v; want context.Canceled", err)
		}
	})
}

// Deadlines on stream connections and datagram sockets expire in virtual
// time, can be moved while a call waits, and flow control blocks a writer
// until the reader drains.
func TestDeadlinesAndFlowControl(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := mustNetwork(t, Config{Topology: mustTopology(t, twoRegions), Seed: 1, StreamWindow: 1000})
		defer n.Close()
		a, b := mustEndpoint(t, n, "a0", "a"), mustEndpoint(t, n, "b0", "b")
		ln, _ := b.Listen(80)
		defer ln.Close()
		accepted := make(chan net.Conn, 1)
		go func() {
			c, _ := ln.Accept()
			accepted <- c
		}()
		ca, err := a.Dial(context.Background(), "b0:80")
		if err != nil {
			t.Fatal(err)
		}
		cb := <-accepted

		// Read deadline, extended while the read waits.
		start := time.Now()
		ca.SetReadDeadline(start.Add(time.Second))
		go func() {
			time.Sleep(500 * time.Millisecond)
			ca.SetReadDeadline(start.Add(3 * time.Second))
		}()
		if _, err := ca.Read(make([]byte, 1)); !isTimeout(err) || time.Since(start) != 3*time.Second {
			t.Errorf("Read with deadline: %v after %v; want timeout after 3s", err, time.Since(start))
		}
		ca.SetReadDeadline(time.Time{})

		// Flow control: 1000-byte window, nobody reads: a 5000-byte write
		// stalls and times out having written exactly the window.
		ca.SetWriteDeadline(time.Now().Add(time.Second))
		k, err := ca.Write(make([]byte, 5000))
		if !isTimeout(err) || k != 1000 {
			t.Errorf("Write into a full window: %d, %v; want 1000 bytes and a timeout", k, err)
		}
		ca.SetWriteDeadline(time.Time{})
		// A reader drains; the writer completes.
		done := make(chan error, 1)
		go func() {
			_, err := ca.Write(bytes.Repeat([]byte{7}, 4000))
			done <- err
		}()
		got, err := io.ReadAll(io.LimitReader(cb, 5000))
		if err != nil || len(got) != 5000 {
			t.Errorf("reader got %d bytes, %v; want 5000", len(got), err)
		}
		if err := <-done; err != nil {
			t.Errorf("Write after drain: %v", err)
		}

		// Datagram socket read deadline.
		pc := mustListenPacket(t, a, 1)
		start = time.Now()
		pc.SetReadDeadline(start.Add(2 * time.Second))
		if _, _, err := pc.ReadFrom(make([]byte, 1)); !isTimeout(err) || time.Since(start) != 2*time.Second {
			t.Errorf("ReadFrom with deadline: %v after %v; want timeout after 2s", err, time.Since(start))
		}
		ca.Close()
		cb.Close()
	})
}

// Close: the peer reads the data, then io.EOF one one-way delay later; its
// writes are discarded until the reset comes back, then fail.
func TestCloseSemantics(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := mustNetwork(t, Config{Topology: mustTopology(t, twoRegions), Seed: 1})
		defer n.Close()
		a, b := mustEndpoint(t, n, "a0", "a"), mustEndpoint(t, n, "b0", "b")
		ln, _ := b.Listen(80)
		defer ln.Close()
		accepted := make(chan net.Conn, 1)
		go func() {
			c, _ := ln.Accept()
			accepted <- c
		}()
		ca, err := a.Dial(context.Background(), "b0:80")
		if err != nil {
			t.Fatal(err)
		}
		cb := <-accepted
		start := time.Now()
		ca.Write([]byte("bye"))
		ca.Close()
		got, err := io.ReadAll(cb)
		if string(got) != "bye" || err != nil {
			t.Errorf("peer read %q, %v; want \"bye\"", got, err)
		}
		if d := time.Since(start); d != 75*time.Millisecond {
			t.Errorf("EOF after %v; want the one-way delay 75ms", d)
		}
		if _, err := cb.Write([]byte("late")); err != nil {
			t.Errorf("write before the reset is back: %v; want success", err)
		}
		time.Sleep(75 * time.Millisecond)
		if _, err := cb.Write([]byte("later")); !isErrno(err, syscall.EPIPE) {
			t.Errorf("write after the reset is back: %v; want EPIPE", err)
		}
		if _, err := ca.Read(make([]byte, 1)); !errors.Is(err, net.ErrClosed) {
			t.Errorf("Read on a closed conn: %v; want net.ErrClosed", err)
		}
		if err := ca.Close(); !errors.Is(err, net.ErrClosed) {
			t.Errorf("second Close: %v; want net.ErrClosed", err)
		}
		cb.Close()
	})
}

// Bandwidth limits stream transfers and, beyond the router buffer, drops
// datagrams; a latency factor scales the one-way latency.
func TestBandwidthAndLatencyFactor(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := mustNetwork(t, Config{Topology: mustTopology(t, twoRegions), Seed: 1})
		defer n.Close()
		a, b := mustEndpoint(t, n, "a0", "a"), mustEndpoint(t, n, "b0", "b")
		ln, _ := b.Listen(80)
		defer ln.Close()
		accepted := make(chan net.Conn, 1)
		go func() {
			c, _ := ln.Accept()
			accepted <- c
		}()
		ca, err := a.Dial(context.Background(), "b0:80")
		if err != nil {
			t.Fatal(err)
		}
		cb := <-accepted
		const rate = 100_000 // bytes/s
		n.SetBandwidth("a", "b", rate)
		start := time.Now()
		go func() {
			ca.Write(make([]byte, 200_000))
			ca.Close()
		}()
		got, _ := io.ReadAll(cb)
		if len(got) != 200_000 {
			t.Errorf("received %d bytes; want 200000", len(got))
		}
		within(t, "200 kB at 100 kB/s", time.Since(start), 2*time.Second+75*time.Millisecond, 0)
		cb.Close()

		// Datagrams beyond the 250 ms router buffer are dropped: 1000-byte
		// datagrams (1028 on the wire) at 100 kB/s, ~25 fit.
		pa, pb := mustListenPacket(t, a, 1), mustListenPacket(t, b, 1)
		for range 100 {
			pa.WriteTo(make([]byte, 1000), pb.LocalAddr())
		}
		delivered := 0
		for {
			pb.SetReadDeadline(time.Now().Add(2 * time.Second))
			if _, _, err := pb.ReadFrom(make([]byte, 2000)); err != nil {
				break
			}
			delivered++
		}
		if delivered < 24 || delivered > 26 {
			t.Errorf("%d of 100 datagrams got through a 100 kB/s link; want ~25", delivered)
		}
		n.SetBandwidth("a", "b", 0)

		measure := func() time.Duration {
			start := time.Now()
			pa.WriteTo(stampedPayload(0), pb.LocalAddr())
			pb.SetReadDeadline(time.Time{})
			pb.ReadFrom(make([]byte, 100))
			return time.Since(start)
		}
		n.SetLatencyFactor("a", "b", 2)
		if d := measure(); d != 150*time.Millisecond {
			t.Errorf("one-way latency with factor 2: %v; want 150ms", d)
		}
		n.ClearLink("a", "b")
		if d := measure(); d != 75*time.Millisecond {
			t.Errorf("one-way latency after ClearLink: %v; want 75ms", d)
		}
	})
}

// A full receive queue drops datagrams and counts them.
func TestDatagramQueueOverflow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := mustNetwork(t, Config{Topology: mustTopology(t, twoRegions), Seed: 1, DatagramQueue: 4})
		defer n.Close()
		a, b := mustEndpoint(t, n, "a0", "a"), mustEndpoint(t, n, "b0", "b")
		pa, pb := mustListenPacket(t, a, 1), mustListenPacket(t, b, 1)
		for i := range 10 {
			pa.WriteTo(stampedPayload(uint64(i)), pb.LocalAddr())
		}
		pa.WriteTo(stampedPayload(99), udpAddr(b, 2)) // nobody bound port 2
		time.Sleep(time.Second)
		st := n.Stats()
		if st.DatagramsDelivered != 4 || st.DatagramsOverflowed != 6 || st.DatagramsUnbound != 1 {
			t.Errorf("stats %+v; want 4 delivered, 6 overflowed, 1 unbound", st)
		}
		if _, err := pa.WriteTo(make([]byte, MaxDatagramSize+1), pb.LocalAddr()); !isErrno(err, syscall.EMSGSIZE) {
			t.Errorf("oversized datagram: %v; want EMSGSIZE", err)
		}
	})
}

func TestEndpointsAndPorts(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := mustNetwork(t, Config{Topology: mustTopology(t, twoRegions)})
		defer n.Close()
		a := mustEndpoint(t, n, "a0", "a")
		b := mustEndpoint(t, n, "b0", "b")
		if a.IP().String() != "198.18.0.1" || b.IP().String() != "198.18.0.2" {
			t.Errorf("IPs %s, %s; want 198.18.0.1, 198.18.0.2", a.IP(), b.IP())
		}
		if e, ok := n.Endpoint("b0"); !ok || e != b || e.Region() != "b" || e.Name() != "b0" {
			t.Errorf("Endpoint(b0) = %v, %v", e, ok)
		}
		for _, tt := range []struct{ name, region, want string }{
			{"x", "mars", "unknown region"},
			{"a0", "a", "already exists"},
			{"b", "a", "is a region name"},
			{"", "a", "empty"},
			{"with space", "a", "only printable"},
		} {
			if _, err := n.AddEndpoint(tt.name, tt.region); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("AddEndpoint(%q, %q) = %v; want error containing %q", tt.name, tt.region, err, tt.want)
			}
		}
		l1, err := a.Listen(80)
		if err != nil {
			t.Fatal(err)
		}
		if l1.Addr().String() != "198.18.0.1:80" {
			t.Errorf("Addr() = %v", l1.Addr())
		}
		if _, err := a.Listen(80); !isErrno(err, syscall.EADDRINUSE) {
			t.Errorf("second Listen(80): %v; want EADDRINUSE", err)
		}
		if _, err := a.Listen(-1); err == nil {
			t.Errorf("Listen(-1) succeeded")
		}
		l2, _ := a.Listen(0)
		if p := l2.Addr().(*net.TCPAddr).Port; p < firstEphemeralPort {
			t.Errorf("ephemeral port %d", p)
		}
		if _, err := a.ListenPacket(80); err != nil {
			t.Errorf("ListenPacket(80) with TCP 80 bound: %v; want separate namespaces", err)
		}
		if _, err := a.ListenPacket(80); !isErrno(err, syscall.EADDRINUSE) {
			t.Errorf("second ListenPacket(80): %v; want EADDRINUSE", err)
		}
		l1.Close()
		if _, err := l1.Accept(); !errors.Is(err, net.ErrClosed) {
			t.Errorf("Accept after Close: %v; want net.ErrClosed", err)
		}
		if _, err := a.Listen(80); err != nil {
			t.Errorf("Listen(80) after Close: %v", err)
		}
		l2.Close()
	})
}

// Invalid faults are rejected with an error naming the field and change
// nothing; valid ones are logged with their virtual time.
func TestFaultValidationAndLog(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var logs bytes.Buffer
		n := mustNetwork(t, Config{
			Topology: mustTopology(t, twoRegions),
			Logger:   slog.New(slog.NewTextHandler(&logs, nil)),
		})
		defer n.Close()
		mustEndpoint(t, n, "a0", "a")
		for _, tt := range []struct {
			f    Fault
			want string
		}{
			{Fault{Kind: FaultPartition, Groups: [][]string{{"a", "mars"}}}, `"mars"`},
			{Fault{Kind: FaultPartition, Groups: [][]string{{"a"}, {"a"}}}, "already in group 0"},
			{Fault{Kind: FaultIsolate, A: "zz"}, `endpoint "zz"`},
			{Fault{Kind: FaultCrash}, `endpoint ""`},
			{Fault{Kind: FaultCut, A: "a0", B: "nowhere"}, "field B"},
			{Fault{Kind: FaultLoss, A: "a", B: "b", Value: 1.5}, "loss 1.5"},
			{Fault{Kind: FaultLoss, A: "a", B: "b", Value: math.NaN()}, "loss NaN"},
			{Fault{Kind: FaultLatency, A: "a", B: "b", Value: 0}, "latency factor 0"},
			{Fault{Kind: FaultBandwidth, A: "a", B: "b", Value: -1}, "bandwidth -1"},
			{Fault{Kind: "flood"}, `unknown fault kind "flood"`},
		} {
			if err := n.Apply(tt.f); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Apply(%+v) = %v; want error containing %q", tt.f, err, tt.want)
			}
		}
		if len(n.FaultLog()) != 0 {
			t.Errorf("rejected faults were logged: %v", n.FaultLog())
		}
		n.Isolate("nobody") // the convenience form logs the rejection
		if !strings.Contains(logs.String(), "netsim fault rejected") {
			t.Errorf("rejected Isolate not logged: %s", logs.String())
		}
		start := time.Now()
		time.Sleep(90 * time.Second)
		n.Partition([]string{"a"})
		time.Sleep(30 * time.Second)
		n.Heal()
		log := n.FaultLog()
		if len(log) != 2 || log[0].At.Sub(start) != 90*time.Second || log[1].At.Sub(start) != 120*time.Second ||
			log[0].Fault.Kind != FaultPartition || log[1].Fault.Kind != FaultHeal {
			t.Errorf("FaultLog = %v; want partition at +90s, heal at +120s", log)
		}
		if !strings.Contains(logs.String(), "fault=\"partition {a}\"") {
			t.Errorf("partition not in the slog output: %s", logs.String())
		}
	})
}

// Network.Close releases every blocked call: Accept, Read, Write into a
// full window, ReadFrom, a dial into a black hole. synctest.Test fails if
// any goroutine stays blocked.
func TestCloseReleasesBlockedCalls(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := mustNetwork(t, Config{Topology: mustTopology(t, twoRegions), StreamWindow: 10})
		a, b := mustEndpoint(t, n, "a0", "a"), mustEndpoint(t, n, "b0", "b")
		c := mustEndpoint(t, n, "c0", "b")
		ln, _ := b.Listen(80)
		ln2, _ := c.Listen(80)
		go func() { ln2.Accept() }()
		ca, err := a.Dial(context.Background(), "b0:80")
		if err != nil {
			t.Fatal(err)
		}
		cb, _ := ln.Accept()
		pc := mustListenPacket(t, a, 1)
		n.Isolate("c0")
		errs := make(chan error, 5)
		go func() { _, err := ca.Write(make([]byte, 100)); errs <- err }()
		go func() { _, err := ca.Read(make([]byte, 1000)); errs <- err }() // cb never writes
		_ = cb                                                             // and never reads: ca's writer waits for window
		go func() { _, _, err := pc.ReadFrom(make([]byte, 10)); errs <- err }()
		go func() { _, err := a.Dial(context.Background(), "c0:80"); errs <- err }()
		go func() { _, err := ln.Accept(); errs <- err }()
		time.Sleep(time.Second)
		synctest.Wait()
		if err := n.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		for range 5 {
			if err := <-errs; err == nil {
				t.Errorf("a blocked call returned no error after Close")
			}
		}
		if err := n.Close(); err != nil {
			t.Errorf("second Close: %v", err)
		}
		if _, err := n.AddEndpoint("late", "a"); !errors.Is(err, ErrNetworkClosed) {
			t.Errorf("AddEndpoint after Close: %v; want ErrNetworkClosed", err)
		}
	})
}

// A topology's bandwidth_mbps column limits the region link, shared by all
// its traffic.
func TestTopologyBandwidth(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// 0.8 Mbit/s = 100 kB/s from a to b.
		topo := mustTopology(t, "from,to,rtt_ms,bandwidth_mbps\na,a,2,\nb,b,2,\na,b,150,0.8\nb,a,150,\n")
		n := mustNetwork(t, Config{Topology: topo})
		defer n.Close()
		a0, a1, b := mustEndpoint(t, n, "a0", "a"), mustEndpoint(t, n, "a1", "a"), mustEndpoint(t, n, "b0", "b")
		ln, _ := b.Listen(80)
		defer ln.Close()
		var wg sync.WaitGroup
		start := time.Now()
		for _, src := range []*Endpoint{a0, a1} {
			wg.Go(func() {
				c, err := src.Dial(context.Background(), "b0:80")
				if err != nil {
					t.Errorf("Dial: %v", err)
					return
				}
				c.Write(make([]byte, 50_000))
				c.Close()
			})
		}
		for range 2 {
			c, err := ln.Accept()
			if err != nil {
				t.Fatal(err)
			}
			wg.Go(func() {
				io.Copy(io.Discard, c)
				c.Close()
			})
		}
		wg.Wait()
		// 100 kB over a shared 100 kB/s link, after the 150 ms handshake
		// and the 75 ms propagation.
		within(t, "two 50 kB transfers sharing 100 kB/s", time.Since(start), time.Second+225*time.Millisecond, 0)
	})
}
