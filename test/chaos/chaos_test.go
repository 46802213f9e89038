package chaos

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"

	"github.com/meridian-mesh/meridian/node/simcluster"
)

// The long run's flags, given after -args:
//
//	go test ./test/chaos/ -run 'TestChaos$' -v -args -seeds 200 -scenario random -json chaos.json
var (
	flagSeeds    = flag.Int("seeds", 0, "run seeds 1..N of -scenario (the long chaos run); 0 skips it")
	flagSeed     = flag.Int64("seed", -1, "replay this one seed (the long chaos run with one seed)")
	flagScenario = flag.String("scenario", "", "scenario of the long run: "+strings.Join(ScenarioNames(), ", ")+" (default random)")
	flagMinutes  = flag.Float64("minutes", 0, "virtual minutes of faults per run (default 5; at least 1)")
	flagJSON     = flag.String("json", "", "write the long run's report (one object per run, plus totals) to this file")
	flagVerbose  = flag.Bool("chaos.log", false, "log the agents and the fault steps to stderr")
)

func TestMain(m *testing.M) {
	simcluster.TuneGC()
	goleak.VerifyTestMain(m)
}

// longRun is the long run's settings, from the flags.
type longRun struct {
	seeds    []int64
	scenario string
	minutes  float64
	json     string
}

// parseLongRun reads the flags; ok is false when no long run was asked
// for. Errors name the flag at fault.
func parseLongRun(seeds int, seed int64, scenario string, minutes float64, json string) (longRun, bool, error) {
	lr := longRun{scenario: scenario, minutes: minutes, json: json}
	switch {
	case seeds < 0:
		return lr, false, fmt.Errorf("-seeds %d: must not be negative", seeds)
	case seed < -1:
		return lr, false, fmt.Errorf("-seed %d: seeds are not negative", seed)
	case seeds > 0 && seed >= 0:
		return lr, false, errors.New("-seeds and -seed: give one of them (-seed replays one seed)")
	case seeds > 0:
		for s := int64(1); s <= int64(seeds); s++ {
			lr.seeds = append(lr.seeds, s)
		}
	case seed >= 0:
		lr.seeds = []int64{seed}
	default:
		if scenario != "" || minutes != 0 || json != "" {
			return lr, false, errors.New("-scenario, -minutes and -json need -seeds N or -seed S")
		}
		return lr, false, nil
	}
	if lr.scenario == "" {
		lr.scenario = "random"
	}
	if _, err := LookupScenario(lr.scenario); err != nil {
		return lr, false, fmt.Errorf("-scenario: %w", err)
	}
	if lr.minutes == 0 {
		lr.minutes = 5
	}
	if !(lr.minutes >= minDuration.Minutes() && lr.minutes <= 24*60) {
		return lr, false, fmt.Errorf("-minutes %v: want between %v and 1440 virtual minutes", lr.minutes, minDuration.Minutes())
	}
	return lr, true, nil
}

func TestParseLongRun(t *testing.T) {
	if _, ok, err := parseLongRun(0, -1, "", 0, ""); ok || err != nil {
		t.Errorf("no flags: ok=%v err=%v; want no long run", ok, err)
	}
	lr, ok, err := parseLongRun(3, -1, "", 0, "")
	if !ok || err != nil || len(lr.seeds) != 3 || lr.seeds[2] != 3 || lr.scenario != "random" || lr.minutes != 5 {
		t.Errorf("-seeds 3: %+v ok=%v err=%v", lr, ok, err)
	}
	lr, ok, err = parseLongRun(0, 0, "lossy-wan", 2, "x.json")
	if !ok || err != nil || len(lr.seeds) != 1 || lr.seeds[0] != 0 || lr.scenario != "lossy-wan" || lr.json != "x.json" {
		t.Errorf("-seed 0: %+v ok=%v err=%v", lr, ok, err)
	}
	for _, c := range []struct {
		seeds    int
		seed     int64
		scenario string
		minutes  float64
		json     string
		want     string
	}{
		{-1, -1, "", 0, "", "-seeds"},
		{0, -5, "", 0, "", "-seed"},
		{2, 7, "", 0, "", "one of them"},
		{2, -1, "nope", 0, "", "-scenario"},
		{2, -1, "", 0.5, "", "-minutes"},
		{0, -1, "random", 0, "", "need -seeds"},
	} {
		if _, _, err := parseLongRun(c.seeds, c.seed, c.scenario, c.minutes, c.json); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("parseLongRun(%+v) = %v; want an error naming %s", c, err, c.want)
		}
	}
}

