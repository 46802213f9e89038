package bench

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Output file names.
const (
	ResultsJSON = "results.json"
	ResultsMD   = "results.md"
	DetailsJSON = "details.json"
)

// RunInfo describes a run for the report, enough to reproduce it. Its
// fields are Config's and Workload's of the same names, with durations as
// text and the World's derived figures (node capacity, prices, penalty,
// the central scheduler's region).
type RunInfo struct {
	Regions          []string           `json:"regions"`
	Start            time.Time          `json:"start"`
	Hours            float64            `json:"hours"`
	Seed             int64              `json:"seed"`
	Instance         string             `json:"instance"`
	GPUsPerNode      int                `json:"gpus_per_node"`
	NodeComputePerH  float64            `json:"node_compute_tasks_per_hour"`
	NodesPerRegion   int                `json:"nodes_per_region"`
	Servers          int                `json:"servers_per_region"`
	Workers          int                `json:"workers_per_region"`
	Load             float64            `json:"load"`
	Window           string             `json:"window"`
	MaxJobFraction   float64            `json:"max_job_fraction"`
	SLOStep          string             `json:"slo_step"`
	PricesPerHour    map[string]float64 `json:"prices_usd_per_node_hour"`
	PenaltyPerNodeH  float64            `json:"penalty_usd_per_node_hour"`
	Topology         string             `json:"topology"`
	Prices           string             `json:"prices"`
	Trace            string             `json:"trace"`
	Jobs             int                `json:"jobs"`
	SampledRequests  int                `json:"sampled_requests"`
	RequestsPerSec   float64            `json:"requests_per_second_per_region"`
	Multiplier       float64            `json:"multiplier"`
	MeanTasksPerReq  float64            `json:"mean_tasks_per_request"`
	WorkNodeHours    float64            `json:"work_node_hours"`
	BrokerRegion     string             `json:"broker_region"`
	SchedulerWallSec map[string]float64 `json:"scheduler_wall_seconds,omitempty"`
	LPWallSec        float64            `json:"lp_wall_seconds,omitempty"`
}

// Report is everything a run produced.
type Report struct {
	Run         RunInfo          `json:"run"`
	Results     Results          `json:"results"`
	Bound       Bound            `json:"lp"`
	Evaluations []Evaluation     `json:"schedulers"`
	Forecasts   []RegionForecast `json:"forecasts"`
}

// Ran is one scheduler's outcome, for Compare.
type Ran struct {
	Name    string
	Outcome Outcome
	// Wall is the wall time the scheduler took (zero if not measured).
	Wall time.Duration
}

// Compare evaluates the schedulers' outcomes against the bound and builds
// the report. The results keep the order of ran.
func Compare(w *World, wl *Workload, bound Bound, ran []Ran, forecasts []RegionForecast) (*Report, error) {
	cfg := w.cfg
	r := &Report{Bound: bound, Forecasts: forecasts, Results: Results{LPBoundUSD: bound.TotalUSD, Schedulers: []SchedulerResult{}}}
	r.Run = RunInfo{
		Regions: w.Regions(), Start: cfg.Start, Hours: cfg.Length.Hours(), Seed: cfg.Seed,
		Instance: cfg.Instance, GPUsPerNode: w.gpus, NodeComputePerH: w.node.ComputePerHour,
		NodesPerRegion: w.NodesPerRegion(), Servers: cfg.Servers, Workers: cfg.Workers, Load: cfg.Load,
		Window: cfg.Window.String(), MaxJobFraction: cfg.MaxJobFraction, SLOStep: cfg.SLOStep.String(),
		PricesPerHour: map[string]float64{}, PenaltyPerNodeH: w.PenaltyPerNodeHour(),
		Topology: cfg.TopologySource, Prices: cfg.Prices.Source(), Trace: cfg.Trace.Source,
		Jobs: len(wl.Jobs), SampledRequests: wl.SampledRequests, RequestsPerSec: wl.RequestsPerSecond,
		Multiplier: wl.Multiplier, MeanTasksPerReq: wl.MeanTasksPerRequest, BrokerRegion: brokerRegion(w),
		SchedulerWallSec: map[string]float64{},
	}
	for _, reg := range w.regions {
		r.Run.PricesPerHour[reg] = w.price[reg]
	}
	for i := range wl.Jobs {
		r.Run.WorkNodeHours += wl.Jobs[i].Tasks() / w.node.ComputePerHour
	}
	for _, x := range ran {
		ev, err := Evaluate(w, wl.Jobs, x.Name, x.Outcome)
		if err != nil {
			return nil, err
		}
		if bound.TotalUSD > 0 {
			ev.Result.CostVsLP = ev.Result.CostUSD / bound.TotalUSD
		}
		if x.Wall > 0 {
			r.Run.SchedulerWallSec[x.Name] = x.Wall.Seconds()
		}
		r.Evaluations = append(r.Evaluations, ev)
		r.Results.Schedulers = append(r.Results.Schedulers, ev.Result)
	}
	return r, nil
}

