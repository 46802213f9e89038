package workload

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"time"

	"gonum.org/v1/gonum/stat/distuv"

	"github.com/meridian-mesh/meridian/placement"
)

// Mode selects where arrival times and request sizes come from.
type Mode string

// The modes.
const (
	// ModeTrace resamples a trace: its per-minute burstiness, its
	// within-minute arrival pattern and its request sizes.
	ModeTrace Mode = "trace"
	// ModeDiurnal needs no trace: Poisson arrivals under the same daily
	// envelope, with log-normal synthetic sizes (SyntheticSizes).
	ModeDiurnal Mode = "diurnal"
)

// SLOClass is a job's latency class.
type SLOClass string

// The SLO classes.
const (
	// Interactive jobs have a latency SLO (round-trip time from their
	// origin region) and a higher priority.
	Interactive SLOClass = "interactive"
	// Batch jobs have no latency bound.
	Batch SLOClass = "batch"
)

// RegionLoad is one region's share of the workload.
type RegionLoad struct {
	// Region is the region's name; jobs generated for it have it as
	// their origin.
	Region string `json:"region"`
	// UTCOffset is the region's offset from UTC; the envelope peaks at
	// Envelope.PeakHour of this local time.
	UTCOffset time.Duration `json:"utc_offset"`
	// Weight scales the region's rate: its mean rate over a day is
	// Config.RatePerSecond × Weight. Zero generates nothing.
	Weight float64 `json:"weight"`
}

// SLOMix is the mix of latency classes.
type SLOMix struct {
	// InteractiveFraction is the share of interactive jobs, in [0, 1]; the
	// rest are batch.
	InteractiveFraction float64 `json:"interactive_fraction"`
	// InteractiveMin is the lowest interactive SLO; SLOs are drawn
	// uniformly in [InteractiveMin, InteractiveMax].
	InteractiveMin time.Duration `json:"interactive_min"`
	// InteractiveMax is the highest interactive SLO.
	InteractiveMax time.Duration `json:"interactive_max"`
}

// DefaultSLOMix is 70 % interactive jobs with an SLO uniform in
// [100 ms, 150 ms] (a chat or code-completion user in or near the origin
// region's continent) and 30 % batch jobs with no bound.
func DefaultSLOMix() SLOMix {
	return SLOMix{InteractiveFraction: 0.7, InteractiveMin: 100 * time.Millisecond, InteractiveMax: 150 * time.Millisecond}
}

// MaxPriceMix says which jobs carry a price limit.
type MaxPriceMix struct {
	// Fraction is the share of jobs with a limit, in [0, 1]; the others
	// are unbounded (MaxPricePerHour 0).
	Fraction float64 `json:"fraction"`
	// Factor times the reference price is the limit: the on-demand price
	// of Config.Instance in the job's origin region, or the cheapest one
	// of any region when the origin has none.
	Factor float64 `json:"factor"`
}

// DefaultMaxPriceMix limits a quarter of the jobs to 1.2 × their origin's
// on-demand price: with p4d.24xlarge, a job from us-east-1 (32.77 $/h) then
// cannot go to the four regions priced above 39.33 $/h.
func DefaultMaxPriceMix() MaxPriceMix { return MaxPriceMix{Fraction: 0.25, Factor: 1.2} }

// SyntheticSizes are the log-normal request sizes of ModeDiurnal, each
// given by its median and 90th percentile and clamped to [1, Max].
type SyntheticSizes struct {
	// ContextMedian is the median prompt length in tokens.
	ContextMedian float64 `json:"context_median"`
	// ContextP90 is the 90th percentile of the prompt length.
	ContextP90 float64 `json:"context_p90"`
	// MaxContext caps the prompt length.
	MaxContext int `json:"max_context"`
	// GeneratedMedian is the median output length in tokens.
	GeneratedMedian float64 `json:"generated_median"`
	// GeneratedP90 is the 90th percentile of the output length.
	GeneratedP90 float64 `json:"generated_p90"`
	// MaxGenerated caps the output length.
	MaxGenerated int `json:"max_generated"`
}

