package bench

import (
	"encoding/json"
	"flag"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"

	"github.com/meridian-mesh/meridian/node/simcluster"
)

// flags are the benchmark's flags, given after -args.
var flags = RegisterFlags(flag.CommandLine)

// benchEnv gates the full benchmark (TestWorldDay); `make bench` sets it.
const benchEnv = "MERIDIAN_BENCH"

func TestMain(m *testing.M) {
	simcluster.TuneGC()
	goleak.VerifyTestMain(m)
}

// worldRun is one benchmark run for a test: what to simulate and where to
// write it.
type worldRun struct {
	cfg  Config
	mesh []MeridianOptions // run the real mesh with each of these too
	dir  string
}

// runWorld runs the benchmark: the LP bound, the baselines, and the mesh
// (inside a synctest bubble) when asked; then evaluates and writes the
// report into dir.
func runWorld(t *testing.T, run worldRun) *Report {
	t.Helper()
	w, err := Load(run.cfg)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	wl, err := BuildWorkload(w)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("workload: %d jobs from %d sampled requests (×%.2f) in %v", len(wl.Jobs), wl.SampledRequests, wl.Multiplier, time.Since(start).Round(time.Millisecond))
	start = time.Now()
	bound, err := LowerBound(w, wl.Jobs, 0)
	if err != nil {
		t.Fatal(err)
	}
	lpWall := time.Since(start)
	t.Logf("LP bound $%.2f (primal $%.2f) in %v", bound.TotalUSD, bound.PrimalUSD, lpWall.Round(time.Millisecond))
	var ran []Ran
	for _, opts := range run.mesh {
		opts.Progress = func(done, total time.Duration, submitted int) {
			t.Logf("mesh: %v of %v of arrivals simulated, %d jobs submitted", done, total, submitted)
		}
		m := Meridian(opts)
		start = time.Now()
		var out Outcome
		var runErr error
		synctest.Test(t, func(t *testing.T) {
			out, runErr = m.Run(t.Context(), w, wl.Jobs)
		})
		if runErr != nil {
			t.Fatal(runErr)
		}
		ran = append(ran, Ran{Name: m.Name(), Outcome: out, Wall: time.Since(start)})
		t.Logf("%s: %v of wall time", m.Name(), time.Since(start).Round(time.Millisecond))
	}
	base, err := RunAll(t.Context(), w, wl.Jobs, Baselines())
	if err != nil {
		t.Fatal(err)
	}
	ran = append(ran, base...)
	fc, err := Forecasts(w, wl)
	if err != nil {
		t.Fatal(err)
	}
	r, err := Compare(w, wl, bound, ran, fc)
	if err != nil {
		t.Fatal(err)
	}
	r.Run.LPWallSec = lpWall.Seconds()
	if err := WriteReport(run.dir, r); err != nil {
		t.Fatal(err)
	}
	md, err := os.ReadFile(filepath.Join(run.dir, ResultsMD))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s:\n%s", run.dir, md)
	return r
}

// checkReport asserts what must hold of any run, and that the files were
// written and parse.
func checkReport(t *testing.T, dir string, r *Report) {
	t.Helper()
	lp := r.Results.LPBoundUSD
	if !(lp > 0) {
		t.Fatalf("LP bound = %v; want > 0", lp)
	}
	if gap := math.Abs(r.Bound.PrimalUSD-lp) / lp; gap > 1e-6 {
		t.Errorf("LP primal $%.6f and dual $%.6f differ by %.2g: the simplex did not converge", r.Bound.PrimalUSD, lp, gap)
	}
	byName := map[string]SchedulerResult{}
	for _, s := range r.Results.Schedulers {
		byName[s.Name] = s
		if s.CostUSD < lp*(1-1e-9) {
			t.Errorf("%s costs $%.2f, below the LP lower bound $%.2f", s.Name, s.CostUSD, lp)
		}
		if math.Abs(s.CostVsLP-s.CostUSD/lp) > 1e-9 {
			t.Errorf("%s: cost_vs_lp = %v; want %v", s.Name, s.CostVsLP, s.CostUSD/lp)
		}
		for name, v := range map[string]float64{"placed_pct": s.PlacedPct, "slo_pct": s.SLOPct} {
			if !(v >= 0 && v <= 100) {
				t.Errorf("%s: %s = %v; want within [0, 100]", s.Name, name, v)
			}
		}
		if s.PlacedPct == 0 {
			t.Errorf("%s placed nothing", s.Name)
		}
		if !(s.PlacementP50Ms >= 0 && s.PlacementP50Ms <= s.PlacementP99Ms) {
			t.Errorf("%s: placement p50 %v, p99 %v; want 0 ≤ p50 ≤ p99", s.Name, s.PlacementP50Ms, s.PlacementP99Ms)
		}
		if n := float64(len(r.Run.Regions)); !(s.JainUtilization >= 1/n-1e-9 && s.JainUtilization <= 1+1e-9) {
			t.Errorf("%s: jain_utilization = %v; want within [1/%v, 1]", s.Name, s.JainUtilization, n)
		}
		if s.CrossRegionGB < 0 {
			t.Errorf("%s: cross_region_gb = %v < 0", s.Name, s.CrossRegionGB)
		}
	}
	local, central := byName["local-only"], byName["central-cheapest"]
	if central.CostUSD > local.CostUSD {
		t.Errorf("central-cheapest costs $%.2f, more than local-only's $%.2f", central.CostUSD, local.CostUSD)
	}
	if local.CrossRegionGB != 0 {
		t.Errorf("local-only moved %v GB across regions", local.CrossRegionGB)
	}
	for _, name := range []string{"local-only", "nearest-first", "central-cheapest"} {
		if s, ok := byName[name]; !ok {
			t.Errorf("no result for %s", name)
		} else if s.SLOPct != 100 {
			t.Errorf("%s: slo_pct = %v; a baseline only places within the SLO and price limit", name, s.SLOPct)
		}
	}

	// results.json has exactly the documented keys.
	data, err := os.ReadFile(filepath.Join(dir, ResultsJSON))
	if err != nil {
		t.Fatal(err)
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		t.Fatalf("%s: %v", ResultsJSON, err)
	}
	if got := slices.Sorted(maps.Keys(raw)); !slices.Equal(got, []string{"lp_bound_usd", "schedulers"}) {
		t.Errorf("%s keys = %v", ResultsJSON, got)
	}
	var rows []map[string]any
	if err := json.Unmarshal(raw["schedulers"], &rows); err != nil {
		t.Fatalf("%s schedulers: %v", ResultsJSON, err)
	}
	want := []string{"cost_usd", "cost_vs_lp", "cross_region_gb", "jain_utilization", "name", "placed_pct", "placement_p50_ms", "placement_p99_ms", "slo_pct"}
	for _, row := range rows {
		if got := slices.Sorted(maps.Keys(row)); !slices.Equal(got, want) {
			t.Errorf("%s row keys = %v; want %v", ResultsJSON, got, want)
		}
	}
	var back Results
	if err := json.Unmarshal(data, &back); err != nil || back.LPBoundUSD != lp || len(back.Schedulers) != len(r.Results.Schedulers) {
		t.Errorf("%s does not round-trip: %v", ResultsJSON, err)
	}
	md, err := os.ReadFile(filepath.Join(dir, ResultsMD))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range r.Results.Schedulers {
		if !strings.Contains(string(md), "| "+s.Name+" |") {
			t.Errorf("%s has no row for %s", ResultsMD, s.Name)
		}
	}
	det, err := os.ReadFile(filepath.Join(dir, DetailsJSON))
	if err != nil {
		t.Fatal(err)
	}
	var d Report
	if err := json.Unmarshal(det, &d); err != nil {
		t.Errorf("%s: %v", DetailsJSON, err)
	}
	for _, p := range []string{CostPlot, UtilizationPlot, ForecastPlot} {
		b, err := os.ReadFile(filepath.Join(dir, p))
		if err != nil {
			t.Error(err)
			continue
		}
		if !strings.Contains(string(b), "<svg") || !strings.HasSuffix(strings.TrimSpace(string(b)), "</svg>") {
			t.Errorf("%s is not a whole SVG document", p)
		}
	}
}

