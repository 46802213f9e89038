package loop_test

import (
	"fmt"
	"time"

	"github.com/meridian-mesh/meridian/consensus"
	"github.com/meridian-mesh/meridian/node/loop"
	"github.com/meridian-mesh/meridian/placement"
	"github.com/meridian-mesh/meridian/placement/forecast"
)

// How a region leader drives the loop: New once, Rebuild when it becomes
// leader, Admitted for every job its ledger records, Tick every interval
// with the ledger's capacity, and View for GET /v1/regions.
func Example() {
	gpu := placement.Resources{ComputePerHour: 3600, GPUs: 1}
	c, err := loop.New(loop.Config{Region: "us-east-1", Plan: forecast.PlanConfig{LeaseUnit: gpu}})
	if err != nil {
		fmt.Println(err)
		return
	}
	start := time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)
	if _, err := c.Rebuild(start, nil); err != nil { // the ledger's jobs: none yet
		fmt.Println(err)
		return
	}
	node := consensus.Node{ID: "us-east-1-0", State: consensus.NodeReady, PricePerHour: 32.77,
		Total: placement.Resources{ComputePerHour: 28800, GPUs: 8}, Used: placement.Resources{ComputePerHour: 14400, GPUs: 4}}

	d, err := c.Tick(start, loop.CapacityOf([]consensus.Node{node}, nil))
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("%s %d GPUs at %.2f $/node-hour until %s\n", d.Action, d.Ask.Units, d.Ask.MinPricePerHour, d.Ask.Expires.Format("15:04"))

	job := placement.Job{ID: "j1", Demand: placement.Resources{ComputePerHour: 3600}, Duration: time.Minute}
	if err := c.Admitted(start.Add(time.Second), job, loop.OutcomeLocal); err != nil {
		fmt.Println(err)
		return
	}
	d, _ = c.Tick(start.Add(5*time.Minute), loop.CapacityOf([]consensus.Node{node}, nil))
	fmt.Println(d.Reason)
	v := c.View(start.Add(5 * time.Minute))
	fmt.Printf("price multiplier %.2f, %d job collected\n", v.Adjustments.PriceMultiplier, v.Collected.Local)
	// Output:
	// advertise 8 GPUs at 40.96 $/node-hour until 09:10
	// warming up: 1 of 12 intervals observed before buying or advertising
	// price multiplier 1.25, 1 job collected
}
