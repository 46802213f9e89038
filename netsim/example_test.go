package netsim_test

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/meridian-mesh/meridian/netsim"
)

// Two endpoints in regions 40 ms apart exchange a datagram and a stream
// message; a partition then cuts them apart. (In tests, wrap this in
// synctest.Test to run it in virtual time.)
func Example() {
	topo, err := netsim.ParseTopology(strings.NewReader("from,to,rtt_ms\na,a,1\nb,b,1\na,b,40\n"), "example")
	if err != nil {
		panic(err)
	}
	n, err := netsim.New(netsim.Config{Topology: topo, Seed: 1})
	if err != nil {
		panic(err)
	}
	defer n.Close()
	alice, _ := n.AddEndpoint("alice", "a")
	bob, _ := n.AddEndpoint("bob", "b")

	in, _ := bob.ListenPacket(9000)
	out, _ := alice.ListenPacket(9000)
	start := time.Now()
	out.WriteTo([]byte("hello"), in.LocalAddr())
	buf := make([]byte, 16)
	k, from, _ := in.ReadFrom(buf)
	fmt.Printf("datagram %q from %v, after at least 20ms: %v\n", buf[:k], from, time.Since(start) >= 20*time.Millisecond)

	ln, _ := bob.Listen(80)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		io.Copy(c, c)
		c.Close()
	}()
	c, err := alice.Dial(context.Background(), "bob:80")
	if err != nil {
		panic(err)
	}
	c.Write([]byte("ping"))
	io.ReadFull(c, buf[:4])
	fmt.Printf("echo %q\n", buf[:4])

	n.Partition([]string{"a"}, []string{"b"})
	_, err = c.Read(buf)
	fmt.Println("after partition:", err)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err = alice.Dial(ctx, "bob:80")
	fmt.Println("dial across it:", err)
	// Output:
	// datagram "hello" from 198.18.0.1:9000, after at least 20ms: true
	// echo "ping"
	// after partition: read tcp 198.18.0.1:49152->198.18.0.2:80: connection reset by peer
	// dial across it: dial tcp 198.18.0.1:49153->198.18.0.2:80: i/o timeout
}
