package gossip

import (
	"testing"
	"testing/synctest"
	"time"

	"github.com/meridian-mesh/meridian/netsim"
)

// TestRefreshFetchesARecordNotBroadcast: a record version that was never
// broadcast (as one a broadcast missed) reaches a node that asks for it
// with Refresh within a round trip, instead of at the next periodic
// push/pull (about a minute on the WAN profile).
func TestRefreshFetchesARecordNotBroadcast(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newTestCluster(t, netsim.WorldTopology(), 3)
		defer c.close()
		c.grow([]string{"us-east-1", "eu-west-1"}, 1)
		if _, ok := waitFor(time.Minute, 100*time.Millisecond, c.recordsConverged); !ok {
			t.Fatalf("records did not converge: %s", c.describe())
		}
		asker, owner := c.agent(nodeName("us-east-1", 0)), c.agent(nodeName("eu-west-1", 0))
		capacity := testCapacity(0)
		capacity.QueueLength = 7
		e, err := owner.setCapacity(capacity, false, false) // issued, not broadcast
		if err != nil {
			t.Fatal(err)
		}
		if !asker.Refresh(owner.cfg.Name) {
			t.Fatal("Refresh refused the request")
		}
		if asker.Refresh(asker.cfg.Name) {
			t.Error("Refresh took a request for the node's own record")
		}
		d, ok := waitFor(time.Second, 10*time.Millisecond, func() bool {
			r, ok := asker.Record(owner.cfg.Name)
			return ok && r.Version >= e.rec.Version
		})
		if !ok {
			t.Fatalf("%s did not fetch %s's record within %v", asker.cfg.Name, owner.cfg.Name, d)
		}
		t.Logf("fetched after %v (round trip us-east-1 ↔ eu-west-1)", d)
	})
}

func TestRefreshDueAtMostOncePerInterval(t *testing.T) {
	last := map[string]time.Time{}
	t0 := time.Date(2026, 11, 29, 0, 0, 0, 0, time.UTC)
	for _, step := range []struct {
		name string
		at   time.Duration
		want bool
	}{
		{"a", 0, true},
		{"a", time.Second, false},
		{"b", time.Second, true},
		{"a", RefreshInterval - time.Nanosecond, false},
		{"a", RefreshInterval, true},
		{"b", RefreshInterval, false},
		{"b", time.Second + RefreshInterval, true},
	} {
		if got := refreshDue(last, step.name, t0.Add(step.at)); got != step.want {
			t.Errorf("refreshDue(%s, +%v) = %v, want %v", step.name, step.at, got, step.want)
		}
	}
	if len(last) != 2 {
		t.Errorf("%d members remembered, want 2", len(last))
	}
}
