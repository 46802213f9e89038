package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/meridian-mesh/meridian/placement"
)

// scoreOptions are the flags of `meridian score`.
type scoreOptions struct {
	example    bool
	nodesPath  string
	demand     float64
	storage    float64
	bandwidth  float64
	model      string
	efficiency string
	lambda     float64
	weights    [3]float64 // compute, storage, bandwidth
	jsonOut    bool
	plotPath   string
}

func newScoreCmd() *cobra.Command {
	var o scoreOptions
	cmd := &cobra.Command{
		Use:   "score (--example | --nodes FILE --demand N) [flags]",
		Short: "Rank nodes for a demand by the cost-efficiency model and explain the choice",
		Long: `Score ranks a list of nodes for a job's demand, the way the scheduler does, and
explains the decision: why the chosen node won, and why each other node lost
(the filter that rejected it, or its score).

Nodes come from a CSV file with a header line,
    name,compute,storage_gb,bandwidth_gbs,price_per_hour[,region][,gpu_type,gpus]
(columns in any order; compute in tasks/hour, price in $/hour), or from a
JSON array of objects with the same keys; "-" reads standard input.

By default nodes are ranked by cost efficiency E = C·D/c (C the node's
compute, D the demand, c its price). --model weighted uses
    score = w_C·C·f(D) + w_S·S·g(D_S) + w_B·B·h(D_B) − λ·c
with f = g = h the --efficiency function: linear (f(D) = D) or saturating
(f(D) = min(D, C)/C). Setting --lambda, --efficiency or a weight selects the
weighted model.

Tie-break (as in the output): higher score first; scores equal within a
relative 1e-9 are ordered by larger total compute, then lower price, then
node ID.

Exit code 0 when a node is chosen, 1 when no node can take the demand, 2 for
bad flags or input.`,
		Example: `  meridian score --example
  meridian score --nodes nodes.csv --demand 100
  meridian score --nodes nodes.json --demand 100 --json
  meridian score --example --plot efficiency.svg
  meridian score --example --efficiency saturating --lambda 0.01`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runScore(cmd, &o)
		},
	}
	f := cmd.Flags()
	f.BoolVar(&o.example, "example", false, "score the design's worked example (3 nodes, demand 100 tasks/h)")
	f.StringVar(&o.nodesPath, "nodes", "", "read nodes from `FILE` (.csv or .json; - for standard input)")
	f.Float64Var(&o.demand, "demand", 0, "the job's compute demand D in `tasks/hour` (default 100 with --example)")
	f.Float64Var(&o.storage, "storage", 0, "the job's storage demand in `GB`")
	f.Float64Var(&o.bandwidth, "bandwidth", 0, "the job's bandwidth demand in `GB/s`")
	f.StringVar(&o.model, "model", "cost-efficiency", "score `model`: cost-efficiency or weighted")
	f.StringVar(&o.efficiency, "efficiency", "linear", "efficiency `function` of the weighted model: linear or saturating")
	f.Float64Var(&o.lambda, "lambda", 0, "price weight λ of the weighted model, per $/hour")
	f.Float64Var(&o.weights[0], "weight-compute", 1, "compute weight of the weighted model")
	f.Float64Var(&o.weights[1], "weight-storage", 1, "storage weight of the weighted model")
	f.Float64Var(&o.weights[2], "weight-bandwidth", 1, "bandwidth weight of the weighted model")
	f.BoolVar(&o.jsonOut, "json", false, "print the decision as JSON")
	f.StringVar(&o.plotPath, "plot", "", "write a bar chart of the scores to `FILE` (.svg or .png)")
	return cmd
}

// runScore validates the flags, ranks the nodes, and prints the decision.
func runScore(cmd *cobra.Command, o *scoreOptions) error {
	flags := cmd.Flags()
	cfg, err := o.scoreConfig(flags.Changed)
	if err != nil {
		return err
	}
	if o.plotPath != "" {
		if err := checkPlotPath(o.plotPath); err != nil {
			return err
		}
	}
	var nodes []placement.Node
	switch {
	case o.example && o.nodesPath != "":
		return usageErrorf("--example and --nodes cannot be used together")
	case o.example:
		nodes = placement.ExampleNodes()
		if !flags.Changed("demand") {
			o.demand = placement.ExampleDemand
		}
	case o.nodesPath == "":
		return usageErrorf("no nodes to score: give --nodes FILE or --example")
	case !flags.Changed("demand"):
		return usageErrorf("--demand is required with --nodes")
	}
	for _, d := range []struct {
		flag     string
		v        float64
		positive bool
	}{{"demand", o.demand, true}, {"storage", o.storage, false}, {"bandwidth", o.bandwidth, false}} {
		if err := checkFlagValue(d.flag, d.v, d.positive); err != nil {
			return err
		}
	}
	if o.nodesPath != "" {
		if nodes, err = loadNodes(o.nodesPath, cmd.InOrStdin()); err != nil {
			return err
		}
	}

	p, err := placement.NewPipeline(placement.Config{Score: cfg})
	if err != nil {
		return &usageError{err: err}
	}
	job := placement.Job{
		ID:     "score",
		Demand: placement.Resources{ComputePerHour: o.demand, StorageGB: o.storage, BandwidthGBps: o.bandwidth},
	}
	d, err := p.Rank(job, nodes)
	if err != nil {
		return &usageError{err: err}
	}
	rep := newScoreReport(cfg, job, nodes, &d)

	out := cmd.OutOrStdout()
	if o.jsonOut {
		err = rep.writeJSON(out)
	} else {
		err = rep.writeTable(out)
	}
	if err != nil {
		return fmt.Errorf("write output: %w", err)
	}
	if o.plotPath != "" {
		if err := writeScorePlot(o.plotPath, rep); err != nil {
			return err
		}
		if !o.jsonOut {
			fmt.Fprintf(out, "Chart written to %s\n", o.plotPath)
		}
	}
	if _, ok := d.Winner(); !ok {
		return errors.New("no node can take the demand: " + d.WinnerReason())
	}
	return nil
}

