package netsim

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestWorldTopology(t *testing.T) {
	w := WorldTopology()
	regions := w.Regions()
	if len(regions) != 21 {
		t.Fatalf("WorldTopology has %d regions; want 21", len(regions))
	}
	if !slices.IsSorted(regions) {
		t.Errorf("Regions() = %v; want sorted", regions)
	}
	tests := []struct {
		from, to string
		want     time.Duration
	}{
		{"us-east-1", "eu-west-1", 70 * time.Millisecond},
		{"ap-southeast-2", "af-south-1", 412 * time.Millisecond},
		{"eu-west-1", "eu-west-1", 1 * time.Millisecond}, // intra-region diagonal
		{"us-east-1", "us-east-1", 4 * time.Millisecond},
		// The matrix is asymmetric; each direction is kept as measured.
		{"af-south-1", "ap-south-1", 155 * time.Millisecond},
		{"ap-south-1", "af-south-1", 162 * time.Millisecond},
	}
	for _, tt := range tests {
		got, err := w.RTT(tt.from, tt.to)
		if err != nil || got != tt.want {
			t.Errorf("RTT(%q, %q) = %v, %v; want %v", tt.from, tt.to, got, err, tt.want)
		}
	}
	if _, err := w.RTT("us-east-1", "mars-1"); !errors.Is(err, ErrUnknownRegion) || !strings.Contains(err.Error(), "mars-1") {
		t.Errorf("RTT to unknown region: err = %v; want ErrUnknownRegion naming it", err)
	}
	l, _ := w.Link("us-east-1", "eu-west-1")
	if l.OneWay() != 35*time.Millisecond {
		t.Errorf("OneWay() = %v; want 35ms", l.OneWay())
	}
}

func TestParseTopologyMirrorsAndOptionalColumns(t *testing.T) {
	csv := `# a comment
from,to,rtt_ms,jitter_ms,loss,bandwidth_mbps
x,x,1,,,
y,y,2.5,,,
x,y,100,5,0.01,80
y,x,110,,,
z,z,1,,,
z,x,40,,,
y,z,60,,0.5,
`
	topo, err := ParseTopology(strings.NewReader(csv), "t.csv")
	if err != nil {
		t.Fatalf("ParseTopology: %v", err)
	}
	if got := topo.Regions(); !slices.Equal(got, []string{"x", "y", "z"}) {
		t.Errorf("Regions() = %v", got)
	}
	tests := []struct {
		from, to string
		want     Link
	}{
		{"x", "y", Link{RTT: 100 * time.Millisecond, Jitter: 5 * time.Millisecond, Loss: 0.01, Bandwidth: 10e6}},
		{"y", "x", Link{RTT: 110 * time.Millisecond}},
		{"x", "z", Link{RTT: 40 * time.Millisecond}}, // mirrored from z,x
		{"z", "y", Link{RTT: 60 * time.Millisecond, Loss: 0.5}},
		{"y", "y", Link{RTT: 2500 * time.Microsecond}},
	}
	for _, tt := range tests {
		got, err := topo.Link(tt.from, tt.to)
		if err != nil || got != tt.want {
			t.Errorf("Link(%q, %q) = %+v, %v; want %+v", tt.from, tt.to, got, err, tt.want)
		}
	}
}

