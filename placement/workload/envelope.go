package workload

import (
	"fmt"
	"math"
	"time"

	"github.com/meridian-mesh/meridian/placement"
)

// Envelope is the daily shape of a region's demand: a raised cosine over
// the local day with its maximum at PeakHour and its minimum, twelve hours
// away, at TroughRatio times the maximum:
//
//	shape(h) = T + (1 − T)·(1 + cos(2π(h − PeakHour)/24))/2
//	Factor(h) = shape(h) / ((1 + T)/2)
//
// Factor is normalised to a daily mean of 1, so a region's configured rate
// is its mean rate over a day, whatever the shape.
type Envelope struct {
	// PeakHour is the local hour of the daily maximum, in [0, 24).
	PeakHour float64 `json:"peak_hour"`
	// TroughRatio is the daily minimum over the maximum, in [0, 1]; 1 is
	// a flat day.
	TroughRatio float64 `json:"trough_ratio"`
}

// DefaultEnvelope peaks at 15:00 local time, mid-afternoon of the working
// day, with a night-time trough at a quarter of the peak.
func DefaultEnvelope() Envelope { return Envelope{PeakHour: 15, TroughRatio: 0.25} }

// Validate checks the envelope.
func (e Envelope) Validate() error {
	if math.IsNaN(e.PeakHour) || e.PeakHour < 0 || e.PeakHour >= 24 {
		return &placement.FieldError{Field: "envelope.peak_hour", Reason: fmt.Sprintf("must be in [0, 24), got %v", e.PeakHour)}
	}
	if math.IsNaN(e.TroughRatio) || e.TroughRatio < 0 || e.TroughRatio > 1 {
		return &placement.FieldError{Field: "envelope.trough_ratio", Reason: fmt.Sprintf("must be in [0, 1], got %v", e.TroughRatio)}
	}
	return nil
}

// Factor returns the rate multiplier at a local hour (any real number; it
// is taken modulo 24).
func (e Envelope) Factor(localHour float64) float64 {
	t := e.TroughRatio
	shape := t + (1-t)*(1+math.Cos(2*math.Pi*(localHour-e.PeakHour)/24))/2
	return shape / ((1 + t) / 2)
}

// At returns the rate multiplier at time at in a region whose clock is
// utcOffset ahead of UTC.
func (e Envelope) At(at time.Time, utcOffset time.Duration) float64 {
	return e.Factor(LocalHour(at, utcOffset))
}

// LocalHour returns the hour of the day, in [0, 24), at time at in a
// region whose clock is utcOffset ahead of UTC.
func LocalHour(at time.Time, utcOffset time.Duration) float64 {
	d := at.UTC().Add(utcOffset)
	h := float64(d.Hour()) + float64(d.Minute())/60 + (float64(d.Second())+float64(d.Nanosecond())/1e9)/3600
	return h
}
