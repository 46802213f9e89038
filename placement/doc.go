// Package placement holds Meridian's pure decision logic: the resource model,
// the cost-efficiency score, feasibility filters, ranking and packing.
//
// Nothing here does I/O, reads the clock or draws random numbers: callers pass
// an immutable view of the nodes and get back a decision with its explanation.
// The package imports nothing of the mesh, so gossip, consensus, the market
// and node can all share its types. (The one exception to "no I/O" is
// nodefile.go, which parses node lists for the command line and is kept
// apart from the decision logic.)
//
// # Pipeline
//
// A Pipeline, built by NewPipeline, places a job in three stages, as
// Nomad's scheduler stack does:
//
//  1. Feasibility. Each node passes four filters in this order, and the
//     first one it fails rejects it: gpu-type (the job's accelerator model),
//     max-price (the node's whole-node price against Job.MaxPricePerHour),
//     latency-slo (the RTT from the job's origin region to the node's
//     region against Job.LatencySLO) and resources (the job's demand
//     against the node's free compute, storage, bandwidth and GPUs). The
//     order puts the most lasting reason first: a node's GPU model and
//     price do not change while it runs, its free capacity does.
//  2. Ranking. Every feasible node is scored (see Scoring) and ordered by
//     the tie-break rule below.
//  3. Selection. The first node of the ranking wins.
//
// Every Decision explains itself: why the winner won, and for every other
// node either the filter that rejected it or the score (or tie-break) it lost
// on. Rank finds the winner in one pass over the nodes and keeps the rest in
// a compact form; the full ordering and the words of the explanations are
// built when first asked for, so that ranking ten thousand nodes stays well
// under a millisecond.
//
// # Scoring
//
// The score of node i for a job with demand D (tasks/hour) is, by default,
// the cost efficiency
//
//	E_i = C_i·D / c_i
//
// where C_i is the node's compute (tasks/hour) and c_i its price ($/hour).
// ModelWeighted scores with the design's general model instead:
//
//	score_i = w_C·C_i·f(D_C) + w_S·S_i·g(D_S) + w_B·B_i·h(D_B) − λ·c_i
//
// where S_i and B_i are the node's storage and bandwidth, D_C, D_S and
// D_B the job's demand for compute, storage and bandwidth, and f, g and h
// efficiency functions: EfficiencyLinear (f(D) = D) or EfficiencySaturating
// (f(D) = min(D, C)/C, so the term is the part of the demand the node can
// serve). In both models, a job with a latency SLO subtracts a penalty per
// millisecond of RTT from its origin to the node's region.
//
// ScoreConfig.Packing says which capacity C_i, S_i and B_i are. PackBinpack,
// the default, scores the node's total capacity: E is then a property of
// the machine, and a node that is half full scores as well as an empty one
// of its kind, so the tie-break below fills it first. PackSpread scores
// what is free, so the emptiest of equal machines wins. Spreading looks
// kind but strands capacity: with jobs of up to half a node, every node ends
// up with a sliver no later job fits. On the world benchmark's discrete-event
// model (docs/benchmark.md) bin packing placed 91.9 % of the jobs where
// spreading placed 91.1 %, with the same regions tried in the same order.
//
// # Tie-break
//
// Nodes are ordered by score, highest first. Scores that differ by at most a
// relative 1e-9 (so 20.000000001 equals 20) are equal, and equal scores are
// ordered by larger total compute first, then lower price, then (when bin
// packing) less free compute — the best fit — then node ID in byte order. Ties are grouped from the top: a node belongs to the group of
// the highest-scored node it equals, which keeps the order a strict one even
// though "equal within a tolerance" is not transitive. The result depends on
// the set of nodes only, never on their order in the input.
//
// In the worked example (see ExampleNodes), node1 and node3 both score
// E = 20 for D = 100; node1 wins on its larger total compute (200 against
// 100 tasks/hour), which is also the first maximum in input order.
//
// # Packing
//
// Pipeline.Pack places a batch of jobs. Jobs are taken in a fixed order
// (priority high to low, then compute demand large to small, then ID), and
// each goes to the best node of the ranking computed on the free resources
// left by the jobs placed before it (with PackBinpack, the most
// cost-efficient machine that fits, and of equal machines the fullest). No resource of any node
// is ever overcommitted, and the plan depends on the sets of jobs and nodes
// only, not on their order.
package placement
