package forecast

import (
	"encoding/json"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/meridian-mesh/meridian/placement"
)

var t0 = time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)

func TestSeasonLength(t *testing.T) {
	for _, tc := range []struct {
		interval time.Duration
		want     int
		wantErr  bool
	}{
		{5 * time.Minute, 288, false},
		{time.Hour, 24, false},
		{24 * time.Hour, 1, false},
		{7 * time.Minute, 0, true},
		{0, 0, true},
		{-time.Minute, 0, true},
		{48 * time.Hour, 0, true},
	} {
		got, err := SeasonLength(tc.interval)
		if (err != nil) != tc.wantErr || got != tc.want {
			t.Errorf("SeasonLength(%v) = %d, %v; want %d, error %v", tc.interval, got, err, tc.want, tc.wantErr)
		}
		if err != nil && !errors.Is(err, placement.ErrInvalid) {
			t.Errorf("SeasonLength(%v) error %v does not wrap placement.ErrInvalid", tc.interval, err)
		}
	}
}

func TestSeriesRecordBuckets(t *testing.T) {
	// The start is aligned down to the interval.
	s, err := NewSeries(5*time.Minute, t0.Add(2*time.Minute), 100)
	if err != nil {
		t.Fatal(err)
	}
	if !s.Start().Equal(t0) {
		t.Fatalf("Start() = %v; want %v", s.Start(), t0)
	}
	for _, r := range []struct {
		at time.Duration
		n  int
		rs float64
	}{
		{0, 1, 10},
		{4*time.Minute + 59*time.Second, 2, 5},
		{5 * time.Minute, 1, 1},
		{17 * time.Minute, 3, 7}, // bucket 3; bucket 2 stays zero
	} {
		if err := s.Record(t0.Add(r.at), r.n, r.rs); err != nil {
			t.Fatalf("Record(+%v): %v", r.at, err)
		}
	}
	want := []Bucket{
		{Start: t0, Arrivals: 3, ResourceSeconds: 15},
		{Start: t0.Add(5 * time.Minute), Arrivals: 1, ResourceSeconds: 1},
		{Start: t0.Add(10 * time.Minute)},
		{Start: t0.Add(15 * time.Minute), Arrivals: 3, ResourceSeconds: 7},
	}
	if got := s.Buckets(); !reflect.DeepEqual(got, want) {
		t.Fatalf("Buckets() = %+v; want %+v", got, want)
	}
	if got := s.Rates(0, 2); got[0] != 15.0/300 || got[1] != 1.0/300 {
		t.Errorf("Rates(0,2) = %v; want [%v %v]", got, 15.0/300, 1.0/300)
	}
	for _, c := range []struct {
		now  time.Duration
		want int
	}{{-time.Minute, 0}, {0, 0}, {5 * time.Minute, 1}, {19 * time.Minute, 3}, {20 * time.Minute, 4}, {time.Hour, 4}} {
		if got := s.Completed(t0.Add(c.now)); got != c.want {
			t.Errorf("Completed(+%v) = %d; want %d", c.now, got, c.want)
		}
	}
	s.AdvanceTo(t0.Add(31 * time.Minute))
	if s.Len() != 7 || s.Bucket(6).Arrivals != 0 || !s.End().Equal(t0.Add(35*time.Minute)) {
		t.Errorf("after AdvanceTo(+31m): Len() = %d, End() = %v; want 7 zero-padded buckets ending at +35m", s.Len(), s.End())
	}
}

func TestSeriesBounded(t *testing.T) {
	s, _ := NewSeries(time.Hour, t0, 4)
	for h := range 4 {
		if err := s.Record(t0.Add(time.Duration(h)*time.Hour), h+1, float64(h+1)); err != nil {
			t.Fatal(err)
		}
	}
	// Bucket 5 forces out buckets 0 and 1.
	if err := s.Record(t0.Add(5*time.Hour+time.Minute), 9, 9); err != nil {
		t.Fatal(err)
	}
	if s.Len() != 4 || !s.Start().Equal(t0.Add(2*time.Hour)) {
		t.Fatalf("Len() = %d, Start() = %v; want 4 buckets from +2h", s.Len(), s.Start())
	}
	got := []int64{}
	for _, b := range s.Buckets() {
		got = append(got, b.Arrivals)
	}
	if want := []int64{3, 4, 0, 9}; !reflect.DeepEqual(got, want) {
		t.Fatalf("arrivals = %v; want %v", got, want)
	}
	// Late data for a dropped bucket is refused and changes nothing.
	err := s.Record(t0.Add(time.Hour), 1, 1)
	if !errors.Is(err, ErrTooOld) {
		t.Fatalf("Record into dropped bucket: err = %v; want ErrTooOld", err)
	}
	if s.Len() != 4 || s.Bucket(0).Arrivals != 3 {
		t.Fatalf("refused record changed the series: %+v", s.Buckets())
	}
	// A jump far past the end keeps only zeros and the new bucket.
	if err := s.Record(t0.Add(100*time.Hour), 1, 2); err != nil {
		t.Fatal(err)
	}
	if s.Len() != 4 || !s.Start().Equal(t0.Add(97*time.Hour)) || s.Bucket(0).Arrivals != 0 || s.Bucket(3).Arrivals != 1 {
		t.Fatalf("after jump: start %v buckets %+v", s.Start(), s.Buckets())
	}
}

