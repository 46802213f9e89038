package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/meridian-mesh/meridian/netsim"
	"github.com/meridian-mesh/meridian/node/api"
	"github.com/meridian-mesh/meridian/node/simcluster"
	"github.com/meridian-mesh/meridian/placement/workload"
)

// spreadOrder is the order regions are picked in when --regions is a
// count: one per continent first, so even a small demo spans the globe.
var spreadOrder = []string{
	"us-east-1", "eu-west-1", "ap-northeast-1", "us-west-2", "ap-southeast-2", "sa-east-1",
	"eu-central-1", "ap-south-1", "ca-central-1", "ap-southeast-1", "eu-north-1", "af-south-1",
	"me-south-1", "us-east-2", "eu-west-2", "ap-northeast-2", "us-west-1", "eu-west-3",
	"ap-east-1", "ap-northeast-3", "eu-south-1",
}

type netsimOptions struct {
	topology       string
	regions        string
	nodesPerRegion int
	workload       string
	duration       time.Duration
	speed          float64
	seed           int64
	httpBasePort   int
	control        string
	summaryJSON    string
	load           float64
	market         bool
	logLevel       string
	jobSeconds     int
	// start is the workload time the run begins at, as given ("" for the
	// current hour); --seed reproduces a run only with the same start,
	// since diurnal demand depends on each region's local time.
	start string
	// progressEvery is how often the progress line is printed; 0 for 1 s
	// on a terminal (where the line redraws itself), 10 s elsewhere (a log
	// file gets one line per interval).
	progressEvery time.Duration
}

