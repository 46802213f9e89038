package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/node/api"

	"github.com/meridian-mesh/meridian/netsim"
)

// TestNetsimAndAgentBadFlags: every bad flag is a usage error (exit 2)
// that names the flag, before anything starts.
func TestNetsimAndAgentBadFlags(t *testing.T) {
	badJSON := filepath.Join(t.TempDir(), "agent.json")
	if err := os.WriteFile(badJSON, []byte(`{"region": "us-east-1", "compute": "lots"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	unknownKey := filepath.Join(t.TempDir(), "agent2.json")
	if err := os.WriteFile(unknownKey, []byte(`{"regoin": "us-east-1"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"netsim", "--regions", "0"}, "--regions 0"},
		{[]string{"netsim", "--regions", "us-east-1,mars-1"}, `"mars-1" is not a region`},
		{[]string{"netsim", "--regions", "us-east-1,us-east-1"}, "given twice"},
		{[]string{"netsim", "--speed", "0"}, "--speed"},
		{[]string{"netsim", "--nodes-per-region", "0"}, "--nodes-per-region"},
		{[]string{"netsim", "--duration", "-1s"}, "--duration"},
		{[]string{"netsim", "--workload", "/nonexistent/trace.csv"}, "--workload"},
		{[]string{"netsim", "--topology", "/nonexistent/topo.csv"}, "--topology"},
		{[]string{"netsim", "--load", "-1"}, "--load"},
		{[]string{"netsim", "--summary-json", filepath.Join(t.TempDir(), "no", "such", "dir", "s.json")}, "--summary-json"},
		{[]string{"netsim", "--summary-json", t.TempDir()}, "--summary-json"},
		{[]string{"netsim", "--progress-interval", "-1s"}, "--progress-interval -1s"},
		{[]string{"netsim", "--start", "25:00"}, `--start "25:00"`},
		{[]string{"netsim", "--start", "yesterday"}, `--start "yesterday"`},
		{[]string{"netsim", "heal", "extra"}, "takes 0 argument"},
		{[]string{"netsim", "partition"}, "takes 1 argument"},
		{[]string{"agent"}, "--region is required"},
		{[]string{"agent", "--region", "us-east-1", "--bootstrap-expect", "1"}, "--bootstrap-expect needs --server"},
		{[]string{"agent", "--region", "us-east-1", "--compute", "-5"}, "--compute -5"},
		{[]string{"agent", "--region", "us-east-1", "--price-per-hour", "0"}, "--price-per-hour 0"},
		{[]string{"agent", "--region", "us-east-1", "--compute", "10", "--price-per-hour", "0"}, "--price-per-hour 0"},
		{[]string{"agent", "--region", "us-east-1", "--gossip-key", "short"}, "--gossip-key"},
		{[]string{"agent", "--region", "us-east-1", "--log-level", "loud"}, "--log-level"},
		{[]string{"agent", "--region", "us-east-1", "--local-reserve", "1"}, "--local-reserve 1"},
		{[]string{"agent", "--region", "us-east-1", "--local-reserve", "NaN"}, "--local-reserve"},
		{[]string{"agent", "--region", "us-east-1", "--offload-margin", "Inf"}, "--offload-margin"},
		{[]string{"agent", "--region", "us-east-1", "--lease-reach", "far"}, `--lease-reach "far"`},
		{[]string{"agent", "--region", "us-east-1", "--lease-reach", "-1s"}, "--lease-reach"},
		{[]string{"agent", "--config", badJSON}, `field "compute"`},
		{[]string{"agent", "--config", unknownKey}, `unknown field "regoin"`},
	} {
		var out, errb bytes.Buffer
		code := run(tc.args, strings.NewReader(""), &out, &errb)
		if code != exitUsage || !strings.Contains(errb.String(), tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want exit %d naming %q", tc.args, code, errb.String(), exitUsage, tc.want)
		}
	}
}

// TestNetsimStartTime: --start fixes the workload's start, so a seed
// reproduces a run at any hour; without it the run starts at the hour.
func TestNetsimStartTime(t *testing.T) {
	now := time.Date(2026, 11, 29, 5, 42, 17, 0, time.UTC)
	for _, c := range []struct{ start, want string }{
		{"", "2026-11-29T05:00:00Z"},
		{"03:00", "2026-11-29T03:00:00Z"},
		{"23:30", "2026-11-29T23:30:00Z"},
		{"2026-06-01T12:00:00+02:00", "2026-06-01T10:00:00Z"},
	} {
		got, err := netsimOptions{start: c.start}.startTime(now)
		if err != nil || got.Format(time.RFC3339) != c.want {
			t.Errorf("--start %q: %v, %v; want %s", c.start, got, err, c.want)
		}
	}
}

