// Package chaos is Meridian's chaos suite: it runs a whole mesh on netsim in
// virtual time, drives a steady seeded job load through the agents' API,
// breaks the network and the nodes on a seeded fault schedule, and then
// checks, Jepsen-style, that the mesh kept its promises.
//
// A run is a function of its seed: the scenario turns the seed into a fault
// schedule (Scenario.Generate), PlanLoad turns it into the client operations
// and the cluster and network draw their randomness from it, so a failing
// seed replays the same schedule and load (the interleaving of goroutines
// is not recorded, see docs/chaos.md).
//
// The pure parts live in this package's ordinary files and are unit tested
// on their own: the scenarios and their schedules, the load plan, the
// history recorder, the checkers (overcommit, escrow expiry, lost and
// duplicated jobs, gossip convergence, linearizability with porcupine) and
// the report. The runner that puts them on a node/simcluster mesh is in
// runner.go.
//
// The suite runs as a Go test (see chaos_test.go); flags after -args select
// seeds, scenario, length and a JSON report:
//
//	go test ./test/chaos/ -run 'TestChaos$' -v -args -seeds 200 -scenario random -json chaos.json
//	go test ./test/chaos/ -run 'TestChaos$' -v -args -seed 17 -scenario random   # replay one seed
package chaos
