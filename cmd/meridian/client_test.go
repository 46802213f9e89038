package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/meridian-mesh/meridian/node/api"
	"github.com/meridian-mesh/meridian/node/api/apitest"
	"github.com/meridian-mesh/meridian/placement"
)

// clientRoot is the binary's root command with the client commands wired
// in (main wires them itself once they are added to newRootCmd).
func clientRoot() *cobra.Command {
	root := newRootCmd()
	for _, c := range []*cobra.Command{newJobCmd(), newNodesCmd(), newRegionsCmd(), newTradesCmd()} {
		if !slicesContainsName(root.Commands(), c.Name()) {
			root.AddCommand(c)
		}
	}
	return root
}

func slicesContainsName(cmds []*cobra.Command, name string) bool {
	for _, c := range cmds {
		if c.Name() == name {
			return true
		}
	}
	return false
}

type clientResult struct {
	code           int
	stdout, stderr string
}

// runClient runs a command line in-process the way run does: errors are
// printed as "meridian: ..." and mapped to the exit code by exitCode.
func runClient(t *testing.T, stdin string, args ...string) clientResult {
	t.Helper()
	var out, errOut bytes.Buffer
	root := clientRoot()
	root.SetArgs(args)
	root.SetIn(strings.NewReader(stdin))
	root.SetOut(&out)
	root.SetErr(&errOut)
	err := root.Execute()
	if err != nil {
		fmt.Fprintf(&errOut, "meridian: %v\n", err)
	}
	return clientResult{code: exitCode(err), stdout: out.String(), stderr: errOut.String()}
}

var cliNow = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// agent is an agent's HTTP API on loopback over the in-memory service.
type agent struct {
	svc  *apitest.Service
	addr string
}

func newAgent(t *testing.T, token string) *agent {
	t.Helper()
	svc := apitest.New(func() time.Time { return cliNow }, "us-east-1", "eu-west-1")
	srv := httptest.NewServer(api.NewHandler(svc, api.Options{Token: token}))
	t.Cleanup(srv.Close)
	return &agent{svc: svc, addr: srv.URL}
}

func (a *agent) jobs(t *testing.T) []api.JobStatus {
	t.Helper()
	list, err := a.svc.Jobs(context.Background(), api.JobFilter{})
	if err != nil {
		t.Fatal(err)
	}
	return list.Jobs
}

func (a *agent) spec(t *testing.T, id string) api.JobSpec {
	t.Helper()
	st, err := a.svc.Job(context.Background(), id)
	if err != nil {
		t.Fatalf("job %s: %v", id, err)
	}
	return *st.Spec
}

func wantCode(t *testing.T, r clientResult, code int, stderrHas ...string) {
	t.Helper()
	if r.code != code {
		t.Fatalf("exit code %d; want %d\nstdout: %s\nstderr: %s", r.code, code, r.stdout, r.stderr)
	}
	for _, s := range stderrHas {
		if !strings.Contains(r.stderr, s) {
			t.Errorf("stderr %q lacks %q", r.stderr, s)
		}
	}
}

func TestJobSubmitFromFlags(t *testing.T) {
	a := newAgent(t, "tok")
	args := []string{"job", "submit", "--addr", a.addr, "--token", "tok", "--id", "train-7", "--origin", "us-east-1",
		"--home", "eu-west-1", "--compute", "100", "--storage-gb", "50", "--bandwidth-gbs", "1.5", "--gpus", "2",
		"--gpu-type", "H100", "--slo-ms", "80", "--max-price", "12.5", "--duration", "2h", "--priority", "70"}
	r := runClient(t, "", args...)
	wantCode(t, r, 0)
	for _, want := range []string{`Job "train-7" submitted.`, "State          = pending", "Home region    = eu-west-1",
		"Demand         = 100 tasks/h, 50 GB, 1.50 GB/s, 2 GPUs", "Duration       = 2h0m0s"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("stdout lacks %q:\n%s", want, r.stdout)
		}
	}
	want := api.JobSpec{ID: "train-7", OriginRegion: "us-east-1", HomeRegion: "eu-west-1",
		Demand:       placement.Resources{ComputePerHour: 100, StorageGB: 50, BandwidthGBps: 1.5, GPUs: 2},
		LatencySLOMs: 80, MaxPricePerHour: 12.5, Priority: 70, DurationS: 7200, GPUType: "H100", Driver: api.DriverSim}
	if got := a.spec(t, "train-7"); !got.Equal(want) {
		t.Errorf("the agent got %+v; want %+v", got, want)
	}

	r = runClient(t, "", args...)
	wantCode(t, r, 0)
	if !strings.Contains(r.stdout, "already exists with this spec; nothing changed") {
		t.Errorf("resubmit stdout = %s", r.stdout)
	}
	// Same ID, different spec: the agent's 409, exit code 1.
	r = runClient(t, "", append(args[:len(args)-2:len(args)-2], "--priority", "71")...)
	wantCode(t, r, 1, "meridian: ", "HTTP 409 conflict", "train-7")
}

