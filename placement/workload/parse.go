package workload

import (
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
)

// Sentinel errors wrapped by ParseError, for callers that test conditions.
var (
	// ErrMissingColumn: the header lacks a required column.
	ErrMissingColumn = errors.New("missing column")
	// ErrNoRows: the file has a header but no data rows.
	ErrNoRows = errors.New("no data rows")
	// ErrBadValue: a cell cannot be parsed or is out of range.
	ErrBadValue = errors.New("bad value")
)

// ParseError locates a problem in an input file: the file (or other source
// name), the 1-based line, and the column by position and header name.
type ParseError struct {
	// Source names the input, for example a file path.
	Source string
	// Line is the 1-based line number; 0 when the problem is the whole file.
	Line int
	// Column is the 1-based column number; 0 when the problem is a whole line.
	Column int
	// Field is the header name of Column, when known.
	Field string
	// Err is the problem.
	Err error
}

// Error implements error: "source:line: column N (Field): problem".
func (e *ParseError) Error() string {
	var b strings.Builder
	b.WriteString(e.Source)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
	}
	b.WriteString(": ")
	if e.Column > 0 {
		fmt.Fprintf(&b, "column %d", e.Column)
		if e.Field != "" {
			fmt.Fprintf(&b, " (%s)", e.Field)
		}
		b.WriteString(": ")
	}
	b.WriteString(e.Err.Error())
	return b.String()
}

// Unwrap returns the underlying problem.
func (e *ParseError) Unwrap() error { return e.Err }

// table reads a CSV file whose first line is a header, giving access to
// the cells of each row by column name.
type table struct {
	source string
	r      *csv.Reader
	header []string
	col    map[string]int // lower-cased name → index
	row    []string
	line   int
}

// openTable reads the header and checks that every required column is
// there (names are matched case-insensitively, surrounding spaces and a
// UTF-8 byte order mark ignored; extra columns are allowed).
func openTable(in io.Reader, source string, required []string) (*table, error) {
	r := csv.NewReader(in)
	r.FieldsPerRecord = -1 // checked here, to report it our way
	r.ReuseRecord = true
	t := &table{source: source, r: r, col: map[string]int{}}
	header, err := r.Read()
	if err == io.EOF {
		return nil, &ParseError{Source: source, Err: fmt.Errorf("empty file: %w: want a header with %s", ErrMissingColumn, strings.Join(required, ", "))}
	}
	if err != nil {
		return nil, t.csvError(err)
	}
	t.header = make([]string, len(header))
	for i, h := range header {
		if i == 0 {
			h = strings.TrimPrefix(h, "\ufeff")
		}
		h = strings.TrimSpace(h)
		t.header[i] = h
		key := strings.ToLower(h)
		if _, dup := t.col[key]; dup && key != "" {
			return nil, &ParseError{Source: source, Line: 1, Column: i + 1, Field: h, Err: fmt.Errorf("%w: duplicate column %q", ErrBadValue, h)}
		}
		t.col[key] = i
	}
	for _, name := range required {
		if _, ok := t.col[strings.ToLower(name)]; !ok {
			return nil, &ParseError{Source: source, Line: 1, Err: fmt.Errorf("%w %q (header has %s)", ErrMissingColumn, name, strings.Join(t.header, ","))}
		}
	}
	return t, nil
}

// next reads the next row; it returns io.EOF at the end. Blank lines are
// skipped by encoding/csv.
func (t *table) next() error {
	row, err := t.r.Read()
	if err == io.EOF {
		return io.EOF
	}
	if err != nil {
		return t.csvError(err)
	}
	t.row = row
	t.line, _ = t.r.FieldPos(0)
	if len(row) != len(t.header) {
		return &ParseError{Source: t.source, Line: t.line, Err: fmt.Errorf("%w: %d fields, the header has %d", ErrBadValue, len(row), len(t.header))}
	}
	return nil
}

func (t *table) csvError(err error) error {
	var pe *csv.ParseError
	if errors.As(err, &pe) {
		return &ParseError{Source: t.source, Line: pe.Line, Column: pe.Column, Err: fmt.Errorf("%w: %w", ErrBadValue, pe.Err)}
	}
	return &ParseError{Source: t.source, Err: fmt.Errorf("read: %w", err)}
}

// cell returns the trimmed cell of the named (required) column.
func (t *table) cell(name string) string {
	return strings.TrimSpace(t.row[t.col[strings.ToLower(name)]])
}

// errAt returns a ParseError for the named column of the current row.
func (t *table) errAt(name string, format string, args ...any) error {
	i := t.col[strings.ToLower(name)]
	return &ParseError{Source: t.source, Line: t.line, Column: i + 1, Field: t.header[i], Err: fmt.Errorf("%w: "+format, append([]any{ErrBadValue}, args...)...)}
}

// nonNegInt parses the named cell as an integer ≥ 0.
func (t *table) nonNegInt(name string) (int, error) {
	s := t.cell(name)
	v, err := strconv.Atoi(s)
	if err != nil {
		return 0, t.errAt(name, "%q is not an integer", s)
	}
	if v < 0 {
		return 0, t.errAt(name, "%d is negative", v)
	}
	return v, nil
}

// optPrice parses the named cell as a price in dollars per hour: blank
// means absent; otherwise a finite number ≥ 0.
func (t *table) optPrice(name string) (float64, bool, error) {
	s := t.cell(name)
	if s == "" {
		return 0, false, nil
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
		return 0, false, t.errAt(name, "%q is not a number", s)
	}
	if v < 0 {
		return 0, false, t.errAt(name, "%v is negative", v)
	}
	return v, true, nil
}
