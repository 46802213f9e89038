package netsim

import (
	"fmt"
	"io"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"
)

// BenchmarkDatagramThroughput measures delivered datagrams per second, in
// real time: 4 sender/receiver pairs in one region (0.2 ms RTT), each with up
// to 1024 datagrams in flight. datagrams/s is per wall-clock second;
// datagrams/cpu-s is per second of CPU the process used (the per-core
// figure, independent of other load on the machine).
func BenchmarkDatagramThroughput(b *testing.B) {
	topo := mustTopology(b, "from,to,rtt_ms\na,a,0.2\n")
	n := mustNetwork(b, Config{Topology: topo, Seed: 1, DatagramQueue: 2048})
	defer n.Close()
	const pairs, window = 4, 1024
	type pair struct {
		src, dst net.PacketConn
		tokens   chan struct{}
	}
	var ps []pair
	for i := range pairs {
		src := mustListenPacket(b, mustEndpoint(b, n, fmt.Sprintf("s%d", i), "a"), 1)
		dst := mustListenPacket(b, mustEndpoint(b, n, fmt.Sprintf("r%d", i), "a"), 1)
		ps = append(ps, pair{src, dst, make(chan struct{}, window)})
	}
	payload := make([]byte, 200)
	b.ReportAllocs()
	b.ResetTimer()
	start, cpuStart := time.Now(), processCPUTime()
	var wg sync.WaitGroup
	for i, p := range ps {
		count := b.N / pairs
		if i < b.N%pairs {
			count++
		}
		wg.Go(func() { // sender
			to := p.dst.LocalAddr()
			for range count {
				p.tokens <- struct{}{}
				if _, err := p.src.WriteTo(payload, to); err != nil {
					b.Errorf("WriteTo: %v", err)
					return
				}
			}
		})
		wg.Go(func() { // receiver
			buf := make([]byte, 512)
			for range count {
				if _, _, err := p.dst.ReadFrom(buf); err != nil {
					b.Errorf("ReadFrom: %v", err)
					return
				}
				<-p.tokens
			}
		})
	}
	wg.Wait()
	elapsed, cpu := time.Since(start), processCPUTime()-cpuStart
	b.StopTimer()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "datagrams/s")
	if cpu > 0 {
		b.ReportMetric(float64(b.N)/cpu.Seconds(), "datagrams/cpu-s")
	}
	if st := n.Stats(); st.DatagramsDelivered != uint64(b.N) {
		b.Errorf("delivered %d of %d", st.DatagramsDelivered, b.N)
	}
}

// BenchmarkStreamThroughput measures bytes per second through one stream
// connection in one region (0.2 ms RTT, 1 MiB window), in real time.
func BenchmarkStreamThroughput(b *testing.B) {
	topo := mustTopology(b, "from,to,rtt_ms\na,a,0.2\n")
	n := mustNetwork(b, Config{Topology: topo, Seed: 1})
	defer n.Close()
	a, c := mustEndpoint(b, n, "a0", "a"), mustEndpoint(b, n, "a1", "a")
	ln, err := c.Listen(80)
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan int64)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			done <- 0
			return
		}
		k, _ := io.Copy(io.Discard, conn)
		done <- k
	}()
	conn, err := a.DialTimeout("a1:80", 10*time.Second)
	if err != nil {
		b.Fatal(err)
	}
	chunk := make([]byte, 32<<10)
	b.SetBytes(int64(len(chunk)))
	b.ResetTimer()
	for b.Loop() {
		if _, err := conn.Write(chunk); err != nil {
			b.Fatal(err)
		}
	}
	conn.Close()
	if got := <-done; got != int64(b.N)*int64(len(chunk)) {
		b.Errorf("received %d bytes; want %d", got, int64(b.N)*int64(len(chunk)))
	}
}

// BenchmarkIdleEndpointMemory measures the simulator's heap per idle
// endpoint: bare, and with the sockets of a typical node bound (a
// memberlist transport and a raft stream layer).
func BenchmarkIdleEndpointMemory(b *testing.B) {
	for _, withSockets := range []bool{false, true} {
		name := "bare"
		if withSockets {
			name = "memberlist+raft"
		}
		b.Run(name, func(b *testing.B) {
			const endpoints = 2000
			var perEndpoint float64
			for b.Loop() {
				var before, after runtime.MemStats
				runtime.GC()
				runtime.ReadMemStats(&before)
				n := mustNetwork(b, Config{})
				keep := make([]any, 0, 2*endpoints)
				for i := range endpoints {
					e := mustEndpoint(b, n, fmt.Sprintf("n%d", i), "us-east-1")
					if withSockets {
						tr, err := NewMemberlistTransport(e, 7946)
						if err != nil {
							b.Fatal(err)
						}
						rl, err := NewRaftStreamLayer(e, 7000)
						if err != nil {
							b.Fatal(err)
						}
						keep = append(keep, tr, rl)
					}
				}
				runtime.GC()
				runtime.ReadMemStats(&after)
				perEndpoint = float64(after.HeapAlloc-before.HeapAlloc) / endpoints
				runtime.KeepAlive(keep)
				n.Close()
			}
			b.ReportMetric(perEndpoint, "bytes/endpoint")
		})
	}
}
