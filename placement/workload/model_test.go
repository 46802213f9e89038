package workload

import (
	"errors"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/placement"
)

func TestAWSRegionsTable(t *testing.T) {
	regions := AWSRegions()
	// The 21 regions of the embedded RTT matrix (netsim/data/README.md).
	rtt := []string{"af-south-1", "ap-east-1", "ap-northeast-1", "ap-northeast-2", "ap-northeast-3", "ap-south-1",
		"ap-southeast-1", "ap-southeast-2", "ca-central-1", "eu-central-1", "eu-north-1", "eu-south-1", "eu-west-1",
		"eu-west-2", "eu-west-3", "me-south-1", "sa-east-1", "us-east-1", "us-east-2", "us-west-1", "us-west-2"}
	names := []string{}
	for _, r := range regions {
		names = append(names, r.Name)
		if r.Location == "" {
			t.Errorf("region %s has no location", r.Name)
		}
	}
	if !slices.IsSorted(names) || len(slices.Compact(slices.Clone(names))) != len(names) {
		t.Errorf("region names %v are not sorted and unique", names)
	}
	for _, r := range rtt {
		if !slices.Contains(names, r) {
			t.Errorf("region %s of the RTT matrix is missing", r)
		}
	}
	// Every region of the embedded price list has an offset.
	for _, p := range EmbeddedPrices().All() {
		if _, err := UTCOffset(p.Region); err != nil {
			t.Errorf("price list region: %v", err)
		}
	}
	for _, tc := range []struct {
		region string
		want   time.Duration
	}{
		{"us-east-1", -5 * time.Hour}, {"us-west-2", -8 * time.Hour}, {"eu-west-1", 0}, {"eu-central-1", time.Hour},
		{"ap-south-1", 5*time.Hour + 30*time.Minute}, {"ap-northeast-1", 9 * time.Hour}, {"ap-southeast-2", 10 * time.Hour},
		{"sa-east-1", -3 * time.Hour},
	} {
		if got, err := UTCOffset(tc.region); err != nil || got != tc.want {
			t.Errorf("UTCOffset(%s) = %v, %v; want %v", tc.region, got, err, tc.want)
		}
	}
	if _, err := UTCOffset("mars-north-1"); err == nil || !strings.Contains(err.Error(), "mars-north-1") {
		t.Errorf("UTCOffset(unknown) = %v; want an error naming it", err)
	}
}

func TestThroughputHandComputed(t *testing.T) {
	tp := DefaultThroughput()
	// 6000 context tokens: 1 s of prefill; 40 output tokens: 40/1200 GPU-s
	// of decode work, 1 s of the sequence's time.
	if got := tp.GPUSeconds(6000, 40); math.Abs(got-(1+40.0/1200)) > 1e-12 {
		t.Errorf("GPUSeconds(6000, 40) = %v; want %v", got, 1+40.0/1200)
	}
	if got := tp.ServiceTime(6000, 40); got != 2*time.Second {
		t.Errorf("ServiceTime(6000, 40) = %v; want 2s", got)
	}
	d, dur := tp.Demand(6000, 40)
	want := placement.Resources{
		ComputePerHour: (1 + 40.0/1200) / 2 * 3600,
		StorageGB:      6040 * 819200 / 1e9,
		BandwidthGBps:  6040 * 4 / 1e9 / 2,
	}
	if dur != 2*time.Second || !closeRes(d, want) {
		t.Errorf("Demand(6000, 40) = %+v for %v; want %+v for 2s", d, dur, want)
	}
	// Zero tokens still demand something and last a millisecond.
	d, dur = tp.Demand(0, 0)
	if dur != time.Millisecond || !(d.ComputePerHour > 0) {
		t.Errorf("Demand(0, 0) = %+v for %v; want positive compute for 1ms", d, dur)
	}
	// Absurd sizes saturate instead of overflowing.
	if got := tp.ServiceTime(math.MaxInt64, math.MaxInt64); got != time.Duration(math.MaxInt64) {
		t.Errorf("ServiceTime(huge) = %v; want the largest duration", got)
	}
	if got := tp.NodeCapacity(8); got != (placement.Resources{ComputePerHour: 28800, StorageGB: 112, BandwidthGBps: 50, GPUs: 8}) {
		t.Errorf("NodeCapacity(8) = %+v; want 28800 tasks/h, 112 GB, 50 GB/s, 8 GPUs", got)
	}
}