// DefaultSyntheticSizes take the medians and 90th percentiles of the
// embedded trace (context 1,469 / 5,188 tokens, output 13 / 55 tokens),
// clamped to 8,192 and 2,048 tokens.
func DefaultSyntheticSizes() SyntheticSizes {
	return SyntheticSizes{ContextMedian: 1469, ContextP90: 5188, MaxContext: 8192, GeneratedMedian: 13, GeneratedP90: 55, MaxGenerated: 2048}
}

// Config configures a Generator. Zero fields take the default given on
// each; DefaultConfig fills a whole one.
type Config struct {
	// Start is the time of the first possible arrival; required.
	Start time.Time `json:"start"`
	// Regions are the origins of the jobs; at least one, with distinct names.
	Regions []RegionLoad `json:"regions"`
	// RatePerSecond is the mean arrival rate over a day of a region of
	// weight 1; 0 means 0.1.
	RatePerSecond float64 `json:"rate_per_second"`
	// Envelope is the daily shape; the zero value means DefaultEnvelope().
	Envelope Envelope `json:"envelope"`
	// Mode is ModeTrace ("" too) or ModeDiurnal.
	Mode Mode `json:"mode"`
	// Trace is the trace of ModeTrace; nil means EmbeddedTrace().
	Trace *Trace `json:"-"`
	// Block is the generator's time step and, in ModeTrace, the length of
	// the trace blocks it resamples; 0 means one minute.
	Block time.Duration `json:"block"`
	// Sizes are the sizes of ModeDiurnal; the zero value means
	// DefaultSyntheticSizes().
	Sizes SyntheticSizes `json:"sizes"`
	// Throughput maps tokens to jobs; the zero value means DefaultThroughput().
	Throughput Throughput `json:"throughput"`
	// SLO is the class mix; the zero value means DefaultSLOMix().
	SLO SLOMix `json:"slo"`
	// Prices, when set with MaxPrice.Fraction > 0, gives the reference
	// prices of price limits; nil means no job has a limit.
	Prices *Prices `json:"-"`
	// Instance is the instance type of the reference prices; "" means
	// DefaultInstance.
	Instance string `json:"instance"`
	// MaxPrice is the price-limit mix; the zero value means no limits.
	MaxPrice MaxPriceMix `json:"max_price"`
	// IDPrefix starts every job ID ("<prefix>-<sequence>"); "" means "job".
	IDPrefix string `json:"id_prefix"`
	// GPUType, when set, is copied to every job to restrict it to nodes
	// with that accelerator.
	GPUType string `json:"gpu_type,omitempty"`
}

// DefaultConfig returns a trace-driven configuration starting at start,
// for the given AWS regions (weight 1, standard UTC offsets from
// AWSRegions) or, when none is given, for the regions where DefaultInstance
// has an on-demand price, with the embedded trace and prices and every
// default of Config, DefaultMaxPriceMix included.
func DefaultConfig(start time.Time, regions ...string) (Config, error) {
	if len(regions) == 0 {
		var err error
		if regions, err = EmbeddedPrices().RegionsWithPrice(DefaultInstance); err != nil {
			return Config{}, err
		}
	}
	cfg := Config{
		Start:         start,
		RatePerSecond: 0.1,
		Envelope:      DefaultEnvelope(),
		Mode:          ModeTrace,
		Block:         time.Minute,
		Sizes:         DefaultSyntheticSizes(),
		Throughput:    DefaultThroughput(),
		SLO:           DefaultSLOMix(),
		Prices:        EmbeddedPrices(),
		Instance:      DefaultInstance,
		MaxPrice:      DefaultMaxPriceMix(),
		IDPrefix:      "job",
	}
	for _, r := range regions {
		off, err := UTCOffset(r)
		if err != nil {
			return Config{}, fmt.Errorf("default workload config: %w", err)
		}
		cfg.Regions = append(cfg.Regions, RegionLoad{Region: r, UTCOffset: off, Weight: 1})
	}
	return cfg, nil
}

