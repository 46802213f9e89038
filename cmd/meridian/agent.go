package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/meridian-mesh/meridian/gossip"
	"github.com/meridian-mesh/meridian/node"
	"github.com/meridian-mesh/meridian/placement"
)

// agentConfig is the agent's configuration file (JSON). Every field has a
// flag of the same meaning; a flag given on the command line wins over the
// file.
type agentConfig struct {
	Region          string   `json:"region"`
	Name            string   `json:"name"`
	DataDir         string   `json:"data_dir"`
	Server          bool     `json:"server"`
	BootstrapExpect int      `json:"bootstrap_expect"`
	Join            []string `json:"join"`

	BindGossip      string `json:"bind_gossip"`
	AdvertiseGossip string `json:"advertise_gossip"`
	BindRaft        string `json:"bind_raft"`
	AdvertiseRaft   string `json:"advertise_raft"`
	BindP2P         string `json:"bind_p2p"`
	AdvertiseP2P    string `json:"advertise_p2p"`
	HTTP            string `json:"http"`
	AdvertiseHTTP   string `json:"advertise_http"`

	Compute      float64 `json:"compute"`
	StorageGB    float64 `json:"storage_gb"`
	BandwidthGBs float64 `json:"bandwidth_gbs"`
	PricePerHour float64 `json:"price_per_hour"`
	GPUs         int     `json:"gpus"`
	GPUType      string  `json:"gpu_type"`

	// Scheduling policy of the region's leader (node.Tuning); zero takes
	// the default.
	LocalReserve  float64 `json:"local_reserve"`
	OffloadMargin float64 `json:"offload_margin"`
	LeaseReach    string  `json:"lease_reach"`
	NoPreempt     bool    `json:"no_preempt"`

	GossipKey string `json:"gossip_key"`
	ACLToken  string `json:"acl_token"`
	Market    bool   `json:"market"`
	LogLevel  string `json:"log_level"`
	LogJSON   bool   `json:"log_json"`
}

func defaultAgentConfig() agentConfig {
	host, _ := os.Hostname()
	return agentConfig{
		Name:       host,
		DataDir:    "meridian-data",
		BindGossip: fmt.Sprintf("0.0.0.0:%d", gossip.DefaultBindPort),
		BindRaft:   fmt.Sprintf("0.0.0.0:%d", node.DefaultRaftPort),
		BindP2P:    fmt.Sprintf("0.0.0.0:%d", node.DefaultP2PPort),
		HTTP:       fmt.Sprintf("127.0.0.1:%d", node.DefaultHTTPPort),
		Market:     true,
		LogLevel:   "info",
	}
}

func newAgentCmd() *cobra.Command { return newAgentCommand(thisMachine(), runAgent) }

// agentRunner runs an agent of the final configuration; fingerprinted says
// which resources were read off the machine.
type agentRunner func(ctx context.Context, stderr io.Writer, c agentConfig, fingerprinted []string) error

