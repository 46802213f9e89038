package placement

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// This file reads node lists for the command line and for tests: CSV with a
// header, or a JSON array. Every node read has nothing allocated (free =
// total). Errors name the file, the line and the field.

// MaxNodeFileSize bounds a node file, so a wrong path (a disk image, a log)
// fails fast instead of eating memory.
const MaxNodeFileSize = 64 << 20

// Node file columns (CSV) and keys (JSON).
const (
	colName      = "name"
	colCompute   = "compute"
	colStorage   = "storage_gb"
	colBandwidth = "bandwidth_gbs"
	colPrice     = "price_per_hour"
	colRegion    = "region"
	colGPUType   = "gpu_type"
	colGPUs      = "gpus"
)

var (
	requiredColumns = []string{colName, colCompute, colStorage, colBandwidth, colPrice}
	optionalColumns = []string{colRegion, colGPUType, colGPUs}
	knownColumns    = strings.Join(append(append([]string{}, requiredColumns...), optionalColumns...), ", ")
)

// FileError locates invalid input in a file. It wraps the error that says
// what is wrong, which wraps ErrInvalid.
type FileError struct {
	// Source is the file's name as the user gave it.
	Source string
	// Line is the 1-based line of the fault; 0 when it concerns the whole file.
	Line int
	// Err says what is wrong, usually a *FieldError.
	Err error
}

// Error returns "source:line: message", the form compilers use.
func (e *FileError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("%s:%d: %v", e.Source, e.Line, e.Err)
	}
	return fmt.Sprintf("%s: %v", e.Source, e.Err)
}

// Unwrap returns the error that says what is wrong.
func (e *FileError) Unwrap() error { return e.Err }

// formatError is invalid input that concerns no single field.
type formatError struct{ msg string }

func (e *formatError) Error() string { return e.msg }
func (e *formatError) Unwrap() error { return ErrInvalid }

func fileErr(source string, line int, err error) error {
	return &FileError{Source: source, Line: line, Err: err}
}

func formatErr(source string, line int, format string, args ...any) error {
	return fileErr(source, line, &formatError{msg: fmt.Sprintf(format, args...)})
}

func fieldErr(source string, line int, field, format string, args ...any) error {
	return fileErr(source, line, &FieldError{Field: field, Reason: fmt.Sprintf(format, args...)})
}

// LoadNodes reads the node file at path, as CSV if its name ends in .csv and
// as JSON if it ends in .json (either case).
func LoadNodes(path string) ([]Node, error) {
	var parse func(io.Reader, string) ([]Node, error)
	switch ext := strings.ToLower(filepath.Ext(path)); ext {
	case ".csv":
		parse = ParseNodesCSV
	case ".json":
		parse = ParseNodesJSON
	default:
		return nil, formatErr(path, 0, "unsupported file extension %q (want .csv or .json)", ext)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read nodes: %w", err)
	}
	defer f.Close()
	return parse(f, path)
}

// ParseNodes reads a node list whose format is not known from a file name
// (standard input, say): JSON if its first non-blank character is '[',
// CSV otherwise.
func ParseNodes(r io.Reader, source string) ([]Node, error) {
	data, err := readLimited(r, source)
	if err != nil {
		return nil, err
	}
	if trimmed := bytes.TrimLeft(data, " \t\r\n\ufeff"); len(trimmed) > 0 && trimmed[0] == '[' {
		return parseNodesJSON(data, source)
	}
	return parseNodesCSV(data, source)
}

func readLimited(r io.Reader, source string) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(r, MaxNodeFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", source, err)
	}
	if len(data) > MaxNodeFileSize {
		return nil, formatErr(source, 0, "file is larger than %d MiB", MaxNodeFileSize>>20)
	}
	return data, nil
}