func TestJobSubmitCommand(t *testing.T) {
	a := newAgent(t, "")
	r := runClient(t, "", "job", "submit", "--addr", a.addr, "--id", "etl-1", "--origin", "us-east-1", "--compute", "5",
		"--env", "MODE=fast", "--env", "EMPTY=", "--", "python3", "-u", "etl.py", "--day", "2024-01-01")
	wantCode(t, r, 0)
	got := a.spec(t, "etl-1")
	if got.Driver != api.DriverExec || strings.Join(got.Command, " ") != "python3 -u etl.py --day 2024-01-01" ||
		got.Env["MODE"] != "fast" || got.Env["EMPTY"] != "" || len(got.Env) != 2 {
		t.Errorf("the agent got %+v", got)
	}
	if !strings.Contains(r.stdout, "Command        = python3 -u etl.py --day 2024-01-01") {
		t.Errorf("stdout = %s", r.stdout)
	}
}

func TestJobSubmitFromFile(t *testing.T) {
	a := newAgent(t, "")
	file := filepath.Join(t.TempDir(), "job.json")
	if err := os.WriteFile(file, []byte(`{"id":"f1","origin_region":"us-east-1","demand":{"compute":3},"driver":"exec","command":["true"]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	r := runClient(t, "", "job", "submit", "--addr", a.addr, "--file", file, "--json")
	wantCode(t, r, 0)
	var st api.JobStatus
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil || st.ID != "f1" || st.State != api.JobPending {
		t.Errorf("--json stdout = %s (%v)", r.stdout, err)
	}
	r = runClient(t, `{"id":"f2","origin_region":"eu-west-1","demand":{"compute":1}}`, "job", "submit", "--addr", a.addr, "-f", "-")
	wantCode(t, r, 0)
	if got := a.spec(t, "f2"); got.HomeRegion != "eu-west-1" {
		t.Errorf("from stdin: %+v", got)
	}
}

// TestClientBadInput: every mistake is caught before any request is sent,
// with exit code 2 and a message naming the flag, file or field.
func TestClientBadInput(t *testing.T) {
	a := newAgent(t, "")
	dir := t.TempDir()
	badType := filepath.Join(dir, "bad.json")
	os.WriteFile(badType, []byte(`{"id":"x","origin_region":"us-east-1","demand":{"compute":"ten"}}`), 0o644)
	unknown := filepath.Join(dir, "unknown.json")
	os.WriteFile(unknown, []byte(`{"id":"x","origin_region":"us-east-1","demand":{"compute":1},"cpus":4}`), 0o644)
	submit := []string{"job", "submit", "--addr", a.addr}
	flags := append(submit, "--id", "j1", "--origin", "us-east-1")
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"compute zero", append(flags, "--compute", "0"), "--compute: must be greater than zero"},
		{"compute missing", flags, "--compute: must be greater than zero"},
		{"compute not a number", append(flags, "--compute", "ten"), `invalid argument "ten" for "--compute"`},
		{"compute NaN", append(flags, "--compute", "NaN"), "--compute: must be a finite number"},
		{"storage negative", append(flags, "--compute", "1", "--storage-gb", "-1"), "--storage-gb: must not be negative"},
		{"id missing", append(submit, "--origin", "us-east-1", "--compute", "1"), "--id: is required"},
		{"id malformed", append(submit, "--id", "a b", "--origin", "us-east-1", "--compute", "1"), "--id: must contain only"},
		{"origin missing", append(submit, "--id", "j1", "--compute", "1"), "--origin: is required"},
		{"priority too high", append(flags, "--compute", "1", "--priority", "500"), "--priority: must be between 1 and 100"},
		{"slo too high", append(flags, "--compute", "1", "--slo-ms", "99999"), "--slo-ms: must be between"},
		{"duration fractional", append(flags, "--compute", "1", "--duration", "1.5s"), "--duration: must be zero or a positive whole number of seconds"},
		{"duration negative", append(flags, "--compute", "1", "--duration", "-1h"), "--duration"},
		{"duration too long", append(flags, "--compute", "1", "--duration", "800h"), "--duration: must be between 0"},
		{"gpu type without gpus", append(flags, "--compute", "1", "--gpu-type", "H100"), "--gpu-type: needs demand.gpus"},
		{"bad driver", append(flags, "--compute", "1", "--driver", "docker"), "--driver: must be"},
		{"exec without command", append(flags, "--compute", "1", "--driver", "exec"), "--driver exec needs the job's command after --"},
		{"sim with command", append(flags, "--compute", "1", "--driver", "sim", "--", "true"), "the command after --: is only allowed"},
		{"env malformed", append(flags, "--compute", "1", "--env", "NOVALUE", "--", "true"), `--env "NOVALUE": must be KEY=VALUE`},
		{"env reserved", append(flags, "--compute", "1", "--env", "MERIDIAN_JOB_ID=x", "--", "true"), "--env MERIDIAN_JOB_ID: names starting with MERIDIAN_ are reserved"},
		{"env twice", append(flags, "--compute", "1", "--env", "A=1", "--env", "A=2", "--", "true"), "--env: A is set twice"},
		{"command without --", append(flags, "--compute", "1", "python3"), `unexpected argument "python3": put the job's command after --`},
		{"file and flags", append(submit, "--file", badType, "--id", "x", "--compute", "2"), "--file cannot be combined with --compute, --id"},
		{"file and command", append(submit, "--file", badType, "--", "true"), "--file cannot be combined with a command"},
		{"file wrong type", append(submit, "--file", badType), badType + ": demand.compute: must be a number, got string"},
		{"file unknown field", append(submit, "--file", unknown), unknown + ": cpus: unknown field"},
		{"file missing", append(submit, "--file", filepath.Join(dir, "nope.json")), "no such file"},
		{"unknown flag", append(submit, "--cpus", "4"), "unknown flag: --cpus"},
		{"unknown subcommand", []string{"job", "stauts", "x"}, `unknown command "stauts" for "meridian job"; did you mean status?`},
		{"status without ID", []string{"job", "status", "--addr", a.addr}, "takes exactly one job ID, got 0"},
		{"status with two IDs", []string{"job", "status", "--addr", a.addr, "a", "b"}, "takes exactly one job ID, got 2"},
		{"status bad ID", []string{"job", "status", "--addr", a.addr, "a/b"}, `job ID "a/b"`},
		{"cancel bad ID", []string{"job", "cancel", "--addr", a.addr, ".."}, `job ID ".."`},
		{"list bad state", []string{"job", "list", "--addr", a.addr, "--state", "done"}, "--state: must be one of pending"},
		{"list bad limit", []string{"job", "list", "--addr", a.addr, "--limit", "0"}, "--limit: must be between 1 and 1000"},
		{"bad address", []string{"nodes", "--addr", "ftp://host"}, "--addr: address \"ftp://host\": scheme must be http or https"},
		{"bad timeout", []string{"nodes", "--addr", a.addr, "--timeout", "0s"}, "--timeout: must be greater than zero"},
		{"nodes with an argument", []string{"nodes", "--addr", a.addr, "eu"}, "takes no arguments"},
		{"nodes region with json", []string{"nodes", "--addr", a.addr, "--json", "--region", "eu-west-1"}, "--region cannot be combined with --json"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := runClient(t, "", tc.args...)
			wantCode(t, r, 2, "meridian: ", tc.want)
			if jobs := a.jobs(t); len(jobs) != 0 {
				t.Errorf("bad input reached the agent: %v", jobs)
			}
		})
	}
}

