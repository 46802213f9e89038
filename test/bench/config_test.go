package bench

import (
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/placement/workload"
)

// parseFlags parses args as the benchmark's flags on a fresh flag set and
// returns the configuration, or the first error (parsing, reading files,
// or building the world).
func parseFlags(args ...string) (*Flags, *World, error) {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	f := RegisterFlags(fs)
	if err := fs.Parse(args); err != nil {
		return f, nil, err
	}
	if _, err := f.MeshVariants(); err != nil {
		return f, nil, err
	}
	cfg, err := f.Config()
	if err != nil {
		return f, nil, err
	}
	w, err := Load(cfg)
	return f, w, err
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestFlagErrorsNameTheFlagAndFile(t *testing.T) {
	badTopo := writeFile(t, "topo.csv", "from,to,rtt_ms\nus-east-1,us-east-1,1\nus-east-1,eu-west-1,abc\n")
	badPrices := writeFile(t, "prices.csv", "instance_type,accelerator,accelerator_count,vcpus,memory_gib,region,on_demand_usd_per_hour,spot_min_usd_per_hour,spot_max_usd_per_hour\np4d.24xlarge,A100,8,96,1152,us-east-1,-3,,\n")
	badTrace := writeFile(t, "trace.csv", "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:00:00,12,3\n2023-11-16 18:00:01,-5,3\n")
	shortTrace := writeFile(t, "short.csv", "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:00:00,12,3\n2023-11-16 18:00:10,40,3\n")
	missing := filepath.Join(t.TempDir(), "missing.csv")
	cases := []struct {
		args []string
		want []string // substrings of the error
	}{
		{[]string{"-hours", "0"}, []string{"-hours", "out of range"}},
		{[]string{"-hours", "200"}, []string{"-hours"}},
		{[]string{"-hours", "NaN"}, []string{"-hours"}},
		{[]string{"-hours", "abc"}, []string{"-hours", "abc"}},
		{[]string{"-seed", "x"}, []string{"-seed"}},
		{[]string{"-topology", missing}, []string{"-topology", "missing.csv"}},
		{[]string{"-topology", badTopo}, []string{"-topology", "topo.csv", ":3"}},
		{[]string{"-prices", badPrices}, []string{"-prices", "prices.csv:2", "on_demand_usd_per_hour"}},
		{[]string{"-trace", badTrace}, []string{"-trace", "trace.csv:3", "ContextTokens"}},
		{[]string{"-trace", shortTrace}, []string{"-trace", "short.csv", "minute"}},
		{[]string{"-regions", "us-east-1,,eu-west-1"}, []string{"-regions", "item 2"}},
		{[]string{"-regions", "us-east-1,us-east-1"}, []string{"-regions", "twice"}},
		{[]string{"-regions", "mars-1"}, []string{"-regions", `"mars-1"`, "not in the topology"}},
		{[]string{"-regions", "af-south-1"}, []string{"-regions", `"af-south-1"`, "not offered"}},
		{[]string{"-instance", "p5e.48xlarge"}, []string{"-instance", "p5e.48xlarge", "no on-demand price"}},
		{[]string{"-instance", "nope.large"}, []string{"-instance", "nope.large"}},
		{[]string{"-instance", " "}, []string{"-instance"}},
		{[]string{"-servers", "2"}, []string{"-servers", "1, 3 or 5"}},
		{[]string{"-servers", "0"}, []string{"-servers"}},
		{[]string{"-workers", "-1"}, []string{"-workers"}},
		{[]string{"-load", "0"}, []string{"-load"}},
		{[]string{"-load", "20"}, []string{"-load"}},
		{[]string{"-window", "1500ms"}, []string{"-window", "whole number of seconds"}},
		{[]string{"-window", "0s"}, []string{"-window"}},
		{[]string{"-mesh", "meridian,foo"}, []string{"-mesh", `"foo"`}},
		{[]string{"-mesh", "meridian,meridian"}, []string{"-mesh", "twice"}},
		{[]string{"-local-reserve", "1"}, []string{"-local-reserve", "below 1"}},
		{[]string{"-local-reserve", "NaN"}, []string{"-local-reserve"}},
	}
	for _, c := range cases {
		_, _, err := parseFlags(c.args...)
		if err == nil {
			t.Errorf("%q: no error", c.args)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%q: error %q does not mention %q", c.args, err, w)
			}
		}
	}
}

