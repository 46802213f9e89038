package workload

import (
	"bytes"
	"math/rand/v2"
	"testing"
	"time"
)

// benchDay generates one simulated day for the 9 regions of DefaultConfig
// at the given mean rate per region.
func benchDay(b *testing.B, mode Mode, rate float64) {
	cfg, err := DefaultConfig(day0)
	if err != nil {
		b.Fatal(err)
	}
	cfg.Mode, cfg.RatePerSecond = mode, rate
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		g, err := NewGenerator(cfg, rand.New(rand.NewPCG(1, 2)))
		if err != nil {
			b.Fatal(err)
		}
		n = len(g.Between(day0, day0.Add(24*time.Hour)))
	}
	b.ReportMetric(float64(n), "arrivals/day")
}

// The default rate: 0.1/s per region, ~78k arrivals a day over 9 regions.
func BenchmarkGeneratorDay9RegionsTrace(b *testing.B)   { benchDay(b, ModeTrace, 0.1) }
func BenchmarkGeneratorDay9RegionsDiurnal(b *testing.B) { benchDay(b, ModeDiurnal, 0.1) }

// BenchmarkGeneratorStreamDay9RegionsTraceRate streams a day with Next at
// the trace's own mean rate, 2.57/s per region (~2M arrivals), as a
// simulation consumes it, without keeping the arrivals.
func BenchmarkGeneratorStreamDay9RegionsTraceRate(b *testing.B) {
	cfg, err := DefaultConfig(day0)
	if err != nil {
		b.Fatal(err)
	}
	cfg.RatePerSecond = 2.57
	end := day0.Add(24 * time.Hour)
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		g, err := NewGenerator(cfg, rand.New(rand.NewPCG(1, 2)))
		if err != nil {
			b.Fatal(err)
		}
		n = 0
		for a := g.Next(); a.At.Before(end); a = g.Next() {
			n++
		}
	}
	b.ReportMetric(float64(n), "arrivals/day")
}

func BenchmarkParseTrace(b *testing.B) {
	b.SetBytes(int64(len(traceCSV)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseTrace(bytesReader(traceCSV), "bench"); err != nil {
			b.Fatal(err)
		}
	}
}

func bytesReader(b []byte) *bytes.Reader { return bytes.NewReader(b) }