func TestParseTopologyErrors(t *testing.T) {
	tests := []struct {
		name, csv string
		want      []string // substrings of the error
	}{
		{"empty", "", []string{"empty file"}},
		{"header only", "from,to,rtt_ms\n", []string{"no links"}},
		{"missing column", "from,to\na,a\n", []string{":1:", `lacks column "rtt_ms"`}},
		{"unknown column", "from,to,rtt_ms,colour\na,a,1,red\n", []string{":1:", `unknown column "colour"`}},
		{"negative", "from,to,rtt_ms\na,a,1\nb,b,1\na,b,-5\n", []string{":4:", "rtt_ms", "negative"}},
		{"non-numeric", "from,to,rtt_ms\na,a,1\na,b,fast\n", []string{":3:", "rtt_ms", `"fast"`}},
		{"NaN", "from,to,rtt_ms\na,a,NaN\n", []string{":2:", "rtt_ms"}},
		{"too large", "from,to,rtt_ms\na,a,99999999\n", []string{":2:", "exceeds"}},
		{"missing pair", "from,to,rtt_ms\na,a,1\nb,b,1\nc,c,1\na,b,5\nb,c,5\n", []string{"missing pair a,c"}},
		{"missing diagonal", "from,to,rtt_ms\na,a,1\na,b,5\n", []string{"missing pair b,b", "intra-region"}},
		{"duplicate", "from,to,rtt_ms\na,a,1\na,a,2\n", []string{":3:", "already given on line 2"}},
		{"field count", "from,to,rtt_ms\na,a\n", []string{":2:", "2 fields, want 3"}},
		{"empty region", "from,to,rtt_ms\n,a,1\n", []string{":2:", "column from", "empty region"}},
		{"bad region", "from,to,rtt_ms\na,b c,1\n", []string{":2:", "column to", `"b c"`}},
		{"bad loss", "from,to,rtt_ms,loss\na,a,1,1.5\n", []string{":2:", "column loss"}},
		{"bad bandwidth", "from,to,rtt_ms,bandwidth_mbps\na,a,1,-3\n", []string{":2:", "column bandwidth_mbps"}},
		{"bad quote", "from,to,rtt_ms\n\"a,a,1\n", []string{"t.csv"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseTopology(strings.NewReader(tt.csv), "t.csv")
			if err == nil {
				t.Fatalf("ParseTopology(%q) succeeded; want an error", tt.csv)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("ParseTopology(%q) error %q; want it to contain %q", tt.csv, err, w)
				}
			}
		})
	}
}

func TestLoadTopology(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.csv")
	if err := os.WriteFile(good, []byte(twoRegions), 0o644); err != nil {
		t.Fatal(err)
	}
	topo, err := LoadTopology(good)
	if err != nil {
		t.Fatalf("LoadTopology: %v", err)
	}
	if rtt, _ := topo.RTT("b", "a"); rtt != 150*time.Millisecond {
		t.Errorf("RTT(b, a) = %v; want 150ms (mirrored)", rtt)
	}
	bad := filepath.Join(dir, "bad.csv")
	if err := os.WriteFile(bad, []byte("from,to,rtt_ms\na,a,x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadTopology(bad); err == nil || !strings.Contains(err.Error(), bad+":2:") {
		t.Errorf("LoadTopology(bad) = %v; want an error naming %s:2", err, bad)
	}
	if _, err := LoadTopology(filepath.Join(dir, "missing.csv")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("LoadTopology(missing) = %v; want os.ErrNotExist", err)
	}
}

func TestSubsetAndWriteCSV(t *testing.T) {
	w := WorldTopology()
	s, err := w.Subset("eu-west-1", "us-east-1", "eu-west-1")
	if err != nil {
		t.Fatalf("Subset: %v", err)
	}
	if got := s.Regions(); !slices.Equal(got, []string{"eu-west-1", "us-east-1"}) {
		t.Errorf("Subset regions = %v", got)
	}
	if rtt, _ := s.RTT("us-east-1", "eu-west-1"); rtt != 70*time.Millisecond {
		t.Errorf("Subset RTT = %v; want 70ms", rtt)
	}
	if _, err := w.Subset("us-east-1", "atlantis-1"); !errors.Is(err, ErrUnknownRegion) {
		t.Errorf("Subset with unknown region: %v; want ErrUnknownRegion", err)
	}
	if _, err := w.Subset(); err == nil {
		t.Errorf("Subset() succeeded; want an error")
	}

	// The world topology round-trips through WriteCSV and ParseTopology.
	var buf bytes.Buffer
	if err := w.WriteCSV(&buf); err != nil {
		t.Fatalf("WriteCSV: %v", err)
	}
	back, err := ParseTopology(&buf, "roundtrip")
	if err != nil {
		t.Fatalf("ParseTopology(WriteCSV): %v", err)
	}
	for _, a := range w.Regions() {
		for _, b := range w.Regions() {
			x, _ := w.Link(a, b)
			y, _ := back.Link(a, b)
			if x != y {
				t.Errorf("round trip Link(%s, %s) = %+v; want %+v", a, b, y, x)
			}
		}
	}
	withCols := mustTopology(t, "from,to,rtt_ms,jitter_ms,loss,bandwidth_mbps\na,a,1,0.5,0.1,100\n")
	buf.Reset()
	if err := withCols.WriteCSV(&buf); err != nil {
		t.Fatal(err)
	}
	if got, want := buf.String(), "from,to,rtt_ms,jitter_ms,loss,bandwidth_mbps\na,a,1,0.5,0.1,100\n"; got != want {
		t.Errorf("WriteCSV = %q; want %q", got, want)
	}
}
