package workload

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestEmbeddedTrace(t *testing.T) {
	tr := EmbeddedTrace()
	if len(tr.Requests) != 8819 {
		t.Fatalf("embedded trace has %d requests; want 8819", len(tr.Requests))
	}
	first := time.Date(2023, 11, 16, 18, 17, 3, 979960000, time.UTC)
	if got := tr.Requests[0]; !got.At.Equal(first) || got.ContextTokens != 4808 || got.GeneratedTokens != 10 {
		t.Errorf("first request = %+v; want %v, 4808, 10", got, first)
	}
	if s := tr.Span().Seconds(); s < 3435.8 || s > 3436.0 {
		t.Errorf("Span() = %.2f s; want ≈ 3435.9 s", s)
	}
	if !slices.IsSortedFunc(tr.Requests, func(a, b Request) int { return a.At.Compare(b.At) }) {
		t.Error("requests are not sorted by time")
	}
	minC, maxC, minG, maxG, sumC := 1<<30, 0, 1<<30, 0, 0
	for _, r := range tr.Requests {
		minC, maxC, sumC = min(minC, r.ContextTokens), max(maxC, r.ContextTokens), sumC+r.ContextTokens
		minG, maxG = min(minG, r.GeneratedTokens), max(maxG, r.GeneratedTokens)
	}
	mean := float64(sumC) / float64(len(tr.Requests))
	// Figures from shared/data/README.md.
	if minC != 3 || maxC != 7437 || minG != 6 || maxG != 1899 || mean < 2047 || mean > 2049 {
		t.Errorf("context min %d max %d mean %.1f, generated min %d max %d; want 3, 7437, ≈2048, 6, 1899", minC, maxC, mean, minG, maxG)
	}
}

func TestParseTraceAcceptsVariants(t *testing.T) {
	in := "\ufeff generatedtokens ,Extra,TIMESTAMP,ContextTokens\r\n" +
		"5,x,2023-11-16 10:00:02,100\r\n" +
		"\r\n" +
		"7,y,2023-11-16T10:00:01.5Z,200\r\n" +
		" 9 ,z,2023-11-16 10:00:03.1234567, 0 \r\n"
	tr, err := ParseTrace(strings.NewReader(in), "variants.csv")
	if err != nil {
		t.Fatal(err)
	}
	want := []Request{
		{At: time.Date(2023, 11, 16, 10, 0, 1, 500000000, time.UTC), ContextTokens: 200, GeneratedTokens: 7},
		{At: time.Date(2023, 11, 16, 10, 0, 2, 0, time.UTC), ContextTokens: 100, GeneratedTokens: 5},
		{At: time.Date(2023, 11, 16, 10, 0, 3, 123456700, time.UTC), ContextTokens: 0, GeneratedTokens: 9},
	}
	if !slices.Equal(tr.Requests, want) || tr.Source != "variants.csv" {
		t.Errorf("ParseTrace = %+v; want %+v", tr.Requests, want)
	}
}

func TestParseTraceErrors(t *testing.T) {
	const h = "TIMESTAMP,ContextTokens,GeneratedTokens\n"
	for _, tc := range []struct {
		name         string
		in           string
		sentinel     error
		line, column int
		field        string
		text         string
	}{
		{"empty file", "", ErrMissingColumn, 0, 0, "", "empty file"},
		{"missing column", "TIMESTAMP,ContextTokens\n2023-11-16 10:00:00,1\n", ErrMissingColumn, 1, 0, "", `"GeneratedTokens"`},
		{"duplicate column", "TIMESTAMP,ContextTokens,GeneratedTokens,contexttokens\n", ErrBadValue, 1, 4, "contexttokens", "duplicate"},
		{"header only", h, ErrNoRows, 0, 0, "", "no data rows"},
		{"bad timestamp", h + "2023-11-16 10:00:00,1,1\n16/11/2023 10:00,1,1\n", ErrBadValue, 3, 1, "TIMESTAMP", `"16/11/2023 10:00"`},
		{"negative tokens", h + "2023-11-16 10:00:00,-5,1\n", ErrBadValue, 2, 2, "ContextTokens", "-5 is negative"},
		{"fractional tokens", h + "2023-11-16 10:00:00,5,1.5\n", ErrBadValue, 2, 3, "GeneratedTokens", `"1.5" is not an integer`},
		{"blank tokens", h + "2023-11-16 10:00:00,,1\n", ErrBadValue, 2, 2, "ContextTokens", "not an integer"},
		{"overflowing tokens", h + "2023-11-16 10:00:00,99999999999999999999,1\n", ErrBadValue, 2, 2, "ContextTokens", "not an integer"},
		{"too few fields", h + "2023-11-16 10:00:00,5\n", ErrBadValue, 2, 0, "", "2 fields, the header has 3"},
		{"bad quoting", h + "2023-11-16 10:00:00,\"5,1\n", ErrBadValue, 2, 0, "", "quote"},
	} {
		_, err := ParseTrace(strings.NewReader(tc.in), "trace.csv")
		var pe *ParseError
		if !errors.As(err, &pe) {
			t.Errorf("%s: error %v is not a *ParseError", tc.name, err)
			continue
		}
		if !errors.Is(err, tc.sentinel) || pe.Source != "trace.csv" || pe.Line != tc.line ||
			(tc.column > 0 && pe.Column != tc.column) || pe.Field != tc.field || !strings.Contains(err.Error(), tc.text) {
			t.Errorf("%s: error %q (line %d column %d field %q); want %v at line %d column %d field %q mentioning %q",
				tc.name, err, pe.Line, pe.Column, pe.Field, tc.sentinel, tc.line, tc.column, tc.field, tc.text)
		}
		if !strings.HasPrefix(err.Error(), "trace.csv") {
			t.Errorf("%s: error %q does not start with the file name", tc.name, err)
		}
	}
}

func TestParseErrorFormat(t *testing.T) {
	_, err := ParseTrace(strings.NewReader("TIMESTAMP,ContextTokens,GeneratedTokens\nx,1,1\n"), "my.csv")
	want := `my.csv:2: column 1 (TIMESTAMP): bad value: "x" is not a timestamp like 2023-11-16 18:17:03.9799600`
	if err == nil || err.Error() != want {
		t.Errorf("error = %q; want %q", err, want)
	}
}

func TestLoadTrace(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "t.csv")
	if err := os.WriteFile(path, []byte("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 10:00:00,1,2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tr, err := LoadTrace(path)
	if err != nil || len(tr.Requests) != 1 || tr.Source != path {
		t.Errorf("LoadTrace = %+v, %v; want one request from %s", tr, err, path)
	}
	missing := filepath.Join(dir, "missing.csv")
	if _, err := LoadTrace(missing); err == nil || !strings.Contains(err.Error(), missing) || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("LoadTrace(missing) = %v; want a not-exist error naming the path", err)
	}
}
