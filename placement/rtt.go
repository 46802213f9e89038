package placement

import (
	"fmt"
	"time"
)

// RTTEstimator estimates the round-trip time between two regions.
//
// The pipeline calls RegionRTT from whatever goroutine runs Rank or Pack,
// possibly from several at once, and expects an answer from memory: it must
// be safe for concurrent use and must not block. It reports false when it
// has no estimate, which makes a node infeasible for a job with a latency SLO.
// RTTMatrix implements it from a static table; gossip implements it from
// network coordinates.
type RTTEstimator interface {
	RegionRTT(from, to string) (time.Duration, bool)
}

var _ RTTEstimator = (*RTTMatrix)(nil)

// RTTMatrix is an RTTEstimator backed by a table of measured region-to-region
// round-trip times. Fill it with Set before sharing it: once built it is
// read-only, and reads are safe from any number of goroutines.
type RTTMatrix struct {
	rtt map[[2]string]time.Duration
}

// NewRTTMatrix returns an empty matrix.
func NewRTTMatrix() *RTTMatrix {
	return &RTTMatrix{rtt: make(map[[2]string]time.Duration)}
}

// Set records the round-trip time measured from region from to region to.
// Measured RTTs are not quite symmetric, so each direction is kept apart;
// RegionRTT falls back to the reverse direction when only that one is known.
func (m *RTTMatrix) Set(from, to string, rtt time.Duration) error {
	if from == "" || to == "" {
		return &FieldError{Field: "region", Reason: "must not be empty"}
	}
	if rtt < 0 {
		return &FieldError{Field: "rtt", Reason: fmt.Sprintf("must not be negative, got %v", rtt)}
	}
	if m.rtt == nil {
		m.rtt = make(map[[2]string]time.Duration)
	}
	m.rtt[[2]string{from, to}] = rtt
	return nil
}

// RegionRTT implements RTTEstimator. A region that has no entry for itself
// is taken to reach itself in no time: traffic that stays in a region is not
// what latency SLOs are about, and refusing it would make no sense.
func (m *RTTMatrix) RegionRTT(from, to string) (time.Duration, bool) {
	if m == nil {
		return 0, false
	}
	if d, ok := m.rtt[[2]string{from, to}]; ok {
		return d, true
	}
	if d, ok := m.rtt[[2]string{to, from}]; ok {
		return d, true
	}
	if from == to && from != "" {
		return 0, true
	}
	return 0, false
}

// Len returns the number of directed entries in the matrix.
func (m *RTTMatrix) Len() int {
	if m == nil {
		return 0
	}
	return len(m.rtt)
}
