package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/meridian-mesh/meridian/node/api"
	"github.com/meridian-mesh/meridian/placement"
)

// newJobCmd builds `meridian job` and its subcommands.
func newJobCmd() *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:   "job",
		Short: "Submit, inspect, list and cancel jobs",
		Long: `Job talks to a Meridian agent's HTTP API (--addr, or ` + envAddr + `) about jobs.
Any agent will do: it forwards writes to the leader of the job's home region.`,
		Args:                       subcommandArgs,
		RunE:                       func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
		SuggestionsMinimumDistance: 2,
	}
	cf.register(cmd.PersistentFlags())
	cmd.AddCommand(newJobSubmitCmd(&cf), newJobStatusCmd(&cf), newJobListCmd(&cf), newJobCancelCmd(&cf))
	return cmd
}

// specFlags ties each `job submit` flag to the JobSpec field it sets, so that a
// validation error names the flag the user typed.
var specFlags = map[string]string{
	"id":                   "id",
	"origin_region":        "origin",
	"home_region":          "home",
	"demand.compute":       "compute",
	"demand.storage_gb":    "storage-gb",
	"demand.bandwidth_gbs": "bandwidth-gbs",
	"demand.gpus":          "gpus",
	"gpu_type":             "gpu-type",
	"latency_slo_ms":       "slo-ms",
	"max_price_per_hour":   "max-price",
	"priority":             "priority",
	"duration_s":           "duration",
	"driver":               "driver",
	"env":                  "env",
}

type submitOptions struct {
	file     string
	spec     api.JobSpec
	duration time.Duration
	env      []string
}

func newJobSubmitCmd(cf *clientFlags) *cobra.Command {
	var o submitOptions
	cmd := &cobra.Command{
		Use:   "submit (--file FILE | --id ID --origin REGION --compute N [flags]) [-- COMMAND [ARG...]]",
		Short: "Submit a job",
		Long: `Submit sends a job to the agent and prints its status once the job is committed
in its home region's ledger.

The job comes from a JSON file (--file; "-" reads standard input) in the format
of POST /v1/jobs (see docs/api.md), or from flags. The ID is the job's
idempotency key: submitting the same job again changes nothing, and submitting
a different job under an existing ID is refused.

With flags, a command after "--" runs the job with the exec driver.`,
		Example: `  meridian job submit --id train-7 --origin us-east-1 --compute 100 --duration 2h
  meridian job submit --id infer-1 --origin eu-west-1 --compute 400 --gpus 1 --gpu-type H100 --slo-ms 80
  meridian job submit --id etl-3 --origin us-east-1 --compute 10 -- /usr/bin/python3 etl.py --day 2024-01-01
  meridian job submit --file job.json --json`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 && cmd.ArgsLenAtDash() != 0 {
				return usageErrorf("unexpected argument %q: put the job's command after --", args[0])
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			spec, err := o.build(cmd, args)
			if err != nil {
				return err
			}
			s, err := cf.connect(cmd)
			if err != nil {
				return err
			}
			if s.jsonOut {
				return s.raw(cmd, http.MethodPost, "/v1/jobs", nil, spec)
			}
			var (
				st      api.JobStatus
				created bool
			)
			err = s.call(cmd, func(ctx context.Context, c *api.Client) (err error) {
				st, created, err = c.SubmitJob(ctx, spec)
				return err
			})
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if created {
				fmt.Fprintf(w, "Job %q submitted.\n\n", st.ID)
			} else {
				fmt.Fprintf(w, "Job %q already exists with this spec; nothing changed.\n\n", st.ID)
			}
			return writeJobStatus(w, st)
		},
	}
	f := cmd.Flags()
	f.StringVarP(&o.file, "file", "f", "", "read the job from a JSON `FILE` (- for standard input)")
	f.StringVar(&o.spec.ID, "id", "", "the job's `ID` and idempotency key ([A-Za-z0-9._-], at most 128)")
	f.StringVar(&o.spec.OriginRegion, "origin", "", "the `region` where the job's users are")
	f.StringVar(&o.spec.HomeRegion, "home", "", "the `region` whose ledger owns the job (default: the origin)")
	f.Float64Var(&o.spec.Demand.ComputePerHour, "compute", 0, "compute demand in `tasks/hour` (required, > 0)")
	f.Float64Var(&o.spec.Demand.StorageGB, "storage-gb", 0, "storage demand in `GB`")
	f.Float64Var(&o.spec.Demand.BandwidthGBps, "bandwidth-gbs", 0, "bandwidth demand in `GB/s`")
	f.IntVar(&o.spec.Demand.GPUs, "gpus", 0, "number of GPUs")
	f.StringVar(&o.spec.GPUType, "gpu-type", "", "run only on nodes with this GPU `model` (needs --gpus)")
	f.Int64Var(&o.spec.LatencySLOMs, "slo-ms", 0, "highest RTT from the origin region, in `ms` (0: unbounded)")
	f.Float64Var(&o.spec.MaxPricePerHour, "max-price", 0, "highest node price in `$/hour` (0: no limit)")
	f.DurationVar(&o.duration, "duration", 0, "how long the job runs, whole seconds (0: until cancelled)")
	f.IntVar(&o.spec.Priority, "priority", 0, fmt.Sprintf("priority %d-%d, higher first (default %d)", api.MinPriority, api.MaxPriority, api.DefaultPriority))
	f.StringVar(&o.spec.Driver, "driver", "", `task driver: "sim" or "exec" (default "sim", or "exec" with a command)`)
	f.StringArrayVar(&o.env, "env", nil, "`KEY=VALUE` in the exec task's environment (repeatable)")
	return cmd
}

