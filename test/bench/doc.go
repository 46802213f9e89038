// Package bench is Meridian's world benchmark: one workload of a simulated
// day (or any number of hours) of LLM inference demand following the sun
// across the AWS regions that sell a GPU instance type, placed by several
// schedulers on the same per-region capacity, and compared with a linear
// programming lower bound on the cost of the whole run.
//
// The pieces, in the order a run uses them:
//
//   - Config and Flags: what to run (topology, prices, instance type, trace,
//     regions, hours, seed, load, mesh size), from flags after go test's
//     -args or set by hand; Load turns it into a World.
//   - World: the regions, their measured RTTs, their prices and their
//     capacity (nodes × the instance's capacity), immutable once built.
//   - BuildWorkload: the jobs every scheduler places. Requests from the
//     workload generator (real trace sizes and burstiness, daily envelope
//     per region) are aggregated per origin, latency class and window into
//     jobs a mesh can place in tractable numbers (see docs/benchmark.md).
//   - Scheduler: local-only, nearest-first and central-cheapest are
//     deterministic discrete-event simulations over the World's nodes using
//     Meridian's own placement pipeline; Meridian runs the real mesh
//     (node/simcluster) inside a testing/synctest bubble.
//   - LowerBound: the fluid relaxation over time buckets × job class ×
//     serving region, solved with gonum's simplex.
//   - Evaluate and WriteReport: results.json, results.md, details.json and
//     SVG plots (cost over time, per-region utilization, forecast against
//     actual demand).
//
// The benchmark runs as go tests. `make test` includes TestWorld (two hours
// of the default world: LP bound and baselines) and TestWorldMesh (the real
// mesh, with and without its market, on three regions for a quarter of an
// hour); TestWorldDay is the full run — a day, every priced region, the
// mesh included — gated by the MERIDIAN_BENCH environment variable.
// docs/benchmark.md describes the methodology and how to read the results.
package bench