// ParseNodesCSV reads nodes from CSV. The first line is a header naming the
// columns, in any order: name, compute (tasks/hour), storage_gb,
// bandwidth_gbs, price_per_hour ($/hour) are required; region, gpu_type and
// gpus are optional. Lines starting with '#' are comments. source names the
// input in errors.
func ParseNodesCSV(r io.Reader, source string) ([]Node, error) {
	data, err := readLimited(r, source)
	if err != nil {
		return nil, err
	}
	return parseNodesCSV(data, source)
}

func parseNodesCSV(data []byte, source string) ([]Node, error) {
	cr := csv.NewReader(bytes.NewReader(bytes.TrimPrefix(data, []byte("\ufeff"))))
	cr.Comment = '#'
	cr.TrimLeadingSpace = true
	cr.ReuseRecord = true

	header, err := cr.Read()
	if err == io.EOF {
		return nil, formatErr(source, 0, "empty file: want a header line naming the columns (%s)", knownColumns)
	}
	if err != nil {
		return nil, csvErr(source, err)
	}
	col := map[string]int{}
	for i, h := range header {
		line, _ := cr.FieldPos(i)
		name := strings.ToLower(strings.TrimSpace(h))
		if !slices.Contains(requiredColumns, name) && !slices.Contains(optionalColumns, name) {
			return nil, fieldErr(source, line, name, "unknown column (want %s)", knownColumns)
		}
		if _, dup := col[name]; dup {
			return nil, fieldErr(source, line, name, "column appears twice")
		}
		col[name] = i
	}
	headerLine, _ := cr.FieldPos(0)
	for _, req := range requiredColumns {
		if _, ok := col[req]; !ok {
			return nil, fieldErr(source, headerLine, req, "missing column (required: %s)", strings.Join(requiredColumns, ", "))
		}
	}

	var nodes []Node
	seen := map[string]int{}
	for {
		rec, err := cr.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, csvErr(source, err)
		}
		line, _ := cr.FieldPos(0)
		get := func(name string) (string, int, bool) {
			i, ok := col[name]
			if !ok {
				return "", line, false
			}
			l, _ := cr.FieldPos(i)
			return strings.TrimSpace(rec[i]), l, true
		}
		var f nodeFields
		var l int
		f.name, l, _ = get(colName)
		if f.name == "" {
			return nil, fieldErr(source, l, colName, "must not be empty")
		}
		if prev, dup := seen[f.name]; dup {
			return nil, fieldErr(source, l, colName, "node %q already defined on line %d", f.name, prev)
		}
		seen[f.name] = l
		for _, c := range []struct {
			name string
			dst  *float64
		}{
			{colCompute, &f.compute}, {colStorage, &f.storage}, {colBandwidth, &f.bandwidth}, {colPrice, &f.price},
		} {
			s, l, _ := get(c.name)
			v, err := parsePositive(c.name, s)
			if err != nil {
				return nil, fileErr(source, l, err)
			}
			*c.dst = v
		}
		f.region, _, _ = get(colRegion)
		f.gpuType, _, _ = get(colGPUType)
		if s, l, ok := get(colGPUs); ok && s != "" {
			n, err := strconv.Atoi(s)
			if err != nil {
				return nil, fieldErr(source, l, colGPUs, "must be a whole number, got %q", s)
			}
			f.gpus = n
		}
		node, err := f.node()
		if err != nil {
			return nil, fileErr(source, line, err)
		}
		nodes = append(nodes, node)
	}
	if len(nodes) == 0 {
		return nil, formatErr(source, 0, "no nodes: the file has a header but no rows")
	}
	return nodes, nil
}

func csvErr(source string, err error) error {
	var pe *csv.ParseError
	if errors.As(err, &pe) {
		msg := pe.Err.Error()
		if errors.Is(pe.Err, csv.ErrFieldCount) {
			msg = "wrong number of fields: every row needs one per header column"
		}
		return formatErr(source, pe.Line, "malformed CSV: %s", msg)
	}
	return fmt.Errorf("read %s: %w", source, err)
}

