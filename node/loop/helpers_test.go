package loop

import (
	"bytes"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/consensus"
	"github.com/meridian-mesh/meridian/placement"
	"github.com/meridian-mesh/meridian/placement/forecast"
)

// t0 is a Monday midnight UTC: the simulations start there.
var t0 = time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC)

// node is one p4d.24xlarge in the task unit of docs/forecast-and-workload.md
// (8 A100s × 3,600 GPU-seconds an hour).
const nodeCompute = 28800

// gpu is one lease unit: one A100's worth.
var gpu = placement.Resources{ComputePerHour: 3600, StorageGB: 40, BandwidthGBps: 6.25, GPUs: 1}

// testConfig is the configuration most tests use: 5-minute intervals, a
// 2-hour horizon, one-GPU lease units and a retention long enough for
// every simulation.
func testConfig() Config {
	return Config{
		Region:          "us-east-1",
		Interval:        5 * time.Minute,
		Plan:            forecast.PlanConfig{LeaseUnit: gpu},
		LedgerRetention: 30 * forecast.Day,
	}
}

func newController(t testing.TB, cfg Config) *Controller {
	t.Helper()
	c, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return c
}

// demand is a daily demand curve in tasks/hour.
type demand func(at time.Time) float64

// diurnal is a raised cosine over the UTC day, peaking at peakHour with a
// trough of trough × the peak, normalised to a daily mean of mean (the
// envelope of placement/workload).
func diurnal(mean, peakHour, trough float64) demand {
	return func(at time.Time) float64 {
		h := float64(at.Hour()) + float64(at.Minute())/60 + float64(at.Second())/3600
		shape := trough + (1-trough)*(1+math.Cos(2*math.Pi*(h-peakHour)/24))/2
		return mean * shape / ((1 + trough) / 2)
	}
}

// arrival is one generated job.
type arrival struct {
	at  time.Time
	job placement.Job
}

// jobSeconds is the duration of every generated job; jobGPU its demand.
const (
	jobSeconds = 10
	jobCompute = 3600
)

// generate returns the jobs of [from, to): per interval iv, the work of the
// curve at the interval's middle, times a noise factor 1 + noise·N(0,1),
// cut into one-GPU jobs of jobSeconds spread evenly over the interval.
func generate(rng *rand.Rand, d demand, from, to time.Time, iv time.Duration, noise float64, idPrefix string) []arrival {
	var out []arrival
	seq := 0
	for b := from; b.Before(to); b = b.Add(iv) {
		rate := d(b.Add(iv/2)) * max(0, 1+noise*rng.NormFloat64())
		work := rate * iv.Seconds()                            // task-seconds in the interval
		n := int(math.Round(work / (jobCompute * jobSeconds))) // jobs
		for i := range n {
			at := b.Add(time.Duration(float64(iv) * (float64(i) + 0.5) / float64(n)))
			seq++
			out = append(out, arrival{at: at, job: placement.Job{
				ID:       fmt.Sprintf("%s-%d", idPrefix, seq),
				Demand:   placement.Resources{ComputePerHour: jobCompute},
				Duration: jobSeconds * time.Second,
			}})
		}
	}
	return out
}

// market stands in for the auction: every lease request is filled at once
// as a bought lease from now to the request's Until, and resolved.
type market struct {
	leases []consensus.Lease
	buys   []Decision
	asks   []Decision
}

func (m *market) apply(t testing.TB, c *Controller, d Decision) {
	t.Helper()
	switch d.Action {
	case forecast.ActionBuy:
		m.buys = append(m.buys, d)
		m.leases = append(m.leases, consensus.Lease{
			ID: d.Buy.ID, Direction: consensus.LeaseBought, PeerRegion: "us-east-2",
			Resources: d.Buy.Resources, Start: d.At, End: d.Buy.Until, Added: d.At,
		})
		if !c.Resolved(d.At, d.Buy.ID) {
			t.Fatalf("Resolved(%q) = false; want true", d.Buy.ID)
		}
	case forecast.ActionAdvertise:
		m.asks = append(m.asks, d)
	}
}

// sim drives one controller through arrivals, ticking every interval at
// tickOffset past each boundary, with own capacity own whose free part is
// own less the load of the last interval. It records every decision.
type sim struct {
	t          testing.TB
	c          *Controller
	own        float64
	price      float64
	tickOffset time.Duration
	market     market
	decisions  []Decision
	arrivals   []arrival
	next       int // next arrival to admit
	load       map[time.Time]float64
}

func newSim(t testing.TB, c *Controller, own float64, arrivals []arrival) *sim {
	s := &sim{t: t, c: c, own: own, price: 32.77, tickOffset: 15 * time.Second, arrivals: arrivals, load: map[time.Time]float64{}}
	iv := c.Config().Interval
	for _, a := range arrivals {
		s.load[a.at.Truncate(iv)] += a.job.Demand.ComputePerHour * a.job.Duration.Seconds() / iv.Seconds()
	}
	return s
}

func (s *sim) capacity(now time.Time) Capacity {
	iv := s.c.Config().Interval
	used := min(s.own, s.load[now.Truncate(iv).Add(-iv)])
	return Capacity{
		Total:            placement.Resources{ComputePerHour: s.own},
		Free:             placement.Resources{ComputePerHour: s.own - used},
		NodePricePerHour: s.price,
		Leases:           s.market.leases,
	}
}

// admitUntil admits every arrival at or before now.
func (s *sim) admitUntil(now time.Time) {
	for ; s.next < len(s.arrivals) && !s.arrivals[s.next].at.After(now); s.next++ {
		a := s.arrivals[s.next]
		if err := s.c.Admitted(a.at, a.job, OutcomeLocal); err != nil {
			s.t.Fatalf("Admitted(%s, %s): %v", a.at, a.job.ID, err)
		}
	}
}

// run ticks at every interval boundary in (from, to] plus tickOffset.
func (s *sim) run(from, to time.Time) {
	s.t.Helper()
	iv := s.c.Config().Interval
	for b := from.Add(iv); !b.After(to); b = b.Add(iv) {
		now := b.Add(s.tickOffset)
		s.admitUntil(now)
		d, err := s.c.Tick(now, s.capacity(now))
		if err != nil {
			s.t.Fatalf("Tick(%s): %v", now, err)
		}
		s.decisions = append(s.decisions, d)
		s.market.apply(s.t, s.c, d)
	}
}

// ledgerJobs turns arrivals into the ledger's job records.
func ledgerJobs(arrivals []arrival, upTo time.Time) []consensus.Job {
	var out []consensus.Job
	for _, a := range arrivals {
		if a.at.After(upTo) {
			break
		}
		out = append(out, consensus.Job{ID: a.job.ID, Spec: a.job, State: consensus.JobCompleted, Submitted: a.at, Updated: a.at.Add(a.job.Duration)})
	}
	return out
}

// logBuffer is a concurrency-safe buffer for a slog text handler.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func newLogger(buf *logBuffer) *slog.Logger {
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
}
