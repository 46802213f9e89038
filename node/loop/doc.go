// Package loop is Meridian's per-region demand loop: collect → forecast →
// allocate ahead → monitor → feed back, as one deterministic Controller that
// a region's Raft leader drives.
//
//   - Collect: the leader calls Controller.Admitted for every job its ledger
//     records (placed at home, traded away or left unplaced), with the time
//     the ledger stamps as the job's Submitted. Per interval the controller
//     keeps the arrivals and the demanded resource-seconds (demand ×
//     duration, spread over the intervals the job runs in).
//   - Survive a leader change: a new leader calls Controller.Rebuild with its
//     ledger's jobs. The series, the forecaster (with every parameter
//     adaptation the old leader made) and the error statistics are a
//     function of the jobs alone, so the rebuilt controller forecasts what
//     the old one would have, without a new ledger command.
//   - Forecast, allocate ahead, feed back: Controller.Tick, once per interval,
//     folds the intervals that ended into the forecaster (Holt-Winters with a
//     daily season, EWMA while history is short), adapts its parameters when
//     they are due, turns the horizon error into a safety margin, prices the
//     region's capacity by its utilization, and returns a Decision: a lease
//     to buy before a forecast deficit, an ask to advertise a forecast
//     surplus, or nothing — each with its reason. Every adjustment (forecast
//     parameters, safety margin, price multiplier) is logged with slog and
//     kept for Controller.View, which is what GET /v1/regions shows.
//
// The controller reads no clock, starts no goroutine and draws no random
// number: every method takes now. The mathematics is placement/forecast's;
// docs/forecast-and-workload.md ("The loop") describes the whole cycle.
//
// A Controller is safe for concurrent use: one mutex guards all its state
// (the leader's loop calls Admitted and Tick while HTTP handlers call View).
// No method blocks on I/O while holding it; log records are emitted after
// the lock is released.
package loop