// scoreConfig turns the model flags into a placement.ScoreConfig. changed
// reports whether a flag was set on the command line.
func (o *scoreOptions) scoreConfig(changed func(string) bool) (placement.ScoreConfig, error) {
	weightedFlags := []string{"lambda", "efficiency", "weight-compute", "weight-storage", "weight-bandwidth"}
	var set []string
	for _, f := range weightedFlags {
		if changed(f) {
			set = append(set, "--"+f)
		}
	}
	model, err := placement.ParseModel(o.model)
	if err != nil {
		return placement.ScoreConfig{}, &usageError{err: fmt.Errorf("--model: %w", err)}
	}
	if len(set) > 0 {
		if changed("model") && model != placement.ModelWeighted {
			verb := "is"
			if len(set) > 1 {
				verb = "are"
			}
			return placement.ScoreConfig{}, usageErrorf("%s %s for --model weighted, not --model %s", strings.Join(set, ", "), verb, o.model)
		}
		model = placement.ModelWeighted
	}
	if model == placement.ModelCostEfficiency {
		return placement.ScoreConfig{}, nil
	}
	eff, err := placement.ParseEfficiency(o.efficiency)
	if err != nil {
		return placement.ScoreConfig{}, &usageError{err: fmt.Errorf("--efficiency: %w", err)}
	}
	for i, name := range []string{"weight-compute", "weight-storage", "weight-bandwidth"} {
		if err := checkFlagValue(name, o.weights[i], false); err != nil {
			return placement.ScoreConfig{}, err
		}
	}
	if err := checkFlagValue("lambda", o.lambda, false); err != nil {
		return placement.ScoreConfig{}, err
	}
	return placement.ScoreConfig{
		Model:     placement.ModelWeighted,
		Compute:   placement.Term{Weight: o.weights[0], Efficiency: eff},
		Storage:   placement.Term{Weight: o.weights[1], Efficiency: eff},
		Bandwidth: placement.Term{Weight: o.weights[2], Efficiency: eff},
		Lambda:    o.lambda,
	}, nil
}

// checkFlagValue rejects a flag value that is not finite, or negative, or
// (when positive is set) zero.
func checkFlagValue(flag string, v float64, positive bool) error {
	switch {
	case math.IsNaN(v) || math.IsInf(v, 0):
		return usageErrorf("--%s: must be a finite number, got %v", flag, v)
	case positive && v <= 0:
		return usageErrorf("--%s: must be greater than zero, got %v", flag, v)
	case v < 0:
		return usageErrorf("--%s: must not be negative, got %v", flag, v)
	}
	return nil
}

func checkPlotPath(path string) error {
	switch ext := strings.ToLower(filepath.Ext(path)); ext {
	case ".svg", ".png":
		return nil
	default:
		return usageErrorf("--plot: unsupported file extension %q (want .svg or .png)", ext)
	}
}

// loadNodes reads the node file, or standard input for "-".
func loadNodes(path string, stdin io.Reader) ([]placement.Node, error) {
	if path == "-" {
		return placement.ParseNodes(stdin, "<stdin>")
	}
	return placement.LoadNodes(path)
}

// scoreReport is the decision laid out for output: one row per node, ranked
// nodes first.
type scoreReport struct {
	Demand    demandJSON  `json:"demand"`
	Model     string      `json:"model"`
	Formula   string      `json:"formula"`
	Weighted  *weightJSON `json:"weighted,omitempty"`
	TieBreak  string      `json:"tie_break"`
	Winner    *string     `json:"winner"`
	Reason    string      `json:"reason"`
	Nodes     []nodeRow   `json:"nodes"`
	hasRegion bool
}

type demandJSON struct {
	Compute   float64 `json:"compute"`
	Storage   float64 `json:"storage_gb"`
	Bandwidth float64 `json:"bandwidth_gbs"`
}