// SetWorkload applies the value of a --workload flag: "diurnal" selects
// ModeDiurnal; "trace" or "" the embedded trace; anything else is the path
// of a trace file (see ParseTrace), loaded now so a bad file fails early.
func (c *Config) SetWorkload(value string) error {
	switch value {
	case string(ModeDiurnal):
		c.Mode, c.Trace = ModeDiurnal, nil
	case "", string(ModeTrace):
		c.Mode, c.Trace = ModeTrace, nil
	default:
		tr, err := LoadTrace(value)
		if err != nil {
			return fmt.Errorf("workload: %w", err)
		}
		c.Mode, c.Trace = ModeTrace, tr
	}
	return nil
}

func fieldErr(field, format string, args ...any) error {
	return &placement.FieldError{Field: field, Reason: fmt.Sprintf(format, args...)}
}

func (c Config) withDefaults() (Config, error) {
	if c.RatePerSecond == 0 {
		c.RatePerSecond = 0.1
	}
	if c.Envelope == (Envelope{}) {
		c.Envelope = DefaultEnvelope()
	}
	if c.Mode == "" {
		c.Mode = ModeTrace
	}
	if c.Mode == ModeTrace && c.Trace == nil {
		c.Trace = EmbeddedTrace()
	}
	if c.Block == 0 {
		c.Block = time.Minute
	}
	if c.Sizes == (SyntheticSizes{}) {
		c.Sizes = DefaultSyntheticSizes()
	}
	if c.Throughput == (Throughput{}) {
		c.Throughput = DefaultThroughput()
	}
	if c.SLO == (SLOMix{}) {
		c.SLO = DefaultSLOMix()
	}
	if c.Instance == "" {
		c.Instance = DefaultInstance
	}
	if c.IDPrefix == "" {
		c.IDPrefix = "job"
	}

	if c.Start.IsZero() {
		return c, fieldErr("start", "must be set")
	}
	if len(c.Regions) == 0 {
		return c, fieldErr("regions", "must not be empty")
	}
	seen := map[string]bool{}
	total := 0.0
	for i, r := range c.Regions {
		f := fmt.Sprintf("regions[%d]", i)
		switch {
		case r.Region == "":
			return c, fieldErr(f+".region", "must not be empty")
		case seen[r.Region]:
			return c, fieldErr(f+".region", "%q is listed twice", r.Region)
		case r.UTCOffset < -14*time.Hour || r.UTCOffset > 14*time.Hour:
			return c, fieldErr(f+".utc_offset", "must be within ±14h, got %v", r.UTCOffset)
		case math.IsNaN(r.Weight) || math.IsInf(r.Weight, 0) || r.Weight < 0:
			return c, fieldErr(f+".weight", "must be a finite number ≥ 0, got %v", r.Weight)
		}
		seen[r.Region] = true
		total += r.Weight
	}
	if math.IsNaN(c.RatePerSecond) || math.IsInf(c.RatePerSecond, 0) || c.RatePerSecond < 0 {
		return c, fieldErr("rate_per_second", "must be a finite number > 0, got %v", c.RatePerSecond)
	}
	// Next skips idle steps one by one: keep at least one arrival an hour
	// on average so that it always returns soon.
	if c.RatePerSecond*total*3600 < 1 {
		return c, fieldErr("rate_per_second", "%v/s over a total weight of %v is less than one arrival per hour", c.RatePerSecond, total)
	}
	if err := c.Envelope.Validate(); err != nil {
		return c, err
	}
	if c.Mode != ModeTrace && c.Mode != ModeDiurnal {
		return c, fieldErr("mode", "must be %q or %q, got %q", ModeTrace, ModeDiurnal, c.Mode)
	}
	if c.Block < time.Second || c.Block > time.Hour {
		return c, fieldErr("block", "must be between 1s and 1h, got %v", c.Block)
	}
	s := c.Sizes
	for _, q := range []struct {
		name      string
		med, p90  float64
		maxTokens int
	}{{"context", s.ContextMedian, s.ContextP90, s.MaxContext}, {"generated", s.GeneratedMedian, s.GeneratedP90, s.MaxGenerated}} {
		if math.IsNaN(q.med) || math.IsInf(q.med, 0) || q.med <= 0 {
			return c, fieldErr("sizes."+q.name+"_median", "must be a finite number > 0, got %v", q.med)
		}
		if math.IsNaN(q.p90) || math.IsInf(q.p90, 0) || q.p90 < q.med {
			return c, fieldErr("sizes."+q.name+"_p90", "must be a finite number ≥ the median %v, got %v", q.med, q.p90)
		}
		if q.maxTokens < 1 {
			return c, fieldErr("sizes.max_"+q.name, "must be at least 1, got %d", q.maxTokens)
		}
	}
	if err := c.Throughput.Validate(); err != nil {
		return c, err
	}
	switch m := c.SLO; {
	case math.IsNaN(m.InteractiveFraction) || m.InteractiveFraction < 0 || m.InteractiveFraction > 1:
		return c, fieldErr("slo.interactive_fraction", "must be in [0, 1], got %v", m.InteractiveFraction)
	case m.InteractiveMin < 0:
		return c, fieldErr("slo.interactive_min", "must not be negative, got %v", m.InteractiveMin)
	case m.InteractiveMax < m.InteractiveMin:
		return c, fieldErr("slo.interactive_max", "%v is below interactive_min %v", m.InteractiveMax, m.InteractiveMin)
	case m.InteractiveFraction > 0 && m.InteractiveMax == 0:
		return c, fieldErr("slo.interactive_max", "must be positive when there are interactive jobs")
	}
	switch m := c.MaxPrice; {
	case math.IsNaN(m.Fraction) || m.Fraction < 0 || m.Fraction > 1:
		return c, fieldErr("max_price.fraction", "must be in [0, 1], got %v", m.Fraction)
	case m.Fraction > 0 && (math.IsNaN(m.Factor) || math.IsInf(m.Factor, 0) || m.Factor <= 0):
		return c, fieldErr("max_price.factor", "must be a finite number > 0, got %v", m.Factor)
	}
	return c, nil
}

