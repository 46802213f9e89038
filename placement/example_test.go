package placement_test

import (
	"fmt"
	"time"

	"github.com/meridian-mesh/meridian/placement"
)

// The design's worked example: E = C·D/c is 20, 18.75 and 20, and node1
// wins the tie with node3 on its larger compute.
func ExamplePipeline_Rank() {
	p, err := placement.NewPipeline(placement.Config{})
	if err != nil {
		panic(err)
	}
	job := placement.Job{ID: "example", Demand: placement.Resources{ComputePerHour: placement.ExampleDemand}}
	d, err := p.Rank(job, placement.ExampleNodes())
	if err != nil {
		panic(err)
	}
	for _, e := range d.Explain() {
		fmt.Printf("%s %s %v: %s\n", e.NodeID, e.Outcome, *e.Score, e.Reason)
	}
	// Output:
	// node1 chosen 20: highest score 20, tied with node3; won the tie-break on larger total compute (200 > 100 tasks/h)
	// node3 outranked 20: score 20 ties with node1; lost the tie-break on smaller total compute (100 < 200 tasks/h)
	// node2 outranked 18.75: score 18.75 < 20 of node1
}

// Packing a batch: a job whose users are in eu-west-1 with a 50 ms SLO
// cannot go to us-east-1, however cheap.
func ExamplePipeline_Pack() {
	rtt := placement.NewRTTMatrix()
	if err := rtt.Set("eu-west-1", "us-east-1", 68*time.Millisecond); err != nil {
		panic(err)
	}
	nodes := []placement.Node{
		{ID: "dub-1", Region: "eu-west-1", PricePerHour: 40,
			Total: placement.Resources{ComputePerHour: 400, StorageGB: 1000, BandwidthGBps: 10},
			Free:  placement.Resources{ComputePerHour: 400, StorageGB: 1000, BandwidthGBps: 10}},
		{ID: "iad-1", Region: "us-east-1", PricePerHour: 25,
			Total: placement.Resources{ComputePerHour: 400, StorageGB: 1000, BandwidthGBps: 10},
			Free:  placement.Resources{ComputePerHour: 400, StorageGB: 1000, BandwidthGBps: 10}},
	}
	jobs := []placement.Job{
		{ID: "chat", OriginRegion: "eu-west-1", LatencySLO: 50 * time.Millisecond, Priority: 1,
			Demand: placement.Resources{ComputePerHour: 300}},
		{ID: "batch", Demand: placement.Resources{ComputePerHour: 300}},
		{ID: "more-batch", Demand: placement.Resources{ComputePerHour: 300}},
	}
	p, err := placement.NewPipeline(placement.Config{RTT: rtt})
	if err != nil {
		panic(err)
	}
	plan, err := p.Pack(jobs, nodes)
	if err != nil {
		panic(err)
	}
	for _, pl := range plan.Placements {
		fmt.Printf("%s → %s (score %v)\n", pl.JobID, pl.NodeID, pl.Score)
	}
	for _, u := range plan.Unplaced {
		fmt.Printf("%s unplaced: %s\n", u.JobID, u.Reason())
	}
	// Output:
	// chat → dub-1 (score 3000)
	// batch → iad-1 (score 4800)
	// more-batch unplaced: no feasible node among 2: 2 rejected by resources (e.g. dub-1: needs 300 tasks/h of compute, 100 free)
}
