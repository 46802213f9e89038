package gossip_test

import (
	"fmt"
	"log"
	"time"

	"github.com/meridian-mesh/meridian/gossip"
	"github.com/meridian-mesh/meridian/placement"
)

// An agent joins the mesh, publishes its capacity and reads the view.
// (Not run: it binds real sockets.)
func Example() {
	key, err := gossip.ParseKey("MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=")
	if err != nil {
		log.Fatal(err)
	}
	agent, err := gossip.Start(gossip.Config{
		Name:      "eu-west-1-a",
		Region:    "eu-west-1",
		Role:      gossip.RoleServer,
		HTTPAddr:  "10.0.1.5:8080",
		RaftAddr:  "10.0.1.5:7000",
		Version:   "v0.1.0",
		BindAddr:  "10.0.1.5",
		BindPort:  gossip.DefaultBindPort,
		SecretKey: key,
	})
	if err != nil {
		log.Fatal(err)
	}
	defer agent.Shutdown()
	if _, err := agent.Join([]string{"10.0.2.7:7946", "10.0.3.9:7946"}); err != nil {
		log.Fatal(err)
	}
	if _, err := agent.SetCapacity(gossip.Capacity{
		Total:        placement.Resources{ComputePerHour: 200, StorageGB: 500, BandwidthGBps: 10},
		Free:         placement.Resources{ComputePerHour: 120, StorageGB: 400, BandwidthGBps: 8},
		PricePerHour: 1000,
	}); err != nil {
		log.Fatal(err)
	}
	for _, s := range agent.RegionSummaries() {
		rtt, _ := agent.RegionRTT("eu-west-1", s.Region)
		fmt.Printf("%s: %d alive, %.0f tasks/h free, cheapest $%.0f/h, %v away\n",
			s.Region, s.Alive, s.Free.ComputePerHour, s.CheapestPricePerHour, rtt.Round(time.Millisecond))
	}
	_ = agent.Leave(5 * time.Second)
}
