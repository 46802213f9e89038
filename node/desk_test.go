package node

import (
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/consensus"
	"github.com/meridian-mesh/meridian/placement"
)

func TestLeaseRoom(t *testing.T) {
	now := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	node := func(id string, compute float64, st consensus.NodeState) consensus.Node {
		return consensus.Node{ID: id, Total: placement.Resources{ComputePerHour: compute}, State: st}
	}
	lease := func(dir consensus.LeaseDirection, compute float64, end time.Time) consensus.Lease {
		return consensus.Lease{Direction: dir, Resources: placement.Resources{ComputePerHour: compute}, End: end}
	}
	nodes := []consensus.Node{node("a", 100, consensus.NodeReady), node("b", 100, consensus.NodeReady),
		node("down", 100, consensus.NodeDown)}
	for _, tc := range []struct {
		name   string
		leases []consensus.Lease
		peak   float64
		want   float64
	}{
		{"ready capacity less the forecast peak", nil, 50, 150},
		{"sold leases in force count against it", []consensus.Lease{lease(consensus.LeaseSold, 30, now.Add(time.Hour))}, 50, 120},
		{"ended and bought leases do not", []consensus.Lease{lease(consensus.LeaseSold, 30, now),
			lease(consensus.LeaseBought, 40, now.Add(time.Hour))}, 50, 150},
		{"a peak over capacity leaves nothing", nil, 250, -50},
	} {
		if got := leaseRoom(nodes, tc.leases, tc.peak, now); got != tc.want {
			t.Errorf("%s: leaseRoom = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestLeaseSLOWithinReach(t *testing.T) {
	d := &desk{leaseReach: DefaultLeaseReach}
	for _, tc := range []struct{ planned, want time.Duration }{
		{0, DefaultLeaseReach},
		{50 * time.Millisecond, 50 * time.Millisecond},
		{time.Second, DefaultLeaseReach},
	} {
		if got := d.leaseSLO(tc.planned); got != tc.want {
			t.Errorf("leaseSLO(%v) = %v, want %v", tc.planned, got, tc.want)
		}
	}
	if got := (Tuning{}).withDefaults().LeaseReach; got != DefaultLeaseReach {
		t.Errorf("default LeaseReach = %v, want %v", got, DefaultLeaseReach)
	}
}
