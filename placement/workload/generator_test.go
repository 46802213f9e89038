package workload

import (
	"errors"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"gonum.org/v1/gonum/stat"

	"github.com/meridian-mesh/meridian/placement"
)

var day0 = time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)

func newGen(t testing.TB, cfg Config, seed uint64) *Generator {
	t.Helper()
	g, err := NewGenerator(cfg, rand.New(rand.NewPCG(seed, seed^0x5eed)))
	if err != nil {
		t.Fatal(err)
	}
	return g
}

func defaultConfig(t testing.TB, regions ...string) Config {
	t.Helper()
	cfg, err := DefaultConfig(day0, regions...)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func TestDefaultConfig(t *testing.T) {
	cfg := defaultConfig(t)
	want, _ := EmbeddedPrices().RegionsWithPrice(DefaultInstance)
	if len(cfg.Regions) != 9 {
		t.Fatalf("DefaultConfig has %d regions; want the 9 with a p4d price", len(cfg.Regions))
	}
	for i, r := range cfg.Regions {
		off, _ := UTCOffset(r.Region)
		if r.Region != want[i] || r.Weight != 1 || r.UTCOffset != off {
			t.Errorf("region %d = %+v; want %s, weight 1, offset %v", i, r, want[i], off)
		}
	}
	if _, err := DefaultConfig(day0, "us-east-1", "mars-north-1"); err == nil || !strings.Contains(err.Error(), "mars-north-1") {
		t.Errorf("DefaultConfig with an unknown region = %v; want an error naming it", err)
	}
}

func TestGeneratorIsDeterministic(t *testing.T) {
	for _, mode := range []Mode{ModeTrace, ModeDiurnal} {
		cfg := defaultConfig(t)
		cfg.Mode = mode
		cfg.RatePerSecond = 0.02
		a := newGen(t, cfg, 1).Between(day0, day0.Add(12*time.Hour))
		b := newGen(t, cfg, 1).Between(day0, day0.Add(12*time.Hour))
		c := newGen(t, cfg, 2).Between(day0, day0.Add(12*time.Hour))
		if len(a) == 0 || !reflect.DeepEqual(a, b) {
			t.Fatalf("%s: two generators with seed 1 differ (%d vs %d arrivals)", mode, len(a), len(b))
		}
		if reflect.DeepEqual(a, c) {
			t.Fatalf("%s: seeds 1 and 2 gave the same arrivals", mode)
		}
		// Hour by hour, and arrival by arrival, the stream is the same.
		g := newGen(t, cfg, 1)
		var hourly []Arrival
		for h := range 12 {
			hourly = append(hourly, g.Between(day0.Add(time.Duration(h)*time.Hour), day0.Add(time.Duration(h+1)*time.Hour))...)
		}
		if !reflect.DeepEqual(a, hourly) {
			t.Fatalf("%s: 12 hourly Between calls differ from one 12-hour call", mode)
		}
		g = newGen(t, cfg, 1)
		for i := range a {
			if n := g.Next(); !reflect.DeepEqual(n, a[i]) {
				t.Fatalf("%s: Next() #%d = %+v; want %+v", mode, i, n, a[i])
			}
		}
		// Time order, IDs numbered in that order.
		for i := range a {
			if i > 0 && a[i].At.Before(a[i-1].At) {
				t.Fatalf("%s: arrival %d at %v is before arrival %d at %v", mode, i, a[i].At, i-1, a[i-1].At)
			}
			if a[i].Job.ID != "job-"+strconv.Itoa(i+1) {
				t.Fatalf("%s: arrival %d has ID %q; want job-%d", mode, i, a[i].Job.ID, i+1)
			}
			if a[i].At.Before(day0) || !a[i].At.Before(day0.Add(12*time.Hour)) {
				t.Fatalf("%s: arrival at %v outside the 12 hours", mode, a[i].At)
			}
		}
	}
}

func TestBetweenSkipsEarlierArrivals(t *testing.T) {
	cfg := defaultConfig(t, "us-east-1")
	cfg.RatePerSecond = 1
	all := newGen(t, cfg, 3).Between(day0, day0.Add(2*time.Hour))
	part := newGen(t, cfg, 3).Between(day0.Add(time.Hour), day0.Add(2*time.Hour))
	var want []Arrival
	for _, a := range all {
		if !a.At.Before(day0.Add(time.Hour)) {
			want = append(want, a)
		}
	}
	if len(want) == 0 || !reflect.DeepEqual(part, want) {
		t.Errorf("Between(+1h, +2h) returned %d arrivals; want the %d of the second hour", len(part), len(want))
	}
}

func TestAddingARegionLeavesTheOthersAlone(t *testing.T) {
	one := defaultConfig(t, "eu-west-1")
	two := defaultConfig(t, "eu-west-1", "ap-south-1")
	a := newGen(t, one, 9).Between(day0, day0.Add(6*time.Hour))
	var b []Arrival
	for _, x := range newGen(t, two, 9).Between(day0, day0.Add(6*time.Hour)) {
		if x.Job.OriginRegion == "eu-west-1" {
			b = append(b, x)
		}
	}
	if len(a) != len(b) {
		t.Fatalf("eu-west-1 has %d arrivals alone and %d beside ap-south-1", len(a), len(b))
	}
	for i := range a {
		a[i].Job.ID, b[i].Job.ID = "", ""
	}
	if !reflect.DeepEqual(a, b) {
		t.Error("adding ap-south-1 after eu-west-1 changed eu-west-1's arrivals")
	}
}

func countByRegion(as []Arrival) map[string]int {
	m := map[string]int{}
	for _, a := range as {
		m[a.Job.OriginRegion]++
	}
	return m
}

func TestMeanRateMatchesConfig(t *testing.T) {
	const days = 2
	for _, tc := range []struct {
		mode Mode
		// burst is the squared coefficient of variation of the per-minute
		// rate multiplier: trace mode draws it from the trace's minutes
		// (CV ≈ 1.04), diurnal mode has none.
		burst float64
	}{{ModeTrace, 1.1}, {ModeDiurnal, 0}} {
		cfg := defaultConfig(t, "us-east-1", "eu-central-1", "ap-northeast-1")
		cfg.Mode = tc.mode
		cfg.RatePerSecond = 0.1
		cfg.Regions[1].Weight = 3
		cfg.Regions[2].Weight = 0.5
		got := countByRegion(newGen(t, cfg, 4).Between(day0, day0.Add(days*24*time.Hour)))
		for _, r := range cfg.Regions {
			want := cfg.RatePerSecond * r.Weight * days * 86400
			// Variance of the total: per minute, Poisson noise plus the
			// burst multiplier's, with the envelope's E[f²] = 1.18.
			perMinute := cfg.RatePerSecond * r.Weight * 60
			sd := math.Sqrt(days * 1440 * (perMinute + perMinute*perMinute*1.18*tc.burst))
			if diff := math.Abs(float64(got[r.Region]) - want); diff > 5*sd {
				t.Errorf("%s %s (weight %v): %d arrivals in %d days; want %.0f ± %.0f (5 sd)", tc.mode, r.Region, r.Weight, got[r.Region], days, want, 5*sd)
			}
		}
	}
}

// peakHour estimates the UTC hour at which counts per UTC hour peak from the
// phase of their first Fourier component.
func peakHour(counts [24]float64) float64 {
	var s, c float64
	for h, n := range counts {
		a := 2 * math.Pi * (float64(h) + 0.5) / 24
		s += n * math.Sin(a)
		c += n * math.Cos(a)
	}
	return math.Mod(math.Atan2(s, c)*24/(2*math.Pi)+24, 24)
}

func TestArrivalsPeakInEachRegionsAfternoon(t *testing.T) {
	for _, mode := range []Mode{ModeTrace, ModeDiurnal} {
		cfg := defaultConfig(t)
		cfg.Mode = mode
		cfg.RatePerSecond = 0.1
		counts := map[string]*[24]float64{}
		for _, r := range cfg.Regions {
			counts[r.Region] = &[24]float64{}
		}
		for _, a := range newGen(t, cfg, 5).Between(day0, day0.Add(3*24*time.Hour)) {
			counts[a.Job.OriginRegion][a.At.UTC().Hour()]++
		}
		for _, r := range cfg.Regions {
			got := peakHour(*counts[r.Region])
			want := math.Mod(15-r.UTCOffset.Hours()+24, 24)
			diff := math.Abs(math.Mod(got-want+36, 24) - 12)
			if diff > 1 {
				t.Errorf("%s %s: arrivals peak at %.2f h UTC; want %.2f h UTC (15:00 local) ± 1 h", mode, r.Region, got, want)
			}
		}
	}
}

func TestSLOAndPriceMix(t *testing.T) {
	cfg := defaultConfig(t)
	cfg.RatePerSecond = 0.05
	as := newGen(t, cfg, 6).Between(day0, day0.Add(24*time.Hour))
	n := float64(len(as))
	interactive, capped := 0, 0
	ids := map[string]bool{}
	for _, a := range as {
		j := a.Job
		if err := j.Validate(); err != nil {
			t.Fatalf("arrival %+v: invalid job: %v", a, err)
		}
		if ids[j.ID] {
			t.Fatalf("duplicate job ID %s", j.ID)
		}
		ids[j.ID] = true
		switch a.Class {
		case Interactive:
			interactive++
			if j.LatencySLO < 100*time.Millisecond || j.LatencySLO > 150*time.Millisecond || j.Priority != 1 {
				t.Fatalf("interactive job with SLO %v priority %d; want 100–150 ms, priority 1", j.LatencySLO, j.Priority)
			}
		case Batch:
			if j.LatencySLO != 0 || j.Priority != 0 {
				t.Fatalf("batch job with SLO %v priority %d; want unbounded, priority 0", j.LatencySLO, j.Priority)
			}
		default:
			t.Fatalf("unknown class %q", a.Class)
		}
		if j.MaxPricePerHour != 0 {
			capped++
			ref, err := EmbeddedPrices().OnDemand(DefaultInstance, j.OriginRegion)
			if err != nil || math.Abs(j.MaxPricePerHour-1.2*ref) > 1e-9 {
				t.Fatalf("job from %s has max price %v; want 1.2 × %v", j.OriginRegion, j.MaxPricePerHour, ref)
			}
		}
		d, dur := cfg.Throughput.Demand(a.ContextTokens, a.GeneratedTokens)
		if j.Demand != d || j.Duration != dur || a.GPUSeconds != cfg.Throughput.GPUSeconds(a.ContextTokens, a.GeneratedTokens) {
			t.Fatalf("arrival %+v does not follow the throughput model", a)
		}
	}
	for _, c := range []struct {
		name      string
		got, want float64
	}{{"interactive", float64(interactive) / n, 0.7}, {"price-limited", float64(capped) / n, 0.25}} {
		sd := math.Sqrt(c.want * (1 - c.want) / n)
		if math.Abs(c.got-c.want) > 5*sd {
			t.Errorf("%s share %.4f over %d jobs; want %.2f ± %.4f", c.name, c.got, len(as), c.want, 5*sd)
		}
	}
	// The SLO is uniform over [100 ms, 150 ms]: its mean is 125 ms.
	var sum time.Duration
	for _, a := range as {
		sum += a.Job.LatencySLO
	}
	if mean := sum / time.Duration(interactive); mean < 124*time.Millisecond || mean > 126*time.Millisecond {
		t.Errorf("mean interactive SLO %v; want ≈ 125 ms", mean)
	}
}

func TestTraceModeSizesFollowTheTrace(t *testing.T) {
	cfg := defaultConfig(t, "us-east-1", "eu-west-1")
	cfg.RatePerSecond = 0.5
	as := newGen(t, cfg, 7).Between(day0, day0.Add(24*time.Hour))
	var gotC, gotG, wantC, wantG []float64
	for _, a := range as {
		gotC, gotG = append(gotC, float64(a.ContextTokens)), append(gotG, float64(a.GeneratedTokens))
	}
	for _, r := range EmbeddedTrace().Requests {
		wantC, wantG = append(wantC, float64(r.ContextTokens)), append(wantG, float64(r.GeneratedTokens))
	}
	for _, s := range [][]float64{gotC, gotG, wantC, wantG} {
		slices.Sort(s)
	}
	t.Logf("%d arrivals", len(as))
	for _, q := range []float64{0.1, 0.25, 0.5, 0.75, 0.9, 0.99} {
		for _, c := range []struct {
			name      string
			got, want []float64
		}{{"context", gotC, wantC}, {"generated", gotG, wantG}} {
			g, w := stat.Quantile(q, stat.Empirical, c.got, nil), stat.Quantile(q, stat.Empirical, c.want, nil)
			if math.Abs(g-w) > max(0.06*w, 2) {
				t.Errorf("%s tokens p%.0f = %v; want the trace's %v ± 6%%", c.name, 100*q, g, w)
			}
		}
	}
}

// minuteCV returns the coefficient of variation of per-minute counts.
func minuteCV(as []Arrival, from time.Time, minutes int) float64 {
	counts := make([]float64, minutes)
	for _, a := range as {
		counts[int(a.At.Sub(from)/time.Minute)]++
	}
	mean, sd := stat.MeanStdDev(counts, nil)
	return sd / mean
}

func TestTraceModeKeepsTheTracesBurstiness(t *testing.T) {
	// With a flat day at the trace's own mean rate, trace mode's minutes
	// vary as the trace's do (CV 1.04); Poisson minutes barely vary.
	tr := EmbeddedTrace()
	rate := float64(len(tr.Requests)) / tr.Span().Seconds()
	for _, tc := range []struct {
		mode   Mode
		lo, hi float64
	}{{ModeTrace, 0.85, 1.25}, {ModeDiurnal, 0, 0.15}} {
		cfg := defaultConfig(t, "us-east-1")
		cfg.Mode = tc.mode
		cfg.RatePerSecond = rate
		cfg.Envelope = Envelope{PeakHour: 15, TroughRatio: 1}
		as := newGen(t, cfg, 8).Between(day0, day0.Add(12*time.Hour))
		if cv := minuteCV(as, day0, 12*60); cv < tc.lo || cv > tc.hi {
			t.Errorf("%s: per-minute CV %.3f; want in [%v, %v]", tc.mode, cv, tc.lo, tc.hi)
		}
	}
	// Within a minute, trace mode keeps the trace's clusters: the share
	// of gaps under 50 ms is far above what uniform times give.
	cfg := defaultConfig(t, "us-east-1")
	cfg.RatePerSecond, cfg.Envelope = rate, Envelope{PeakHour: 15, TroughRatio: 1}
	as := newGen(t, cfg, 8).Between(day0, day0.Add(2*time.Hour))
	short := 0
	for i := 1; i < len(as); i++ {
		if as[i].At.Sub(as[i-1].At) < 50*time.Millisecond {
			short++
		}
	}
	traceShort := 0
	for i := 1; i < len(tr.Requests); i++ {
		if tr.Requests[i].At.Sub(tr.Requests[i-1].At) < 50*time.Millisecond {
			traceShort++
		}
	}
	got, want := float64(short)/float64(len(as)-1), float64(traceShort)/float64(len(tr.Requests)-1)
	t.Logf("gaps < 50 ms: generated %.3f, trace %.3f, Poisson at this rate %.3f", got, want, 1-math.Exp(-rate*0.05))
	if math.Abs(got-want) > 0.25*want {
		t.Errorf("share of gaps under 50 ms %.3f; want the trace's %.3f ± 25%%", got, want)
	}
}

func TestDiurnalModeSizes(t *testing.T) {
	cfg := defaultConfig(t, "us-east-1")
	cfg.Mode, cfg.RatePerSecond = ModeDiurnal, 1
	var c, g []float64
	for _, a := range newGen(t, cfg, 10).Between(day0, day0.Add(12*time.Hour)) {
		if a.ContextTokens < 1 || a.ContextTokens > 8192 || a.GeneratedTokens < 1 || a.GeneratedTokens > 2048 {
			t.Fatalf("synthetic sizes %d/%d outside [1, 8192]/[1, 2048]", a.ContextTokens, a.GeneratedTokens)
		}
		c, g = append(c, float64(a.ContextTokens)), append(g, float64(a.GeneratedTokens))
	}
	slices.Sort(c)
	slices.Sort(g)
	for _, tc := range []struct {
		name      string
		s         []float64
		q, want   float64
		tolerance float64
	}{{"context p50", c, 0.5, 1469, 0.04}, {"context p90", c, 0.9, 5188, 0.05}, {"generated p50", g, 0.5, 13, 0.08}, {"generated p90", g, 0.9, 55, 0.08}} {
		if got := stat.Quantile(tc.q, stat.Empirical, tc.s, nil); math.Abs(got-tc.want) > tc.tolerance*tc.want {
			t.Errorf("%s = %v; want %v ± %.0f%%", tc.name, got, tc.want, 100*tc.tolerance)
		}
	}
}

func TestGeneratorConfigErrors(t *testing.T) {
	short := &Trace{Source: "short.csv", Requests: []Request{{At: day0}, {At: day0.Add(30 * time.Second)}}}
	for _, tc := range []struct {
		name  string
		edit  func(*Config)
		field string
	}{
		{"no start", func(c *Config) { c.Start = time.Time{} }, "start"},
		{"no regions", func(c *Config) { c.Regions = nil }, "regions"},
		{"blank region", func(c *Config) { c.Regions[0].Region = "" }, "regions[0].region"},
		{"duplicate region", func(c *Config) { c.Regions[1].Region = c.Regions[0].Region }, "regions[1].region"},
		{"negative weight", func(c *Config) { c.Regions[0].Weight = -1 }, "regions[0].weight"},
		{"offset out of range", func(c *Config) { c.Regions[0].UTCOffset = 15 * time.Hour }, "regions[0].utc_offset"},
		{"negative rate", func(c *Config) { c.RatePerSecond = -1 }, "rate_per_second"},
		{"rate too low", func(c *Config) { c.RatePerSecond = 1e-6 }, "rate_per_second"},
		{"all weights zero", func(c *Config) {
			for i := range c.Regions {
				c.Regions[i].Weight = 0
			}
		}, "rate_per_second"},
		{"bad envelope", func(c *Config) { c.Envelope = Envelope{PeakHour: 30, TroughRatio: 0.5} }, "envelope.peak_hour"},
		{"bad mode", func(c *Config) { c.Mode = "poisson" }, "mode"},
		{"block too short", func(c *Config) { c.Block = time.Millisecond }, "block"},
		{"trace shorter than a block", func(c *Config) { c.Trace = short }, "trace"},
		{"trace with a stray timestamp", func(c *Config) {
			c.Trace = &Trace{Source: "stray.csv", Requests: []Request{{At: day0}, {At: day0.AddDate(100, 0, 0)}}}
		}, "trace"},
		{"bad sizes", func(c *Config) { c.Sizes.ContextP90 = 10 }, "sizes.context_p90"},
		{"bad throughput", func(c *Config) { c.Throughput.PrefillTokensPerSecond = -1 }, "throughput.prefill_tokens_per_second"},
		{"bad SLO fraction", func(c *Config) { c.SLO.InteractiveFraction = 1.5 }, "slo.interactive_fraction"},
		{"SLO max below min", func(c *Config) { c.SLO.InteractiveMax = 50 * time.Millisecond }, "slo.interactive_max"},
		{"bad price fraction", func(c *Config) { c.MaxPrice.Fraction = -0.1 }, "max_price.fraction"},
		{"bad price factor", func(c *Config) { c.MaxPrice.Factor = 0 }, "max_price.factor"},
	} {
		cfg := defaultConfig(t)
		tc.edit(&cfg)
		_, err := NewGenerator(cfg, rand.New(rand.NewPCG(1, 1)))
		var fe *placement.FieldError
		if !errors.As(err, &fe) || fe.Field != tc.field {
			t.Errorf("%s: NewGenerator error = %v; want a FieldError on %s", tc.name, err, tc.field)
		}
	}
	if _, err := NewGenerator(defaultConfig(t), nil); err == nil {
		t.Error("NewGenerator with a nil rng succeeded")
	}
	// An instance without on-demand prices cannot give price limits.
	cfg := defaultConfig(t)
	cfg.Instance = "p5e.48xlarge"
	if _, err := NewGenerator(cfg, rand.New(rand.NewPCG(1, 1))); !errors.Is(err, ErrNoOnDemandPrice) {
		t.Errorf("NewGenerator with p5e.48xlarge = %v; want ErrNoOnDemandPrice", err)
	}
	// Regions without a price of the instance are limited by the cheapest one.
	cfg = defaultConfig(t, "sa-east-1")
	cfg.MaxPrice.Fraction = 1
	for _, a := range newGen(t, cfg, 1).Between(day0, day0.Add(time.Hour)) {
		if math.Abs(a.Job.MaxPricePerHour-1.2*32.7726) > 1e-9 {
			t.Fatalf("sa-east-1 job max price %v; want 1.2 × the cheapest p4d price 32.7726", a.Job.MaxPricePerHour)
		}
	}
}

func TestSetWorkload(t *testing.T) {
	var cfg Config
	if err := cfg.SetWorkload("diurnal"); err != nil || cfg.Mode != ModeDiurnal || cfg.Trace != nil {
		t.Errorf("SetWorkload(diurnal) = %v, mode %q", err, cfg.Mode)
	}
	if err := cfg.SetWorkload("trace"); err != nil || cfg.Mode != ModeTrace || cfg.Trace != nil {
		t.Errorf("SetWorkload(trace) = %v, mode %q", err, cfg.Mode)
	}
	dir := t.TempDir()
	good := filepath.Join(dir, "good.csv")
	body := "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 10:00:00,10,2\n2023-11-16 10:03:00,20,4\n"
	if err := os.WriteFile(good, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := cfg.SetWorkload(good); err != nil || cfg.Trace == nil || len(cfg.Trace.Requests) != 2 {
		t.Fatalf("SetWorkload(file) = %v, trace %+v", err, cfg.Trace)
	}
	// The file's trace drives the sizes.
	cfg.Start, cfg.Regions, cfg.RatePerSecond = day0, []RegionLoad{{Region: "x", Weight: 1}}, 1
	for _, a := range newGen(t, cfg, 1).Between(day0, day0.Add(time.Hour)) {
		if a.ContextTokens != 10 && a.ContextTokens != 20 {
			t.Fatalf("arrival with %d context tokens; the file has only 10 and 20", a.ContextTokens)
		}
	}
	bad := filepath.Join(dir, "bad.csv")
	_ = os.WriteFile(bad, []byte("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 10:00:00,-1,2\n"), 0o600)
	if err := cfg.SetWorkload(bad); err == nil || !strings.Contains(err.Error(), "bad.csv:2: column 2 (ContextTokens)") {
		t.Errorf("SetWorkload(bad file) = %v; want an error naming file, line and column", err)
	}
}

func TestNewDiurnal(t *testing.T) {
	cfg := defaultConfig(t, "us-east-1")
	cfg.RatePerSecond = 1
	g, err := NewDiurnal(cfg, rand.New(rand.NewPCG(1, 1)))
	if err != nil {
		t.Fatal(err)
	}
	if g.Config().Mode != ModeDiurnal {
		t.Fatalf("NewDiurnal mode = %q", g.Config().Mode)
	}
	// Not the trace's sizes: synthetic ones outside the trace's set appear.
	traceSizes := map[[2]int]bool{}
	for _, r := range EmbeddedTrace().Requests {
		traceSizes[[2]int{r.ContextTokens, r.GeneratedTokens}] = true
	}
	outside := 0
	as := g.Between(day0, day0.Add(time.Hour))
	for _, a := range as {
		if !traceSizes[[2]int{a.ContextTokens, a.GeneratedTokens}] {
			outside++
		}
	}
	if len(as) == 0 || outside < len(as)/2 {
		t.Errorf("%d of %d diurnal arrivals have sizes outside the trace; want most", outside, len(as))
	}
}
