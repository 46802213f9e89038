package netsim

import (
	"context"
	"io"
	"os"
	"slices"
	"testing"
	"testing/synctest"
	"time"

	"github.com/hashicorp/memberlist"
)

// memberlistStart is a StartFunc running a real memberlist node (WAN
// profile) that joins the given seed nodes (by IP: memberlist would resolve
// a name through the real DNS).
func memberlistStart(seeds []string, members map[string]*memberlist.Memberlist) StartFunc {
	return func(_ context.Context, ep *Endpoint, spec NodeSpec) (io.Closer, error) {
		tr, err := NewMemberlistTransport(ep, memberlistPort)
		if err != nil {
			return nil, err
		}
		conf := memberlist.DefaultWANConfig()
		conf.Name = spec.Name
		conf.Transport = tr
		conf.BindAddr, conf.AdvertiseAddr = ep.IP().String(), ep.IP().String()
		conf.BindPort, conf.AdvertisePort = memberlistPort, memberlistPort
		conf.LogOutput = io.Discard
		m, err := memberlist.Create(conf)
		if err != nil {
			return nil, err
		}
		others := seedAddrs(ep.Network(), seeds, spec.Name)
		if len(others) > 0 {
			// Seeds not started yet refuse; one reachable seed suffices.
			_, _ = m.Join(others)
		}
		members[spec.Name] = m
		return CloserFunc(func() error {
			delete(members, spec.Name)
			return m.Shutdown()
		}), nil
	}
}

// seedAddrs returns the memberlist addresses of the seeds other than self.
func seedAddrs(n *Network, seeds []string, self string) []string {
	var addrs []string
	for _, s := range seeds {
		if e, ok := n.Endpoint(s); ok && s != self {
			addrs = append(addrs, memberAddr(e))
		}
	}
	return addrs
}

// aliveSet returns the sorted names m sees alive.
func aliveSet(m *memberlist.Memberlist) []string {
	var names []string
	for _, node := range m.Members() {
		if node.State == memberlist.StateAlive {
			names = append(names, node.Name)
		}
	}
	slices.Sort(names)
	return names
}

// 60 real memberlist nodes in 6 regions of the world topology run 30 virtual
// minutes: they converge, split along a partition, and all see all again
// after Heal (and the rejoin a real agent performs). It takes ~20 s of wall
// time (longer under -race), so it runs only with NETSIM_LONG=1 and not in
// -short mode; TestWorldMemberlist12Nodes runs the same scenario always.
func TestWorldMemberlist60Nodes(t *testing.T) {
	if testing.Short() || os.Getenv("NETSIM_LONG") == "" {
		t.Skip("set NETSIM_LONG=1 (without -short) to run the 60-node world test")
	}
	worldScenario(t, 10)
}

// TestWorldMemberlist12Nodes is the world scenario with 2 nodes per region.
func TestWorldMemberlist12Nodes(t *testing.T) { worldScenario(t, 2) }

func worldScenario(t *testing.T, perRegion int) {
	wallStart := time.Now()
	synctest.Test(t, func(t *testing.T) {
		regions := []string{"us-east-1", "eu-west-1", "sa-east-1", "ap-northeast-1", "ap-southeast-2", "af-south-1"}
		var seeds []string
		for _, r := range regions {
			seeds = append(seeds, r+"-0")
		}
		members := map[string]*memberlist.Memberlist{} // only touched by this goroutine
		start := time.Now()
		c, err := NewCluster(context.Background(), ClusterConfig{
			Regions:        regions,
			NodesPerRegion: perRegion,
			Seed:           60,
			Jitter:         0.05,
			Start:          memberlistStart(seeds, members),
		})
		if err != nil {
			t.Fatalf("NewCluster: %v", err)
		}
		defer func() {
			if err := c.Close(); err != nil {
				t.Errorf("Cluster.Close: %v", err)
			}
			// memberlist.Shutdown does not wait for a probe in progress
			// (it ends after ProbeTimeout); virtual time stops when this
			// function returns, so let those probes finish first.
			time.Sleep(time.Minute)
		}()
		total := 6 * perRegion
		all := make([]string, 0, total)
		for _, s := range c.Nodes() {
			all = append(all, s.Name)
		}
		slices.Sort(all)
		seesExactly := func(want map[string][]string) func() bool {
			return func() bool {
				for name, m := range members {
					if !slices.Equal(aliveSet(m), want[name]) {
						return false
					}
				}
				return true
			}
		}
		everyone := map[string][]string{}
		for _, name := range all {
			everyone[name] = all
		}
		waitFor(t, 5*time.Minute, time.Second, "every node to see all", seesExactly(everyone))
		converged := time.Since(start)

		// Partition the Atlantic side from the rest.
		west := []string{"us-east-1", "eu-west-1", "sa-east-1"}
		time.Sleep(5*time.Minute - time.Since(start))
		c.Network().Partition(west)
		sides := map[string][]string{}
		var westNodes, eastNodes []string
		for _, s := range c.Nodes() {
			if slices.Contains(west, s.Region) {
				westNodes = append(westNodes, s.Name)
			} else {
				eastNodes = append(eastNodes, s.Name)
			}
		}
		slices.Sort(westNodes)
		slices.Sort(eastNodes)
		for _, name := range westNodes {
			sides[name] = westNodes
		}
		for _, name := range eastNodes {
			sides[name] = eastNodes
		}
		waitFor(t, 10*time.Minute, time.Second, "each side of the partition to see only itself", seesExactly(sides))
		split := time.Since(start)

		time.Sleep(15*time.Minute - time.Since(start))
		c.Network().Heal()
		// memberlist does not re-merge by itself: like a real agent, each
		// node retries its seeds.
		for _, name := range all {
			_, _ = members[name].Join(seedAddrs(c.Network(), seeds, name))
		}
		waitFor(t, 10*time.Minute, time.Second, "every node to see all after Heal", seesExactly(everyone))
		healed := time.Since(start)

		time.Sleep(30*time.Minute - time.Since(start))
		if !seesExactly(everyone)() {
			t.Errorf("at 30 virtual minutes some node does not see all %d", total)
		}
		t.Logf("virtual: converged at %v, split seen at %v, re-merged at %v, ended at %v; faults: %v",
			converged.Round(time.Second), split.Round(time.Second), healed.Round(time.Second),
			time.Since(start).Round(time.Second), c.Network().FaultLog())
		st := c.Network().Stats()
		t.Logf("datagrams sent %d delivered %d blocked %d overflowed %d; stream bytes %d; dials %d",
			st.DatagramsSent, st.DatagramsDelivered, st.DatagramsBlocked, st.DatagramsOverflowed, st.StreamBytes, st.Dials)
	})
	t.Logf("wall time for 30 virtual minutes of %d nodes: %v", 6*perRegion, time.Since(wallStart).Round(time.Millisecond))
}
