package bench

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/netsim"
	"github.com/meridian-mesh/meridian/placement"
	"github.com/meridian-mesh/meridian/placement/workload"
)

// tinyInstance is the instance type of hand-made worlds: one GPU, so a node
// offers 3,600 tasks/hour.
const tinyInstance = "t1.gpu"

// tinyWorld builds a hand-made world: the regions with the given prices
// (US dollars per node-hour), the RTTs in milliseconds given for each pair
// (both directions; 1 ms within a region), and nodes per region.
func tinyWorld(t *testing.T, prices map[string]float64, rttMs map[[2]string]int, nodes int) *World {
	t.Helper()
	var topo strings.Builder
	topo.WriteString("from,to,rtt_ms\n")
	var regions []string
	for r := range prices {
		regions = append(regions, r)
		fmt.Fprintf(&topo, "%s,%s,1\n", r, r)
	}
	for pair, ms := range rttMs {
		fmt.Fprintf(&topo, "%s,%s,%d\n", pair[0], pair[1], ms)
	}
	tp, err := netsim.ParseTopology(strings.NewReader(topo.String()), "tiny topology")
	if err != nil {
		t.Fatal(err)
	}
	var pl strings.Builder
	pl.WriteString("instance_type,accelerator,accelerator_count,vcpus,memory_gib,region,on_demand_usd_per_hour,spot_min_usd_per_hour,spot_max_usd_per_hour\n")
	for _, r := range regions {
		fmt.Fprintf(&pl, "%s,A100,1,12,96,%s,%v,,\n", tinyInstance, r, prices[r])
	}
	pr, err := workload.ParsePrices(strings.NewReader(pl.String()), "tiny prices")
	if err != nil {
		t.Fatal(err)
	}
	workers := nodes - 1
	if workers == 0 {
		workers = -1
	}
	w, err := Load(Config{Topology: tp, TopologySource: "tiny", Prices: pr, Instance: tinyInstance,
		Servers: 1, Workers: workers, Length: time.Hour, HistoryDays: -1})
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// t0 is the start of hand-made scenarios.
var t0 = DefaultStart

// job is a hand-made job: origin, arrival offset, compute (tasks/hour),
// SLO and duration.
func job(id, origin string, at time.Duration, compute float64, slo, dur time.Duration) Job {
	j := Job{ID: id, Origin: origin, At: t0.Add(at), Duration: dur, LatencySLO: slo,
		Demand: placement.Resources{ComputePerHour: compute}, Priority: 1, Class: workload.Batch, WireGB: compute / 3600}
	if slo > 0 {
		j.Class, j.Priority = workload.Interactive, 2
	}
	return j
}

// indexed numbers jobs as a Workload would.
func indexed(jobs ...Job) []Job {
	for i := range jobs {
		jobs[i].Index = i
	}
	return jobs
}
