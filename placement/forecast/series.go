package forecast

import (
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/meridian-mesh/meridian/placement"
)

// Day is the length of the season every model of this package uses.
const Day = 24 * time.Hour

// ErrTooOld is returned by Series.Record for a time before the oldest bucket
// the series still keeps: that bucket was dropped and cannot be amended.
var ErrTooOld = errors.New("forecast: time is before the oldest kept bucket")

// SeasonLength returns the number of buckets of length interval in a day.
// The interval must divide a day exactly, so that bucket i of every day
// covers the same time of day and a daily season lines up with the clock.
func SeasonLength(interval time.Duration) (int, error) {
	if interval <= 0 {
		return 0, &placement.FieldError{Field: "interval", Reason: fmt.Sprintf("must be positive, got %v", interval)}
	}
	if Day%interval != 0 {
		return 0, &placement.FieldError{Field: "interval", Reason: fmt.Sprintf("must divide 24h exactly, got %v", interval)}
	}
	return int(Day / interval), nil
}

// Bucket is one interval of a Series.
type Bucket struct {
	// Start is the beginning of the interval; it covers [Start, Start+interval).
	Start time.Time
	// Arrivals is the number of jobs recorded in the interval.
	Arrivals int64
	// ResourceSeconds is the demanded compute recorded in the interval, in
	// tasks/hour × seconds (a job of D tasks/hour running T seconds
	// contributes D·T).
	ResourceSeconds float64
}

// Rate returns the bucket's demand as a mean compute rate in tasks/hour:
// ResourceSeconds spread evenly over the interval. This is the unit the
// forecasts and PlanAhead work in, comparable with node capacity.
func (b Bucket) Rate(interval time.Duration) float64 {
	return b.ResourceSeconds / interval.Seconds()
}

// Series is a fixed-interval time series of a region's demand: per bucket,
// the arrivals and the resource-seconds recorded into it. Buckets nobody
// recorded into are zeros. It keeps at most MaxBuckets of the newest
// buckets; recording past the end drops the oldest ones.
//
// A Series is not safe for concurrent use.
type Series struct {
	interval time.Duration
	start    time.Time // start of the oldest kept bucket
	max      int
	arrivals []int64
	rs       []float64
}

// NewSeries returns an empty series of buckets of length interval, whose
// first bucket contains start, keeping at most maxBuckets buckets (for
// example 7 days' worth). Bucket boundaries are multiples of interval since
// the zero time, so with an interval that divides a day they fall on the
// same UTC times every day, whatever start is.
func NewSeries(interval time.Duration, start time.Time, maxBuckets int) (*Series, error) {
	if _, err := SeasonLength(interval); err != nil {
		return nil, err
	}
	if maxBuckets < 1 {
		return nil, &placement.FieldError{Field: "max_buckets", Reason: fmt.Sprintf("must be at least 1, got %d", maxBuckets)}
	}
	return &Series{interval: interval, start: start.UTC().Truncate(interval), max: maxBuckets}, nil
}

// Interval returns the bucket length.
func (s *Series) Interval() time.Duration { return s.interval }

// Start returns the start of the oldest kept bucket.
func (s *Series) Start() time.Time { return s.start }

// End returns the end of the newest bucket (Start + Len·Interval).
func (s *Series) End() time.Time { return s.start.Add(time.Duration(len(s.rs)) * s.interval) }

// Len returns the number of kept buckets.
func (s *Series) Len() int { return len(s.rs) }

// MaxBuckets returns the most buckets the series keeps.
func (s *Series) MaxBuckets() int { return s.max }

// index returns the bucket index of at relative to s.start (may be negative
// or beyond the end).
func (s *Series) index(at time.Time) int64 {
	d := at.Sub(s.start)
	i := int64(d / s.interval)
	if d < 0 && d%s.interval != 0 {
		i-- // floor, not truncation toward zero
	}
	return i
}

// Record adds arrivals and resourceSeconds to the bucket that contains at,
// growing the series up to that bucket (missing buckets are zeros) and
// dropping the oldest buckets beyond MaxBuckets. Recording into a bucket
// that was already dropped returns an error wrapping ErrTooOld and changes
// nothing.
func (s *Series) Record(at time.Time, arrivals int, resourceSeconds float64) error {
	if arrivals < 0 {
		return &placement.FieldError{Field: "arrivals", Reason: fmt.Sprintf("must not be negative, got %d", arrivals)}
	}
	if math.IsNaN(resourceSeconds) || math.IsInf(resourceSeconds, 0) || resourceSeconds < 0 {
		return &placement.FieldError{Field: "resource_seconds", Reason: fmt.Sprintf("must be a finite number ≥ 0, got %v", resourceSeconds)}
	}
	i := s.index(at)
	if i < 0 {
		return fmt.Errorf("record at %s (oldest bucket starts %s): %w", at.UTC().Format(time.RFC3339Nano), s.start.Format(time.RFC3339Nano), ErrTooOld)
	}
	s.extend(i)
	i = s.index(at) // the start may have moved
	s.arrivals[i] += int64(arrivals)
	s.rs[i] += resourceSeconds
	return nil
}

// AdvanceTo grows the series so that it contains the bucket of now, with
// zeros for the buckets nothing was recorded into. A time before the end
// changes nothing.
func (s *Series) AdvanceTo(now time.Time) {
	if i := s.index(now); i >= 0 {
		s.extend(i)
	}
}

