package bench

import (
	"math"
	"testing"
	"time"
)

// meshConfig is a world small enough to run the real mesh in `make test`
// under the race detector: three neighbouring regions (Dublin, N. Virginia,
// Ohio) of one server and one worker each, a quarter of an hour of
// arrivals in five-minute windows. The data files and seed come from the flags.
func meshConfig(t *testing.T) Config {
	t.Helper()
	cfg, err := flags.Config()
	if err != nil {
		t.Fatal(err)
	}
	if !flags.IsSet("regions") {
		cfg.Regions = []string{"eu-west-1", "us-east-1", "us-east-2"}
	}
	cfg.Length = 15 * time.Minute
	cfg.Window = 5 * time.Minute
	cfg.Servers, cfg.Workers = 1, 1
	return cfg
}

// TestWorldMesh runs the real mesh twice next to the baselines on the
// small world of meshConfig: with its market, and without.
//
// Without a market it must behave as local-only does — every job at home
// or nowhere, about as many placed, the same utilization — which checks the
// harness end to end (job specs, submission at virtual arrival times,
// outcomes read back from the ledgers) against the discrete-event
// simulation. With its market it must place at least as many jobs as
// without, serve some away from home, and keep every SLO.
func TestWorldMesh(t *testing.T) {
	if testing.Short() {
		t.Skip("the real mesh, twice")
	}
	dir := outDir(t)
	r := runWorld(t, worldRun{cfg: meshConfig(t), mesh: []MeridianOptions{{}, {NoMarket: true}}, dir: dir})
	checkReport(t, dir, r)
	ev := map[string]Evaluation{}
	for _, e := range r.Evaluations {
		ev[e.Result.Name] = e
	}
	mesh, alone, local := ev["meridian"], ev["meridian-no-market"], ev["local-only"]
	if alone.Traded != 0 || alone.Result.CrossRegionGB != 0 {
		t.Errorf("without a market the mesh served %d jobs away from home", alone.Traded)
	}
	if alone.Result.SLOPct != 100 {
		t.Errorf("without a market the mesh met the SLO of %.2f%% of its jobs; at home it is always met", alone.Result.SLOPct)
	}
	// The mesh decides with the same placement pipeline on the same nodes;
	// it may retry a pending job, and its jobs are committed in Raft's
	// order rather than the simulation's, so allow a job or two either way.
	if d := math.Abs(float64(alone.Placed - local.Placed)); d > 2 {
		t.Errorf("the mesh without a market placed %d jobs, local-only %d", alone.Placed, local.Placed)
	}
	for region, u := range local.Utilization {
		if math.Abs(alone.Utilization[region]-u) > 0.1 {
			t.Errorf("%s: utilization %.3f in the mesh without a market, %.3f in local-only", region, alone.Utilization[region], u)
		}
	}
	if mesh.Placed < alone.Placed {
		t.Errorf("the mesh placed %d jobs with its market, %d without: trading should never place fewer", mesh.Placed, alone.Placed)
	}
	if mesh.Traded == 0 {
		t.Errorf("the mesh traded nothing, though local-only left %d of %d jobs unplaced", local.Jobs-local.Placed, local.Jobs)
	}
	if mesh.Result.SLOPct != 100 {
		t.Errorf("the mesh served %.2f%% of its placed jobs within their SLO and price cap; want all", mesh.Result.SLOPct)
	}
	// The client stops every job at its window's end, moved or not.
	for _, ev := range []Evaluation{alone, mesh} {
		if ev.OverrunNodeHours > 0.01 {
			t.Errorf("%s held %.3f node-hours past its jobs' windows (%d moved)", ev.Result.Name, ev.OverrunNodeHours, ev.Moved)
		}
	}
}