func TestPickRegionsSpreadsAcrossTheGlobe(t *testing.T) {
	topo := mustWorld(t)
	got, err := pickRegions(topo, "3")
	if err != nil || strings.Join(got, ",") != "us-east-1,eu-west-1,ap-northeast-1" {
		t.Fatalf("pickRegions 3 = %v, %v", got, err)
	}
}

func mustWorld(t *testing.T) *netsim.Topology {
	t.Helper()
	return netsim.WorldTopology()
}

// TestNetsimEndToEnd runs `meridian netsim` in this process on a small
// mesh: the node APIs it prints answer, the progress line comes, faults
// injected with `meridian netsim partition|isolate|heal` through its
// control API succeed and are in the summary, and the summary JSON has the
// demand that flowed.
func TestNetsimEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a mesh of 6 nodes: skipped in -short mode")
	}
	const nodes = 6
	ports := &mpCluster{t: t, used: map[int]bool{}}
	summaryPath := filepath.Join(t.TempDir(), "summary.json")
	var p *inProcess
	var control string
	apis := map[string]string{} // node name → API URL
	for attempt := 1; ; attempt++ {
		control = net.JoinHostPort("127.0.0.1", strconv.Itoa(ports.port(false)))
		base := freePortRun(t, ports, nodes)
		p = startInProcess("netsim", "--regions", "2", "--nodes-per-region", "3", "--duration", "12s",
			"--speed", "240", "--job-seconds", "2", "--seed", "3", "--log-level", "error",
			"--http-base-port", strconv.Itoa(base), "--control", control,
			"--summary-json", summaryPath, "--progress-interval", "500ms")
		// The node table is printed once every API listens.
		err := ports.poll(mpWait, func() (bool, string) {
			if p.exited() {
				return true, ""
			}
			clear(apis)
			for _, line := range strings.Split(p.stdout.String(), "\n") {
				if f := strings.Fields(line); len(f) == 4 && strings.HasPrefix(f[3], "http://127.0.0.1:") {
					apis[f[0]] = f[3]
				}
			}
			return len(apis) == nodes, fmt.Sprintf("%d node APIs printed", len(apis))
		})
		if err != nil {
			p.cancel()
			p.wait(t, mpLeaveWait, exitOK)
			t.Fatalf("node APIs: %v\nstdout:\n%s\nstderr:\n%s", err, p.stdout.String(), p.stderr.String())
		}
		if !p.exited() {
			break
		}
		if attempt < 3 && strings.Contains(p.stderr.String(), "address already in use") {
			t.Logf("netsim lost a port to another process; starting it again")
			continue
		}
		t.Fatalf("netsim exited at start with code %d\nstdout:\n%s\nstderr:\n%s", p.code, p.stdout.String(), p.stderr.String())
	}
	defer func() {
		// On failure, stop the run instead of waiting for its end.
		if !p.exited() {
			p.cancel()
			<-p.done
		}
	}()

	for name, url := range apis {
		ports.waitFor(name+" answers GET /v1/health on "+url, func() (bool, string) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, url+"/v1/health", nil)
			if err != nil {
				return false, err.Error()
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return false, err.Error()
			}
			defer resp.Body.Close()
			var h api.Health
			if err := json.NewDecoder(resp.Body).Decode(&h); err != nil {
				return false, fmt.Sprintf("%s: %v", resp.Status, err)
			}
			return resp.StatusCode == http.StatusOK && h.Node == name, fmt.Sprintf("%s: %+v", resp.Status, h)
		})
	}
	ports.waitFor("the mesh is ready", func() (bool, string) {
		return strings.Contains(p.stderr.String(), "mesh ready"), "not yet"
	})

	// Faults, injected as from another terminal, while demand flows.
	var isolated string
	for name := range apis {
		if strings.HasPrefix(name, "eu-west-1-") && (isolated == "" || name > isolated) {
			isolated = name
		}
	}
	for _, args := range [][]string{{"partition", "us-east-1"}, {"isolate", isolated}, {"heal"}} {
		var out, errb bytes.Buffer
		full := append(append([]string{"netsim"}, args...), "--control", control)
		if code := run(full, strings.NewReader(""), &out, &errb); code != exitOK || out.String() != strings.Join(args, " ")+" done\n" {
			t.Fatalf("meridian %s: exit %d\nstdout: %q\nstderr: %s", strings.Join(full, " "), code, out.String(), errb.String())
		}
	}
	progress := regexp.MustCompile(`(?m)^\[\d+s\] workload \d\d:\d\d UTC  submitted \d+  placed locally \d+  traded \d+  pending \d+  cost \$\d+/h  SLO [\d.]+%$`)
	ports.waitFor("a progress line is printed", func() (bool, string) {
		return progress.MatchString(p.stderr.String()), "none yet"
	})

	// The run ends by itself after --duration.
	p.wait(t, mpWait+12*time.Second, exitOK)
	if !strings.Contains(p.stdout.String(), "\nsummary: 2 regions, 6 nodes,") {
		t.Errorf("no summary on standard output:\n%s", p.stdout.String())
	}
	b, err := os.ReadFile(summaryPath)
	if err != nil {
		t.Fatalf("--summary-json: %v", err)
	}
	var sum netsimSummary
	if err := json.Unmarshal(b, &sum); err != nil {
		t.Fatalf("--summary-json %s: %v\n%s", summaryPath, err, b)
	}
	t.Logf("summary: submitted %d, acked %d, placed locally %d, traded %d, pending %d, cost $%.2f, faults %q",
		sum.Submitted, sum.Acked, sum.PlacedLocal, sum.Traded, sum.Pending, sum.CostUSD, sum.Faults)
	if sum.Nodes != nodes || strings.Join(sum.Regions, ",") != "us-east-1,eu-west-1" {
		t.Errorf("summary of %d nodes in %v; want %d in us-east-1, eu-west-1", sum.Nodes, sum.Regions, nodes)
	}
	if sum.Submitted == 0 || sum.Acked == 0 {
		t.Errorf("summary: %d jobs submitted, %d acknowledged; want demand to flow", sum.Submitted, sum.Acked)
	}
	if sum.PlacedLocal+sum.Traded == 0 || !(sum.CostUSD > 0) {
		t.Errorf("summary: %d jobs placed locally, %d traded, cost $%v; want jobs placed and their cost counted", sum.PlacedLocal, sum.Traded, sum.CostUSD)
	}
	wantFaults := []string{"partition us-east-1", "isolate " + isolated, "heal"}
	if len(sum.Faults) != len(wantFaults) {
		t.Fatalf("summary faults %q; want %q", sum.Faults, wantFaults)
	}
	for i, f := range sum.Faults {
		if !strings.HasSuffix(f, " "+wantFaults[i]) {
			t.Errorf("summary fault %d = %q; want it to be %q", i, f, wantFaults[i])
		}
	}
}

