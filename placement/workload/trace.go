package workload

import (
	"bytes"
	_ "embed"
	"fmt"
	"io"
	"os"
	"slices"
	"time"
)

// traceCSV is the Azure LLM inference trace 2023 (coding service), CC BY 4.0;
// see data/README.md for source and citation.
//
//go:embed data/azure-llm-2023-code.csv
var traceCSV []byte

// EmbeddedTraceName is the Source of EmbeddedTrace.
const EmbeddedTraceName = "embedded azure-llm-2023-code.csv"

// Request is one request of a trace.
type Request struct {
	// At is the request's arrival time (UTC; the trace states no zone).
	At time.Time
	// ContextTokens is the prompt length in tokens.
	ContextTokens int
	// GeneratedTokens is the output length in tokens.
	GeneratedTokens int
}

// Trace is a request trace sorted by arrival time.
type Trace struct {
	// Source names where the trace came from.
	Source string
	// Requests holds at least one request, sorted by At.
	Requests []Request
}

// Span returns the time from the first to the last request.
func (t *Trace) Span() time.Duration {
	return t.Requests[len(t.Requests)-1].At.Sub(t.Requests[0].At)
}

// Trace columns.
const (
	colTimestamp = "TIMESTAMP"
	colContext   = "ContextTokens"
	colGenerated = "GeneratedTokens"
)

// timestamp layouts accepted, tried in order. Go accepts a fractional
// second of any length after the seconds when parsing.
var timestampLayouts = []string{"2006-01-02 15:04:05", time.RFC3339Nano}

// ParseTrace reads a trace in the Azure LLM inference trace format: a CSV
// file whose header has the columns TIMESTAMP (YYYY-MM-DD HH:MM:SS with an
// optional fraction, read as UTC; RFC 3339 is accepted too), ContextTokens
// and GeneratedTokens (integers ≥ 0); other columns are ignored. Rows need
// not be sorted; the result is. Errors are *ParseError values naming source,
// line and column.
func ParseTrace(r io.Reader, source string) (*Trace, error) {
	t, err := openTable(r, source, []string{colTimestamp, colContext, colGenerated})
	if err != nil {
		return nil, err
	}
	tr := &Trace{Source: source}
	for {
		if err := t.next(); err == io.EOF {
			break
		} else if err != nil {
			return nil, err
		}
		var req Request
		ts := t.cell(colTimestamp)
		ok := false
		for _, layout := range timestampLayouts {
			if at, err := time.Parse(layout, ts); err == nil {
				req.At, ok = at.UTC(), true
				break
			}
		}
		if !ok {
			return nil, t.errAt(colTimestamp, "%q is not a timestamp like 2023-11-16 18:17:03.9799600", ts)
		}
		if req.ContextTokens, err = t.nonNegInt(colContext); err != nil {
			return nil, err
		}
		if req.GeneratedTokens, err = t.nonNegInt(colGenerated); err != nil {
			return nil, err
		}
		tr.Requests = append(tr.Requests, req)
	}
	if len(tr.Requests) == 0 {
		return nil, &ParseError{Source: source, Err: ErrNoRows}
	}
	slices.SortStableFunc(tr.Requests, func(a, b Request) int { return a.At.Compare(b.At) })
	return tr, nil
}

// LoadTrace reads a trace file; see ParseTrace.
func LoadTrace(path string) (*Trace, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("load trace: %w", err)
	}
	defer f.Close()
	return ParseTrace(f, path)
}

var embeddedTrace = mustParse(ParseTrace, traceCSV, EmbeddedTraceName)

// EmbeddedTrace returns the embedded Azure LLM coding trace (8,819 requests
// over 57 minutes of 2023-11-16). Every call returns the same value; do not
// modify it.
func EmbeddedTrace() *Trace { return embeddedTrace }

func mustParse[T any](parse func(io.Reader, string) (T, error), data []byte, name string) T {
	v, err := parse(bytes.NewReader(data), name)
	if err != nil {
		// The embedded files are part of the build: failing to parse one
		// is a broken invariant of the repository, not bad user input.
		panic(fmt.Sprintf("workload: %v", err))
	}
	return v
}
