// Package workload generates the demand Meridian's benchmarks and netsim
// runs place: jobs arriving in every region, following the sun, with the
// sizes and burstiness of a real LLM inference trace.
//
//   - ParseTrace and ParsePrices read the two embedded data files (the
//     Azure LLM inference trace 2023, coding service, CC BY 4.0; AWS GPU
//     prices from the SkyPilot catalog) or replacements given by flags,
//     with errors that name file, line and column. See data/README.md.
//   - Throughput is the documented model that turns a request's tokens
//     into GPU-seconds and a placement.Job, and a node's GPUs into capacity
//     in the same units.
//   - Envelope is the daily shape of a region's demand (peaking in the
//     local afternoon); AWSRegions gives the regions' standard UTC offsets.
//   - Generator produces arrivals, deterministically for its seed, in
//     ModeTrace (resampling the trace) or ModeDiurnal (no trace needed).
//
// Everything is pure: no goroutines, no clock, no global random source. A
// seeded *rand.Rand and a start time are passed in.
// docs/forecast-and-workload.md describes the models and their parameters.
package workload