// extend makes bucket i (relative to the current start) exist.
func (s *Series) extend(i int64) {
	if i < int64(len(s.rs)) {
		return
	}
	if i >= int64(s.max) {
		// Keep buckets [i-max+1, i]; drop the rest.
		drop := i - int64(s.max) + 1
		if drop >= int64(len(s.rs)) {
			s.arrivals, s.rs = s.arrivals[:0], s.rs[:0]
		} else {
			n := copy(s.arrivals, s.arrivals[drop:])
			s.arrivals = s.arrivals[:n]
			copy(s.rs, s.rs[drop:])
			s.rs = s.rs[:n]
		}
		s.start = s.start.Add(time.Duration(drop) * s.interval)
		i -= drop
	}
	for int64(len(s.rs)) <= i {
		s.arrivals = append(s.arrivals, 0)
		s.rs = append(s.rs, 0)
	}
}

// Bucket returns bucket i (0 is the oldest kept). It panics if i is out of
// range, like a slice index.
func (s *Series) Bucket(i int) Bucket {
	return Bucket{Start: s.start.Add(time.Duration(i) * s.interval), Arrivals: s.arrivals[i], ResourceSeconds: s.rs[i]}
}

// Buckets returns a copy of every kept bucket, oldest first.
func (s *Series) Buckets() []Bucket {
	out := make([]Bucket, len(s.rs))
	for i := range out {
		out[i] = s.Bucket(i)
	}
	return out
}

// Completed returns the number of kept buckets that ended at or before now:
// the ones a forecaster may observe. The bucket containing now is still
// open and is not counted.
func (s *Series) Completed(now time.Time) int {
	i := s.index(now)
	switch {
	case i < 0:
		return 0
	case i > int64(len(s.rs)):
		return len(s.rs)
	}
	return int(i)
}

// Rates returns the demand rate (Bucket.Rate, tasks/hour) of buckets
// [from, to) as a new slice. It panics if the range is out of bounds.
func (s *Series) Rates(from, to int) []float64 {
	out := make([]float64, to-from)
	secs := s.interval.Seconds()
	for i := range out {
		out[i] = s.rs[from+i] / secs
	}
	return out
}

// SeriesState is the whole state of a Series as a plain value: it encodes
// with encoding/json and msgpack, so a region's ledger can keep it and a new
// leader can rebuild the series with RestoreSeries.
type SeriesState struct {
	// Interval is the bucket length in nanoseconds.
	Interval time.Duration `json:"interval_ns" msgpack:"i"`
	// Start is the start of the oldest kept bucket.
	Start time.Time `json:"start" msgpack:"s"`
	// MaxBuckets is the most buckets the series keeps.
	MaxBuckets int `json:"max_buckets" msgpack:"m"`
	// Arrivals holds one count per bucket, oldest first.
	Arrivals []int64 `json:"arrivals" msgpack:"a"`
	// ResourceSeconds holds one value per bucket, oldest first.
	ResourceSeconds []float64 `json:"resource_seconds" msgpack:"r"`
}

// State returns a deep copy of the series' state.
func (s *Series) State() SeriesState {
	return SeriesState{
		Interval:        s.interval,
		Start:           s.start,
		MaxBuckets:      s.max,
		Arrivals:        append([]int64(nil), s.arrivals...),
		ResourceSeconds: append([]float64(nil), s.rs...),
	}
}

// RestoreSeries rebuilds a Series from a state taken with State (possibly
// after an encode/decode round trip). It checks the state as untrusted
// input and names the offending field.
func RestoreSeries(st SeriesState) (*Series, error) {
	s, err := NewSeries(st.Interval, st.Start, st.MaxBuckets)
	if err != nil {
		return nil, fmt.Errorf("restore series: %w", err)
	}
	if !s.start.Equal(st.Start) {
		return nil, fmt.Errorf("restore series: %w", &placement.FieldError{Field: "start", Reason: fmt.Sprintf("%s is not a multiple of the interval %v", st.Start.Format(time.RFC3339Nano), st.Interval)})
	}
	if len(st.Arrivals) != len(st.ResourceSeconds) {
		return nil, fmt.Errorf("restore series: %w", &placement.FieldError{Field: "arrivals", Reason: fmt.Sprintf("has %d buckets but resource_seconds has %d", len(st.Arrivals), len(st.ResourceSeconds))})
	}
	if len(st.Arrivals) > st.MaxBuckets {
		return nil, fmt.Errorf("restore series: %w", &placement.FieldError{Field: "arrivals", Reason: fmt.Sprintf("has %d buckets, more than max_buckets %d", len(st.Arrivals), st.MaxBuckets)})
	}
	for i, a := range st.Arrivals {
		if a < 0 {
			return nil, fmt.Errorf("restore series: %w", &placement.FieldError{Field: fmt.Sprintf("arrivals[%d]", i), Reason: fmt.Sprintf("must not be negative, got %d", a)})
		}
	}
	for i, v := range st.ResourceSeconds {
		if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
			return nil, fmt.Errorf("restore series: %w", &placement.FieldError{Field: fmt.Sprintf("resource_seconds[%d]", i), Reason: fmt.Sprintf("must be a finite number ≥ 0, got %v", v)})
		}
	}
	s.arrivals = append([]int64(nil), st.Arrivals...)
	s.rs = append([]float64(nil), st.ResourceSeconds...)
	return s, nil
}
