package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

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
		{[]string{"netsim", "heal", "extra"}, "takes 0 argument"},
		{[]string{"netsim", "partition"}, "takes 1 argument"},
		{[]string{"agent"}, "--region is required"},
		{[]string{"agent", "--region", "us-east-1", "--bootstrap-expect", "1"}, "--bootstrap-expect needs --server"},
		{[]string{"agent", "--region", "us-east-1", "--compute", "-5"}, "--compute -5"},
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