func TestSeriesRecordRejectsBadInput(t *testing.T) {
	s, _ := NewSeries(time.Minute, t0, 10)
	for _, tc := range []struct {
		name  string
		n     int
		rs    float64
		field string
	}{
		{"negative arrivals", -1, 0, "arrivals"},
		{"negative seconds", 0, -1, "resource_seconds"},
		{"NaN seconds", 0, nan(), "resource_seconds"},
		{"Inf seconds", 0, inf(), "resource_seconds"},
	} {
		err := s.Record(t0, tc.n, tc.rs)
		var fe *placement.FieldError
		if !errors.As(err, &fe) || fe.Field != tc.field {
			t.Errorf("%s: Record error = %v; want a FieldError on %q", tc.name, err, tc.field)
		}
	}
	if s.Len() != 0 {
		t.Errorf("rejected records grew the series to %d buckets", s.Len())
	}
	if _, err := NewSeries(time.Minute, t0, 0); err == nil {
		t.Error("NewSeries(maxBuckets 0) succeeded; want an error")
	}
	if _, err := NewSeries(7*time.Minute, t0, 10); err == nil {
		t.Error("NewSeries(7m) succeeded; want an error: 7m does not divide a day")
	}
}

func TestSeriesStateRoundTrip(t *testing.T) {
	s, _ := NewSeries(5*time.Minute, t0, 12)
	for i := range 20 {
		if err := s.Record(t0.Add(time.Duration(i)*3*time.Minute), i%4, float64(i)*1.5); err != nil {
			t.Fatal(err)
		}
	}
	st := s.State()
	codecs := map[string]struct {
		enc func(any) ([]byte, error)
		dec func([]byte, any) error
	}{
		"json":    {json.Marshal, json.Unmarshal},
		"msgpack": {msgpack.Marshal, msgpack.Unmarshal},
	}
	for name, c := range codecs {
		b, err := c.enc(st)
		if err != nil {
			t.Fatalf("%s encode: %v", name, err)
		}
		var back SeriesState
		if err := c.dec(b, &back); err != nil {
			t.Fatalf("%s decode: %v", name, err)
		}
		r, err := RestoreSeries(back)
		if err != nil {
			t.Fatalf("%s: RestoreSeries: %v", name, err)
		}
		if !reflect.DeepEqual(r.Buckets(), s.Buckets()) || r.Interval() != s.Interval() || r.MaxBuckets() != s.MaxBuckets() {
			t.Fatalf("%s: restored %+v; want %+v", name, r.Buckets(), s.Buckets())
		}
		// The restored series goes on exactly like the original.
		at := s.End().Add(7 * time.Minute)
		a, b2 := *s, *r
		a.arrivals, a.rs = append([]int64(nil), s.arrivals...), append([]float64(nil), s.rs...)
		if err := a.Record(at, 2, 3); err != nil {
			t.Fatal(err)
		}
		if err := b2.Record(at, 2, 3); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(a.Buckets(), b2.Buckets()) {
			t.Fatalf("%s: after one more record the restored series differs", name)
		}
	}
	// The state is a copy: changing it does not change the series.
	st.Arrivals[0] = 1000
	if s.Bucket(0).Arrivals == 1000 {
		t.Error("State() shares its slices with the series")
	}
}

func TestRestoreSeriesRejectsBadState(t *testing.T) {
	good := SeriesState{Interval: time.Hour, Start: t0, MaxBuckets: 3, Arrivals: []int64{1, 2}, ResourceSeconds: []float64{1, 2}}
	if _, err := RestoreSeries(good); err != nil {
		t.Fatalf("RestoreSeries(good) = %v", err)
	}
	for _, tc := range []struct {
		name  string
		edit  func(*SeriesState)
		field string
	}{
		{"zero interval", func(s *SeriesState) { s.Interval = 0 }, "interval"},
		{"odd interval", func(s *SeriesState) { s.Interval = 7 * time.Minute }, "interval"},
		{"unaligned start", func(s *SeriesState) { s.Start = t0.Add(time.Minute) }, "start"},
		{"zero max", func(s *SeriesState) { s.MaxBuckets = 0 }, "max_buckets"},
		{"length mismatch", func(s *SeriesState) { s.ResourceSeconds = []float64{1} }, "arrivals"},
		{"too long", func(s *SeriesState) { s.MaxBuckets = 1 }, "arrivals"},
		{"negative arrivals", func(s *SeriesState) { s.Arrivals = []int64{1, -2} }, "arrivals[1]"},
		{"NaN seconds", func(s *SeriesState) { s.ResourceSeconds = []float64{nan(), 1} }, "resource_seconds[0]"},
	} {
		st := good
		st.Arrivals = append([]int64(nil), good.Arrivals...)
		st.ResourceSeconds = append([]float64(nil), good.ResourceSeconds...)
		tc.edit(&st)
		_, err := RestoreSeries(st)
		var fe *placement.FieldError
		if !errors.As(err, &fe) || fe.Field != tc.field {
			t.Errorf("%s: RestoreSeries error = %v; want a FieldError on %q", tc.name, err, tc.field)
		}
	}
}