// shortConfig is the flags' configuration with the test's defaults: two
// hours unless -hours was given (and -short was not).
func shortConfig(t *testing.T) Config {
	t.Helper()
	cfg, err := flags.Config()
	if err != nil {
		t.Fatal(err)
	}
	if testing.Short() || !flags.IsSet("hours") {
		cfg.Length = 2 * time.Hour
	}
	return cfg
}

// outDir is -out, or a test temporary directory.
func outDir(t *testing.T) string {
	if flags.Out != "" {
		return flags.Out
	}
	return t.TempDir()
}

// TestWorld is the two-hour benchmark of `make test` on the default world
// (every region with a price, the embedded data): the LP bound and the
// baselines. The mesh runs in TestWorldMesh on a smaller world, and the
// whole benchmark, mesh included, in TestWorldDay.
func TestWorld(t *testing.T) {
	dir := outDir(t)
	r := runWorld(t, worldRun{cfg: shortConfig(t), dir: dir})
	checkReport(t, dir, r)
	// The LP stays small whatever the number of jobs: one block per
	// bucket of at most (groups + regions) rows.
	if r.Bound.MaxRows > r.Bound.Groups+len(r.Run.Regions) {
		t.Errorf("LP blocks of %d rows for %d groups and %d regions", r.Bound.MaxRows, r.Bound.Groups, len(r.Run.Regions))
	}
	if r.Bound.ServedPct < 99 {
		t.Errorf("the LP serves %.2f%% of the work; the default sizing should let it serve (almost) all", r.Bound.ServedPct)
	}
	// Trading matters: every scheduler that trades places more than
	// local-only, and nearest-first serves more work than local-only.
	var local, nearest Evaluation
	for _, ev := range r.Evaluations {
		switch ev.Result.Name {
		case "local-only":
			local = ev
		case "nearest-first":
			nearest = ev
		}
	}
	if nearest.PlacedWorkPct <= local.PlacedWorkPct {
		t.Errorf("nearest-first places %.2f%% of the work, local-only %.2f%%: capacity sizing does not make trading matter", nearest.PlacedWorkPct, local.PlacedWorkPct)
	}
}

// TestWorldDay is the full benchmark — by default a day on every region
// with a price, the real mesh included — run by `make bench` with
// MERIDIAN_BENCH=1. Flags after -args change it; results go to -out or a
// new temporary directory, which it prints.
func TestWorldDay(t *testing.T) {
	if os.Getenv(benchEnv) == "" || testing.Short() {
		t.Skipf("the full benchmark runs with %s=1 (make bench)", benchEnv)
	}
	cfg, err := flags.Config()
	if err != nil {
		t.Fatal(err)
	}
	mesh, err := flags.MeshVariants()
	if err != nil {
		t.Fatal(err)
	}
	dir := flags.Out
	if dir == "" {
		if dir, err = os.MkdirTemp("", "meridian-bench-"); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("results in %s", dir)
	r := runWorld(t, worldRun{cfg: cfg, mesh: mesh, dir: dir})
	checkReport(t, dir, r)
	t.Logf("results in %s", dir)
}
