package workload

import (
	"bytes"
	"errors"
	"slices"
	"strings"
	"testing"
)

// FuzzParseTrace checks that no input panics the parser, that every error
// is a *ParseError naming the source, and that every accepted trace is
// sorted with non-negative sizes. Seeds: testdata/fuzz/FuzzParseTrace.
func FuzzParseTrace(f *testing.F) {
	f.Add([]byte("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:17:03.9799600,4808,10\n"))
	f.Add(traceCSV[:2000])
	f.Fuzz(func(t *testing.T, data []byte) {
		tr, err := ParseTrace(bytes.NewReader(data), "fuzz.csv")
		if err != nil {
			var pe *ParseError
			if !errors.As(err, &pe) || !strings.HasPrefix(err.Error(), "fuzz.csv") {
				t.Fatalf("error %q is not a *ParseError naming the source", err)
			}
			return
		}
		if len(tr.Requests) == 0 {
			t.Fatal("accepted a trace without requests")
		}
		if !slices.IsSortedFunc(tr.Requests, func(a, b Request) int { return a.At.Compare(b.At) }) {
			t.Fatal("accepted trace is not sorted")
		}
		for _, r := range tr.Requests {
			if r.ContextTokens < 0 || r.GeneratedTokens < 0 {
				t.Fatalf("accepted negative sizes %+v", r)
			}
		}
	})
}

// FuzzParsePrices checks that no input panics the parser, that every error
// is a *ParseError naming the source, and that every accepted list keeps
// its invariants. Seeds: testdata/fuzz/FuzzParsePrices.
func FuzzParsePrices(f *testing.F) {
	f.Add(pricesCSV[:1500])
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := ParsePrices(bytes.NewReader(data), "fuzz.csv")
		if err != nil {
			var pe *ParseError
			if !errors.As(err, &pe) || !strings.HasPrefix(err.Error(), "fuzz.csv") {
				t.Fatalf("error %q is not a *ParseError naming the source", err)
			}
			return
		}
		seen := map[[2]string]bool{}
		for _, r := range p.All() {
			key := [2]string{r.InstanceType, r.Region}
			if seen[key] || r.InstanceType == "" || r.Region == "" {
				t.Fatalf("accepted a duplicate or blank row %+v", r)
			}
			seen[key] = true
			if r.OnDemandPerHour < 0 || r.SpotMinPerHour < 0 || r.SpotMinPerHour > r.SpotMaxPerHour {
				t.Fatalf("accepted bad prices %+v", r)
			}
			if got, ok := p.Lookup(r.InstanceType, r.Region); !ok || got != r {
				t.Fatalf("Lookup(%s, %s) = %+v, %v; want %+v", r.InstanceType, r.Region, got, ok, r)
			}
		}
		for _, inst := range p.InstanceTypes() {
			regions, err := p.RegionsWithPrice(inst)
			if err != nil && !errors.Is(err, ErrNoOnDemandPrice) {
				t.Fatalf("RegionsWithPrice(%s) = %v", inst, err)
			}
			for _, reg := range regions {
				if _, err := p.OnDemand(inst, reg); err != nil {
					t.Fatalf("OnDemand(%s, %s) = %v for a region RegionsWithPrice listed", inst, reg, err)
				}
			}
		}
	})
}
