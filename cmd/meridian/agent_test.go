package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/node"
	"github.com/meridian-mesh/meridian/node/api"
	"github.com/meridian-mesh/meridian/placement"
)

// TestAgentPolicyReachesTuning checks that the scheduling-policy flags and
// keys land in node.Tuning, and that leaving them out takes node's defaults.
func TestAgentPolicyReachesTuning(t *testing.T) {
	c := defaultAgentConfig()
	c.Region, c.Name, c.DataDir = "us-east-1", "n1", t.TempDir()
	c.LocalReserve, c.OffloadMargin, c.LeaseReach, c.NoPreempt = -1, 0.2, "250ms", true
	cfg, err := agentNodeConfig(c, nil)
	if err != nil {
		t.Fatal(err)
	}
	if tu := cfg.Tuning; tu.LocalReserve != -1 || tu.OffloadMargin != 0.2 || tu.LeaseReach != 250*time.Millisecond || !tu.NoPreempt {
		t.Fatalf("Tuning = %+v; want local reserve -1, offload margin 0.2, lease reach 250ms, no preemption", tu)
	}
	c.LocalReserve, c.OffloadMargin, c.LeaseReach, c.NoPreempt = 0, 0, "", false
	if cfg, err = agentNodeConfig(c, nil); err != nil {
		t.Fatal(err)
	}
	if tu := cfg.Tuning; tu.LocalReserve != 0 || tu.OffloadMargin != 0 || tu.LeaseReach != 0 || tu.NoPreempt {
		t.Fatalf("Tuning = %+v; want zeros, for node's defaults", tu)
	}
}

// fixedMachine is a machine of 4 CPUs with 123.7 GB free on every disk.
var fixedMachine = machine{cpus: 4, freeDiskGB: func(string) (float64, error) { return 123.7, nil }}

// agentConfigOf parses args as `meridian agent` on machine m and returns
// the node configuration the agent would start with.
func agentConfigOf(t *testing.T, m machine, args ...string) (node.Config, []string, error) {
	t.Helper()
	var got agentConfig
	var filled []string
	ran := false
	cmd := newAgentCommand(m, func(_ context.Context, _ io.Writer, c agentConfig, f []string) error {
		got, filled, ran = c, f, true
		return nil
	})
	cmd.SetArgs(args)
	cmd.SetOut(io.Discard)
	cmd.SetErr(io.Discard)
	if err := cmd.Execute(); err != nil {
		return node.Config{}, nil, err
	}
	if !ran {
		t.Fatalf("agent %v: the agent was not run", args)
	}
	cfg, err := agentNodeConfig(got, nil)
	return cfg, filled, err
}

