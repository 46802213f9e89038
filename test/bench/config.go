package bench

import (
	"errors"
	"flag"
	"fmt"
	"github.com/meridian-mesh/meridian/node"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/meridian-mesh/meridian/netsim"
	"github.com/meridian-mesh/meridian/placement/workload"
)

// Defaults of Config. docs/benchmark.md explains each choice.
const (
	// DefaultHours is the length of a run: one day, so every region goes
	// through its peak and its trough.
	DefaultHours = 24
	// DefaultLoad is a region's mean demand over a day as a fraction of its
	// capacity: 0.8 sizes each region near its own mean demand (1.25× it),
	// so the envelope's afternoon peak (1.6× the mean) needs 1.28× the
	// region's capacity and only trading can serve it.
	DefaultLoad = 0.8
	// DefaultServers and DefaultWorkers size the mesh per region; every
	// node, server or worker, is one instance of Config.Instance. One Raft
	// server per region keeps a simulated day affordable (a three-server
	// group's heartbeats cost about three times the wall time, and
	// replication changes no placement in a run without faults); -servers
	// 3 runs replicated groups.
	DefaultServers = 1
	DefaultWorkers = 3
	// DefaultWindow is the aggregation window: the requests of one origin
	// and one class within a window become one job (split into pieces of
	// at most DefaultMaxJobFraction of a node).
	DefaultWindow = 10 * time.Minute
	// DefaultMaxJobFraction caps a job at half a node, so a job always
	// fits a node and a region's capacity is not all-or-nothing.
	DefaultMaxJobFraction = 0.5
	// DefaultSLOStep rounds interactive latency SLOs down to 25 ms steps
	// (100 and 125 ms for the default mix), so that a job's SLO is never
	// looser than any of its requests'.
	DefaultSLOStep = 25 * time.Millisecond
	// DefaultSampleRate is the generator's rate of sampled requests per
	// second per region; each sampled request stands for Load-derived
	// many real ones (see Workload.Multiplier).
	DefaultSampleRate = 1.0
	// DefaultHistoryDays of the same workload model warm the forecaster
	// up, so that it forecasts with Holt-Winters (which needs two seasons)
	// during the run.
	DefaultHistoryDays = 2
	// DefaultForecastInterval is the bucket of the demand series and of
	// the utilization and cost plots.
	DefaultForecastInterval = 15 * time.Minute
	// DefaultPenaltyFactor prices unserved work at twice the dearest
	// region's on-demand price: what bursting to capacity outside the
	// mesh, or breaking the service, is taken to cost.
	DefaultPenaltyFactor = 2.0
	// MaxHours bounds -hours: a week, the forecaster's history limit.
	MaxHours = 7 * 24
)

// DefaultStart is when the first window of a run opens: ten minutes after
// the origin of testing/synctest's clock (midnight UTC, 2000-01-01), which
// gives the simulated mesh time to form before the first job arrives.
var DefaultStart = time.Date(2000, 1, 1, 0, 10, 0, 0, time.UTC)

// Config says what one benchmark run simulates. The zero value of every
// field means its default; Load checks the configuration and builds the
// World.
type Config struct {
	// Topology gives the RTTs between regions; nil means
	// netsim.WorldTopology().
	Topology *netsim.Topology
	// TopologySource names where Topology came from, for the report.
	TopologySource string
	// Prices gives each region's price of Instance; nil means the embedded
	// AWS price list.
	Prices *workload.Prices
	// Instance is the instance type every node is; "" means p4d.24xlarge.
	Instance string
	// Trace drives request sizes and burstiness; nil means the embedded
	// Azure LLM code trace.
	Trace *workload.Trace
	// Regions are the regions of the run; nil means every region of the
	// topology where Instance has an on-demand price.
	Regions []string
	// Start is when the run starts; zero means DefaultStart.
	Start time.Time
	// Length is how long jobs arrive; zero means DefaultHours.
	Length time.Duration
	// Seed seeds the workload; the same seed gives the same jobs.
	Seed int64
	// Load is each region's mean demand over a day as a fraction of its
	// capacity; zero means DefaultLoad.
	Load float64
	// Servers and Workers are the mesh's nodes per region; each carries
	// one instance's capacity. Zero means the defaults; a negative Workers
	// means none.
	Servers, Workers int
	// Window is the aggregation window; zero means DefaultWindow. It must
	// be a whole number of seconds (jobs' durations are in seconds).
	Window time.Duration
	// MaxJobFraction caps a job's compute as a fraction of a node; zero
	// means DefaultMaxJobFraction.
	MaxJobFraction float64
	// SLOStep is the step interactive SLOs are rounded down to; zero means
	// DefaultSLOStep.
	SLOStep time.Duration
	// SampleRate is the generator's sampled requests per second per region;
	// zero means DefaultSampleRate.
	SampleRate float64
	// HistoryDays of demand warm the forecaster up; negative means none,
	// zero means DefaultHistoryDays.
	HistoryDays int
	// ForecastInterval is the bucket of the demand series and plots; zero
	// means DefaultForecastInterval. It must divide 24 hours.
	ForecastInterval time.Duration
	// PenaltyFactor times the dearest region's price is what an unserved
	// node-hour of work costs; zero means DefaultPenaltyFactor.
	PenaltyFactor float64
}