// newAgentCommand builds `meridian agent` with the machine its resource
// defaults are read from and what runs the agent: tests give their own of
// both.
func newAgentCommand(m machine, start agentRunner) *cobra.Command {
	cfg := defaultAgentConfig()
	var configFile string
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Run a Meridian agent on this machine",
		Long: fmt.Sprintf(`Run a Meridian agent: it joins the mesh through gossip, takes part in its
region's Raft group if it is a server, offers this machine's capacity and runs
the allocations placed on it, and serves the HTTP API.

A one-machine cluster:

  meridian agent --region us-east-1 --server --bootstrap-expect 1

It offers this machine's resources unless told otherwise: compute %g
tasks/hour per CPU, the free disk space of --data-dir as storage, %g GB/s
(10 Gb/s) of bandwidth, at $%g per CPU per hour. --compute 0 makes a node
that runs nothing (a server that only coordinates).

Flags override the configuration file given with --config (JSON with the
flags' names in snake case, e.g. {"region": "us-east-1", "join": ["10.0.0.5:7946"]}).`, computePerCPU, defaultBandwidthGBs, pricePerCPU),
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, fileSet := cfg, map[string]bool{}
			if configFile != "" {
				fileCfg, set, err := loadAgentConfig(configFile)
				if err != nil {
					return err
				}
				c, fileSet = mergeAgentConfig(fileCfg, set, cfg, cmd.Flags()), set
			}
			c, filled := fingerprint(c, func(name string) bool { return fileSet[name] || cmd.Flags().Changed(name) }, m)
			return start(cmd.Context(), cmd.ErrOrStderr(), c, filled)
		},
	}
	f := cmd.Flags()
	f.StringVar(&configFile, "config", "", "JSON configuration file")
	f.StringVar(&cfg.Region, "region", cfg.Region, "region this machine runs in (required)")
	f.StringVar(&cfg.Name, "name", cfg.Name, "node name, unique in the mesh (default: the host name)")
	f.StringVar(&cfg.DataDir, "data-dir", cfg.DataDir, "directory for the Raft log, snapshots, identity and task output")
	f.BoolVar(&cfg.Server, "server", cfg.Server, "take part in the region's Raft group")
	f.IntVar(&cfg.BootstrapExpect, "bootstrap-expect", cfg.BootstrapExpect, "servers of the region to wait for before bootstrapping its Raft group")
	f.StringArrayVar(&cfg.Join, "join", cfg.Join, "gossip address host:port of a node to join (repeatable)")
	f.StringVar(&cfg.BindGossip, "bind-gossip", cfg.BindGossip, "gossip (UDP and TCP) bind address")
	f.StringVar(&cfg.AdvertiseGossip, "advertise-gossip", cfg.AdvertiseGossip, "gossip address other nodes use (default: derived)")
	f.StringVar(&cfg.BindRaft, "bind-raft", cfg.BindRaft, "Raft TCP bind address (servers)")
	f.StringVar(&cfg.AdvertiseRaft, "advertise-raft", cfg.AdvertiseRaft, "Raft address other servers use")
	f.StringVar(&cfg.BindP2P, "bind-p2p", cfg.BindP2P, "libp2p TCP bind address for the market (servers)")
	f.StringVar(&cfg.AdvertiseP2P, "advertise-p2p", cfg.AdvertiseP2P, "libp2p address other regions use")
	f.StringVar(&cfg.HTTP, "http", cfg.HTTP, "HTTP API bind address")
	f.StringVar(&cfg.AdvertiseHTTP, "advertise-http", cfg.AdvertiseHTTP, "HTTP API address other nodes use")
	// The resource defaults are read off the machine when the agent starts
	// (fingerprint), after the data dir is known; the flags' own defaults
	// stay 0 so that the help does not print a misleading one.
	f.Float64Var(&cfg.Compute, "compute", cfg.Compute, fmt.Sprintf("compute this machine offers, tasks/hour (default %g per CPU, %g here; 0 offers none and runs nothing)", computePerCPU, computePerCPU*float64(max(m.cpus, 1))))
	f.Float64Var(&cfg.StorageGB, "storage-gb", cfg.StorageGB, fmt.Sprintf("storage this machine offers, GB (default: the data dir's free disk space, or %g GB where it cannot be read)", fallbackStorageGB))
	f.Float64Var(&cfg.BandwidthGBs, "bandwidth-gbs", cfg.BandwidthGBs, fmt.Sprintf("network bandwidth this machine offers, GB/s (default %g, a 10 Gb/s interface)", defaultBandwidthGBs))
	f.Float64Var(&cfg.PricePerHour, "price-per-hour", cfg.PricePerHour, fmt.Sprintf("what this machine costs, US dollars per hour, above 0 when it offers compute (default %g per CPU)", pricePerCPU))
	f.IntVar(&cfg.GPUs, "gpus", cfg.GPUs, "GPUs this machine offers")
	f.StringVar(&cfg.GPUType, "gpu-type", cfg.GPUType, "GPU model, e.g. A100")
	f.Float64Var(&cfg.LocalReserve, "local-reserve", cfg.LocalReserve, "share of the region's compute (below 1) the leader keeps for work only it can serve; 0 for the default (0.5), negative for none")
	f.Float64Var(&cfg.OffloadMargin, "offload-margin", cfg.OffloadMargin, "offer a job to the market first when another region asks less by this fraction (0.25 = 25 %); 0 never")
	f.StringVar(&cfg.LeaseReach, "lease-reach", cfg.LeaseReach, "farthest RTT a lease bought ahead of forecast demand may be, e.g. 100ms (default 100ms)")
	f.BoolVar(&cfg.NoPreempt, "no-preempt", cfg.NoPreempt, "never stop lower-priority work to make room for a job that cannot go elsewhere")
	f.StringVar(&cfg.GossipKey, "gossip-key", cfg.GossipKey, "base64 gossip encryption key (16, 24 or 32 bytes); every node must share it")
	f.StringVar(&cfg.ACLToken, "acl-token", cfg.ACLToken, "token API requests must present (Authorization: Bearer)")
	f.BoolVar(&cfg.Market, "market", cfg.Market, "trade capacity with other regions (servers)")
	f.StringVar(&cfg.LogLevel, "log-level", cfg.LogLevel, "log level: debug, info, warn, error")
	f.BoolVar(&cfg.LogJSON, "log-json", cfg.LogJSON, "log as JSON lines")
	return cmd
}