// build returns the validated spec from --file or the flags.
func (o *submitOptions) build(cmd *cobra.Command, args []string) (api.JobSpec, error) {
	if o.file != "" {
		var set []string
		cmd.Flags().Visit(func(fl *pflag.Flag) {
			if slices.Contains(slices.Collect(maps.Values(specFlags)), fl.Name) {
				set = append(set, "--"+fl.Name)
			}
		})
		if len(set) > 0 {
			slices.Sort(set)
			return api.JobSpec{}, usageErrorf("--file cannot be combined with %s: put them in the file", strings.Join(set, ", "))
		}
		if len(args) > 0 {
			return api.JobSpec{}, usageErrorf("--file cannot be combined with a command after --: put it in the file's \"command\"")
		}
		return readSpecFile(o.file, cmd.InOrStdin())
	}
	spec := o.spec
	if o.duration < 0 || o.duration%time.Second != 0 {
		return api.JobSpec{}, usageErrorf("--duration: must be zero or a positive whole number of seconds, got %v", o.duration)
	}
	spec.DurationS = int64(o.duration / time.Second)
	if len(args) > 0 {
		spec.Command = args
		if spec.Driver == "" {
			spec.Driver = api.DriverExec
		}
	}
	for _, kv := range o.env {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return api.JobSpec{}, usageErrorf("--env %q: must be KEY=VALUE", kv)
		}
		if spec.Env == nil {
			spec.Env = make(map[string]string)
		}
		if _, dup := spec.Env[k]; dup {
			return api.JobSpec{}, usageErrorf("--env: %s is set twice", k)
		}
		spec.Env[k] = v
	}
	if spec.Driver == api.DriverExec && len(spec.Command) == 0 {
		return api.JobSpec{}, usageErrorf("--driver exec needs the job's command after --, as in: -- /usr/bin/python3 train.py")
	}
	if err := spec.Validate(); err != nil {
		return api.JobSpec{}, flagError(err)
	}
	return spec, nil
}

// flagError turns a validation error into a usage error that names the
// flag that set the field at fault.
func flagError(err error) error {
	var fe *api.FieldError
	if !errors.As(err, &fe) {
		return err
	}
	field := fe.Field
	switch name, ok := specFlags[field]; {
	case ok:
		field = "--" + name
	case strings.HasPrefix(field, "env."):
		field = "--env " + strings.TrimPrefix(field, "env.")
	case strings.HasPrefix(field, "command"):
		field = "the command after --" + strings.TrimPrefix(field, "command")
	}
	return usageErrorf("%s: %s", field, fe.Message)
}

// fieldMessage is a validation error as "field: message", without the
// "invalid request" prefix that suits an API caller but not a file's author.
func fieldMessage(err error) string {
	var fe *api.FieldError
	if errors.As(err, &fe) && fe.Field != "" {
		return fe.Field + ": " + fe.Message
	}
	if errors.As(err, &fe) {
		return fe.Message
	}
	return err.Error()
}