// freePortRun returns the first of n consecutive loopback ports free now,
// for --http-base-port.
func freePortRun(t *testing.T, ports *mpCluster, n int) int {
	t.Helper()
	for range 50 {
		base := ports.port(false)
		if base+n > 65000 {
			continue
		}
		ok := true
		for p := base + 1; p < base+n && ok; p++ {
			l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
			if err != nil || ports.used[p] {
				ok = false
			}
			if err == nil {
				l.Close()
			}
		}
		if ok {
			for p := base + 1; p < base+n; p++ {
				ports.used[p] = true
			}
			return base
		}
	}
	t.Fatalf("no %d consecutive free ports in 50 tries", n)
	return 0
}

// TestCostMeterCountsAllocationsRunningAtTheEnd: the summary's cost counts
// what the allocations live at the last sample cost up to it, and a run
// whose only samples are its start (nothing placed) and its end (work
// running) costs more than nothing.
func TestCostMeterCountsAllocationsRunningAtTheEnd(t *testing.T) {
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name    string
		speed   float64
		samples []float64 // $/h, one a second from t0
		want    float64
	}{
		// 0 → 36 $/h over 1 s at 240× is 4 workload minutes at 18 $/h on
		// average; then 36 $/h for 2 s more, 8 workload minutes.
		{"ramp then steady", 240, []float64{0, 36, 36, 36}, 1.2 + 4.8},
		{"a short run: start and end only", 3600, []float64{0, 10}, 5},
		{"nothing placed", 240, []float64{0, 0, 0}, 0},
	} {
		m := costMeter{speed: tc.speed}
		for i, r := range tc.samples {
			m.sample(t0.Add(time.Duration(i)*time.Second), r)
		}
		// A sample at the same instant again, or out of order, adds nothing.
		m.sample(t0, 1e6)
		if math.Abs(m.total-tc.want) > 1e-9 {
			t.Errorf("%s: cost $%v; want $%v", tc.name, m.total, tc.want)
		}
	}
}