func newNetsimCmd() *cobra.Command {
	o := netsimOptions{
		regions: "6", nodesPerRegion: 5, workload: "diurnal", duration: 3 * time.Minute,
		speed: 240, seed: 1, httpBasePort: 4646, control: "127.0.0.1:4645", load: 0.8, market: true,
		logLevel: "warn", jobSeconds: 10,
	}
	cmd := &cobra.Command{
		Use:   "netsim",
		Short: "Run a whole Meridian mesh on the simulated WAN, in this process, with demand flowing",
		Long: `Run a local Meridian cluster over netsim, the simulated WAN with real inter-region
latencies: real gossip, Raft and libp2p on every node, demand following the sun
in every region, cross-region trades when a region runs out.

Each node's HTTP API listens on 127.0.0.1 (ports from --http-base-port up); the
addresses are printed at start. While it runs, inject faults from another
terminal:

  meridian netsim partition eu-west-1
  meridian netsim isolate us-east-1-3
  meridian netsim heal

A summary is printed at the end (and written with --summary-json).`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runNetsim(cmd.Context(), cmd.OutOrStdout(), cmd.ErrOrStderr(), o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.topology, "topology", o.topology, "topology CSV (from,to,rtt_ms); default: the embedded world topology")
	f.StringVar(&o.regions, "regions", o.regions, "regions: a comma-separated list, or a count picked across the globe")
	f.IntVar(&o.nodesPerRegion, "nodes-per-region", o.nodesPerRegion, "nodes per region: up to 3 servers, the rest workers with one p4d.24xlarge each")
	f.StringVar(&o.workload, "workload", o.workload, "demand: diurnal (synthetic, follows each region's local time), trace (the embedded Azure LLM trace) or a trace CSV file")
	f.DurationVar(&o.duration, "duration", o.duration, "how long to run")
	f.Float64Var(&o.speed, "speed", o.speed, "time compression: workload seconds per real second")
	f.Int64Var(&o.seed, "seed", o.seed, "seed of the network and the workload")
	f.IntVar(&o.httpBasePort, "http-base-port", o.httpBasePort, "first node's HTTP port on 127.0.0.1")
	f.StringVar(&o.control, "control", o.control, "control API address (fault commands)")
	f.StringVar(&o.summaryJSON, "summary-json", o.summaryJSON, "write the summary as JSON to this file")
	f.Float64Var(&o.load, "load", o.load, "mean demand of a region as a fraction of its capacity (peaks go higher)")
	f.BoolVar(&o.market, "market", o.market, "let regions trade capacity")
	f.StringVar(&o.logLevel, "log-level", o.logLevel, "agents' log level: debug, info, warn, error")
	f.IntVar(&o.jobSeconds, "job-seconds", o.jobSeconds, "real seconds each batch of demand runs for")
	f.StringVar(&o.start, "start", o.start, "workload time to start at, UTC: RFC 3339 (2026-11-29T03:00:00Z) or HH:MM today; default: the current hour (with --seed, the same start reproduces a run)")
	// Hidden: a test watches the progress line without waiting 10 s for
	// it; an operator has no use for it.
	f.DurationVar(&o.progressEvery, "progress-interval", o.progressEvery, "how often to print the progress line (0: 1s on a terminal, 10s otherwise)")
	_ = f.MarkHidden("progress-interval")
	cmd.AddCommand(newNetsimFaultCmd("partition", "REGION", "Cut a region off from every other region"),
		newNetsimFaultCmd("isolate", "NODE", "Cut one node off from every other node"),
		newNetsimFaultCmd("crash", "NODE", "Crash a node (it keeps its data dir)"),
		newNetsimFaultCmd("restart", "NODE", "Restart a crashed node"),
		newNetsimFaultCmd("heal", "", "Remove every partition and cut"))
	return cmd
}

// pickRegions resolves --regions against the topology.
func pickRegions(topo *netsim.Topology, spec string) ([]string, error) {
	all := topo.Regions()
	if n, err := strconv.Atoi(spec); err == nil {
		if n < 1 || n > len(all) {
			return nil, usageErrorf("--regions %d: the topology has %d regions", n, len(all))
		}
		var out []string
		for _, r := range spreadOrder {
			if len(out) < n && slices.Contains(all, r) {
				out = append(out, r)
			}
		}
		for _, r := range all {
			if len(out) < n && !slices.Contains(out, r) {
				out = append(out, r)
			}
		}
		return out, nil
	}
	var out []string
	for _, r := range strings.Split(spec, ",") {
		r = strings.TrimSpace(r)
		if !slices.Contains(all, r) {
			return nil, usageErrorf("--regions: %q is not a region of the topology (have %s)", r, strings.Join(all, ", "))
		}
		if slices.Contains(out, r) {
			return nil, usageErrorf("--regions: %q given twice", r)
		}
		out = append(out, r)
	}
	return out, nil
}

func (o netsimOptions) check() error {
	switch {
	case o.nodesPerRegion < 1 || o.nodesPerRegion > 20:
		return usageErrorf("--nodes-per-region %d: want 1 to 20", o.nodesPerRegion)
	case o.duration <= 0:
		return usageErrorf("--duration %v: must be positive", o.duration)
	case !(o.speed >= 1) || o.speed > 1e6:
		return usageErrorf("--speed %v: want 1 to 1000000", o.speed)
	case o.httpBasePort < 1 || o.httpBasePort > 65000:
		return usageErrorf("--http-base-port %d: want 1 to 65000", o.httpBasePort)
	case !(o.load > 0) || o.load > 10:
		return usageErrorf("--load %v: want a positive fraction up to 10", o.load)
	case o.jobSeconds < 1 || o.jobSeconds > 3600:
		return usageErrorf("--job-seconds %d: want 1 to 3600", o.jobSeconds)
	case o.progressEvery < 0:
		return usageErrorf("--progress-interval %v: must not be negative", o.progressEvery)
	}
	if _, err := o.startTime(time.Now()); err != nil {
		return err
	}
	return nil
}

// startTime is the workload time the run begins at: --start, or the hour
// now falls in.
func (o netsimOptions) startTime(now time.Time) (time.Time, error) {
	now = now.UTC()
	if o.start == "" {
		return now.Truncate(time.Hour), nil
	}
	if t, err := time.Parse(time.RFC3339, o.start); err == nil {
		return t.UTC(), nil
	}
	if t, err := time.Parse("15:04", o.start); err == nil {
		day := now.Truncate(24 * time.Hour)
		return day.Add(time.Duration(t.Hour())*time.Hour + time.Duration(t.Minute())*time.Minute), nil
	}
	return time.Time{}, usageErrorf("--start %q: want RFC 3339 (2026-11-29T03:00:00Z) or HH:MM (UTC)", o.start)
}

// netsimSummary is what a run reports at its end.
type netsimSummary struct {
	Regions       []string                 `json:"regions"`
	Nodes         int                      `json:"nodes"`
	DurationS     float64                  `json:"duration_s"`
	WorkloadHours float64                  `json:"workload_hours"`
	Submitted     int64                    `json:"jobs_submitted"`
	Acked         int64                    `json:"jobs_acked"`
	SubmitErrors  int64                    `json:"submit_errors"`
	PlacedLocal   int                      `json:"placed_locally"`
	Traded        int                      `json:"traded"`
	Pending       int                      `json:"pending"`
	CostUSD       float64                  `json:"cost_usd"`
	SLOPct        float64                  `json:"slo_pct"`
	Faults        []string                 `json:"faults"`
	PerRegion     []simcluster.RegionStats `json:"per_region"`
	Jobs          map[string]int           `json:"jobs_by_state"`
}

func runNetsim(ctx context.Context, stdout, stderr io.Writer, o netsimOptions) error {
	if err := o.check(); err != nil {
		return err
	}
	topo := netsim.WorldTopology()
	if o.topology != "" {
		t, err := netsim.LoadTopology(o.topology)
		if err != nil {
			return &usageError{err: fmt.Errorf("--topology: %w", err)}
		}
		topo = t
	}
	regions, err := pickRegions(topo, o.regions)
	if err != nil {
		return err
	}
	start, err := o.startTime(time.Now())
	if err != nil {
		return err
	}
	wcfg, err := workload.DefaultConfig(start, regions...)
	if err != nil {
		return &usageError{err: fmt.Errorf("--regions: %w", err)}
	}
	if err := wcfg.SetWorkload(o.workload); err != nil {
		return &usageError{err: fmt.Errorf("--workload: %w", err)}
	}
	// Open the summary file now, so that a path it cannot be written to
	// is refused before the run rather than reported after it. It is
	// filled at the end; until then it keeps what it held.
	var summaryFile *os.File
	if o.summaryJSON != "" {
		_, statErr := os.Stat(o.summaryJSON)
		f, err := os.OpenFile(o.summaryJSON, os.O_WRONLY|os.O_CREATE, 0o644)
		if err != nil {
			return &usageError{err: fmt.Errorf("--summary-json: %w", err)}
		}
		summaryFile = f
		defer func() {
			if summaryFile == nil {
				return // written
			}
			summaryFile.Close()
			// A file this run created and never filled is not a summary.
			if errors.Is(statErr, fs.ErrNotExist) {
				os.Remove(o.summaryJSON)
			}
		}()
	}
	if ctx == nil {
		ctx = context.Background()
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()

	var level slog.LevelVar
	if err := level.UnmarshalText([]byte(o.logLevel)); err != nil {
		return usageErrorf("--log-level %q: want debug, info, warn or error", o.logLevel)
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: &level}))

	servers := min(3, o.nodesPerRegion)
	workers := o.nodesPerRegion - servers
	caps := map[string]simcluster.NodeCapacity{}
	for _, r := range regions {
		c, err := simcluster.DefaultCapacity(r)
		if err != nil {
			return err
		}
		caps[r] = c
	}
	capacity := func(region string, ordinal int) simcluster.NodeCapacity {
		if workers > 0 && ordinal < servers {
			return simcluster.NodeCapacity{}
		}
		return caps[region]
	}
	capNodes := max(workers, servers*btoi(workers == 0))
	regionCapacity := float64(capNodes) * caps[regions[0]].Resources.ComputePerHour

	fmt.Fprintf(stderr, "starting %d regions × %d nodes on netsim (%s)...\n", len(regions), o.nodesPerRegion, strings.Join(regions, ", "))
	simcluster.TuneGC()
	c, err := simcluster.Start(ctx, simcluster.Config{
		Topology: topo, Regions: regions, Servers: servers, Workers: workers,
		Seed: o.seed, Capacity: capacity, Market: o.market, Logger: logger, BridgeMetrics: true,
	})
	if err != nil {
		return err
	}
	defer c.Close()

	// Operator-facing APIs: one real loopback port per node, routed to
	// whichever agent runs under that name (a restarted node is a new one).
	var httpServers []*http.Server
	defer func() {
		for _, s := range httpServers {
			s.Close()
		}
	}()
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tREGION\tROLE\tAPI")
	for i, a := range c.Agents() {
		name := a.Name()
		addr := fmt.Sprintf("127.0.0.1:%d", o.httpBasePort+i)
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("node %s: http listener: %w (choose another --http-base-port)", name, err)
		}
		srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			ag, ok := c.Agent(name)
			if !ok {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusServiceUnavailable)
				_ = json.NewEncoder(w).Encode(api.ErrorResponse{Error: api.CodeUnavailable, Message: "node " + name + " is down"})
				return
			}
			ag.Handler().ServeHTTP(w, r)
		})}
		httpServers = append(httpServers, srv)
		go srv.Serve(ln)
		role := "worker"
		if a.IsServer() {
			role = "server"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\thttp://%s\n", name, a.Region(), role, addr)
	}
	tw.Flush()

	var faultMu sync.Mutex
	var faults []string
	ctl, err := startControl(o.control, c, func(s string) {
		faultMu.Lock()
		faults = append(faults, time.Now().Format(time.TimeOnly)+" "+s)
		faultMu.Unlock()
		fmt.Fprintf(stderr, "\nfault: %s\n", s)
	})
	if err != nil {
		return err
	}
	defer ctl.Close()
	fmt.Fprintf(stdout, "control API on http://%s (meridian netsim partition|isolate|crash|restart|heal)\n", o.control)

	readyCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	err = c.WaitReady(readyCtx)
	cancel()
	if err != nil {
		return err
	}
	fmt.Fprintf(stderr, "mesh ready; running %v of demand at %v× (%s)\n", o.duration, o.speed, o.workload)

	realBlock := time.Duration(o.jobSeconds) * time.Second
	batching := simcluster.Batching{
		Block:         time.Duration(float64(realBlock) * o.speed),
		RealDuration:  realBlock,
		MaxJobCompute: regionCapacity / float64(max(capNodes, 1)) / 8,
	}
	probe, err := workload.NewGenerator(wcfg, rand.New(rand.NewPCG(uint64(o.seed), 1)))
	if err != nil {
		return err
	}
	if batching.Scale, err = simcluster.ScaleFor(probe, o.load, regionCapacity); err != nil {
		return err
	}
	gen, err := workload.NewGenerator(wcfg, rand.New(rand.NewPCG(uint64(o.seed), 2)))
	if err != nil {
		return err
	}

	var submitted, acked, submitErrs atomic.Int64
	var inflight sync.WaitGroup
	sem := make(chan struct{}, 64)
	submit := func(spec api.JobSpec) {
		var entries []string
		for _, a := range c.Agents() {
			if a.Region() == spec.OriginRegion {
				entries = append(entries, a.Name())
			}
		}
		if len(entries) == 0 {
			submitErrs.Add(1)
			return
		}
		name := entries[int(submitted.Load())%len(entries)]
		submitted.Add(1)
		sem <- struct{}{}
		inflight.Add(1)
		go func() {
			defer inflight.Done()
			defer func() { <-sem }()
			a, ok := c.Agent(name)
			if !ok {
				submitErrs.Add(1)
				return
			}
			sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			if _, _, err := a.SubmitJob(sctx, spec); err != nil {
				submitErrs.Add(1)
				logger.Debug("submit failed", "job", spec.ID, "err", err)
				return
			}
			acked.Add(1)
		}()
	}

	interactive := isTerminal(stderr)
	began := time.Now()
	cost := costMeter{speed: o.speed}
	cost.sample(began, 0) // nothing is placed yet
	// meter samples what the live allocations cost now and returns the
	// stats it read.
	meter := func() simcluster.Stats {
		st := c.Stats()
		_, _, _, _, perHour, _ := st.Totals()
		cost.sample(time.Now(), perHour)
		return st
	}
	progress := func(final bool) {
		st := meter()
		now := time.Now()
		_, local, traded, pending, perHour, slo := st.Totals()
		wl := start.Add(time.Duration(float64(now.Sub(began)) * o.speed))
		line := fmt.Sprintf("[%s] workload %s UTC  submitted %d  placed locally %d  traded %d  pending %d  cost $%.0f/h  SLO %.1f%%",
			now.Sub(began).Truncate(time.Second), wl.Format("15:04"), submitted.Load(), local, traded, pending, perHour, slo)
		switch {
		case interactive && !final:
			fmt.Fprintf(stderr, "\r\033[K%s", line)
		case interactive:
			fmt.Fprintf(stderr, "\r\033[K%s\n", line)
		default:
			fmt.Fprintln(stderr, line)
		}
	}
	blockTick := time.NewTicker(realBlock)
	defer blockTick.Stop()
	every := o.progressEvery
	switch {
	case every > 0:
	case interactive:
		every = time.Second
	default:
		every = 10 * time.Second
	}
	progTick := time.NewTicker(every)
	defer progTick.Stop()
	// The cost is sampled every second whatever the progress interval, so
	// that the total follows allocations that start and end between lines.
	costTick := time.NewTicker(time.Second)
	defer costTick.Stop()
	end := time.NewTimer(o.duration)
	defer end.Stop()
	block := 0
	feed := func() {
		from := start.Add(time.Duration(block) * batching.Block)
		for _, spec := range batching.Batch(gen.Between(from, from.Add(batching.Block)), block, "d") {
			submit(spec)
		}
		block++
	}
	feed()
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-end.C:
			break loop
		case <-blockTick.C:
			feed()
		case <-progTick.C:
			progress(false)
		case <-costTick.C:
			meter()
		}
	}
	// The final line reads the mesh once more: the cost counts the
	// allocations still running up to the end of the run.
	progress(true)
	inflight.Wait()

	st := c.Stats()
	_, local, traded, pending, _, slo := st.Totals()
	sum := netsimSummary{
		Regions: regions, Nodes: len(regions) * o.nodesPerRegion,
		DurationS: time.Since(began).Seconds(), WorkloadHours: time.Since(began).Hours() * o.speed,
		Submitted: submitted.Load(), Acked: acked.Load(), SubmitErrors: submitErrs.Load(),
		PlacedLocal: local, Traded: traded, Pending: pending, CostUSD: cost.total, SLOPct: slo,
		PerRegion: st.Regions, Jobs: map[string]int{},
	}
	faultMu.Lock()
	sum.Faults = slices.Clone(faults)
	faultMu.Unlock()
	for _, r := range st.Regions {
		for s, n := range r.Jobs {
			sum.Jobs[s] += n
		}
	}
	// Stop the mesh before the summary: what the agents log while they
	// shut down (calls cut short, peers gone) is expected, not news.
	level.Set(slog.LevelError + 1)
	c.Close()
	printSummary(stdout, sum)
	if f := summaryFile; f != nil {
		summaryFile = nil
		if err := writeSummaryJSON(f, sum); err != nil {
			return fmt.Errorf("--summary-json %s: %w", o.summaryJSON, err)
		}
	}
	if errors.Is(ctx.Err(), context.Canceled) {
		fmt.Fprintln(stderr, "interrupted")
	}
	return nil
}