// TestAgentConfigFileAndFlags: what the configuration file sets reaches
// the node's configuration, a flag given on the command line wins over the
// file, and resources neither sets are read off the machine, while an
// explicit value, 0 included, wins over the machine's.
func TestAgentConfigFileAndFlags(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	full := write("full.json", `{
		"name": "east-7", "region": "us-east-1", "data_dir": "`+filepath.Join(dir, "data")+`",
		"server": true, "bootstrap_expect": 3,
		"compute": 800, "storage_gb": 50, "bandwidth_gbs": 2.5, "price_per_hour": 4.5, "gpus": 2, "gpu_type": "A100",
		"acl_token": "file-token",
		"bind_gossip": "127.0.0.1:17946", "bind_raft": "127.0.0.1:14647", "bind_p2p": "127.0.0.1:14001",
		"http": "127.0.0.1:14646", "advertise_http": "10.0.0.7:14646"
	}`)
	serverOnly := write("server-only.json", `{"region": "us-east-1", "server": true, "compute": 0}`)
	computeOnly := write("compute-only.json", `{"region": "us-east-1", "compute": 40}`)

	fromFile := node.Config{
		Name: "east-7", Region: "us-east-1", Server: true, BootstrapExpect: 3, DataDir: filepath.Join(dir, "data"),
		Resources:    placement.Resources{ComputePerHour: 800, StorageGB: 50, BandwidthGBps: 2.5, GPUs: 2},
		PricePerHour: 4.5, GPUType: "A100", ACLToken: "file-token",
		Network: node.TCPNetwork(node.TCPConfig{GossipBind: "127.0.0.1:17946", RaftBind: "127.0.0.1:14647",
			P2PBind: "127.0.0.1:14001", HTTP: "127.0.0.1:14646", HTTPAdvertise: "10.0.0.7:14646"}),
	}
	overridden := fromFile
	overridden.Name, overridden.ACLToken = "east-8", "flag-token"
	overridden.Resources.ComputePerHour = 900
	overridden.Network = node.TCPNetwork(node.TCPConfig{GossipBind: "127.0.0.1:17946", RaftBind: "127.0.0.1:14647",
		P2PBind: "127.0.0.1:14001", HTTP: "127.0.0.1:24646", HTTPAdvertise: "10.0.0.7:14646"})
	fingerprinted := placement.Resources{ComputePerHour: 4 * computePerCPU, StorageGB: 123, BandwidthGBps: defaultBandwidthGBs}

	for _, tc := range []struct {
		name    string
		machine machine
		args    []string
		want    func(node.Config) node.Config // from what the case does not check
		filled  int                           // resources read off the machine
	}{
		{name: "the file's values apply", args: []string{"--config", full},
			want: func(node.Config) node.Config { return fromFile }},
		{name: "flags win over the file", args: []string{"--config", full, "--name", "east-8", "--compute", "900", "--acl-token", "flag-token", "--http", "127.0.0.1:24646"},
			want: func(node.Config) node.Config { return overridden }},
		{name: "resources left out are read off the machine", args: []string{"--region", "us-east-1", "--server", "--bootstrap-expect", "1"},
			want: func(c node.Config) node.Config {
				c.Resources, c.PricePerHour = fingerprinted, 4*pricePerCPU
				return c
			}, filled: 4},
		{name: "the file's compute 0 wins over the machine's", args: []string{"--config", serverOnly},
			want: func(c node.Config) node.Config {
				c.Resources, c.PricePerHour = placement.Resources{}, 0
				return c
			}},
		{name: "a flag's compute 0 wins over the file's and the machine's", args: []string{"--config", computeOnly, "--compute", "0"},
			want: func(c node.Config) node.Config {
				c.Resources, c.PricePerHour = placement.Resources{}, 0
				return c
			}},
		{name: "the file's compute, the machine's rest", args: []string{"--config", computeOnly},
			want: func(c node.Config) node.Config {
				c.Resources = fingerprinted
				c.Resources.ComputePerHour, c.PricePerHour = 40, 4*pricePerCPU
				return c
			}, filled: 3},
		{name: "explicit 0 storage and bandwidth win over the machine's", args: []string{"--region", "us-east-1", "--storage-gb", "0", "--bandwidth-gbs", "0"},
			machine: machine{cpus: 1, freeDiskGB: func(string) (float64, error) { return 0, errors.New("no statfs") }},
			want: func(c node.Config) node.Config {
				c.Resources, c.PricePerHour = placement.Resources{ComputePerHour: computePerCPU}, pricePerCPU
				return c
			}, filled: 2},
		{name: "unreadable disk left to the default", args: []string{"--region", "us-east-1", "--compute", "10", "--price-per-hour", "1"},
			machine: machine{cpus: 1, freeDiskGB: func(string) (float64, error) { return 0, errors.New("no statfs") }},
			want: func(c node.Config) node.Config {
				c.Resources, c.PricePerHour = placement.Resources{ComputePerHour: 10, StorageGB: fallbackStorageGB, BandwidthGBps: defaultBandwidthGBs}, 1
				return c
			}, filled: 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := tc.machine
			if m.freeDiskGB == nil {
				m = fixedMachine
			}
			got, filled, err := agentConfigOf(t, m, tc.args...)
			if err != nil {
				t.Fatalf("agent %v: %v", tc.args, err)
			}
			want := tc.want(got)
			for _, f := range []struct {
				field     string
				got, want any
			}{
				{"Name", got.Name, want.Name}, {"Region", got.Region, want.Region},
				{"Server", got.Server, want.Server}, {"BootstrapExpect", got.BootstrapExpect, want.BootstrapExpect},
				{"DataDir", got.DataDir, want.DataDir}, {"Resources", got.Resources, want.Resources},
				{"PricePerHour", got.PricePerHour, want.PricePerHour}, {"GPUType", got.GPUType, want.GPUType},
				{"ACLToken", got.ACLToken, want.ACLToken}, {"Network", got.Network, want.Network},
			} {
				if f.got != f.want {
					t.Errorf("%s = %+v; want %+v", f.field, f.got, f.want)
				}
			}
			if len(filled) != tc.filled {
				t.Errorf("read off the machine: %q; want %d resources", filled, tc.filled)
			}
		})
	}
}

// syncBuffer is a bytes.Buffer a command writes to while the test reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// inProcess is a long-running command (agent, netsim) run in this process
// by runContext, until its context is cancelled.
type inProcess struct {
	stdout, stderr syncBuffer
	cancel         context.CancelFunc
	done           chan struct{} // closed when the command returned
	code           int           // its exit code, once done is closed
}

func startInProcess(args ...string) *inProcess {
	ctx, cancel := context.WithCancel(context.Background())
	p := &inProcess{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(p.done)
		p.code = runContext(ctx, args, strings.NewReader(""), &p.stdout, &p.stderr)
	}()
	return p
}