// WriteReport writes results.json, results.md, details.json and the plots
// into dir, creating it if needed. Each file is written whole or not at
// all.
func WriteReport(dir string, r *Report) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("-out: %w", err)
	}
	res, err := json.MarshalIndent(r.Results, "", "  ")
	if err != nil {
		return fmt.Errorf("%s: %w", ResultsJSON, err)
	}
	if err := writeFileAtomic(filepath.Join(dir, ResultsJSON), append(res, '\n')); err != nil {
		return err
	}
	if err := writeFileAtomic(filepath.Join(dir, ResultsMD), []byte(markdown(r))); err != nil {
		return err
	}
	det, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("%s: %w", DetailsJSON, err)
	}
	if err := writeFileAtomic(filepath.Join(dir, DetailsJSON), append(det, '\n')); err != nil {
		return err
	}
	return writePlots(dir, r)
}

// markdown renders results.md: the results table, then what is behind it.
func markdown(r *Report) string {
	var b strings.Builder
	run := r.Run
	fmt.Fprintf(&b, "# Meridian world benchmark\n\n")
	fmt.Fprintf(&b, "%s h from %s, seed %d, %d regions × %d × %s (%d GPUs), load %.2f of capacity, %d jobs (window %s).\n\n",
		strconv.FormatFloat(math.Round(run.Hours*1000)/1000, 'f', -1, 64), run.Start.Format(time.RFC3339), run.Seed, len(run.Regions), run.NodesPerRegion, run.Instance,
		run.GPUsPerNode, run.Load, run.Jobs, run.Window)
	fmt.Fprintf(&b, "LP lower bound: **$%s**", money(r.Results.LPBoundUSD))
	if r.Bound.PrimalUSD > 0 {
		fmt.Fprintf(&b, " (primal optimum $%s; serves %.2f%% of the work)", money(r.Bound.PrimalUSD), r.Bound.ServedPct)
	}
	b.WriteString("\n\n")
	b.WriteString("| name | cost_usd | cost_vs_lp | placed_pct | slo_pct | placement_p50_ms | placement_p99_ms | cross_region_gb | jain_utilization |\n")
	b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, s := range r.Results.Schedulers {
		fmt.Fprintf(&b, "| %s | %s | %.4f | %.2f | %.2f | %.1f | %.1f | %.3f | %.4f |\n",
			s.Name, money(s.CostUSD), s.CostVsLP, s.PlacedPct, s.SLOPct, s.PlacementP50Ms, s.PlacementP99Ms, s.CrossRegionGB, s.JainUtilization)
	}
	b.WriteString("\n## Breakdown\n\n")
	b.WriteString("| name | served_usd | penalty_usd | jobs | placed | traded | moved | slo_misses | placed_work_pct | paid_usd | paid_vs_lp |\n")
	b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, ev := range r.Evaluations {
		paid := 0.0
		if r.Bound.TotalUSD > 0 {
			paid = (ev.PaidUSD + ev.PenaltyUSD) / r.Bound.TotalUSD
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %d | %d | %d | %d | %d | %.2f | %s | %.4f |\n", ev.Result.Name, money(ev.ServedUSD), money(ev.PenaltyUSD),
			ev.Jobs, ev.Placed, ev.Traded, ev.Moved, ev.SLOMisses, ev.PlacedWorkPct, money(ev.PaidUSD), paid)
	}
	b.WriteString("\n`served_usd` is what the serving nodes cost at their own prices, the cost the LP bounds; `paid_usd` is what the jobs were charged: for a job the mesh traded, the trade's price, whose markup over the seller's cost moves money between regions of one operator and is not spend. `paid_vs_lp` is (paid + penalty) over the bound. A job placed late is charged as unserved until it started; it runs to its window's end. `moved` counts jobs served by more than one allocation (preempted, or their node lost, and placed again): each allocation is charged at its own region's price, and the time between them as unserved.\n")
	b.WriteString("\n## Mean utilization per region\n\n| region | price $/h |")
	for _, ev := range r.Evaluations {
		fmt.Fprintf(&b, " %s |", ev.Result.Name)
	}
	b.WriteString("\n|---|---:|")
	for range r.Evaluations {
		b.WriteString("---:|")
	}
	b.WriteString("\n")
	for _, reg := range run.Regions {
		fmt.Fprintf(&b, "| %s | %.2f |", reg, run.PricesPerHour[reg])
		for _, ev := range r.Evaluations {
			fmt.Fprintf(&b, " %.1f%% |", 100*ev.Utilization[reg])
		}
		b.WriteString("\n")
	}
	if len(r.Forecasts) > 0 {
		b.WriteString("\n## Forecast accuracy (placement/forecast, horizon forecasts over the run)\n\n")
		b.WriteString("| region | model | MAPE % | bias (nodes) | RMSE (nodes) |\n|---|---|---:|---:|---:|\n")
		for _, f := range r.Forecasts {
			fmt.Fprintf(&b, "| %s | %s | %.1f | %.3f | %.3f |\n", f.Region, f.Model, f.Error.MAPE, f.Error.Bias, f.Error.RMSE)
		}
	}
	b.WriteString("\n## Notes\n\n")
	fmt.Fprintf(&b, "- Workload: %d sampled requests, each standing for %.2f real ones (%.1f requests/s per region on average, %.4f tasks each); %.1f node-hours of work.\n",
		run.SampledRequests, run.Multiplier, run.RequestsPerSec, run.MeanTasksPerReq, run.WorkNodeHours)
	fmt.Fprintf(&b, "- Unplaced work costs $%s per node-hour (penalty); LP: %d feasible-region groups, %d buckets of %s, largest block %d×%d.\n",
		money(run.PenaltyPerNodeH), r.Bound.Groups, len(r.Bound.Buckets), r.Bound.Bucket, r.Bound.MaxRows, r.Bound.MaxColumns)
	for _, ev := range r.Evaluations {
		for _, n := range ev.Notes {
			fmt.Fprintf(&b, "- %s: %s\n", ev.Result.Name, n)
		}
	}
	fmt.Fprintf(&b, "- Data: topology %s; prices %s; trace %s.\n", run.Topology, run.Prices, run.Trace)
	b.WriteString("- Method: docs/benchmark.md.\n")
	return b.String()
}

// money formats dollars with two decimals and thousands separators.
func money(v float64) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return fmt.Sprint(v)
	}
	s := fmt.Sprintf("%.2f", math.Abs(v))
	intPart, frac, _ := strings.Cut(s, ".")
	var out bytes.Buffer
	for i, c := range intPart {
		if i > 0 && (len(intPart)-i)%3 == 0 {
			out.WriteByte(',')
		}
		out.WriteRune(c)
	}
	sign := ""
	if v < 0 {
		sign = "-"
	}
	return sign + out.String() + "." + frac
}

// writeFileAtomic writes data to path through a temporary file in the same
// directory, so a reader never sees half a file.
func writeFileAtomic(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	tmp := f.Name()
	if _, err := f.Write(data); err != nil {
		f.Close()
		os.Remove(tmp)
		return fmt.Errorf("%s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("%s: %w", path, err)
	}
	if err := os.Chmod(tmp, 0o644); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("%s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}