// Arrival is one generated request.
type Arrival struct {
	// At is when the request arrives.
	At time.Time `json:"at"`
	// Job is the request as a job to place; Job.OriginRegion is the
	// region it arrived in.
	Job placement.Job `json:"job"`
	// Class is the job's latency class.
	Class SLOClass `json:"class"`
	// ContextTokens is the request's prompt length.
	ContextTokens int `json:"context_tokens"`
	// GeneratedTokens is the request's output length.
	GeneratedTokens int `json:"generated_tokens"`
	// GPUSeconds is the request's work (Throughput.GPUSeconds).
	GPUSeconds float64 `json:"gpu_seconds"`
}

// traceBlock is one block of the trace: its arrivals as offsets from the
// block's start, the width of the interval each one stands for (up to the
// next arrival), and their sizes.
type traceBlock struct {
	offsets, spans []float64 // seconds
	ctx, gen       []int32
}

type regionGen struct {
	RegionLoad
	rng      *rand.Rand
	poisson  distuv.Poisson
	maxPrice float64 // dollars per node-hour; 0 = no limits for this region
}

// Generator produces a stream of arrivals from every region, in time
// order, deterministically for its seed. Each region has its own random
// stream, split from the seed at construction in the order of
// Config.Regions, so appending a region does not change the others'
// arrivals (only the job IDs, which number all regions' jobs in time order).
//
// Per step of Config.Block (one minute by default) and region, the
// expected count is RatePerSecond × Weight × Envelope factor at the step's
// middle (local time) × the step's seconds. In ModeTrace the generator
// picks a random block of the trace, multiplies the expected count by that
// block's count over the mean block count (the trace's minute-to-minute
// burstiness), draws a Poisson count of that mean, and lets each arrival
// copy a random request of the block: its size, and its offset in the
// block spread uniformly up to the next request (the block's within-minute
// clustering). In ModeDiurnal the count is Poisson of the expected count,
// times are uniform and sizes log-normal.
//
// A Generator is not safe for concurrent use.
type Generator struct {
	cfg     Config
	regions []regionGen
	blocks  []traceBlock
	// meanBlock is the mean number of requests per block.
	meanBlock float64
	// log-normal parameters of the synthetic sizes
	muCtx, sigmaCtx, muGen, sigmaGen float64

	step     int64     // index of the next step to generate
	buf      []Arrival // generated and not yet returned, from pos on
	pos      int
	seq      uint64
	draws    []draw // scratch of generate
	id       []byte // scratch of generate
	idPrefix string // IDPrefix + "-"
}

