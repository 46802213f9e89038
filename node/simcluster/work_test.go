package simcluster_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"testing/synctest"
	"time"

	"github.com/meridian-mesh/meridian/node"
	"github.com/meridian-mesh/meridian/node/api"
	"github.com/meridian-mesh/meridian/node/simcluster"
	"github.com/meridian-mesh/meridian/placement"
)

// TestWorkIsABlockingQuery shows that a worker hears of its allocations
// from the leader's blocking query, not by polling: with a poll interval
// (the retry delay after a failed ask) of 20 s and a wait of ten minutes, a
// job placed on the worker runs, and a cancelled one stops, within seconds. It also checks the route's validation of wait.
func TestWorkIsABlockingQuery(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		topo, err := threeRegions(t).Subset("us-east-1")
		if err != nil {
			t.Fatal(err)
		}
		capacity := func(region string, ordinal int) simcluster.NodeCapacity {
			if ordinal < 3 {
				return simcluster.NodeCapacity{}
			}
			return simcluster.NodeCapacity{Resources: placement.Resources{ComputePerHour: 1000, StorageGB: 100, GPUs: 8}, PricePerHour: 10}
		}
		c := startCluster(t, ctx, simcluster.Config{Topology: topo, Servers: 3, Workers: 1, Seed: 3, Capacity: capacity,
			Tuning: node.Tuning{PollInterval: 20 * time.Second, WorkWait: 10 * time.Minute}})
		defer closeCluster(t, c)
		entry, _ := c.Agent("us-east-1-0")

		// Let the worker settle into its wait with nothing to run (its
		// first asks may have failed before the region had a leader).
		time.Sleep(time.Minute)
		for i, id := range []string{"first", "second"} {
			if _, _, err := entry.SubmitJob(ctx, job(id, "us-east-1", 300, time.Hour)); err != nil {
				t.Fatal(err)
			}
			submitted := time.Now()
			waitFor(t, id+" job running", 5*time.Second, func() error {
				st, err := entry.Job(ctx, id)
				if err == nil && st.State != api.JobRunning {
					err = fmt.Errorf("state %s (%s)", st.State, st.Reason)
				}
				return err
			})
			t.Logf("job %d running %v after its submission", i+1, time.Since(submitted))
		}
		if _, err := entry.CancelJob(ctx, "first"); err != nil {
			t.Fatal(err)
		}
		worker, _ := c.Agent("us-east-1-3")
		waitFor(t, "cancelled task stopped", 5*time.Second, func() error {
			n, err := gauge(worker, "meridian_tasks_running")
			if err == nil && n != 1 {
				err = fmt.Errorf("%v tasks running on the worker, want 1", n)
			}
			return err
		})

		// The route checks wait.
		for _, q := range []string{"wait=forever", "wait=-1s", "wait=11m"} {
			rec := httptest.NewRecorder()
			worker.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/v1/internal/work?node=us-east-1-3&known=x&"+q, nil))
			var body api.ErrorResponse
			_ = json.Unmarshal(rec.Body.Bytes(), &body)
			if rec.Code != http.StatusBadRequest || body.Field != "wait" {
				t.Errorf("%s: %d %s, want 400 naming wait", q, rec.Code, rec.Body)
			}
		}
	})
}

// gauge reads one of an agent's gauges from its registry.
func gauge(a *node.Agent, name string) (float64, error) {
	families, err := a.Registry().Gather()
	if err != nil {
		return 0, err
	}
	for _, f := range families {
		if f.GetName() == name && len(f.GetMetric()) == 1 {
			return f.GetMetric()[0].GetGauge().GetValue(), nil
		}
	}
	return 0, fmt.Errorf("no gauge %s", name)
}