// loadAgentConfig reads a JSON configuration file strictly: an unknown key
// or a wrong type is an error naming it. It also returns the keys the file
// sets, so that a key set to its zero value still overrides the default.
func loadAgentConfig(path string) (agentConfig, map[string]bool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return agentConfig{}, nil, fmt.Errorf("config file: %w", err)
	}
	var c agentConfig
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return agentConfig{}, nil, &usageError{err: fmt.Errorf("config file %s: field %q: want a %s", path, te.Field, te.Type)}
		}
		return agentConfig{}, nil, &usageError{err: fmt.Errorf("config file %s: %w", path, err)}
	}
	if dec.More() {
		return agentConfig{}, nil, &usageError{err: fmt.Errorf("config file %s: more than one JSON object", path)}
	}
	var keys map[string]json.RawMessage
	if err := json.Unmarshal(b, &keys); err != nil {
		return agentConfig{}, nil, &usageError{err: fmt.Errorf("config file %s: %w", path, err)}
	}
	set := map[string]bool{}
	for k := range keys {
		set[strings.ReplaceAll(k, "_", "-")] = true
	}
	return c, set, nil
}

// mergeAgentConfig starts from the defaults, applies what the file sets,
// then the flags the user gave.
func mergeAgentConfig(file agentConfig, fileSet map[string]bool, flags agentConfig, set *pflag.FlagSet) agentConfig {
	out := defaultAgentConfig()
	apply := func(src *agentConfig, changed func(name string) bool) {
		dst := &out
		pairs := []struct {
			name string
			fn   func()
		}{
			{"region", func() { dst.Region = src.Region }},
			{"name", func() { dst.Name = src.Name }},
			{"data-dir", func() { dst.DataDir = src.DataDir }},
			{"server", func() { dst.Server = src.Server }},
			{"bootstrap-expect", func() { dst.BootstrapExpect = src.BootstrapExpect }},
			{"join", func() { dst.Join = src.Join }},
			{"bind-gossip", func() { dst.BindGossip = src.BindGossip }},
			{"advertise-gossip", func() { dst.AdvertiseGossip = src.AdvertiseGossip }},
			{"bind-raft", func() { dst.BindRaft = src.BindRaft }},
			{"advertise-raft", func() { dst.AdvertiseRaft = src.AdvertiseRaft }},
			{"bind-p2p", func() { dst.BindP2P = src.BindP2P }},
			{"advertise-p2p", func() { dst.AdvertiseP2P = src.AdvertiseP2P }},
			{"http", func() { dst.HTTP = src.HTTP }},
			{"advertise-http", func() { dst.AdvertiseHTTP = src.AdvertiseHTTP }},
			{"compute", func() { dst.Compute = src.Compute }},
			{"storage-gb", func() { dst.StorageGB = src.StorageGB }},
			{"bandwidth-gbs", func() { dst.BandwidthGBs = src.BandwidthGBs }},
			{"price-per-hour", func() { dst.PricePerHour = src.PricePerHour }},
			{"gpus", func() { dst.GPUs = src.GPUs }},
			{"gpu-type", func() { dst.GPUType = src.GPUType }},
			{"local-reserve", func() { dst.LocalReserve = src.LocalReserve }},
			{"offload-margin", func() { dst.OffloadMargin = src.OffloadMargin }},
			{"lease-reach", func() { dst.LeaseReach = src.LeaseReach }},
			{"no-preempt", func() { dst.NoPreempt = src.NoPreempt }},
			{"gossip-key", func() { dst.GossipKey = src.GossipKey }},
			{"acl-token", func() { dst.ACLToken = src.ACLToken }},
			{"market", func() { dst.Market = src.Market }},
			{"log-level", func() { dst.LogLevel = src.LogLevel }},
			{"log-json", func() { dst.LogJSON = src.LogJSON }},
		}
		for _, p := range pairs {
			if changed(p.name) {
				p.fn()
			}
		}
	}
	apply(&file, func(name string) bool { return fileSet[name] })
	apply(&flags, set.Changed)
	return out
}