// maxBlocks bounds the blocks a trace is cut into (about two years of
// minutes).
const maxBlocks = 1 << 20

// z90 is the standard normal quantile of 0.9.
const z90 = 1.2815515655446004

// NewGenerator checks cfg, fills its defaults and returns a generator
// whose randomness all comes from rng.
func NewGenerator(cfg Config, rng *rand.Rand) (*Generator, error) {
	if rng == nil {
		return nil, errors.New("workload generator: rng must not be nil")
	}
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("workload generator: %w", err)
	}
	g := &Generator{cfg: cfg, idPrefix: cfg.IDPrefix + "-"}
	if cfg.Mode == ModeTrace {
		if err := g.buildBlocks(); err != nil {
			return nil, fmt.Errorf("workload generator: %w", err)
		}
	}
	s := cfg.Sizes
	g.muCtx, g.sigmaCtx = math.Log(s.ContextMedian), math.Log(s.ContextP90/s.ContextMedian)/z90
	g.muGen, g.sigmaGen = math.Log(s.GeneratedMedian), math.Log(s.GeneratedP90/s.GeneratedMedian)/z90
	for _, r := range cfg.Regions {
		rg := regionGen{RegionLoad: r, rng: rand.New(rand.NewPCG(rng.Uint64(), rng.Uint64()))}
		rg.poisson.Src = rg.rng
		if cfg.Prices != nil && cfg.MaxPrice.Fraction > 0 {
			ref, err := cfg.Prices.OnDemand(cfg.Instance, r.Region)
			if errors.Is(err, ErrNoRegion) || errors.Is(err, ErrNoOnDemandPrice) {
				ref, _, err = cfg.Prices.CheapestOnDemand(cfg.Instance)
			}
			if err != nil {
				return nil, fmt.Errorf("workload generator: reference price of region %s: %w", r.Region, err)
			}
			rg.maxPrice = ref * cfg.MaxPrice.Factor
		}
		g.regions = append(g.regions, rg)
	}
	return g, nil
}