// withDefaults returns c with its zero fields set to the defaults.
func (c Config) withDefaults() Config {
	if c.Topology == nil {
		c.Topology = netsim.WorldTopology()
		if c.TopologySource == "" {
			c.TopologySource = "embedded AWS cloudping topology"
		}
	}
	if c.Prices == nil {
		c.Prices = workload.EmbeddedPrices()
	}
	if c.Instance == "" {
		c.Instance = workload.DefaultInstance
	}
	if c.Trace == nil {
		c.Trace = workload.EmbeddedTrace()
	}
	if c.Start.IsZero() {
		c.Start = DefaultStart
	}
	if c.Length == 0 {
		c.Length = DefaultHours * time.Hour
	}
	if c.Load == 0 {
		c.Load = DefaultLoad
	}
	if c.Servers == 0 {
		c.Servers = DefaultServers
	}
	if c.Workers == 0 {
		c.Workers = DefaultWorkers
	} else if c.Workers < 0 {
		c.Workers = 0
	}
	if c.Window == 0 {
		c.Window = DefaultWindow
	}
	if c.MaxJobFraction == 0 {
		c.MaxJobFraction = DefaultMaxJobFraction
	}
	if c.SLOStep == 0 {
		c.SLOStep = DefaultSLOStep
	}
	if c.SampleRate == 0 {
		c.SampleRate = DefaultSampleRate
	}
	if c.HistoryDays == 0 {
		c.HistoryDays = DefaultHistoryDays
	} else if c.HistoryDays < 0 {
		c.HistoryDays = 0
	}
	if c.ForecastInterval == 0 {
		c.ForecastInterval = DefaultForecastInterval
	}
	if c.PenaltyFactor == 0 {
		c.PenaltyFactor = DefaultPenaltyFactor
	}
	return c
}

// validate checks a configuration whose defaults are filled. Errors name
// the field (as its flag when it has one).
func (c Config) validate() error {
	switch {
	case c.Length < time.Minute || c.Length > MaxHours*time.Hour:
		return fmt.Errorf("-hours: %v is out of range: want between 1 minute and %d hours", hoursOf(c.Length), MaxHours)
	case c.Length%time.Second != 0:
		return fmt.Errorf("config field Length: %v is not a whole number of seconds (jobs' durations are whole seconds)", c.Length)
	case !(c.Load > 0 && c.Load <= 10):
		return fmt.Errorf("-load: %v is out of range: want a fraction of capacity in (0, 10]", c.Load)
	case c.Servers < 1 || c.Servers > 5:
		return fmt.Errorf("-servers: %d is out of range: want 1 to 5 Raft servers per region", c.Servers)
	case c.Servers != 1 && c.Servers != 3 && c.Servers != 5:
		return fmt.Errorf("-servers: %d: want 1, 3 or 5 (an even Raft group tolerates no more failures than one server fewer)", c.Servers)
	case c.Workers < 0 || c.Workers > 100:
		return fmt.Errorf("-workers: %d is out of range: want 0 to 100 workers per region", c.Workers)
	case c.Window < time.Second || c.Window%time.Second != 0 || c.Window > 24*time.Hour:
		return fmt.Errorf("-window: %v must be a whole number of seconds between 1s and 24h", c.Window)
	case !(c.MaxJobFraction > 0 && c.MaxJobFraction <= 1):
		return fmt.Errorf("config field MaxJobFraction: %v is out of range (0, 1]", c.MaxJobFraction)
	case c.SLOStep <= 0:
		return fmt.Errorf("config field SLOStep: %v must be positive", c.SLOStep)
	case !(c.SampleRate > 0 && c.SampleRate <= 1000):
		return fmt.Errorf("config field SampleRate: %v is out of range (0, 1000] requests per second", c.SampleRate)
	case c.HistoryDays > 7:
		return fmt.Errorf("config field HistoryDays: %d exceeds 7", c.HistoryDays)
	case c.ForecastInterval <= 0 || (24*time.Hour)%c.ForecastInterval != 0:
		return fmt.Errorf("config field ForecastInterval: %v must divide 24 hours", c.ForecastInterval)
	case !(c.PenaltyFactor >= 1) || math.IsInf(c.PenaltyFactor, 0):
		return fmt.Errorf("config field PenaltyFactor: %v must be a finite number ≥ 1 (unserved work must cost at least what serving it does)", c.PenaltyFactor)
	}
	return nil
}