// agentNodeConfig checks the configuration and turns it into node.Config.
func agentNodeConfig(c agentConfig, logger *slog.Logger) (node.Config, error) {
	if c.Region == "" {
		return node.Config{}, usageErrorf("--region is required")
	}
	if c.Name == "" {
		return node.Config{}, usageErrorf("--name is required (the host name is empty)")
	}
	if c.BootstrapExpect < 0 {
		return node.Config{}, usageErrorf("--bootstrap-expect %d: must not be negative", c.BootstrapExpect)
	}
	if c.BootstrapExpect > 0 && !c.Server {
		return node.Config{}, usageErrorf("--bootstrap-expect needs --server")
	}
	for _, v := range []struct {
		flag string
		x    float64
	}{{"--compute", c.Compute}, {"--storage-gb", c.StorageGB}, {"--bandwidth-gbs", c.BandwidthGBs}, {"--price-per-hour", c.PricePerHour}, {"--gpus", float64(c.GPUs)}} {
		if v.x < 0 {
			return node.Config{}, usageErrorf("%s %v: must not be negative", v.flag, v.x)
		}
	}
	res := placement.Resources{ComputePerHour: c.Compute, StorageGB: c.StorageGB, BandwidthGBps: c.BandwidthGBs, GPUs: c.GPUs}
	if !res.IsZero() && c.Compute == 0 {
		return node.Config{}, usageErrorf("--compute must be set when the node offers other resources")
	}
	if c.Compute > 0 && c.PricePerHour == 0 {
		// Placement skips a node priced 0 (its cost efficiency would be
		// infinite), so such a node would never run anything.
		return node.Config{}, usageErrorf("--price-per-hour 0: a node that offers compute needs a price above 0 (leave it out for the default, $%g per CPU)", pricePerCPU)
	}
	switch {
	case math.IsNaN(c.LocalReserve) || math.IsInf(c.LocalReserve, 0) || c.LocalReserve >= 1:
		return node.Config{}, usageErrorf("--local-reserve %v: want a share below 1 (0 for the default, negative for none)", c.LocalReserve)
	case math.IsNaN(c.OffloadMargin) || math.IsInf(c.OffloadMargin, 0):
		return node.Config{}, usageErrorf("--offload-margin %v: want a number", c.OffloadMargin)
	}
	var leaseReach time.Duration
	if c.LeaseReach != "" {
		d, err := time.ParseDuration(c.LeaseReach)
		if err != nil || d <= 0 {
			return node.Config{}, usageErrorf("--lease-reach %q: want a positive duration such as 100ms", c.LeaseReach)
		}
		leaseReach = d
	}
	var key []byte
	if c.GossipKey != "" {
		k, err := gossip.ParseKey(c.GossipKey)
		if err != nil {
			return node.Config{}, usageErrorf("--gossip-key: %v", err)
		}
		key = k
	}
	dataDir, err := filepath.Abs(c.DataDir)
	if err != nil {
		return node.Config{}, usageErrorf("--data-dir %q: %v", c.DataDir, err)
	}
	return node.Config{
		Name:            c.Name,
		Region:          c.Region,
		Server:          c.Server,
		BootstrapExpect: c.BootstrapExpect,
		DataDir:         dataDir,
		Resources:       res,
		PricePerHour:    c.PricePerHour,
		GPUType:         c.GPUType,
		Join:            c.Join,
		Network: node.TCPNetwork(node.TCPConfig{
			GossipBind: c.BindGossip, GossipAdvertise: c.AdvertiseGossip,
			RaftBind: c.BindRaft, RaftAdvertise: c.AdvertiseRaft,
			P2PBind: c.BindP2P, P2PAdvertise: c.AdvertiseP2P,
			HTTP: c.HTTP, HTTPAdvertise: c.AdvertiseHTTP,
		}),
		GossipKey:     key,
		ACLToken:      c.ACLToken,
		Market:        c.Market && c.Server,
		Version:       version,
		Logger:        logger,
		BridgeMetrics: true,
		Tuning:        node.Tuning{LocalReserve: c.LocalReserve, OffloadMargin: c.OffloadMargin, LeaseReach: leaseReach, NoPreempt: c.NoPreempt},
	}, nil
}