func TestClientServerErrors(t *testing.T) {
	a := newAgent(t, "tok")
	auth := []string{"--addr", a.addr, "--token", "tok"}
	cmd := func(args ...string) []string { return append(args, auth...) }

	// The agent refuses a value the client cannot check: exit 2, its message.
	r := runClient(t, "", cmd("job", "submit", "--id", "j1", "--origin", "mars-1", "--compute", "1")...)
	wantCode(t, r, 2, `meridian: origin_region: unknown region "mars-1"`, "HTTP 400 invalid request")

	r = runClient(t, "", cmd("job", "status", "nope")...)
	wantCode(t, r, 1, `meridian: job "nope": not found (HTTP 404 not found)`)
	r = runClient(t, "", cmd("job", "cancel", "nope")...)
	wantCode(t, r, 1, "HTTP 404")

	r = runClient(t, "", "nodes", "--addr", a.addr)
	wantCode(t, r, 1, "HTTP 401 unauthorized", "Bearer")
	r = runClient(t, "", "nodes", "--addr", a.addr, "--token", "guess")
	wantCode(t, r, 1, "HTTP 403 forbidden")

	a.svc.FailWith("Nodes", fmt.Errorf("region us-east-1: %w", api.ErrNoLeader))
	r = runClient(t, "", cmd("nodes")...)
	wantCode(t, r, 1, "region us-east-1: no leader (HTTP 503 no leader)")
	a.svc.FailWith("Trades", errors.New("bolt: page 7 corrupt"))
	r = runClient(t, "", cmd("trades", "--json")...)
	wantCode(t, r, 1, "internal error; see the agent's log (HTTP 500 internal error)")
	if strings.Contains(r.stderr, "corrupt") {
		t.Errorf("the agent's internal error leaked: %s", r.stderr)
	}

	a.svc.SetHook("Regions", func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() })
	r = runClient(t, "", cmd("regions", "--timeout", "100ms")...)
	wantCode(t, r, 1, "no answer from the agent at "+a.addr+" within 100ms")

	// Nothing listens at a closed server's address.
	gone := httptest.NewServer(nil)
	gone.Close()
	r = runClient(t, "", "trades", "--addr", gone.URL)
	wantCode(t, r, 1, "cannot reach the agent at "+gone.URL)
}