// writeSummaryJSON replaces f's content with the summary and closes f.
func writeSummaryJSON(f *os.File, sum netsimSummary) error {
	b, err := json.MarshalIndent(sum, "", "  ")
	if err == nil {
		err = f.Truncate(0)
	}
	if err == nil {
		_, err = f.WriteAt(append(b, '\n'), 0)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// costMeter integrates the cost per hour of the live allocations, sampled
// now and then, into dollars of workload time. Between two samples the
// rate is taken to change linearly (the trapezoid rule): an allocation
// seen running at the last sample is counted up to it, as is one that
// started since the one before, at half its rate for that stretch.
type costMeter struct {
	speed  float64 // workload seconds per real second
	total  float64 // US dollars so far
	at     time.Time
	rate   float64 // $/h at the last sample
	primed bool
}

// sample records that the live allocations cost perHour at t.
func (m *costMeter) sample(t time.Time, perHour float64) {
	if m.primed && t.After(m.at) {
		m.total += (m.rate + perHour) / 2 * t.Sub(m.at).Hours() * m.speed
	}
	if !m.primed || t.After(m.at) {
		m.at, m.rate, m.primed = t, perHour, true
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

func printSummary(w io.Writer, s netsimSummary) {
	fmt.Fprintf(w, "\nsummary: %d regions, %d nodes, %.0f s real = %.1f h of workload\n", len(s.Regions), s.Nodes, s.DurationS, s.WorkloadHours)
	fmt.Fprintf(w, "  jobs submitted %d, acknowledged %d, submit errors %d\n", s.Submitted, s.Acked, s.SubmitErrors)
	fmt.Fprintf(w, "  placed locally %d, traded to other regions %d, still pending %d\n", s.PlacedLocal, s.Traded, s.Pending)
	fmt.Fprintf(w, "  cost $%.2f (workload time), SLO attainment %.1f%%\n", s.CostUSD, s.SLOPct)
	if len(s.Faults) > 0 {
		fmt.Fprintf(w, "  faults: %s\n", strings.Join(s.Faults, "; "))
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "REGION\tLEADER\tJOBS\tTRADED AWAY\tNOW SERVING FOR OTHERS\tUTILIZATION\tCOST/H")
	for _, r := range s.PerRegion {
		n := 0
		for _, c := range r.Jobs {
			n += c
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%.0f%%\t$%.0f\n", r.Region, r.Leader, n, r.Traded, r.ServedForOthers, 100*r.Utilization, r.CostPerHour)
	}
	tw.Flush()
}

// startControl serves the fault API of a running netsim cluster.
func startControl(addr string, c *simcluster.Cluster, onFault func(string)) (io.Closer, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--control %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	n := c.Network()
	reply := func(w http.ResponseWriter, err error, what string) {
		w.Header().Set("Content-Type", "application/json")
		if err != nil {
			w.WriteHeader(http.StatusBadRequest)
			_ = json.NewEncoder(w).Encode(api.ErrorResponse{Error: api.CodeInvalid, Message: err.Error()})
			return
		}
		onFault(what)
		_ = json.NewEncoder(w).Encode(map[string]string{"ok": what})
	}
	mux.HandleFunc("POST /v1/partition/{region}", func(w http.ResponseWriter, r *http.Request) {
		region := r.PathValue("region")
		if !slices.Contains(c.Regions(), region) {
			reply(w, fmt.Errorf("region %q is not in the cluster (have %s)", region, strings.Join(c.Regions(), ", ")), "")
			return
		}
		reply(w, n.Apply(netsim.Fault{Kind: netsim.FaultPartition, Groups: [][]string{{region}}}), "partition "+region)
	})
	mux.HandleFunc("POST /v1/isolate/{node}", func(w http.ResponseWriter, r *http.Request) {
		reply(w, n.Apply(netsim.Fault{Kind: netsim.FaultIsolate, A: r.PathValue("node")}), "isolate "+r.PathValue("node"))
	})
	mux.HandleFunc("POST /v1/crash/{node}", func(w http.ResponseWriter, r *http.Request) {
		reply(w, c.Crash(r.PathValue("node")), "crash "+r.PathValue("node"))
	})
	mux.HandleFunc("POST /v1/restart/{node}", func(w http.ResponseWriter, r *http.Request) {
		reply(w, c.Restart(r.Context(), r.PathValue("node")), "restart "+r.PathValue("node"))
	})
	mux.HandleFunc("POST /v1/heal", func(w http.ResponseWriter, r *http.Request) {
		n.Heal()
		reply(w, nil, "heal")
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	return srv, nil
}

// newNetsimFaultCmd is a client of a running netsim's control API.
func newNetsimFaultCmd(verb, arg, short string) *cobra.Command {
	control := "127.0.0.1:4645"
	use := verb
	if arg != "" {
		use += " " + arg
	}
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		Args: func(cmd *cobra.Command, args []string) error {
			want := btoi(arg != "")
			if len(args) != want {
				return usageErrorf("%s takes %d argument(s), got %d", cmd.CommandPath(), want, len(args))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			path := "/v1/" + verb
			if len(args) == 1 {
				path += "/" + args[0]
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+control+path, nil)
			if err != nil {
				return err
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return fmt.Errorf("is meridian netsim running with --control %s? %w", control, err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
			if resp.StatusCode != http.StatusOK {
				var er api.ErrorResponse
				if json.Unmarshal(body, &er) == nil && er.Message != "" {
					return usageErrorf("%s", er.Message)
				}
				return fmt.Errorf("control API: %s", resp.Status)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s done\n", strings.TrimSpace(verb+" "+strings.Join(args, " ")))
			return nil
		},
	}
	cmd.Flags().StringVar(&control, "control", control, "control API address of the running netsim")
	return cmd
}

// isTerminal reports whether w is a character device (a terminal), where a
// progress line may redraw itself.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
