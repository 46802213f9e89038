// Package gossip is Meridian's view of the mesh: who is up, where, with what
// capacity at what price, and how far apart the nodes are.
//
// Every agent runs hashicorp/memberlist (SWIM failure detection and gossip).
// On top of it this package disseminates:
//
//   - node metadata (region, role, HTTP/raft/libp2p addresses, build version),
//     carried in memberlist's alive messages and limited to MetaMaxSize bytes;
//   - capacity records, one per node, versioned by a number that only grows.
//     A change goes out as a small broadcast on memberlist's gossip queue and
//     the whole table is exchanged in memberlist's periodic push/pull, so the
//     view converges even when broadcasts are lost. Merging keeps the higher
//     version (ties broken by the encoded bytes), which makes it idempotent,
//     commutative and associative;
//   - network coordinates (Vivaldi, hashicorp/serf/coordinate) carried in the
//     payload of memberlist's probe acks, and a smoothed RTT per probed peer,
//     so any node can estimate the RTT between any two nodes or regions.
//
// On top of the view, RegionSummaries aggregates free capacity, the cheapest
// price, member counts and inter-region RTT estimates for placement and the
// market; Agent.RegionRTT implements placement's RTT estimator.
//
// memberlist forgets dead members, so two sides of a healed partition do not
// find each other again by themselves. Like serf, the agent remembers recently
// failed members (bounded) and retries joining them with backoff until they
// are alive again, they leave, or ReconnectTimeout passes.
//
// Concurrency: one mutex (view.mu) guards every piece of the agent's mutable
// state. memberlist calls the delegates from its own goroutines; they take
// the mutex briefly and never block on I/O or on subscribers (events go to
// buffered channels and are dropped, and counted, when a subscriber is slow).
package gossip