func (p *inProcess) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// wait waits up to timeout for the command to return and fails the test
// if it did not return, or returned another exit code than want.
func (p *inProcess) wait(t *testing.T, timeout time.Duration, want int) {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		t.Fatalf("still running %v after it was told to stop\nstderr:\n%s", timeout, p.stderr.String())
	}
	if p.code != want {
		t.Fatalf("exit code %d; want %d\nstdout:\n%s\nstderr:\n%s", p.code, want, p.stdout.String(), p.stderr.String())
	}
}

// TestAgentDefaultsRunAJob: `meridian agent --region us-east-1 --server
// --bootstrap-expect 1` (given only a data dir and free loopback ports, so
// that it runs beside anything else) offers the machine's resources, and a
// job submitted the README's way runs on it. A different job under the
// same ID is refused with a message that says "conflict" once.
func TestAgentDefaultsRunAJob(t *testing.T) {
	if testing.Short() {
		t.Skip("starts an agent: skipped in -short mode")
	}
	ports := &mpCluster{t: t, used: map[int]bool{}}
	var p *inProcess
	var url string
	for attempt := 1; ; attempt++ {
		httpAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(ports.port(false)))
		p = startInProcess("agent", "--region", "us-east-1", "--server", "--bootstrap-expect", "1",
			"--data-dir", t.TempDir(), "--http", httpAddr,
			"--bind-gossip", net.JoinHostPort("127.0.0.1", strconv.Itoa(ports.port(true))),
			"--bind-raft", net.JoinHostPort("127.0.0.1", strconv.Itoa(ports.port(false))),
			"--bind-p2p", net.JoinHostPort("127.0.0.1", strconv.Itoa(ports.port(false))))
		url = "http://" + httpAddr
		cl, err := api.NewClient(url, "", &http.Client{})
		if err != nil {
			t.Fatal(err)
		}
		// Up and leading its one-server region.
		err = ports.poll(mpWait, func() (bool, string) {
			if p.exited() {
				return true, ""
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			h, err := cl.Health(ctx)
			if err != nil {
				return false, err.Error()
			}
			return h.Status == api.HealthOK && h.Leader != "", fmt.Sprintf("status %s, leader %q", h.Status, h.Leader)
		})
		if err != nil {
			p.cancel()
			t.Fatalf("agent never led its region: %v\nstderr:\n%s", err, p.stderr.String())
		}
		if !p.exited() {
			break
		}
		if attempt < 3 && strings.Contains(p.stderr.String(), "address already in use") {
			t.Logf("the agent lost a port to another process; starting it again")
			continue
		}
		t.Fatalf("agent exited at start with code %d\nstderr:\n%s", p.code, p.stderr.String())
	}
	defer func() {
		p.cancel()
		p.wait(t, mpLeaveWait, exitOK)
	}()

	// It offers the machine: compute by its CPUs, priced above 0.
	cl, _ := api.NewClient(url, "", &http.Client{})
	wantCompute := computePerCPU * float64(runtime.NumCPU())
	ports.waitFor("the agent offers the machine's compute", func() (bool, string) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		nodes, err := cl.Nodes(ctx)
		if err != nil {
			return false, err.Error()
		}
		if len(nodes) != 1 {
			return false, fmt.Sprintf("nodes %+v", nodes)
		}
		n := nodes[0]
		return n.Total.ComputePerHour == wantCompute && n.PricePerHour > 0 && n.Total.BandwidthGBps == defaultBandwidthGBs,
			fmt.Sprintf("node %s offers %+v at $%v/h; want compute %v", n.Name, n.Total, n.PricePerHour, wantCompute)
	})

	submit := func(compute string) (code int, stdout, stderr string) {
		var out, errb bytes.Buffer
		code = run([]string{"job", "submit", "--id", "hello-1", "--origin", "us-east-1", "--compute", compute, "--addr", url},
			strings.NewReader(""), &out, &errb)
		return code, out.String(), errb.String()
	}
	if code, out, errOut := submit("100"); code != exitOK || !strings.Contains(out, `Job "hello-1" submitted.`) {
		t.Fatalf("job submit: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	ports.waitFor("the job runs", func() (bool, string) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		st, err := cl.Job(ctx, "hello-1")
		if err != nil {
			return false, err.Error()
		}
		return st.State == api.JobRunning || st.State == api.JobCompleted, fmt.Sprintf("state %s (%s)", st.State, st.Reason)
	})

	code, out, errOut := submit("101")
	if want := "meridian: job \"hello-1\" was submitted before with a different spec: conflict (HTTP 409 conflict)\n"; code != exitFailure || errOut != want {
		t.Fatalf("a different job under the same ID: exit %d, stderr %q; want exit %d, stderr %q\nstdout:\n%s", code, errOut, exitFailure, want, out)
	}
}
