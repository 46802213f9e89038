package gossip

import (
	"slices"
	"sort"
	"time"

	"github.com/hashicorp/serf/coordinate"

	"github.com/meridian-mesh/meridian/placement"
)

// RegionSummary aggregates one region of the view: what placement and the
// market need to choose a region without walking every node.
//
// Capacity figures count alive members only: a suspect, failed or departed
// node cannot take new work, and a member without a capacity record counts
// in Alive but adds no capacity.
type RegionSummary struct {
	// Region is the region's name.
	Region string
	// Alive, Suspect, Failed and Left count the region's members by state.
	Alive, Suspect, Failed, Left int
	// Nodes counts alive members that have a capacity record.
	Nodes int
	// Total and Free sum the capacity of those nodes.
	Total, Free placement.Resources
	// LargestFree is the free capacity of the node with the most free
	// compute: the biggest single job the region can take.
	LargestFree placement.Resources
	// CheapestPricePerHour is the lowest price among nodes with free compute
	// (zero when none has any), and CheapestNode is that node.
	CheapestPricePerHour float64
	CheapestNode         string
	// Utilization is the compute-weighted mean utilization, in [0, 1].
	Utilization float64
	// QueueLength sums the nodes' queues.
	QueueLength int
	// DemandPerHour sums the nodes' recent demand rates.
	DemandPerHour float64
	// ForecastPerHour sums the demand forecasts of the ForecastNodes nodes
	// that publish one.
	ForecastPerHour float64
	ForecastNodes   int
	// RTT is the estimated round-trip time from this region to every region
	// (itself included: the intra-region estimate) whose RTT can be estimated.
	RTT map[string]time.Duration
}

// snapshot is an immutable copy of the view, taken under the view's mutex
// and then read without it.
type snapshot struct {
	members []Member
	records map[string]Record
	coords  map[string]*coordinate.Coordinate // members' latest coordinates, self included
}

// regionCoordinates returns, per region, the coordinates of alive members.
func (s snapshot) regionCoordinates() map[string][]*coordinate.Coordinate {
	out := make(map[string][]*coordinate.Coordinate)
	for _, m := range s.members {
		if m.State != StateAlive && m.State != StateSuspect {
			continue
		}
		if c, ok := s.coords[m.Name]; ok {
			out[m.Region] = append(out[m.Region], c)
		}
	}
	return out
}

// summarize computes the region summaries, sorted by region name.
func summarize(s snapshot) []RegionSummary {
	byRegion := make(map[string]*RegionSummary)
	get := func(region string) *RegionSummary {
		rs, ok := byRegion[region]
		if !ok {
			rs = &RegionSummary{Region: region, RTT: make(map[string]time.Duration)}
			byRegion[region] = rs
		}
		return rs
	}
	weighted := make(map[string]float64) // Σ utilization × total compute
	for _, m := range s.members {
		rs := get(m.Region)
		switch m.State {
		case StateAlive:
			rs.Alive++
		case StateSuspect:
			rs.Suspect++
		case StateFailed:
			rs.Failed++
		case StateLeft:
			rs.Left++
		}
		if m.State != StateAlive {
			continue
		}
		r, ok := s.records[m.Name]
		if !ok || r.Leaving {
			continue
		}
		rs.Nodes++
		rs.Total = rs.Total.Add(r.Total)
		rs.Free = rs.Free.Add(r.Free)
		if r.Free.ComputePerHour > rs.LargestFree.ComputePerHour {
			rs.LargestFree = r.Free
		}
		if r.Free.ComputePerHour > 0 && (rs.CheapestNode == "" || r.PricePerHour < rs.CheapestPricePerHour ||
			(r.PricePerHour == rs.CheapestPricePerHour && r.Node < rs.CheapestNode)) {
			rs.CheapestPricePerHour, rs.CheapestNode = r.PricePerHour, r.Node
		}
		weighted[m.Region] += r.Utilization * r.Total.ComputePerHour
		rs.QueueLength += r.QueueLength
		rs.DemandPerHour += r.DemandPerHour
		if r.Forecast != nil {
			rs.ForecastPerHour += r.Forecast.DemandPerHour
			rs.ForecastNodes++
		}
	}
	coords := s.regionCoordinates()
	out := make([]RegionSummary, 0, len(byRegion))
	for region, rs := range byRegion {
		if rs.Total.ComputePerHour > 0 {
			rs.Utilization = weighted[region] / rs.Total.ComputePerHour
		}
		for other := range byRegion {
			if d, ok := medianDistance(coords[region], coords[other], region == other); ok {
				rs.RTT[other] = d
			}
		}
		out = append(out, *rs)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Region < out[j].Region })
	return out
}

// medianDistance estimates the RTT between two groups of nodes as the median
// of the coordinate distances over all pairs (distinct nodes when same is
// true: the groups are one region). The median shrugs off the few nodes
// whose coordinates have not converged yet.
func medianDistance(a, b []*coordinate.Coordinate, same bool) (time.Duration, bool) {
	var ds []time.Duration
	for i, ca := range a {
		for j, cb := range b {
			if same && j <= i {
				continue
			}
			if !ca.IsCompatibleWith(cb) {
				continue
			}
			ds = append(ds, ca.DistanceTo(cb))
		}
	}
	if len(ds) == 0 {
		return 0, false
	}
	slices.Sort(ds)
	n := len(ds)
	if n%2 == 1 {
		return ds[n/2], true
	}
	return (ds[n/2-1] + ds[n/2]) / 2, true
}