// parsePositive parses a capacity or price: a finite number above zero.
func parsePositive(field, s string) (float64, error) {
	if s == "" {
		return 0, &FieldError{Field: field, Reason: "must not be empty"}
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return 0, &FieldError{Field: field, Reason: fmt.Sprintf("not a number: %q", s)}
	}
	return v, checkPositive(field, v)
}

func checkPositive(field string, v float64) error {
	switch {
	case math.IsNaN(v) || math.IsInf(v, 0):
		return &FieldError{Field: field, Reason: fmt.Sprintf("must be a finite number, got %v", v)}
	case v <= 0:
		return &FieldError{Field: field, Reason: fmt.Sprintf("must be greater than zero, got %v", v)}
	}
	return nil
}

// nodeFields is one node as a file describes it.
type nodeFields struct {
	name, region, gpuType              string
	compute, storage, bandwidth, price float64
	gpus                               int
}

// node checks the fields that are checked across columns and builds the node.
func (f *nodeFields) node() (Node, error) {
	if f.gpus < 0 {
		return Node{}, &FieldError{Field: colGPUs, Reason: fmt.Sprintf("must not be negative, got %d", f.gpus)}
	}
	if f.gpuType != "" && f.gpus == 0 {
		return Node{}, &FieldError{Field: colGPUs, Reason: fmt.Sprintf("must be greater than zero when gpu_type is set (gpu_type %q)", f.gpuType)}
	}
	r := Resources{ComputePerHour: f.compute, StorageGB: f.storage, BandwidthGBps: f.bandwidth, GPUs: f.gpus}
	n := Node{ID: f.name, Region: f.region, Total: r, Free: r, PricePerHour: f.price, GPUType: f.gpuType}
	if err := n.Validate(); err != nil {
		return Node{}, err
	}
	return n, nil
}

// jsonNode is one element of a JSON node file. Pointers tell a missing key
// from a zero.
type jsonNode struct {
	Name      *string  `json:"name"`
	Compute   *float64 `json:"compute"`
	Storage   *float64 `json:"storage_gb"`
	Bandwidth *float64 `json:"bandwidth_gbs"`
	Price     *float64 `json:"price_per_hour"`
	Region    string   `json:"region"`
	GPUType   string   `json:"gpu_type"`
	GPUs      *int     `json:"gpus"`
}

// ParseNodesJSON reads nodes from a JSON array of objects with the keys
// name, compute, storage_gb, bandwidth_gbs, price_per_hour (required) and
// region, gpu_type, gpus (optional). Unknown keys are errors. source names
// the input in errors.
func ParseNodesJSON(r io.Reader, source string) ([]Node, error) {
	data, err := readLimited(r, source)
	if err != nil {
		return nil, err
	}
	return parseNodesJSON(data, source)
}