func TestThroughputDemandInvariants(t *testing.T) {
	tp := DefaultThroughput()
	for _, r := range EmbeddedTrace().Requests {
		d, dur := tp.Demand(r.ContextTokens, r.GeneratedTokens)
		tasks := tp.GPUSeconds(r.ContextTokens, r.GeneratedTokens) / tp.GPUSecondsPerTask
		if got := d.ComputePerHour * dur.Hours(); math.Abs(got-tasks) > 1e-9*tasks {
			t.Fatalf("request %+v: compute × duration = %v tasks; want its GPU-seconds %v", r, got, tasks)
		}
		// A request never needs more than one GPU while it runs.
		if d.ComputePerHour > 3600/tp.GPUSecondsPerTask*(1+1e-9) {
			t.Fatalf("request %+v demands %v tasks/hour, more than one GPU", r, d.ComputePerHour)
		}
		if err := (placement.Job{ID: "x", Demand: d, Duration: dur}).Validate(); err != nil {
			t.Fatalf("request %+v maps to an invalid job: %v", r, err)
		}
	}
}

func TestThroughputValidate(t *testing.T) {
	if err := DefaultThroughput().Validate(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		edit  func(*Throughput)
		field string
	}{
		{func(tp *Throughput) { tp.PrefillTokensPerSecond = 0 }, "throughput.prefill_tokens_per_second"},
		{func(tp *Throughput) { tp.DecodeTokensPerSecond = math.NaN() }, "throughput.decode_tokens_per_second"},
		{func(tp *Throughput) { tp.KVBytesPerToken = -1 }, "throughput.kv_bytes_per_token"},
		{func(tp *Throughput) { tp.MinGPUSeconds = 0 }, "throughput.min_gpu_seconds"},
		{func(tp *Throughput) { tp.SequenceDecodeTokensPerSecond = 5000 }, "throughput.sequence_decode_tokens_per_second"},
	} {
		tp := DefaultThroughput()
		tc.edit(&tp)
		var fe *placement.FieldError
		if err := tp.Validate(); !errors.As(err, &fe) || fe.Field != tc.field {
			t.Errorf("Validate() = %v; want a FieldError on %s", err, tc.field)
		}
	}
}

func closeRes(a, b placement.Resources) bool {
	eq := func(x, y float64) bool { return math.Abs(x-y) <= 1e-9*math.Max(1, math.Abs(y)) }
	return eq(a.ComputePerHour, b.ComputePerHour) && eq(a.StorageGB, b.StorageGB) && eq(a.BandwidthGBps, b.BandwidthGBps) && a.GPUs == b.GPUs
}

func TestEnvelopeShape(t *testing.T) {
	for _, e := range []Envelope{DefaultEnvelope(), {PeakHour: 9.5, TroughRatio: 0}, {PeakHour: 0, TroughRatio: 1}} {
		peak, trough := e.Factor(e.PeakHour), e.Factor(e.PeakHour+12)
		if math.Abs(peak-2/(1+e.TroughRatio)) > 1e-12 || math.Abs(trough-peak*e.TroughRatio) > 1e-12 {
			t.Errorf("%+v: peak %v trough %v; want %v and %v", e, peak, trough, 2/(1+e.TroughRatio), peak*e.TroughRatio)
		}
		var sum float64
		const n = 24 * 60
		for i := range n {
			sum += e.Factor(24 * (float64(i) + 0.5) / n)
		}
		if mean := sum / n; math.Abs(mean-1) > 1e-9 {
			t.Errorf("%+v: daily mean factor %v; want 1", e, mean)
		}
	}
	for _, tc := range []struct {
		e     Envelope
		field string
	}{
		{Envelope{PeakHour: 24, TroughRatio: 0.5}, "envelope.peak_hour"},
		{Envelope{PeakHour: -1, TroughRatio: 0.5}, "envelope.peak_hour"},
		{Envelope{PeakHour: 15, TroughRatio: 1.5}, "envelope.trough_ratio"},
		{Envelope{PeakHour: 15, TroughRatio: math.NaN()}, "envelope.trough_ratio"},
	} {
		var fe *placement.FieldError
		if err := tc.e.Validate(); !errors.As(err, &fe) || fe.Field != tc.field {
			t.Errorf("%+v.Validate() = %v; want a FieldError on %s", tc.e, err, tc.field)
		}
	}
}

func TestEnvelopePeaksInLocalAfternoonOfEachRegion(t *testing.T) {
	e := DefaultEnvelope()
	day := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)
	for _, r := range AWSRegions() {
		best, bestAt := -1.0, time.Time{}
		for m := range 24 * 60 {
			at := day.Add(time.Duration(m) * time.Minute)
			if f := e.At(at, r.UTCOffset); f > best {
				best, bestAt = f, at
			}
		}
		want := day.Add(15 * time.Hour).Add(-r.UTCOffset)
		for want.Before(day) {
			want = want.Add(24 * time.Hour)
		}
		for !want.Before(day.Add(24 * time.Hour)) {
			want = want.Add(-24 * time.Hour)
		}
		if !bestAt.Equal(want) || LocalHour(bestAt, r.UTCOffset) != 15 {
			t.Errorf("%s (UTC%+v): envelope peaks at %s UTC; want %s UTC (15:00 local)", r.Name, r.UTCOffset, bestAt.Format("15:04"), want.Format("15:04"))
		}
	}
}