func TestClientEnvironment(t *testing.T) {
	a := newAgent(t, "tok")
	t.Setenv(envAddr, a.addr)
	t.Setenv(envToken, "tok")
	r := runClient(t, "", "trades")
	wantCode(t, r, 0)
	if r.stdout != "No trades.\n" {
		t.Errorf("stdout = %q", r.stdout)
	}
	// Flags win over the environment.
	r = runClient(t, "", "trades", "--token", "guess")
	wantCode(t, r, 1, "HTTP 403")
	t.Setenv(envAddr, "ftp://x")
	r = runClient(t, "", "trades")
	wantCode(t, r, 2, "MERIDIAN_ADDR: address")
	// The token never shows in help.
	r = runClient(t, "", "trades", "--help")
	wantCode(t, r, 0)
	if strings.Contains(r.stdout, "tok\"") || !strings.Contains(r.stdout, "MERIDIAN_TOKEN") {
		t.Errorf("help:\n%s", r.stdout)
	}
}

func TestJobStatusListCancel(t *testing.T) {
	a := newAgent(t, "")
	for _, id := range []string{"j1", "j2", "j3"} {
		wantCode(t, runClient(t, "", "job", "submit", "--addr", a.addr, "--id", id, "--origin", "us-east-1", "--compute", "10"), 0)
	}
	code := 3
	a.svc.UpdateJob("j2", func(st *api.JobStatus) {
		st.State, st.Node, st.Region, st.AllocationID, st.Epoch, st.CostPerHour, st.ExitCode = api.JobFailed, "n7", "eu-west-1", "a9", 2, 3.5, &code
	})
	a.svc.SetAllocations([]api.Allocation{{ID: "a9", JobID: "j2", Node: "n7", Region: "eu-west-1", Epoch: 2, State: api.AllocFailed, Driver: "exec", CostPerHour: 3.5, ExitCode: &code, CreatedAt: cliNow}})

	r := runClient(t, "", "job", "status", "--addr", a.addr, "j2")
	wantCode(t, r, 0)
	for _, want := range []string{"State          = failed", "Node           = n7", "Exit code      = 3", "Cost/hour      = $3.50", "Allocations\n",
		"a9  n7    eu-west-1  2      failed  exec    $3.50   3     2026-03-01T12:00:00Z"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("status stdout lacks %q:\n%s", want, r.stdout)
		}
	}
	r = runClient(t, "", "job", "status", "--addr", a.addr, "--json", "j2")
	wantCode(t, r, 0)
	if !strings.Contains(r.stdout, `"exit_code": 3`) {
		t.Errorf("status --json = %s", r.stdout)
	}

	r = runClient(t, "", "job", "list", "--addr", a.addr, "--limit", "2")
	wantCode(t, r, 0)
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 3 || !regexp.MustCompile(`^ID\s+STATE\s+HOME`).MatchString(lines[0]) ||
		!strings.HasPrefix(lines[1], "j1  pending") || !strings.HasPrefix(lines[2], "j2  failed ") {
		t.Errorf("list stdout:\n%s", r.stdout)
	}
	if !strings.Contains(r.stderr, "More jobs: meridian job list --cursor j2") {
		t.Errorf("list stderr = %q; want the next-page hint", r.stderr)
	}
	r = runClient(t, "", "job", "list", "--addr", a.addr, "--state", "failed", "--json")
	wantCode(t, r, 0)
	var list api.JobList
	if err := json.Unmarshal([]byte(r.stdout), &list); err != nil || len(list.Jobs) != 1 || list.Jobs[0].ID != "j2" {
		t.Errorf("list --json = %s (%v)", r.stdout, err)
	}
	r = runClient(t, "", "job", "list", "--addr", a.addr, "--state", "running")
	wantCode(t, r, 0)
	if r.stdout != "No jobs.\n" {
		t.Errorf("empty list stdout = %q", r.stdout)
	}

	r = runClient(t, "", "job", "cancel", "--addr", a.addr, "j1")
	wantCode(t, r, 0)
	if r.stdout != "Job \"j1\" cancelled.\n" {
		t.Errorf("cancel stdout = %q", r.stdout)
	}
	r = runClient(t, "", "job", "cancel", "--addr", a.addr, "j2")
	wantCode(t, r, 0)
	if r.stdout != "Job \"j2\" had already ended: failed.\n" {
		t.Errorf("cancel of an ended job: %q", r.stdout)
	}
}

