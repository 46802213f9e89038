package loop

import (
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/meridian-mesh/meridian/placement"
	"github.com/meridian-mesh/meridian/placement/forecast"
)

// warmController returns a controller that has collected and observed
// days of diurnal demand, ticking every interval, and the arrivals.
func warmController(tb testing.TB, days int) (*Controller, *sim) {
	tb.Helper()
	c := newController(tb, testConfig())
	rng := rand.New(rand.NewPCG(21, 22))
	arrivals := generate(rng, diurnal(20000, 15, 0.25), t0, t0.Add(time.Duration(days)*forecast.Day), c.Config().Interval, 0.05, "w")
	s := newSim(tb, c, nodeCompute, arrivals)
	s.run(t0, t0.Add(time.Duration(days)*forecast.Day))
	return c, s
}

// BenchmarkTick is one Tick of a region leader in steady state: seven days
// of history, Holt-Winters, one new interval to observe, an adaptation pass
// every 72 ticks (its cost amortised), a plan over the 2-hour horizon.
func BenchmarkTick(b *testing.B) {
	c, s := warmController(b, 7)
	iv := c.Config().Interval
	job := placement.Job{ID: "b", Demand: placement.Resources{ComputePerHour: 3600}, Duration: 10 * time.Second}
	capacity := s.capacity(t0.Add(7 * forecast.Day))
	now := t0.Add(7*forecast.Day + s.tickOffset)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		// One interval's worth of demand, in one job, so that the series
		// keeps its level.
		job.Demand.ComputePerHour = 20000 * iv.Seconds() / job.Duration.Seconds()
		if err := c.Admitted(now.Add(-time.Minute), job, OutcomeLocal); err != nil {
			b.Fatal(err)
		}
		now = now.Add(iv)
		if _, err := c.Tick(now, capacity); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAdmitted is collecting one short job.
func BenchmarkAdmitted(b *testing.B) {
	c, _ := warmController(b, 3)
	job := placement.Job{ID: "b", Demand: placement.Resources{ComputePerHour: 1450}, Duration: time.Second}
	now := t0.Add(3 * forecast.Day)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		now = now.Add(time.Millisecond)
		if err := c.Admitted(now, job, OutcomeLocal); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRebuild3Days is a new leader rebuilding from three days of
// ledger jobs (≈ 150,000 of them), adaptation passes included.
func BenchmarkRebuild3Days(b *testing.B) {
	_, s := warmController(b, 3)
	now := t0.Add(3*forecast.Day + s.tickOffset)
	jobs := ledgerJobs(s.arrivals, now)
	b.ReportMetric(float64(len(jobs)), "jobs")
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		c := newController(b, testConfig())
		if _, err := c.Rebuild(now, jobs); err != nil {
			b.Fatal(err)
		}
	}
}

// The controller is safe for concurrent use: HTTP handlers read View while
// the leader's loop collects and ticks (run with -race).
func TestConcurrentViewWhileTicking(t *testing.T) {
	defer goleak.VerifyNone(t)
	c := newController(t, testConfig())
	iv := c.Config().Interval
	capacity := Capacity{Total: placement.Resources{ComputePerHour: nodeCompute}, Free: placement.Resources{ComputePerHour: nodeCompute / 2}, NodePricePerHour: 1}
	job := placement.Job{ID: "j", Demand: placement.Resources{ComputePerHour: 3600}, Duration: time.Minute}
	done := make(chan struct{})
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-done:
					return
				default:
				}
				v := c.View(t0.Add(time.Hour))
				_ = v.Recent
			}
		}()
	}
	for i := range 300 {
		now := t0.Add(time.Duration(i) * iv)
		if err := c.Admitted(now, job, OutcomeLocal); err != nil {
			t.Error(err)
		}
		if _, err := c.Tick(now.Add(iv/2), capacity); err != nil {
			t.Error(err)
		}
	}
	close(done)
	wg.Wait()
	if v := c.View(t0.Add(300 * iv)); v.Collected.Local != 300 || v.Observations == 0 {
		t.Errorf("after 300 intervals: %d collected, %d observed", v.Collected.Local, v.Observations)
	}
}