// buildBlocks cuts the trace into whole blocks from its first request on
// (a partial last block is dropped: its missing tail would read as a lull).
func (g *Generator) buildBlocks() error {
	tr, block := g.cfg.Trace, g.cfg.Block
	if tr == nil || len(tr.Requests) == 0 {
		return fieldErr("trace", "has no requests")
	}
	n := int(tr.Span() / block)
	if n < 1 {
		return fieldErr("trace", "%s spans %v, less than one block of %v", tr.Source, tr.Span(), block)
	}
	if n > maxBlocks {
		// A stray timestamp years away would otherwise allocate millions of
		// empty blocks and turn the trace into silence.
		return fieldErr("trace", "%s spans %v, more than %d blocks of %v: check its timestamps", tr.Source, tr.Span(), maxBlocks, block)
	}
	g.blocks = make([]traceBlock, n)
	first := tr.Requests[0].At
	bs := block.Seconds()
	total := 0
	for _, r := range tr.Requests {
		off := r.At.Sub(first)
		i := int(off / block)
		if i >= n {
			break
		}
		b := &g.blocks[i]
		b.offsets = append(b.offsets, (off - time.Duration(i)*block).Seconds())
		b.ctx = append(b.ctx, int32(min(r.ContextTokens, math.MaxInt32)))
		b.gen = append(b.gen, int32(min(r.GeneratedTokens, math.MaxInt32)))
		total++
	}
	for i := range g.blocks {
		b := &g.blocks[i]
		k := len(b.offsets)
		b.spans = make([]float64, k)
		for j := range k - 1 {
			b.spans[j] = b.offsets[j+1] - b.offsets[j]
		}
		if k > 0 {
			last := bs - b.offsets[k-1]
			if k > 1 {
				// The last request stands for a mean gap of its block,
				// not for the whole rest of the block.
				last = min(last, (b.offsets[k-1]-b.offsets[0])/float64(k-1))
			}
			b.spans[k-1] = last
		}
	}
	g.meanBlock = float64(total) / float64(n)
	return nil
}

// Config returns the configuration with its defaults filled in.
func (g *Generator) Config() Config { return g.cfg }

// Next returns the next arrival of any region, in time order.
func (g *Generator) Next() Arrival {
	for g.pos >= len(g.buf) {
		g.generate()
	}
	a := g.buf[g.pos]
	g.pos++
	return a
}

// Between returns, in time order, the arrivals with from ≤ At < to that
// Next has not returned yet; the ones before from are skipped for good.
// Splitting a period into consecutive calls yields the same arrivals as
// one call over it.
func (g *Generator) Between(from, to time.Time) []Arrival {
	out := make([]Arrival, 0, g.expected(from, to))
	for {
		for g.pos < len(g.buf) {
			a := g.buf[g.pos]
			if !a.At.Before(to) {
				return out
			}
			g.pos++
			if !a.At.Before(from) {
				out = append(out, a)
			}
		}
		if !g.stepStart(g.step).Before(to) {
			return out
		}
		g.generate()
	}
}

// expected returns a capacity for Between's result: the mean count over
// [from, to) plus a fifth, bounded so that a long period does not reserve
// memory up front.
func (g *Generator) expected(from, to time.Time) int {
	if !from.Before(to) {
		return 0
	}
	total := 0.0
	for _, r := range g.regions {
		total += r.Weight
	}
	n := 1.2*g.cfg.RatePerSecond*total*to.Sub(from).Seconds() + 16
	return int(min(n, 1<<20))
}

func (g *Generator) stepStart(i int64) time.Time {
	return g.cfg.Start.Add(time.Duration(i) * g.cfg.Block)
}

// draw is one arrival of a step before it becomes an Arrival: small, so
// that sorting a step's draws by time is cheap.
type draw struct {
	offset   float64 // seconds into the step
	order    int32   // position before sorting: the tie-break
	region   int32
	ctx, gen int32
	slo      time.Duration // 0 for batch
	capped   bool
}