func TestMeshCommands(t *testing.T) {
	a := newAgent(t, "")
	rtt := 71.4
	a.svc.SetNodes([]api.NodeStatus{
		{Name: "n1", Region: "us-east-1", State: api.MemberAlive, Leader: true, PricePerHour: 2.5, Allocations: 3,
			Total: placement.Resources{ComputePerHour: 200, StorageGB: 500, BandwidthGBps: 10, GPUs: 8},
			Free:  placement.Resources{ComputePerHour: 50, StorageGB: 100, BandwidthGBps: 2.5, GPUs: 2}, GPUType: "H100"},
		{Name: "n2", Region: "eu-west-1", State: api.MemberSuspect, RTTMs: &rtt,
			Total: placement.Resources{ComputePerHour: 100}, PricePerHour: 1},
	})
	r := runClient(t, "", "nodes", "--addr", a.addr)
	wantCode(t, r, 0)
	for _, re := range []string{
		`(?m)^NAME\s+REGION\s+STATE\s+LEADER`,
		`(?m)^n2\s+eu-west-1\s+suspect\s+-\s+0/100\s.*\s71\.4$`,
		`(?m)^n1\s+us-east-1\s+alive\s+yes\s+50/200\s+100/500\s+2\.50/10\s+2/8 H100\s+\$2\.50\s+3\s+-$`,
	} {
		if !regexp.MustCompile(re).MatchString(r.stdout) {
			t.Errorf("nodes stdout does not match %s:\n%s", re, r.stdout)
		}
	}
	r = runClient(t, "", "nodes", "--addr", a.addr, "--region", "eu-west-1")
	wantCode(t, r, 0)
	if strings.Contains(r.stdout, "n1") || !strings.Contains(r.stdout, "n2") {
		t.Errorf("nodes --region:\n%s", r.stdout)
	}
	r = runClient(t, "", "nodes", "--addr", a.addr, "--json")
	wantCode(t, r, 0)
	var nl api.NodeList
	if err := json.Unmarshal([]byte(r.stdout), &nl); err != nil || len(nl.Nodes) != 2 {
		t.Errorf("nodes --json = %s (%v)", r.stdout, err)
	}

	a.svc.SetRegions(api.RegionsView{
		Regions: []api.RegionSummary{
			{Region: "eu-west-1", Members: api.MemberCounts{Alive: 2, Suspect: 1}, Leader: "n2", CheapestPricePerHour: 1,
				Total: placement.Resources{ComputePerHour: 300}, Free: placement.Resources{ComputePerHour: 120},
				Forecast: &api.RegionForecast{ComputePerHour: 250}, Adjustments: &api.RegionAdjustments{PriceMultiplier: 1.2}},
			{Region: "us-east-1", Members: api.MemberCounts{Alive: 1, Dead: 1}},
		},
		RTTMs: map[string]map[string]float64{"eu-west-1": {"eu-west-1": 1, "us-east-1": 71.4}, "us-east-1": {"eu-west-1": 70.6}},
	})
	r = runClient(t, "", "regions", "--addr", a.addr, "--rtt")
	wantCode(t, r, 0)
	for _, re := range []string{
		`(?m)^eu-west-1\s+2\s+1\s+0\s+120/300\s+0/0\s+\$1\.00\s+n2\s+250\s+1\.20$`,
		`(?m)^us-east-1\s+1\s+0\s+1\s+0/0\s+0/0\s+-\s+-\s+-\s+-$`,
		`Estimated RTT \(ms\), from row to column`,
		`(?m)^eu-west-1\s+1\s+71$`,
		`(?m)^us-east-1\s+71\s+-$`,
	} {
		if !regexp.MustCompile(re).MatchString(r.stdout) {
			t.Errorf("regions stdout does not match %s:\n%s", re, r.stdout)
		}
	}
	r = runClient(t, "", "regions", "--addr", a.addr, "--json")
	wantCode(t, r, 0)
	var v api.RegionsView
	if err := json.Unmarshal([]byte(r.stdout), &v); err != nil || v.RTTMs["us-east-1"]["eu-west-1"] != 70.6 {
		t.Errorf("regions --json = %s (%v)", r.stdout, err)
	}

	a.svc.SetTrades([]api.Trade{{ID: "t1", JobID: "j2", BuyerRegion: "us-east-1", SellerRegion: "eu-west-1", Node: "n2",
		State: api.TradeCommitted, Resources: placement.Resources{ComputePerHour: 40}, PricePerHour: 1.25, CostPerHour: 0.5, Score: 32, UpdatedAt: cliNow}})
	r = runClient(t, "", "trades", "--addr", a.addr)
	wantCode(t, r, 0)
	if !regexp.MustCompile(`(?m)^t1\s+j2\s+us-east-1\s+eu-west-1\s+n2\s+committed\s+40\s+\$1\.25\s+\$0\.50\s+32\s+2026-03-01T12:00:00Z$`).MatchString(r.stdout) {
		t.Errorf("trades stdout:\n%s", r.stdout)
	}
}
