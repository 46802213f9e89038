//go:build unix

package simcluster_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/netsim"
	"github.com/meridian-mesh/meridian/node"
	"github.com/meridian-mesh/meridian/node/api"
	"github.com/meridian-mesh/meridian/node/runner"
	"github.com/meridian-mesh/meridian/node/simcluster"
	"github.com/meridian-mesh/meridian/placement"
)

// TestExecDriver runs real child processes, so it runs in real time (a
// one-node region over netsim): a command that succeeds completes the job
// with its output kept in the data dir; one that exits 3 fails the job with
// exit code 3 once its attempts are used up.
func TestExecDriver(t *testing.T) {
	if testing.Short() {
		t.Skip("real time")
	}
	ctx := context.Background()
	topo, err := netsim.WorldTopology().Subset("eu-west-1")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	c, err := simcluster.Start(ctx, simcluster.Config{Topology: topo, Servers: 1, Workers: 0, Seed: 1, DataDir: dir,
		Capacity: func(string, int) simcluster.NodeCapacity {
			return simcluster.NodeCapacity{Resources: placement.Resources{ComputePerHour: 100}, PricePerHour: 1}
		},
		Tuning: node.Tuning{MaxAttempts: 1, PollInterval: 100 * time.Millisecond},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	rctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := c.WaitReady(rctx); err != nil {
		t.Fatal(err)
	}
	a, _ := c.Agent("eu-west-1-0")
	ok := api.JobSpec{ID: "hello", OriginRegion: "eu-west-1", Demand: placement.Resources{ComputePerHour: 10},
		Driver: api.DriverExec, Command: []string{"sh", "-c", "echo hello from $MERIDIAN_JOB_ID"}}
	bad := ok
	bad.ID, bad.Command = "boom", []string{"sh", "-c", "exit 3"}
	for _, s := range []api.JobSpec{ok, bad} {
		if _, _, err := a.SubmitJob(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	wait := func(id string, want api.JobState) api.JobStatus {
		deadline := time.Now().Add(30 * time.Second)
		for {
			st, err := a.Job(ctx, id)
			if err == nil && st.State == want {
				return st
			}
			if time.Now().After(deadline) {
				t.Fatalf("job %s: %+v %v, want %s", id, st, err, want)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	st := wait("hello", api.JobCompleted)
	if st.ExitCode == nil || *st.ExitCode != 0 {
		t.Errorf("hello: exit code %v, want 0", st.ExitCode)
	}
	out, err := os.ReadFile(filepath.Join(runner.TaskDir(filepath.Join(dir, "eu-west-1-0", "tasks"), st.AllocationID), "stdout"))
	if err != nil || !strings.Contains(string(out), "hello from hello") {
		t.Errorf("task stdout %q, %v", out, err)
	}
	st = wait("boom", api.JobFailed)
	if st.ExitCode == nil || *st.ExitCode != 3 {
		t.Errorf("boom: exit code %v, want 3 (%+v)", st.ExitCode, st)
	}
	if !strings.Contains(st.Reason, "exit code 3") {
		t.Errorf("boom: reason %q does not give the exit code", st.Reason)
	}
}
