package gossip

import (
	"fmt"
	"testing"
	"testing/synctest"
	"time"

	"github.com/meridian-mesh/meridian/netsim"
)

// TestStartupRecordsSpreadByBroadcast: nodes publish a record as they join
// and a second one, of the same length, a second later (as a region
// server publishes its capacity, then its leadership claim), while
// memberlist's own join traffic fills most of every packet. Each second
// record must reach 90% of the nodes within 15 s: by broadcast, not by a
// push/pull (on the WAN profile, about one a minute). With memberlist's
// TransmitLimitedQueue, one record in a failing run reached no other node
// (see broadcast.go).
func TestStartupRecordsSpreadByBroadcast(t *testing.T) {
	// Gossip's paths are random (memberlist draws from the global source):
	// with memberlist's queue, one mesh failed in 4 runs of 8, and these
	// three in 3 runs of 6. With ours, 28 runs of the three passed.
	for _, seed := range []uint64{11, 12, 13} {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) { startupRecordsSpread(t, seed) })
	}
}

func startupRecordsSpread(t *testing.T, seed uint64) {
	synctest.Test(t, func(t *testing.T) {
		const perRegion = 5
		c := newTestCluster(t, netsim.WorldTopology(), seed)
		defer c.close()
		regions := worldRegions
		first := map[string]Capacity{}
		for i := 0; i < perRegion; i++ {
			for _, r := range regions {
				name := nodeName(r, i)
				a := c.start(name, r)
				if len(c.names) > 1 {
					if _, err := a.Join([]string{c.addr(c.names[0])}); err != nil {
						t.Fatalf("%s: Join: %v", name, err)
					}
				}
				capacity := testCapacity(0)
				if _, err := a.SetCapacity(capacity); err != nil {
					t.Fatal(err)
				}
				first[name] = capacity
			}
		}
		time.Sleep(time.Second)
		want := map[string]uint64{}
		for name, capacity := range first {
			capacity.QueueLength = 1 // same encoded length, new content
			rec, err := c.agent(name).SetCapacity(capacity)
			if err != nil {
				t.Fatal(err)
			}
			want[name] = rec.Version
		}
		// A broadcast now and then misses a node, which push/pull repairs
		// later; a record the queue dropped at its source misses them all.
		agents := c.all()
		need := len(agents) * 9 / 10
		holders := func(name string) int {
			have := 0
			for _, a := range agents {
				if r, ok := a.Record(name); ok && r.Version >= want[name] {
					have++
				}
			}
			return have
		}
		waitFor(15*time.Second, 100*time.Millisecond, func() bool {
			for name := range want {
				if holders(name) < need {
					return false
				}
			}
			return true
		})
		for name := range want {
			if have := holders(name); have < need {
				t.Errorf("%s's second record reached %d of %d nodes within 15 s; want at least %d", name, have, len(agents), need)
			}
		}
	})
}