func newLogger(w io.Writer, level string, asJSON bool) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, usageErrorf("--log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: l}
	if asJSON {
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return slog.New(slog.NewTextHandler(w, opts)), nil
}

// runAgent runs the agent until SIGINT or SIGTERM: the first signal leaves
// the mesh gracefully, a second one exits at once.
func runAgent(ctx context.Context, stderr io.Writer, c agentConfig, fingerprinted []string) error {
	logger, err := newLogger(stderr, c.LogLevel, c.LogJSON)
	if err != nil {
		return err
	}
	ncfg, err := agentNodeConfig(c, logger)
	if err != nil {
		return err
	}
	if ctx == nil {
		ctx = context.Background()
	}
	startCtx, cancel := context.WithTimeout(ctx, time.Minute)
	a, err := node.Start(startCtx, ncfg)
	cancel()
	if err != nil {
		return err
	}
	fmt.Fprintf(stderr, "meridian agent %s (%s) in region %s: API on http://%s\n", ncfg.Name, map[bool]string{true: "server", false: "worker"}[ncfg.Server], ncfg.Region, a.HTTPAddr())
	if r := ncfg.Resources; r.IsZero() {
		fmt.Fprintln(stderr, "offering no resources (--compute 0): this node runs nothing")
	} else {
		fmt.Fprintf(stderr, "offering compute %g tasks/hour, storage %g GB, bandwidth %g GB/s, %d GPUs at %s/hour\n",
			r.ComputePerHour, r.StorageGB, r.BandwidthGBps, r.GPUs, usd(ncfg.PricePerHour))
	}
	for _, f := range fingerprinted {
		logger.Info("resource default read off the machine", "default", f)
	}
	sig := make(chan os.Signal, 2)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sig)
	select {
	case s := <-sig:
		logger.Info("leaving the mesh", "signal", s.String())
	case <-ctx.Done():
	}
	leaveCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- a.Leave(leaveCtx) }()
	select {
	case err := <-done:
		return err
	case <-sig:
		logger.Warn("second signal: stopping now")
		return a.Close()
	}
}
