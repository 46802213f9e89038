// Package forecast is the "collect → forecast → allocate ahead → feed back"
// half of Meridian's demand loop, as pure functions and plain values.
//
//   - Series collects, per fixed interval, the arrivals and the demanded
//     resource-seconds a region leader admitted (or traded away, or could not
//     place). Its state is a plain struct (SeriesState) that a ledger can
//     snapshot, so a new leader rebuilds the series after a leader change.
//   - HoltWinters (additive trend and daily season) and EWMA are the two
//     models; Forecaster runs EWMA while it has seen fewer than two seasons
//     and Holt-Winters from then on, forecasts h steps ahead, never returns
//     negative demand, tracks its error (MAPE, bias) and adapts its
//     parameters by a deterministic grid search, returning one Adjustment
//     record per pass for the caller to log.
//   - PlanAhead turns a forecast and the capacity at hand into a plan: buy a
//     lease before a deficit, advertise a surplus, or do nothing, with the
//     reason. PriceConfig.Ask is the utilization-aware ask price.
//
// Nothing here starts goroutines, reads the clock or draws random numbers:
// times are passed in and every result is a function of the inputs, so a
// new leader that replays the same series reaches the same state. None of
// the types is safe for concurrent use; one goroutine (the region leader's
// loop) owns each value. docs/forecast-and-workload.md describes the models
// and their parameters.
package forecast