type weightJSON struct {
	Efficiency      string  `json:"efficiency"`
	Lambda          float64 `json:"lambda"`
	WeightCompute   float64 `json:"weight_compute"`
	WeightStorage   float64 `json:"weight_storage"`
	WeightBandwidth float64 `json:"weight_bandwidth"`
}

type nodeRow struct {
	Rank         int                   `json:"rank,omitempty"`
	Name         string                `json:"name"`
	Region       string                `json:"region,omitempty"`
	Compute      float64               `json:"compute"`
	StorageGB    float64               `json:"storage_gb"`
	BandwidthGBs float64               `json:"bandwidth_gbs"`
	PricePerHour float64               `json:"price_per_hour"`
	Score        *float64              `json:"score"`
	Components   *placement.Components `json:"components,omitempty"`
	Decision     placement.Outcome     `json:"decision"`
	Filter       string                `json:"filter,omitempty"`
	Reason       string                `json:"reason"`
}

func newScoreReport(cfg placement.ScoreConfig, job placement.Job, nodes []placement.Node, d *placement.Decision) *scoreReport {
	r := &scoreReport{
		Demand:   demandJSON{job.Demand.ComputePerHour, job.Demand.StorageGB, job.Demand.BandwidthGBps},
		Model:    cfg.Model.String(),
		Formula:  "E = C·D/c",
		TieBreak: placement.TieBreakRule,
		Reason:   d.WinnerReason(),
	}
	if cfg.Model == placement.ModelWeighted {
		r.Formula = "w_C·C·f(D) + w_S·S·g(D_S) + w_B·B·h(D_B) − λ·c"
		r.Weighted = &weightJSON{
			Efficiency: cfg.Compute.Efficiency.String(), Lambda: cfg.Lambda,
			WeightCompute: cfg.Compute.Weight, WeightStorage: cfg.Storage.Weight, WeightBandwidth: cfg.Bandwidth.Weight,
		}
	}
	if w, ok := d.Winner(); ok {
		r.Winner = &w.NodeID
	}
	for _, e := range d.Explain() {
		n := &nodes[e.Index]
		row := nodeRow{
			Rank: e.Rank, Name: n.ID, Region: n.Region,
			Compute: n.Total.ComputePerHour, StorageGB: n.Total.StorageGB, BandwidthGBs: n.Total.BandwidthGBps,
			PricePerHour: n.PricePerHour,
			Score:        e.Score, Components: e.Components, Decision: e.Outcome, Reason: e.Reason,
		}
		if e.Outcome == placement.OutcomeRejected {
			row.Filter = e.Filter.String()
		}
		r.hasRegion = r.hasRegion || n.Region != ""
		r.Nodes = append(r.Nodes, row)
	}
	return r
}

func (r *scoreReport) writeJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

func (r *scoreReport) writeTable(w io.Writer) error {
	num := placement.FormatNumber
	fmt.Fprintf(w, "Demand: %s tasks/h", num(r.Demand.Compute))
	if r.Demand.Storage > 0 {
		fmt.Fprintf(w, ", %s GB", num(r.Demand.Storage))
	}
	if r.Demand.Bandwidth > 0 {
		fmt.Fprintf(w, ", %s GB/s", num(r.Demand.Bandwidth))
	}
	fmt.Fprintf(w, "\nModel:  %s, %s", r.Model, r.Formula)
	if r.Weighted != nil {
		fmt.Fprintf(w, " (efficiency %s, λ=%s, weights %s/%s/%s)", r.Weighted.Efficiency, num(r.Weighted.Lambda),
			num(r.Weighted.WeightCompute), num(r.Weighted.WeightStorage), num(r.Weighted.WeightBandwidth))
	}
	fmt.Fprint(w, "\n\n")

	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	header := "RANK\tNODE\t"
	if r.hasRegion {
		header += "REGION\t"
	}
	header += "COMPUTE\tSTORAGE_GB\tBANDWIDTH_GBS\tPRICE_PER_HOUR\tSCORE\tDECISION\tREASON"
	fmt.Fprintln(tw, header)
	for _, n := range r.Nodes {
		rank, score := "-", "-"
		if n.Rank > 0 {
			rank = fmt.Sprint(n.Rank)
		}
		if n.Score != nil {
			score = num(*n.Score)
		}
		decision := n.Decision.String()
		if n.Filter != "" {
			decision += " (" + n.Filter + ")"
		}
		fmt.Fprintf(tw, "%s\t%s\t", rank, n.Name)
		if r.hasRegion {
			region := n.Region
			if region == "" {
				region = "-"
			}
			fmt.Fprintf(tw, "%s\t", region)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", num(n.Compute), num(n.StorageGB), num(n.BandwidthGBs),
			num(n.PricePerHour), score, decision, n.Reason)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if r.Winner != nil {
		fmt.Fprintf(w, "\nChosen: %s\n", *r.Winner)
	} else {
		fmt.Fprintf(w, "\nChosen: none (%s)\n", r.Reason)
	}
	_, err := fmt.Fprintf(w, "Tie-break: %s.\n", r.TieBreak)
	return err
}
