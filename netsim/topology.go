package netsim

import (
	"bytes"
	_ "embed"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// worldCSV is the AWS inter-region RTT matrix measured by cloudping.co, as
// published in libp2p/jvm-libp2p (see data/README.md for source and licence).
//
//go:embed data/rtt-aws-cloudping.csv
var worldCSV []byte

// maxRTT bounds the RTT a topology file may declare: anything above is a typo
// (seconds written as milliseconds), not a network.
const maxRTT = 10 * time.Minute

// Link describes the directed path from one region to another.
type Link struct {
	// RTT is the measured round-trip time from→to; the one-way latency of
	// the direction from→to is RTT/2.
	RTT time.Duration
	// Jitter, when positive, bounds the uniform ± variation of each one-way
	// delivery on this link. Zero means Config.Jitter applies.
	Jitter time.Duration
	// Loss is the probability in [0,1] that a datagram on this link is lost.
	Loss float64
	// Bandwidth, when positive, is the link capacity in bytes per second,
	// shared by all traffic of the direction from→to.
	Bandwidth float64
}

// OneWay returns the one-way latency of the link: RTT/2.
func (l Link) OneWay() time.Duration { return l.RTT / 2 }

// Topology is an immutable set of regions and the directed links between
// every ordered pair of them; the diagonal (a region to itself) is the
// intra-region link. It is safe for concurrent use.
type Topology struct {
	regions []string       // sorted
	index   map[string]int // region → position in regions
	links   [][]Link       // links[from][to]
}

// WorldTopology returns the embedded 21-region AWS topology (cloudping.co
// measurements). Each call returns the same immutable value.
func WorldTopology() *Topology { return worldTopology }

var worldTopology = mustParseWorld()

func mustParseWorld() *Topology {
	t, err := ParseTopology(bytes.NewReader(worldCSV), "embedded rtt-aws-cloudping.csv")
	if err != nil {
		// The embedded file is part of the build; a parse failure is a
		// broken invariant of the repository, not bad user input.
		panic(fmt.Sprintf("netsim: embedded world topology: %v", err))
	}
	return t
}

// LoadTopology reads a topology CSV file; see ParseTopology for the format.
func LoadTopology(path string) (*Topology, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("netsim: load topology: %w", err)
	}
	defer f.Close()
	return ParseTopology(f, path)
}

// TopologyError reports a problem in a topology file; Line is 0 when the
// problem is not tied to one line (a missing pair).
type TopologyError struct {
	Source string
	Line   int
	Msg    string
}

// Error returns "netsim: topology <source>:<line>: <message>".
func (e *TopologyError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("netsim: topology %s:%d: %s", e.Source, e.Line, e.Msg)
	}
	return fmt.Sprintf("netsim: topology %s: %s", e.Source, e.Msg)
}