func parseNodesJSON(data []byte, source string) ([]Node, error) {
	lineAt := func(off int64) int {
		if off < 0 {
			return 0
		}
		if off > int64(len(data)) {
			off = int64(len(data))
		}
		return 1 + bytes.Count(data[:off], []byte("\n"))
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	tok, err := dec.Token()
	if err == io.EOF {
		return nil, formatErr(source, 0, "empty file: want a JSON array of node objects")
	}
	if err != nil {
		return nil, jsonErr(source, lineAt, dec.InputOffset(), err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '[' {
		return nil, formatErr(source, lineAt(dec.InputOffset()), "want a JSON array of node objects, got %v", describeToken(tok))
	}
	var nodes []Node
	seen := map[string]int{}
	for dec.More() {
		// The decoder's offset is the end of the previous token; the object
		// starts after blanks and the comma.
		start := dec.InputOffset()
		for start < int64(len(data)) && strings.IndexByte(" \t\r\n,", data[start]) >= 0 {
			start++
		}
		line := lineAt(start)
		var jn jsonNode
		if err := dec.Decode(&jn); err != nil {
			return nil, jsonErr(source, lineAt, start, err)
		}
		f, err := jn.fields()
		if err != nil {
			return nil, fileErr(source, line, err)
		}
		if prev, dup := seen[f.name]; dup {
			return nil, fieldErr(source, line, colName, "node %q already defined on line %d", f.name, prev)
		}
		seen[f.name] = line
		n, err := f.node()
		if err != nil {
			return nil, fileErr(source, line, err)
		}
		nodes = append(nodes, n)
	}
	if _, err := dec.Token(); err != nil { // the closing ']'
		return nil, jsonErr(source, lineAt, dec.InputOffset(), err)
	}
	if tok, err := dec.Token(); err != io.EOF {
		if err != nil {
			return nil, jsonErr(source, lineAt, dec.InputOffset(), err)
		}
		return nil, formatErr(source, lineAt(dec.InputOffset()), "unexpected %v after the array of nodes", describeToken(tok))
	}
	if len(nodes) == 0 {
		return nil, formatErr(source, 0, "no nodes: the array is empty")
	}
	return nodes, nil
}

func describeToken(tok any) string {
	switch t := tok.(type) {
	case json.Delim:
		return fmt.Sprintf("%q", string(t))
	case string:
		return fmt.Sprintf("string %q", t)
	case nil:
		return "null"
	default:
		return fmt.Sprintf("%T %v", t, t)
	}
}

// jsonErr turns a decoder error into a FileError at the best line known:
// the error's own offset where it has one, else at (the object's start).
func jsonErr(source string, lineAt func(int64) int, at int64, err error) error {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return formatErr(source, lineAt(se.Offset), "malformed JSON: %s", strings.TrimPrefix(se.Error(), "json: "))
	case errors.As(err, &te):
		field := te.Field
		if field == "" {
			return formatErr(source, lineAt(te.Offset), "want a node object, got a JSON %s", te.Value)
		}
		kind := jsonKind(te.Type.Kind().String())
		if kind == "a number" && strings.HasPrefix(te.Value, "number") {
			return fieldErr(source, lineAt(te.Offset), field, "number out of range: %s", strings.TrimPrefix(te.Value, "number "))
		}
		return fieldErr(source, lineAt(te.Offset), field, "want %s, got a JSON %s", kind, te.Value)
	case errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF):
		return formatErr(source, lineAt(at), "malformed JSON: unexpected end of input")
	}
	msg := err.Error()
	if rest, ok := strings.CutPrefix(msg, "json: unknown field "); ok {
		name, uerr := strconv.Unquote(rest)
		if uerr != nil {
			name = rest
		}
		return fieldErr(source, lineAt(at), name, "unknown field (want %s)", knownColumns)
	}
	return formatErr(source, lineAt(at), "malformed JSON: %s", strings.TrimPrefix(msg, "json: "))
}

func jsonKind(goKind string) string {
	switch goKind {
	case "float64":
		return "a number"
	case "int":
		return "a whole number"
	case "string":
		return "a string"
	}
	return goKind
}

// fields checks that required keys are present and values in range.
func (jn *jsonNode) fields() (nodeFields, error) {
	if jn.Name == nil {
		return nodeFields{}, &FieldError{Field: colName, Reason: "missing"}
	}
	f := nodeFields{name: strings.TrimSpace(*jn.Name), region: strings.TrimSpace(jn.Region), gpuType: strings.TrimSpace(jn.GPUType)}
	if f.name == "" {
		return nodeFields{}, &FieldError{Field: colName, Reason: "must not be empty"}
	}
	for _, c := range []struct {
		name string
		src  *float64
		dst  *float64
	}{
		{colCompute, jn.Compute, &f.compute}, {colStorage, jn.Storage, &f.storage},
		{colBandwidth, jn.Bandwidth, &f.bandwidth}, {colPrice, jn.Price, &f.price},
	} {
		if c.src == nil {
			return nodeFields{}, &FieldError{Field: c.name, Reason: "missing"}
		}
		if err := checkPositive(c.name, *c.src); err != nil {
			return nodeFields{}, err
		}
		*c.dst = *c.src
	}
	if jn.GPUs != nil {
		f.gpus = *jn.GPUs
	}
	return f, nil
}