func hoursOf(d time.Duration) string {
	return strconv.FormatFloat(d.Hours(), 'g', -1, 64)
}

// Flags are the benchmark's command-line flags, given to go test after
// -args. RegisterFlags defines them; Config reads the files they name.
type Flags struct {
	fs *flag.FlagSet
	// Topology, Prices and Trace are the paths of -topology, -prices and
	// -trace ("" = the embedded data).
	Topology, Prices, Trace string
	// Instance is -instance.
	Instance string
	// Regions is -regions, comma-separated ("" = every priced region).
	Regions string
	// Hours is -hours.
	Hours float64
	// Seed is -seed.
	Seed int64
	// Out is -out ("" = a new temporary directory).
	Out string
	// Load is -load.
	Load float64
	// Servers and Workers are -servers and -workers.
	Servers, Workers int
	// Window is -window.
	Window time.Duration
	// Mesh is -mesh: the mesh variants to run.
	Mesh string
	// LocalReserve is -local-reserve: the mesh's node.Tuning.LocalReserve.
	LocalReserve float64
}

// RegisterFlags defines the benchmark's flags on fs (flag.CommandLine in
// the test binary) and returns where their values land.
func RegisterFlags(fs *flag.FlagSet) *Flags {
	f := &Flags{fs: fs}
	fs.StringVar(&f.Topology, "topology", "", "`FILE` of region RTTs (from,to,rtt_ms CSV); default the embedded AWS world topology")
	fs.StringVar(&f.Prices, "prices", "", "`FILE` of GPU prices with the columns of gpu-prices-aws.csv; default the embedded AWS prices")
	fs.StringVar(&f.Instance, "instance", workload.DefaultInstance, "instance `TYPE` of every node (its on-demand price is the region's cost)")
	fs.StringVar(&f.Trace, "trace", "", "request trace `FILE` (TIMESTAMP,ContextTokens,GeneratedTokens); default the embedded Azure LLM code trace")
	fs.StringVar(&f.Regions, "regions", "", "comma-separated `regions`; default every region of the topology with a price for -instance")
	fs.Float64Var(&f.Hours, "hours", DefaultHours, "simulated `hours` of arrivals")
	fs.Int64Var(&f.Seed, "seed", 1, "workload `seed`")
	fs.StringVar(&f.Out, "out", "", "output `DIR` (created); default a new temporary directory, printed")
	fs.Float64Var(&f.Load, "load", DefaultLoad, "each region's mean demand as a `fraction` of its capacity")
	fs.IntVar(&f.Servers, "servers", DefaultServers, "Raft servers per region, each one instance")
	fs.IntVar(&f.Workers, "workers", DefaultWorkers, "workers per region, each one instance")
	fs.DurationVar(&f.Window, "window", DefaultWindow, "aggregation `window`: requests of one origin and class within it form a job")
	fs.StringVar(&f.Mesh, "mesh", "meridian", "comma-separated mesh `variants` to run: meridian (market on), meridian-no-market; or none")
	fs.Float64Var(&f.LocalReserve, "local-reserve", 0, "the mesh leaders' local reserve, a `share` of the region's compute below 1 (node.Tuning.LocalReserve): 0 for node's default, negative for none")
	return f
}