func logger() *slog.Logger {
	if *flagVerbose {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	return nil
}

// runOne runs one seed in its own bubble and returns its result, with the
// wall time it took.
func runOne(t *testing.T, cfg Config) *RunResult {
	t.Helper()
	var res *RunResult
	start := time.Now()
	synctest.Test(t, func(t *testing.T) {
		res = Run(context.Background(), cfg)
	})
	res.WallS = time.Since(start).Seconds()
	return res
}

// shortMinutes is the fault phase of each run of the short fixed set.
const shortMinutes = 1

// TestChaosShort is the short fixed set `make test` runs: every scenario
// once, on the default cluster, with a short fault phase. The long run
// (flags after -args) replaces it.
func TestChaosShort(t *testing.T) {
	if testing.Short() {
		t.Skip("the chaos suite runs whole meshes; skipped with -short")
	}
	if _, ok, err := parseLongRun(*flagSeeds, *flagSeed, *flagScenario, *flagMinutes, *flagJSON); ok || err != nil {
		t.Skip("a long run was asked for; see TestChaos")
	}
	for i, name := range ScenarioNames() {
		t.Run(name, func(t *testing.T) {
			// Each run is its own bubble and keeps one core only partly
			// busy: two at a time halve the wall time on 2 cores.
			t.Parallel()
			cfg := DefaultConfig()
			cfg.Seed = int64(101 + i)
			cfg.Scenario = name
			cfg.Duration = shortMinutes * time.Minute
			cfg.Logger = logger()
			res := runOne(t, cfg)
			if !res.Passed() {
				t.Error(res.Summary())
				return
			}
			t.Log(res.Summary())
		})
	}
}

// TestChaos is the long run: -seeds N (seeds 1..N) or -seed S (replay) of
// -scenario, -minutes each, with an optional -json report. Without those
// flags it is skipped.
func TestChaos(t *testing.T) {
	lr, ok, err := parseLongRun(*flagSeeds, *flagSeed, *flagScenario, *flagMinutes, *flagJSON)
	if err != nil {
		t.Fatal(err)
	}
	if !ok {
		t.Skip("the long chaos run needs -args -seeds N or -seed S (see docs/chaos.md)")
	}
	rep := &Report{Started: time.Now()}
	var mu sync.Mutex
	// Each seed is its own bubble and keeps one core only partly busy, so
	// the seeds run -parallel at a time (GOMAXPROCS by default).
	t.Run("seeds", func(t *testing.T) {
		for _, seed := range lr.seeds {
			t.Run(fmt.Sprintf("seed-%d", seed), func(t *testing.T) {
				t.Parallel()
				cfg := DefaultConfig()
				cfg.Seed = seed
				cfg.Scenario = lr.scenario
				cfg.Duration = time.Duration(lr.minutes * float64(time.Minute))
				cfg.Logger = logger()
				res := runOne(t, cfg)
				mu.Lock()
				rep.Add(res)
				mu.Unlock()
				if !res.Passed() {
					t.Error(res.Summary())
					return
				}
				t.Log(res.Summary())
			})
		}
	})
	slices.SortFunc(rep.Runs, func(a, b *RunResult) int { return cmp.Compare(a.Seed, b.Seed) })
	slices.Sort(rep.Totals.FailedSeeds)
	rep.ElapsedS = time.Since(rep.Started).Seconds()
	if lr.json != "" {
		if err := rep.WriteFile(lr.json); err != nil {
			t.Error(err)
		}
	}
	tot := rep.Totals
	t.Logf("chaos totals: runs=%d passed=%d failed=%d jobs_submitted=%d jobs_acked=%d jobs_lost=%d jobs_duplicated=%d overcommits=%d escrow_leaks=%d linearizable=%d/%d max_converge_s=%.1f wall=%.0fs failed_seeds=%v",
		tot.Runs, tot.Passed, tot.Failed, tot.JobsSubmitted, tot.JobsAcked, tot.JobsLost, tot.JobsDuplicated, tot.Overcommits,
		tot.EscrowLeaks, tot.Linearizable, tot.Runs, tot.MaxConvergeS, rep.ElapsedS, tot.FailedSeeds)
}