func TestFlagErrorsWrapTheCause(t *testing.T) {
	_, _, err := parseFlags("-instance", "p5e.48xlarge")
	if !errors.Is(err, workload.ErrNoOnDemandPrice) {
		t.Errorf("error %v does not wrap ErrNoOnDemandPrice", err)
	}
	bad := writeFile(t, "trace.csv", "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:00:00,x,3\n")
	_, _, err = parseFlags("-trace", bad)
	var pe *workload.ParseError
	if !errors.As(err, &pe) || pe.Line != 2 {
		t.Errorf("error %v is not a ParseError for line 2", err)
	}
}

func TestFlagsDefaultsAndValues(t *testing.T) {
	f, w, err := parseFlags()
	if err != nil {
		t.Fatal(err)
	}
	cfg := w.Config()
	if cfg.Length != DefaultHours*time.Hour || cfg.Instance != workload.DefaultInstance || f.IsSet("hours") {
		t.Errorf("defaults: length %v, instance %s, hours set %v", cfg.Length, cfg.Instance, f.IsSet("hours"))
	}
	want := []string{"ap-northeast-1", "ap-northeast-2", "ap-south-1", "ap-southeast-2", "eu-central-1", "eu-west-1", "us-east-1", "us-east-2", "us-west-2"}
	if got := w.Regions(); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("default regions %v; want the nine with a p4d.24xlarge price %v", got, want)
	}
	if w.NodesPerRegion() != DefaultServers+DefaultWorkers || w.NodeCapacity().ComputePerHour != 8*3600 {
		t.Errorf("%d nodes of %v tasks/h per region", w.NodesPerRegion(), w.NodeCapacity().ComputePerHour)
	}
	if w.Price("us-east-1") != 32.7726 {
		t.Errorf("us-east-1 price %v; want the list's 32.7726", w.Price("us-east-1"))
	}

	trace := writeFile(t, "trace.csv", "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:00:00,100,3\n2023-11-16 18:00:30,200,3\n2023-11-16 18:01:10,300,3\n")
	f, w, err = parseFlags("-regions", "us-east-1, eu-west-1", "-hours", "1.5", "-seed", "7", "-workers", "0", "-servers", "3",
		"-load", "0.5", "-window", "5m", "-trace", trace, "-out", "/tmp/x")
	if err != nil {
		t.Fatal(err)
	}
	cfg = w.Config()
	if strings.Join(w.Regions(), ",") != "eu-west-1,us-east-1" || cfg.Length != 90*time.Minute || cfg.Seed != 7 ||
		w.NodesPerRegion() != 3 || cfg.Load != 0.5 || cfg.Window != 5*time.Minute || f.Out != "/tmp/x" || !f.IsSet("hours") {
		t.Errorf("config from flags: %+v, regions %v, nodes %d", cfg, w.Regions(), w.NodesPerRegion())
	}
	if m, err := f.MeshVariants(); err != nil || len(m) != 1 || m[0].NoMarket {
		t.Errorf("default -mesh: %v, %v; want the mesh with its market", m, err)
	}
	if cfg.Trace.Source != trace || len(cfg.Trace.Requests) != 3 {
		t.Errorf("trace from %s with %d requests", cfg.Trace.Source, len(cfg.Trace.Requests))
	}
}

func TestTopologyFlagFileIsUsed(t *testing.T) {
	topo := writeFile(t, "topo.csv", "from,to,rtt_ms\nus-east-1,us-east-1,1\neu-west-1,eu-west-1,1\nus-east-1,eu-west-1,42\n")
	_, w, err := parseFlags("-topology", topo)
	if err != nil {
		t.Fatal(err)
	}
	if got := w.Regions(); strings.Join(got, ",") != "eu-west-1,us-east-1" {
		t.Errorf("regions %v; want those of the file with a price", got)
	}
	if w.RTT("eu-west-1", "us-east-1") != 42*time.Millisecond {
		t.Errorf("RTT %v; want the file's 42 ms", w.RTT("eu-west-1", "us-east-1"))
	}
	// A topology with no priced region is an error naming both.
	none := writeFile(t, "none.csv", "from,to,rtt_ms\naf-south-1,af-south-1,1\n")
	if _, _, err := parseFlags("-topology", none); err == nil || !strings.Contains(err.Error(), "-regions") || !strings.Contains(err.Error(), "none.csv") {
		t.Errorf("topology without priced regions: %v", err)
	}
}
