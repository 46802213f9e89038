// Package netsim is a simulated wide-area network for running the real
// memberlist, hashicorp/raft and go-libp2p code of many nodes in one
// process, with measured inter-region latencies, jitter, loss, bandwidth,
// faults and — inside a testing/synctest bubble — virtual time.
//
// A Topology gives the round-trip time of every ordered pair of regions;
// WorldTopology embeds 21 AWS regions measured by cloudping.co. A Network
// places Endpoints (one per node) in regions and gives each a virtual IPv4
// address from 198.18.0.0/15. Endpoints carry datagrams (ListenPacket, and
// memberlist's packets) and stream connections (Listen/Dial, memberlist's
// TCP, raft); each delivery takes the link's one-way latency (RTT/2, ± jitter,
// times any latency factor, plus serialization on bandwidth-limited links),
// datagrams are lost at the link's loss rate or when the receive queue is
// full, and a stream keeps its byte order and window. Nothing opens a real
// socket.
//
// Faults change the network while it runs and are all reversible:
// Partition, Isolate, Cut, SetLoss, SetLatencyFactor, SetBandwidth, Crash and
// Restart, Heal. Each is logged with its (virtual) time and kept in FaultLog;
// Fault values can be applied with Apply, and RandomSchedule generates a
// reproducible fault schedule from a seed. All randomness (jitter, loss,
// libp2p identities) comes from Config.Seed, one stream per directed endpoint
// pair, so the same seed gives the same drops and delays.
//
// Adapters put the real libraries on top: NewMemberlistTransport (a
// memberlist.NodeAwareTransport), NewRaftStreamLayer (a raft.StreamLayer for
// raft.NetworkTransport) and Network.NewLibp2pHost (a real go-libp2p host
// with Noise and yamux over netsim stream connections; NewMocknetHost is a
// lighter mocknet-based one). Cluster starts R regions ×
// M nodes with a StartFunc per node and crashes and restarts them.
//
// Virtual time: create the Network inside synctest.Test and time.Now, timers
// and deadlines follow the bubble's clock, which jumps ahead whenever every
// goroutine is blocked. Every wait in netsim is a channel operation or a
// timer, and Close releases every waiter, so hours of a world cluster run in
// seconds. Outside a bubble the same code runs in real time. See
// docs/netsim.md.
package netsim