// IsSet reports whether the flag name was given on the command line.
func (f *Flags) IsSet(name string) bool {
	set := false
	f.fs.Visit(func(fl *flag.Flag) {
		if fl.Name == name {
			set = true
		}
	})
	return set
}

// Config reads the files the flags name and returns the configuration.
// Every error names the flag and, for a file, the file and line at fault.
func (f *Flags) Config() (Config, error) {
	c := Config{Instance: f.Instance, Seed: f.Seed, Load: f.Load, Servers: f.Servers, Workers: f.Workers, Window: f.Window}
	if math.IsNaN(f.Hours) || f.Hours <= 0 || f.Hours > MaxHours {
		return Config{}, fmt.Errorf("-hours: %v is out of range: want more than 0 and at most %d", f.Hours, MaxHours)
	}
	c.Length = time.Duration(f.Hours * float64(time.Hour)).Round(time.Second)
	switch {
	case f.Workers == 0:
		c.Workers = -1 // an explicit -workers 0 means none, not the default
	case f.Workers < 0:
		return Config{}, fmt.Errorf("-workers: %d is negative", f.Workers)
	}
	if f.Servers <= 0 {
		return Config{}, fmt.Errorf("-servers: %d is out of range: want 1 to 5", f.Servers)
	}
	if f.Load <= 0 {
		return Config{}, fmt.Errorf("-load: %v is out of range: want a fraction of capacity in (0, 10]", f.Load)
	}
	if f.Window <= 0 {
		return Config{}, fmt.Errorf("-window: %v must be positive", f.Window)
	}
	if strings.TrimSpace(f.Instance) == "" {
		return Config{}, errors.New("-instance: must not be empty")
	}
	if f.Topology != "" {
		t, err := netsim.LoadTopology(f.Topology)
		if err != nil {
			return Config{}, fmt.Errorf("-topology: %w", err)
		}
		c.Topology, c.TopologySource = t, f.Topology
	}
	if f.Prices != "" {
		p, err := workload.LoadPrices(f.Prices)
		if err != nil {
			return Config{}, fmt.Errorf("-prices: %w", err)
		}
		c.Prices = p
	}
	if f.Trace != "" {
		t, err := workload.LoadTrace(f.Trace)
		if err != nil {
			return Config{}, fmt.Errorf("-trace: %w", err)
		}
		c.Trace = t
	}
	if f.Regions != "" {
		regions, err := parseRegions(f.Regions)
		if err != nil {
			return Config{}, fmt.Errorf("-regions: %w", err)
		}
		c.Regions = regions
	}
	return c, nil
}

// parseRegions splits a comma-separated list, refusing empty items and
// duplicates.
func parseRegions(s string) ([]string, error) {
	var out []string
	seen := map[string]bool{}
	for i, item := range strings.Split(s, ",") {
		r := strings.TrimSpace(item)
		if r == "" {
			return nil, fmt.Errorf("item %d of %q is empty", i+1, s)
		}
		if seen[r] {
			return nil, fmt.Errorf("region %q is listed twice", r)
		}
		seen[r] = true
		out = append(out, r)
	}
	return out, nil
}

// MeshVariants returns the mesh runs -mesh asks for, in its order.
func (f *Flags) MeshVariants() ([]MeridianOptions, error) {
	if strings.TrimSpace(f.Mesh) == "none" {
		return nil, nil
	}
	if r := f.LocalReserve; math.IsNaN(r) || math.IsInf(r, 0) || r >= 1 {
		return nil, fmt.Errorf("-local-reserve: %v is out of range: want a share below 1 (0 for the default, negative for none)", r)
	}
	var out []MeridianOptions
	seen := map[string]bool{}
	for _, v := range strings.Split(f.Mesh, ",") {
		v = strings.TrimSpace(v)
		if seen[v] {
			return nil, fmt.Errorf("-mesh: %q is listed twice", v)
		}
		seen[v] = true
		switch v {
		case "meridian":
			out = append(out, MeridianOptions{Tuning: node.Tuning{LocalReserve: f.LocalReserve}})
		case "meridian-no-market":
			out = append(out, MeridianOptions{NoMarket: true, Tuning: node.Tuning{LocalReserve: f.LocalReserve}})
		default:
			return nil, fmt.Errorf("-mesh: unknown variant %q: want meridian, meridian-no-market or none", v)
		}
	}
	return out, nil
}