// readSpecFile reads and validates a JSON job spec; errors name the file
// and the field.
func readSpecFile(path string, stdin io.Reader) (api.JobSpec, error) {
	var (
		data []byte
		err  error
	)
	name := path
	if path == "-" {
		name = "standard input"
		data, err = io.ReadAll(io.LimitReader(stdin, api.DefaultMaxBodyBytes+1))
	} else {
		var f *os.File
		if f, err = os.Open(path); err == nil {
			data, err = io.ReadAll(io.LimitReader(f, api.DefaultMaxBodyBytes+1))
			f.Close()
		}
	}
	if err != nil {
		return api.JobSpec{}, fmt.Errorf("--file: %w", err)
	}
	if len(data) > api.DefaultMaxBodyBytes {
		return api.JobSpec{}, usageErrorf("%s: larger than the API's limit of %d bytes", name, api.DefaultMaxBodyBytes)
	}
	spec, err := api.DecodeJobSpec(data)
	if err == nil {
		err = spec.Validate()
	}
	if err != nil {
		return api.JobSpec{}, usageErrorf("%s: %s", name, fieldMessage(err))
	}
	return spec, nil
}

func newJobStatusCmd(cf *clientFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "status ID",
		Short: "Show a job's state, placement and allocations",
		Args:  exactlyOneID,
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := cf.connect(cmd)
			if err != nil {
				return err
			}
			id := args[0]
			if s.jsonOut {
				return s.raw(cmd, http.MethodGet, "/v1/jobs/"+id, nil, nil)
			}
			var (
				st     api.JobStatus
				allocs []api.Allocation
			)
			err = s.call(cmd, func(ctx context.Context, c *api.Client) error {
				var err error
				if st, err = c.Job(ctx, id); err != nil {
					return err
				}
				allocs, err = c.Allocations(ctx, api.AllocationFilter{JobID: id})
				return err
			})
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if err := writeJobStatus(w, st); err != nil {
				return err
			}
			fmt.Fprintln(w)
			if len(allocs) == 0 {
				_, err := fmt.Fprintln(w, "No allocations.")
				return err
			}
			fmt.Fprintln(w, "Allocations")
			tw := newTable(w)
			writeRow(tw, "ID", "NODE", "REGION", "EPOCH", "STATE", "DRIVER", "COST/H", "EXIT", "CREATED")
			for _, a := range allocs {
				writeRow(tw, a.ID, a.Node, a.Region, strconv.FormatUint(a.Epoch, 10), string(a.State),
					orDash(a.Driver), usd(a.CostPerHour), exitStatus(a.ExitCode), when(a.CreatedAt))
			}
			return tw.Flush()
		},
	}
}

// exitStatus shows an optional exit status.
func exitStatus(c *int) string {
	if c == nil {
		return "-"
	}
	return strconv.Itoa(*c)
}

// writeJobStatus prints a job as aligned "key = value" lines.
func writeJobStatus(w io.Writer, st api.JobStatus) error {
	tw := newTable(w)
	kv := func(k, v string) { writeRow(tw, k, "= "+v) }
	kv("ID", st.ID)
	kv("State", string(st.State))
	if st.Reason != "" {
		kv("Reason", st.Reason)
	}
	kv("Origin region", orDash(st.OriginRegion))
	kv("Home region", orDash(st.HomeRegion))
	kv("Region", orDash(st.Region))
	kv("Node", orDash(st.Node))
	kv("Allocation", orDash(st.AllocationID))
	kv("Epoch", strconv.FormatUint(st.Epoch, 10))
	kv("Attempts", strconv.Itoa(st.Attempts))
	kv("Cost/hour", usd(st.CostPerHour))
	if st.ExitCode != nil {
		kv("Exit code", strconv.Itoa(*st.ExitCode))
	}
	if sp := st.Spec; sp != nil {
		kv("Demand", demandString(sp.Demand))
		kv("Driver", orDash(sp.Driver))
		if len(sp.Command) > 0 {
			kv("Command", strings.Join(quoteArgs(sp.Command), " "))
		}
		if sp.DurationS > 0 {
			kv("Duration", (time.Duration(sp.DurationS) * time.Second).String())
		} else {
			kv("Duration", "until cancelled")
		}
	}
	kv("Submitted", when(st.SubmittedAt))
	kv("Updated", when(st.UpdatedAt))
	return tw.Flush()
}