// ParseTopology reads a topology from CSV. The first record is a header that
// must name the columns from, to and rtt_ms (in any order); the optional
// columns jitter_ms (one-way ± bound), loss (0..1) and bandwidth_mbps
// (megabits per second) set per-link properties. Lines starting with # are
// comments. A pair given in one direction only is mirrored; every ordered
// pair of the regions named in the file, including each region with itself,
// must then be defined. source names the input in error messages.
func ParseTopology(r io.Reader, source string) (*Topology, error) {
	cr := csv.NewReader(r)
	cr.Comment = '#'
	cr.FieldsPerRecord = -1
	cr.TrimLeadingSpace = true
	fail := func(line int, format string, args ...any) error {
		return &TopologyError{Source: source, Line: line, Msg: fmt.Sprintf(format, args...)}
	}

	header, err := cr.Read()
	if errors.Is(err, io.EOF) {
		return nil, fail(0, "empty file: want a header line from,to,rtt_ms")
	}
	if err != nil {
		return nil, csvError(source, err)
	}
	headerLine, _ := cr.FieldPos(0)
	cols := map[string]int{}
	for i, name := range header {
		name = strings.ToLower(strings.TrimSpace(name))
		switch name {
		case "from", "to", "rtt_ms", "jitter_ms", "loss", "bandwidth_mbps":
		default:
			return nil, fail(headerLine, "unknown column %q (want from,to,rtt_ms[,jitter_ms,loss,bandwidth_mbps])", header[i])
		}
		if _, dup := cols[name]; dup {
			return nil, fail(headerLine, "column %q given twice", name)
		}
		cols[name] = i
	}
	for _, need := range []string{"from", "to", "rtt_ms"} {
		if _, ok := cols[need]; !ok {
			return nil, fail(headerLine, "header lacks column %q (want from,to,rtt_ms)", need)
		}
	}

	type entry struct {
		link Link
		line int
	}
	given := map[[2]string]entry{}
	seen := map[string]bool{}
	var names []string
	for {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, csvError(source, err)
		}
		line, _ := cr.FieldPos(0)
		if len(rec) != len(header) {
			return nil, fail(line, "%d fields, want %d as in the header", len(rec), len(header))
		}
		field := func(name string) string { return strings.TrimSpace(rec[cols[name]]) }
		from, to := field("from"), field("to")
		for _, reg := range [...]struct{ col, v string }{{"from", from}, {"to", to}} {
			if err := validRegionName(reg.v); err != nil {
				return nil, fail(line, "column %s: %v", reg.col, err)
			}
		}
		var l Link
		rtt, err := parseMillis(field("rtt_ms"))
		if err != nil {
			return nil, fail(line, "column rtt_ms: %v", err)
		}
		l.RTT = rtt
		if _, ok := cols["jitter_ms"]; ok && field("jitter_ms") != "" {
			j, err := parseMillis(field("jitter_ms"))
			if err != nil {
				return nil, fail(line, "column jitter_ms: %v", err)
			}
			l.Jitter = j
		}
		if _, ok := cols["loss"]; ok && field("loss") != "" {
			p, err := strconv.ParseFloat(field("loss"), 64)
			if err != nil || math.IsNaN(p) || p < 0 || p > 1 {
				return nil, fail(line, "column loss: %q is not a probability in [0,1]", field("loss"))
			}
			l.Loss = p
		}
		if _, ok := cols["bandwidth_mbps"]; ok && field("bandwidth_mbps") != "" {
			bw, err := strconv.ParseFloat(field("bandwidth_mbps"), 64)
			if err != nil || math.IsNaN(bw) || math.IsInf(bw, 0) || bw < 0 {
				return nil, fail(line, "column bandwidth_mbps: %q is not a non-negative number", field("bandwidth_mbps"))
			}
			l.Bandwidth = bw * 1e6 / 8
		}
		key := [2]string{from, to}
		if prev, dup := given[key]; dup {
			return nil, fail(line, "pair %s→%s already given on line %d", from, to, prev.line)
		}
		given[key] = entry{link: l, line: line}
		for _, r := range [...]string{from, to} {
			if !seen[r] {
				seen[r] = true
				names = append(names, r)
			}
		}
	}
	if len(names) == 0 {
		return nil, fail(0, "no links: want at least one from,to,rtt_ms line")
	}
	slices.Sort(names)
	t := newTopology(names)
	for i, a := range names {
		for j, b := range names {
			e, ok := given[[2]string{a, b}]
			if !ok {
				e, ok = given[[2]string{b, a}] // mirror a pair given one way only
			}
			if !ok {
				if a == b {
					return nil, fail(0, "missing pair %s,%s: the intra-region RTT of region %s is not given", a, b, a)
				}
				return nil, fail(0, "missing pair %s,%s: no RTT given in either direction", a, b)
			}
			t.links[i][j] = e.link
		}
	}
	return t, nil
}

func csvError(source string, err error) error {
	var pe *csv.ParseError
	if errors.As(err, &pe) {
		return &TopologyError{Source: source, Line: pe.Line, Msg: pe.Err.Error()}
	}
	return fmt.Errorf("netsim: topology %s: %w", source, err)
}

func parseMillis(s string) (time.Duration, error) {
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
		return 0, fmt.Errorf("%q is not a number of milliseconds", s)
	}
	if v < 0 {
		return 0, fmt.Errorf("%q is negative", s)
	}
	d := time.Duration(v * float64(time.Millisecond))
	if d > maxRTT {
		return 0, fmt.Errorf("%q ms exceeds the maximum of %v", s, maxRTT)
	}
	return d, nil
}