// generate appends the arrivals of the next step of every region, sorted
// by time (ties in region order) and numbered.
func (g *Generator) generate() {
	if g.pos >= len(g.buf) {
		g.buf, g.pos = g.buf[:0], 0
	} else if g.pos > 0 {
		n := copy(g.buf, g.buf[g.pos:])
		g.buf, g.pos = g.buf[:n], 0
	}
	start := g.stepStart(g.step)
	g.step++
	block := g.cfg.Block
	mid := start.Add(block / 2)
	secs := block.Seconds()
	draws := g.draws[:0]
	for i := range g.regions {
		r := &g.regions[i]
		if r.Weight == 0 {
			continue
		}
		expected := g.cfg.RatePerSecond * r.Weight * g.cfg.Envelope.At(mid, r.UTCOffset) * secs
		if g.cfg.Mode == ModeTrace {
			b := &g.blocks[r.rng.IntN(len(g.blocks))]
			k := len(b.offsets)
			if k == 0 {
				continue // a quiet minute of the trace
			}
			r.poisson.Lambda = expected * float64(k) / g.meanBlock
			for n := int(r.poisson.Rand()); n > 0; n-- {
				j := r.rng.IntN(k)
				off := min(b.offsets[j]+r.rng.Float64()*b.spans[j], math.Nextafter(secs, 0))
				draws = append(draws, g.draw(r, int32(i), off, b.ctx[j], b.gen[j]))
			}
			continue
		}
		r.poisson.Lambda = expected
		for n := int(r.poisson.Rand()); n > 0; n-- {
			off := r.rng.Float64() * secs
			ctx := lognormal(r.rng, g.muCtx, g.sigmaCtx, g.cfg.Sizes.MaxContext)
			gen := lognormal(r.rng, g.muGen, g.sigmaGen, g.cfg.Sizes.MaxGenerated)
			draws = append(draws, g.draw(r, int32(i), off, int32(ctx), int32(gen)))
		}
	}
	// Draws are appended region by region; (offset, position) is a total
	// order, so the result does not depend on the sort algorithm.
	for i := range draws {
		draws[i].order = int32(i)
	}
	slices.SortFunc(draws, func(a, b draw) int {
		if c := cmp.Compare(a.offset, b.offset); c != 0 {
			return c
		}
		return cmp.Compare(a.order, b.order)
	})
	t := g.cfg.Throughput
	for _, d := range draws {
		r := &g.regions[d.region]
		ctx, gen := int(d.ctx), int(d.gen)
		demand, dur := t.Demand(ctx, gen)
		g.seq++
		g.id = strconv.AppendUint(append(g.id[:0], g.idPrefix...), g.seq, 10)
		a := Arrival{
			At:              start.Add(time.Duration(d.offset * 1e9)),
			Class:           Batch,
			ContextTokens:   ctx,
			GeneratedTokens: gen,
			GPUSeconds:      t.GPUSeconds(ctx, gen),
			Job: placement.Job{
				ID:           string(g.id),
				OriginRegion: r.Region,
				Demand:       demand,
				LatencySLO:   d.slo,
				Duration:     dur,
				GPUType:      g.cfg.GPUType,
			},
		}
		if d.slo > 0 {
			a.Class, a.Job.Priority = Interactive, 1
		}
		if d.capped {
			a.Job.MaxPricePerHour = r.maxPrice
		}
		g.buf = append(g.buf, a)
	}
	g.draws = draws[:0]
}

// draw draws the class and price limit of an arrival of region r.
func (g *Generator) draw(r *regionGen, region int32, offset float64, ctx, gen int32) draw {
	d := draw{offset: offset, region: region, ctx: ctx, gen: gen}
	slo := g.cfg.SLO
	if r.rng.Float64() < slo.InteractiveFraction {
		// At least 1 ns, so that an interactive SLO is never "unbounded".
		d.slo = max(1, slo.InteractiveMin+time.Duration(r.rng.Float64()*float64(slo.InteractiveMax-slo.InteractiveMin)))
	}
	d.capped = r.maxPrice > 0 && r.rng.Float64() < g.cfg.MaxPrice.Fraction
	return d
}

// lognormal draws round(exp(mu + sigma·Z)) clamped to [1, maxTokens].
func lognormal(rng *rand.Rand, mu, sigma float64, maxTokens int) int {
	v := math.Round(math.Exp(mu + sigma*rng.NormFloat64()))
	return int(min(max(v, 1), float64(maxTokens)))
}

// NewDiurnal returns a generator in ModeDiurnal: the envelope of cfg with
// Poisson arrivals and synthetic sizes, needing no trace (the generator of
// "meridian netsim --workload diurnal").
func NewDiurnal(cfg Config, rng *rand.Rand) (*Generator, error) {
	cfg.Mode, cfg.Trace = ModeDiurnal, nil
	return NewGenerator(cfg, rng)
}