func demandString(d placement.Resources) string {
	s := fmt.Sprintf("%s tasks/h, %s GB, %s GB/s", qty(d.ComputePerHour), qty(d.StorageGB), qty(d.BandwidthGBps))
	if d.GPUs > 0 {
		s += fmt.Sprintf(", %d GPUs", d.GPUs)
	}
	return s
}

// quoteArgs quotes the arguments a shell would split.
func quoteArgs(args []string) []string {
	out := make([]string, len(args))
	for i, a := range args {
		if a == "" || strings.ContainsAny(a, " \t\n'\"\\$") {
			a = strconv.Quote(a)
		}
		out[i] = a
	}
	return out
}

func newJobListCmd(cf *clientFlags) *cobra.Command {
	var f api.JobFilter
	var state string
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List jobs, a page at a time",
		Example: `  meridian job list
  meridian job list --state running --region eu-west-1
  meridian job list --limit 50 --cursor train-7`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f.State = api.JobState(state)
			if state != "" && !f.State.Valid() {
				names := make([]string, len(api.JobStates))
				for i, s := range api.JobStates {
					names[i] = string(s)
				}
				return usageErrorf("--state: must be one of %s, got %q", strings.Join(names, ", "), state)
			}
			if cmd.Flags().Changed("limit") && (f.Limit < 1 || f.Limit > api.MaxJobsLimit) {
				return usageErrorf("--limit: must be between 1 and %d, got %d", api.MaxJobsLimit, f.Limit)
			}
			s, err := cf.connect(cmd)
			if err != nil {
				return err
			}
			if s.jsonOut {
				return s.raw(cmd, http.MethodGet, "/v1/jobs", api.JobsQuery(f), nil)
			}
			var list api.JobList
			err = s.call(cmd, func(ctx context.Context, c *api.Client) (err error) {
				list, err = c.Jobs(ctx, f)
				return err
			})
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if len(list.Jobs) == 0 {
				_, err := fmt.Fprintln(w, "No jobs.")
				return err
			}
			tw := newTable(w)
			writeRow(tw, "ID", "STATE", "HOME", "REGION", "NODE", "COST/H", "SUBMITTED")
			for _, j := range list.Jobs {
				writeRow(tw, j.ID, string(j.State), orDash(j.HomeRegion), orDash(j.Region), orDash(j.Node), usd(j.CostPerHour), when(j.SubmittedAt))
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			if list.NextCursor != "" {
				fmt.Fprintf(cmd.ErrOrStderr(), "More jobs: %s --cursor %s\n", cmd.CommandPath(), list.NextCursor)
			}
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&state, "state", "", "only jobs in this `state` (pending, placed, traded, running, completed, failed, cancelled)")
	fl.StringVar(&f.Region, "region", "", "only jobs whose home region or running region is `region`")
	fl.IntVar(&f.Limit, "limit", 0, fmt.Sprintf("page size, 1-%d (default %d)", api.MaxJobsLimit, api.DefaultJobsLimit))
	fl.StringVar(&f.Cursor, "cursor", "", "continue a listing from this `cursor`")
	return cmd
}

func newJobCancelCmd(cf *clientFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "cancel ID",
		Short: "Cancel a job",
		Long:  "Cancel stops the job's task and releases its allocation. Cancelling a job that has already ended changes nothing.",
		Args:  exactlyOneID,
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := cf.connect(cmd)
			if err != nil {
				return err
			}
			if s.jsonOut {
				return s.raw(cmd, http.MethodDelete, "/v1/jobs/"+args[0], nil, nil)
			}
			var st api.JobStatus
			err = s.call(cmd, func(ctx context.Context, c *api.Client) (err error) {
				st, err = c.CancelJob(ctx, args[0])
				return err
			})
			if err != nil {
				return err
			}
			if st.State == api.JobCancelled {
				_, err = fmt.Fprintf(cmd.OutOrStdout(), "Job %q cancelled.\n", st.ID)
			} else {
				_, err = fmt.Fprintf(cmd.OutOrStdout(), "Job %q had already ended: %s.\n", st.ID, st.State)
			}
			return err
		},
	}
}
