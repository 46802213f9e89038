package simcluster

import (
	"time"

	"github.com/meridian-mesh/meridian/consensus"
)

// RegionStats is what one region's ledger says, read on its leader.
type RegionStats struct {
	Region string `json:"region"`
	// Leader is the leader's name; empty when the region has none.
	Leader string `json:"leader,omitempty"`
	// Jobs counts the region's own jobs by state name.
	Jobs map[string]int `json:"jobs"`
	// Traded counts jobs of this region served by another region.
	Traded int `json:"traded"`
	// ServedForOthers counts live allocations of other regions' jobs here.
	ServedForOthers int `json:"served_for_others"`
	// CostPerHour is what the live allocations on this region's nodes cost
	// (each its share of its node's price).
	CostPerHour float64 `json:"cost_per_hour"`
	// Placed counts jobs that got a placement (local or traded), and
	// SLOMet those whose serving region is within their latency SLO.
	Placed int `json:"placed"`
	SLOMet int `json:"slo_met"`
	// Utilization is allocated over total compute of the region's ready
	// nodes.
	Utilization float64 `json:"utilization"`
}

// Stats is a snapshot of the whole mesh.
type Stats struct {
	At      time.Time     `json:"at"`
	Regions []RegionStats `json:"regions"`
}

// Totals sums the regions.
func (s Stats) Totals() (submitted, local, traded, pending int, costPerHour, sloPct float64) {
	var placed, met int
	for _, r := range s.Regions {
		for state, n := range r.Jobs {
			submitted += n
			if state == consensus.JobPending.String() {
				pending += n
			}
		}
		traded += r.Traded
		costPerHour += r.CostPerHour
		placed += r.Placed
		met += r.SLOMet
	}
	local = placed - traded
	if placed > 0 {
		sloPct = 100 * float64(met) / float64(placed)
	}
	return
}

// Stats reads every region's leader ledger. Regions without a leader
// report what they last knew through any running server.
func (c *Cluster) Stats() Stats {
	topo := c.net.Network().Topology()
	out := Stats{At: time.Now()}
	for _, region := range c.Regions() {
		rs := RegionStats{Region: region, Jobs: map[string]int{}}
		var l *consensus.Ledger
		if a, ok := c.Leader(region); ok {
			rs.Leader, l = a.Name(), a.Ledger()
		} else if ss := c.Servers(region); len(ss) > 0 {
			l = ss[0].Ledger()
		}
		if l == nil {
			out.Regions = append(out.Regions, rs)
			continue
		}
		for _, j := range l.Jobs() {
			rs.Jobs[j.State.String()]++
			if j.State == consensus.JobPending || j.State == consensus.JobCancelled || j.State == consensus.JobFailed && j.Attempts == 0 {
				continue
			}
			served := region
			if j.Remote != nil {
				served = j.Remote.Region
				rs.Traded++
			}
			rs.Placed++
			if rtt, err := topo.RTT(j.Spec.OriginRegion, served); j.Spec.LatencySLO == 0 || err == nil && rtt <= j.Spec.LatencySLO {
				rs.SLOMet++
			}
		}
		var total, used float64
		for _, n := range l.Nodes() {
			if n.State != consensus.NodeReady {
				continue
			}
			total += n.Total.ComputePerHour
			used += n.Used.ComputePerHour
		}
		if total > 0 {
			rs.Utilization = used / total
		}
		for _, al := range l.LiveAllocations() {
			if n, ok := l.Node(al.NodeID); ok {
				rs.CostPerHour += n.Placement().CostPerHour(al.Resources)
			}
			if al.JobRegion != region {
				rs.ServedForOthers++
			}
		}
		out.Regions = append(out.Regions, rs)
	}
	return out
}