func validRegionName(s string) error {
	if s == "" {
		return errors.New("empty region name")
	}
	for _, r := range s {
		if r <= ' ' || r == ',' || r == '"' || r > '~' {
			return fmt.Errorf("region name %q: only printable ASCII without spaces, commas or quotes", s)
		}
	}
	return nil
}

func newTopology(regions []string) *Topology {
	t := &Topology{regions: regions, index: make(map[string]int, len(regions))}
	t.links = make([][]Link, len(regions))
	for i, r := range regions {
		t.index[r] = i
		t.links[i] = make([]Link, len(regions))
	}
	return t
}

// Regions returns the region names, sorted. The slice is a copy.
func (t *Topology) Regions() []string { return slices.Clone(t.regions) }

// HasRegion reports whether the topology contains region.
func (t *Topology) HasRegion(region string) bool {
	_, ok := t.index[region]
	return ok
}

// Link returns the directed link from→to.
func (t *Topology) Link(from, to string) (Link, error) {
	i, ok := t.index[from]
	if !ok {
		return Link{}, fmt.Errorf("netsim: from region %q: %w", from, ErrUnknownRegion)
	}
	j, ok := t.index[to]
	if !ok {
		return Link{}, fmt.Errorf("netsim: to region %q: %w", to, ErrUnknownRegion)
	}
	return t.links[i][j], nil
}

// RTT returns the round-trip time measured from→to.
func (t *Topology) RTT(from, to string) (time.Duration, error) {
	l, err := t.Link(from, to)
	return l.RTT, err
}

// Subset returns a topology with only the given regions and the links among
// them. Every region must exist; duplicates are ignored.
func (t *Topology) Subset(regions ...string) (*Topology, error) {
	if len(regions) == 0 {
		return nil, errors.New("netsim: subset: no regions given")
	}
	names := slices.Clone(regions)
	slices.Sort(names)
	names = slices.Compact(names)
	for _, r := range names {
		if !t.HasRegion(r) {
			return nil, fmt.Errorf("netsim: subset region %q: %w", r, ErrUnknownRegion)
		}
	}
	s := newTopology(names)
	for i, a := range names {
		for j, b := range names {
			s.links[i][j] = t.links[t.index[a]][t.index[b]]
		}
	}
	return s, nil
}

// WriteCSV writes the topology in the format ParseTopology reads, every
// ordered pair on its own line; optional columns appear only when some link
// sets them.
func (t *Topology) WriteCSV(w io.Writer) error {
	var jitter, loss, bw bool
	for _, row := range t.links {
		for _, l := range row {
			jitter = jitter || l.Jitter > 0
			loss = loss || l.Loss > 0
			bw = bw || l.Bandwidth > 0
		}
	}
	cw := csv.NewWriter(w)
	header := []string{"from", "to", "rtt_ms"}
	if jitter {
		header = append(header, "jitter_ms")
	}
	if loss {
		header = append(header, "loss")
	}
	if bw {
		header = append(header, "bandwidth_mbps")
	}
	if err := cw.Write(header); err != nil {
		return fmt.Errorf("netsim: write topology: %w", err)
	}
	ms := func(d time.Duration) string {
		return strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'f', -1, 64)
	}
	for i, a := range t.regions {
		for j, b := range t.regions {
			l := t.links[i][j]
			rec := []string{a, b, ms(l.RTT)}
			if jitter {
				rec = append(rec, ms(l.Jitter))
			}
			if loss {
				rec = append(rec, strconv.FormatFloat(l.Loss, 'f', -1, 64))
			}
			if bw {
				rec = append(rec, strconv.FormatFloat(l.Bandwidth*8/1e6, 'f', -1, 64))
			}
			if err := cw.Write(rec); err != nil {
				return fmt.Errorf("netsim: write topology: %w", err)
			}
		}
	}
	cw.Flush()
	if err := cw.Error(); err != nil {
		return fmt.Errorf("netsim: write topology: %w", err)
	}
	return nil
}
