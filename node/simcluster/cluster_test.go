package simcluster_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"

	"github.com/meridian-mesh/meridian/netsim"
	"github.com/meridian-mesh/meridian/node"
	"github.com/meridian-mesh/meridian/node/api"
	"github.com/meridian-mesh/meridian/node/simcluster"
	"github.com/meridian-mesh/meridian/placement"
)

func TestMain(m *testing.M) {
	simcluster.TuneGC()
	goleak.VerifyTestMain(m)
}

// threeRegions is a small world: three regions 60–150 ms apart.
func threeRegions(t *testing.T) *netsim.Topology {
	t.Helper()
	topo, err := netsim.WorldTopology().Subset("us-east-1", "eu-west-1", "ap-northeast-1")
	if err != nil {
		t.Fatal(err)
	}
	return topo
}

// waitFor polls cond every virtual 100 ms until it holds or the virtual
// deadline passes.
func waitFor(t *testing.T, what string, d time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v: %v", what, d, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func startCluster(t *testing.T, ctx context.Context, cfg simcluster.Config) *simcluster.Cluster {
	t.Helper()
	cfg.DataDir = t.TempDir()
	// The tests run in synctest bubbles and restart agents in process,
	// where written but unsynced logs survive as they would a crash of the
	// process; a sync would only hold the virtual clock.
	cfg.NoSync = true
	c, err := simcluster.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	if err := c.WaitReady(rctx); err != nil {
		c.Close()
		t.Fatal(err)
	}
	return c
}

func closeCluster(t *testing.T, c *simcluster.Cluster) {
	t.Helper()
	if err := c.Close(); err != nil {
		t.Error(err)
	}
	// memberlist's probe goroutines notice shutdown on their next tick.
	time.Sleep(time.Minute)
}

// workersOf is a capacity function: servers (ordinal 0) offer nothing,
// workers the compute (tasks/hour) at the price ($/hour).
func workersOf(compute, price float64) func(region string, ordinal int) simcluster.NodeCapacity {
	return func(_ string, ordinal int) simcluster.NodeCapacity {
		if ordinal == 0 {
			return simcluster.NodeCapacity{}
		}
		return simcluster.NodeCapacity{Resources: placement.Resources{ComputePerHour: compute}, PricePerHour: price}
	}
}

func job(id, origin string, compute float64, dur time.Duration) api.JobSpec {
	return api.JobSpec{ID: id, OriginRegion: origin, Demand: placement.Resources{ComputePerHour: compute}, DurationS: int64(dur / time.Second)}
}

// TestEndToEnd covers the job lifecycle on 3 regions × 3 servers + 1
// worker: submit to a node of another region (forwarded to the home
// leader), placement committed, the task runs and completes; idempotent
// resubmission; a conflicting resubmission; cancel; and re-placement after
// the worker running a job crashes.
func TestEndToEnd(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		capacity := func(region string, ordinal int) simcluster.NodeCapacity {
			if ordinal < 3 {
				return simcluster.NodeCapacity{}
			}
			return simcluster.NodeCapacity{Resources: placement.Resources{ComputePerHour: 1000, StorageGB: 100, GPUs: 8}, PricePerHour: 10}
		}
		c := startCluster(t, ctx, simcluster.Config{Topology: threeRegions(t), Servers: 3, Workers: 2, Seed: 7, Capacity: capacity})
		defer closeCluster(t, c)

		// Submit through a worker in Tokyo a job whose home is us-east-1.
		entry, _ := c.Agent("ap-northeast-1-4")
		spec := job("train-1", "us-east-1", 300, 10*time.Minute)
		st, created, err := entry.SubmitJob(ctx, spec)
		if err != nil || !created {
			t.Fatalf("submit: created=%v err=%v", created, err)
		}
		if st.HomeRegion != "us-east-1" {
			t.Errorf("home region %q", st.HomeRegion)
		}
		waitFor(t, "job placed", time.Minute, func() error {
			st, err := entry.Job(ctx, "train-1")
			if err != nil {
				return err
			}
			if st.State != api.JobPlaced && st.State != api.JobRunning {
				return fmt.Errorf("state %s (%s)", st.State, st.Reason)
			}
			if !strings.HasPrefix(st.Node, "us-east-1-") {
				return fmt.Errorf("placed on %s", st.Node)
			}
			return nil
		})
		waitFor(t, "job running", time.Minute, func() error {
			st, err := entry.Job(ctx, "train-1")
			if err == nil && st.State != api.JobRunning {
				err = fmt.Errorf("state %s", st.State)
			}
			return err
		})

		// Idempotent resubmission through another node: same job.
		other, _ := c.Agent("eu-west-1-0")
		st2, created, err := other.SubmitJob(ctx, spec)
		if err != nil || created || st2.ID != "train-1" || st2.Epoch != 1 {
			t.Fatalf("resubmit: %+v created=%v err=%v", st2, created, err)
		}
		// Same ID, different spec: conflict.
		diff := spec
		diff.Demand.ComputePerHour = 301
		if _, _, err := other.SubmitJob(ctx, diff); !errors.Is(err, api.ErrConflict) {
			t.Fatalf("conflicting resubmit: %v, want ErrConflict", err)
		}

		// Crash the worker that runs the job: it is re-placed on the other.
		st, _ = entry.Job(ctx, "train-1")
		first := st.Node
		if err := c.Crash(first); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "job re-placed", 3*time.Minute, func() error {
			st, err := entry.Job(ctx, "train-1")
			if err != nil {
				return err
			}
			if st.Node == first || st.Node == "" || st.Epoch < 2 {
				return fmt.Errorf("on %q epoch %d state %s (%s)", st.Node, st.Epoch, st.State, st.Reason)
			}
			return nil
		})
		allocs, err := entry.Allocations(ctx, api.AllocationFilter{JobID: "train-1"})
		if err != nil {
			t.Fatal(err)
		}
		live := 0
		for _, al := range allocs {
			if al.State == api.AllocPending || al.State == api.AllocRunning {
				live++
			}
		}
		if live != 1 || len(allocs) != 2 {
			t.Errorf("allocations of train-1: %+v, want one lost and one live", allocs)
		}

		// Over HTTP, through the API handler of a Tokyo worker: 201 with the
		// job placed at home, then 200 and the same job on a resubmission.
		body := `{"id":"http-1","origin_region":"eu-west-1","demand":{"compute":50},"duration_s":600}`
		for i, want := range []int{http.StatusCreated, http.StatusOK} {
			rec := httptest.NewRecorder()
			req := httptest.NewRequest(http.MethodPost, "/v1/jobs", strings.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			entry.Handler().ServeHTTP(rec, req)
			var got api.JobStatus
			if err := json.Unmarshal(rec.Body.Bytes(), &got); rec.Code != want || err != nil || got.ID != "http-1" || got.HomeRegion != "eu-west-1" {
				t.Fatalf("POST /v1/jobs #%d: %d %s, want %d", i+1, rec.Code, rec.Body.String(), want)
			}
		}
		// A retry of one submission (same X-Meridian-Submission, as a
		// node's forwarding sends after a lost answer) still reports the
		// creation: 201 twice; another submission finds the job (200).
		body = `{"id":"http-2","origin_region":"eu-west-1","demand":{"compute":50},"duration_s":600}`
		for i, tc := range []struct {
			token string
			want  int
		}{{"sub-1", http.StatusCreated}, {"sub-1", http.StatusCreated}, {"sub-2", http.StatusOK}, {"", http.StatusOK}} {
			rec := httptest.NewRecorder()
			req := httptest.NewRequest(http.MethodPost, "/v1/jobs", strings.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			if tc.token != "" {
				req.Header.Set("X-Meridian-Submission", tc.token)
			}
			entry.Handler().ServeHTTP(rec, req)
			if rec.Code != tc.want {
				t.Fatalf("POST /v1/jobs http-2 #%d (submission %q): %d %s, want %d", i+1, tc.token, rec.Code, rec.Body.String(), tc.want)
			}
		}
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodPost, "/v1/jobs", strings.NewReader(body))
		req.Header.Set("X-Meridian-Submission", "not a token")
		if entry.Handler().ServeHTTP(rec, req); rec.Code != http.StatusBadRequest || !strings.Contains(rec.Body.String(), "X-Meridian-Submission") {
			t.Errorf("bad submission header: %d %s, want 400 naming it", rec.Code, rec.Body.String())
		}
		rec = httptest.NewRecorder()
		entry.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/v1/jobs", strings.NewReader(`{"id":"bad","origin_region":"eu-west-1","demand":{"compute":-1}}`)))
		if rec.Code != http.StatusBadRequest || !strings.Contains(rec.Body.String(), "demand.compute") {
			t.Errorf("bad body: %d %s, want 400 naming demand.compute", rec.Code, rec.Body.String())
		}

		// A short job completes.
		if _, _, err := entry.SubmitJob(ctx, job("short-1", "eu-west-1", 100, 30*time.Second)); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "short job completes", 3*time.Minute, func() error {
			st, err := entry.Job(ctx, "short-1")
			if err == nil && st.State != api.JobCompleted {
				err = fmt.Errorf("state %s (%s)", st.State, st.Reason)
			}
			return err
		})
		if st, _ := entry.Job(ctx, "short-1"); st.CostPerHour != 1 || st.Node == "" {
			t.Errorf("completed job: node %q, cost %v/h, want its node and 100/1000 of $10/h", st.Node, st.CostPerHour)
		}

		// Cancel stops the long job.
		st, err = other.CancelJob(ctx, "train-1")
		if err != nil || st.State != api.JobCancelled {
			t.Fatalf("cancel: %+v %v", st, err)
		}
		st, err = entry.CancelJob(ctx, "train-1")
		if err != nil || st.State != api.JobCancelled {
			t.Fatalf("cancel again: %+v %v", st, err)
		}

		// A job nothing can hold waits with its reason.
		st, _, err = entry.SubmitJob(ctx, job("huge-1", "us-east-1", 5000, time.Minute))
		if err != nil {
			t.Fatal(err)
		}
		if st.State != api.JobPending || st.Reason == "" {
			t.Errorf("huge job: state %s reason %q, want pending with a reason", st.State, st.Reason)
		}
		if _, err := entry.Job(ctx, "nope"); !errors.Is(err, api.ErrNotFound) {
			t.Errorf("unknown job: %v, want ErrNotFound", err)
		}
		list, err := entry.Jobs(ctx, api.JobFilter{Limit: 2})
		if err != nil || len(list.Jobs) != 2 || list.NextCursor == "" {
			t.Errorf("jobs page: %+v %v", list, err)
		}
		if _, _, err := entry.SubmitJob(ctx, job("x", "mars-1", 1, time.Second)); !errors.Is(err, api.ErrInvalid) {
			t.Errorf("unknown region: %v, want ErrInvalid", err)
		}
	})
}

var _ = node.Config{}

// TestGracefulLeaveHandsOverWork: a worker that leaves gets its
// allocations re-placed before it goes, and no goroutine outlives the
// cluster (TestMain's goleak and synctest's own check).
func TestGracefulLeaveHandsOverWork(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		topo, err := netsim.WorldTopology().Subset("eu-west-1")
		if err != nil {
			t.Fatal(err)
		}
		capacity := func(region string, ordinal int) simcluster.NodeCapacity {
			if ordinal == 0 {
				return simcluster.NodeCapacity{}
			}
			return simcluster.NodeCapacity{Resources: placement.Resources{ComputePerHour: 1000}, PricePerHour: 5}
		}
		c := startCluster(t, ctx, simcluster.Config{Topology: topo, Servers: 1, Workers: 2, Seed: 3, Capacity: capacity})
		defer closeCluster(t, c)
		srv, _ := c.Agent("eu-west-1-0")
		if _, _, err := srv.SubmitJob(ctx, job("svc-1", "eu-west-1", 600, 0)); err != nil {
			t.Fatal(err)
		}
		var first string
		waitFor(t, "placed", time.Minute, func() error {
			st, err := srv.Job(ctx, "svc-1")
			if err == nil && st.Node == "" {
				err = fmt.Errorf("state %s", st.State)
			}
			first = st.Node
			return err
		})
		leaver, _ := c.Agent(first)
		lctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		if err := leaver.Leave(lctx); err != nil {
			t.Fatalf("leave: %v", err)
		}
		st, err := srv.Job(ctx, "svc-1")
		if err != nil {
			t.Fatal(err)
		}
		if st.Node == first || st.Epoch < 2 {
			waitFor(t, "re-placed", time.Minute, func() error {
				st, err := srv.Job(ctx, "svc-1")
				if err == nil && (st.Node == first || st.Node == "") {
					err = fmt.Errorf("on %q, state %s", st.Node, st.State)
				}
				return err
			})
		}
	})
}

// TestDemandLoopSurvivesLeaderChange: the region leader forecasts its
// demand (shown on /v1/regions) and a new leader rebuilds the series from
// the ledger instead of starting over.
func TestDemandLoopSurvivesLeaderChange(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		topo, err := netsim.WorldTopology().Subset("us-west-2")
		if err != nil {
			t.Fatal(err)
		}
		capacity := func(region string, ordinal int) simcluster.NodeCapacity {
			return simcluster.NodeCapacity{Resources: placement.Resources{ComputePerHour: 10000}, PricePerHour: 20}
		}
		c := startCluster(t, ctx, simcluster.Config{Topology: topo, Servers: 3, Workers: 0, Seed: 5, Capacity: capacity,
			Tuning: node.Tuning{DemandInterval: 5 * time.Minute}})
		defer closeCluster(t, c)
		entry, _ := c.Agent("us-west-2-0")
		forecastOf := func(a *node.Agent) (*api.RegionForecast, error) {
			v, err := a.Regions(ctx)
			if err != nil {
				return nil, err
			}
			for _, r := range v.Regions {
				if r.Region == "us-west-2" && r.Forecast != nil {
					return r.Forecast, nil
				}
			}
			return nil, fmt.Errorf("no forecast yet")
		}
		for i := range 65 {
			if _, _, err := entry.SubmitJob(ctx, job(fmt.Sprintf("req-%03d", i), "us-west-2", float64(100+10*(i%7)), 3*time.Minute)); err != nil {
				t.Fatal(err)
			}
			time.Sleep(time.Minute)
		}
		leader, ok := c.Leader("us-west-2")
		if !ok {
			t.Fatal("no leader")
		}
		f, err := forecastOf(leader)
		if err != nil {
			t.Fatalf("after 65 minutes of demand: %v", err)
		}
		if f.ObservedComputePerHour <= 0 || f.ComputePerHour <= 0 {
			t.Errorf("forecast %+v: want observed and forecast demand", f)
		}
		if err := c.Crash(leader.Name()); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "new leader with the rebuilt forecast", 6*time.Minute, func() error {
			l, ok := c.Leader("us-west-2")
			if !ok || l.Name() == leader.Name() {
				return fmt.Errorf("no new leader")
			}
			_, err := forecastOf(l)
			return err
		})
	})
}

// TestTradeAcrossRegions: a region that cannot hold a job buys capacity in
// another region through the auction; the job runs there, completes, and
// its home ledger says so. Both regions list the trade.
func TestTradeAcrossRegions(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		capacity := func(region string, ordinal int) simcluster.NodeCapacity {
			switch {
			case ordinal == 0:
				return simcluster.NodeCapacity{}
			case region == "us-east-1":
				return simcluster.NodeCapacity{Resources: placement.Resources{ComputePerHour: 100}, PricePerHour: 10}
			case region == "eu-west-1":
				return simcluster.NodeCapacity{Resources: placement.Resources{ComputePerHour: 2000}, PricePerHour: 30}
			}
			return simcluster.NodeCapacity{Resources: placement.Resources{ComputePerHour: 2000}, PricePerHour: 90}
		}
		c := startCluster(t, ctx, simcluster.Config{Topology: threeRegions(t), Servers: 1, Workers: 1, Seed: 11,
			Capacity: capacity, Market: true})
		defer closeCluster(t, c)
		home, _ := c.Agent("us-east-1-0")
		// The buyer invites the regions its gossip says can serve, and a
		// seller answers only a leader its gossip knows: wait until each
		// side has heard of the other, so the auction, not the gossip's
		// pace, decides where the job goes.
		waitFor(t, "buyer and sellers hear of each other", 2*time.Minute, func() error {
			for _, region := range []string{"eu-west-1", "ap-northeast-1"} {
				seller, _ := c.Agent(region + "-0")
				if r, ok := seller.Gossip().Record("us-east-1-0"); !ok || r.Capacity.Market == nil || !r.Capacity.Market.Leader {
					return fmt.Errorf("%s has not heard of the buyer's leader yet", region)
				}
				if r, ok := home.Gossip().Record(region + "-0"); !ok || r.Capacity.Market == nil || !r.Capacity.Market.Leader || len(r.Capacity.Market.Ask) == 0 {
					return fmt.Errorf("no ask from %s's leader yet", region)
				}
				if r, ok := home.Gossip().Record(region + "-1"); !ok || r.Capacity.Free.ComputePerHour < 500 {
					return fmt.Errorf("no free capacity known in %s yet", region)
				}
			}
			return nil
		})
		if _, _, err := home.SubmitJob(ctx, job("big-1", "us-east-1", 500, 2*time.Minute)); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "job traded", 2*time.Minute, func() error {
			st, err := home.Job(ctx, "big-1")
			if err == nil && (st.State != api.JobTraded && st.State != api.JobRunning || st.Region != "eu-west-1") {
				err = fmt.Errorf("state %s in %q (%s)", st.State, st.Region, st.Reason)
			}
			return err
		})
		trades, err := home.Trades(ctx)
		if err != nil || len(trades) == 0 || trades[0].SellerRegion != "eu-west-1" {
			t.Fatalf("buyer's trades: %+v %v", trades, err)
		}
		seller, _ := c.Agent("eu-west-1-0")
		sold, err := seller.Trades(ctx)
		if err != nil || len(sold) == 0 || sold[0].BuyerRegion != "us-east-1" {
			t.Fatalf("seller's trades: %+v %v", sold, err)
		}
		// Both sides show the same trade at the same price (per hour of
		// the seller's 2000 tasks/h node) and the same cost (the job's
		// quarter of it); the buyer shows the winning score.
		bought := trades[0]
		if sold[0].ID != bought.ID || bought.PricePerHour < 30 || sold[0].PricePerHour != bought.PricePerHour {
			t.Errorf("trade %s at $%v/h on the buyer's side, %s at $%v/h on the seller's; want one trade at one price of at least the seller's $30/h",
				bought.ID, bought.PricePerHour, sold[0].ID, sold[0].PricePerHour)
		}
		if want := bought.PricePerHour / 4; math.Abs(bought.CostPerHour-want) > 1e-9 || math.Abs(sold[0].CostPerHour-want) > 1e-9 {
			t.Errorf("cost per hour: buyer %v, seller %v; want %v", bought.CostPerHour, sold[0].CostPerHour, want)
		}
		if bought.Score <= 0 {
			t.Errorf("buyer's trade has score %v; want the winner's (positive) score", bought.Score)
		}
		waitFor(t, "traded job completes at home", 5*time.Minute, func() error {
			st, err := home.Job(ctx, "big-1")
			if err == nil && st.State != api.JobCompleted {
				err = fmt.Errorf("state %s (%s)", st.State, st.Reason)
			}
			return err
		})
	})
}

// TestOffloadForPrice: with Tuning.OffloadMargin set, a job that fits at
// home is bought from a region that asks clearly less; with a seller dearer
// than home, the same kind of job stays home.
func TestOffloadForPrice(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		capacity := func(region string, ordinal int) simcluster.NodeCapacity {
			price := map[string]float64{"us-east-1": 100, "eu-west-1": 10, "ap-northeast-1": 300}[region]
			if ordinal == 0 {
				return simcluster.NodeCapacity{}
			}
			return simcluster.NodeCapacity{Resources: placement.Resources{ComputePerHour: 1000}, PricePerHour: price}
		}
		c := startCluster(t, ctx, simcluster.Config{Topology: threeRegions(t), Servers: 1, Workers: 1, Seed: 5,
			Capacity: capacity, Market: true, Tuning: node.Tuning{OffloadMargin: 0.25}})
		defer closeCluster(t, c)
		home, _ := c.Agent("us-east-1-0")
		seller, _ := c.Agent("eu-west-1-0")
		waitFor(t, "buyer and seller hear of each other", 2*time.Minute, func() error {
			if r, ok := home.Gossip().Record("eu-west-1-0"); !ok || r.Capacity.Market == nil || len(r.Capacity.Market.Ask) == 0 {
				return errors.New("no ask from eu-west-1 yet")
			}
			if r, ok := seller.Gossip().Record("us-east-1-0"); !ok || r.Capacity.Market == nil || !r.Capacity.Market.Leader {
				return errors.New("eu-west-1 has not heard of us-east-1's leader yet")
			}
			return nil
		})
		if _, _, err := home.SubmitJob(ctx, job("cheap-1", "us-east-1", 100, 10*time.Minute)); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "job offloaded to the cheaper region", time.Minute, func() error {
			st, err := home.Job(ctx, "cheap-1")
			if err == nil && (st.Region != "eu-west-1" || st.State != api.JobTraded && st.State != api.JobRunning) {
				err = fmt.Errorf("state %s in %q (%s)", st.State, st.Region, st.Reason)
			}
			return err
		})
		// The cheapest region keeps its own job: every other is dearer.
		if _, _, err := seller.SubmitJob(ctx, job("home-1", "eu-west-1", 100, 10*time.Minute)); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "cheapest region keeps its job", time.Minute, func() error {
			st, err := seller.Job(ctx, "home-1")
			if err == nil && (st.Region != "eu-west-1" || st.State != api.JobPlaced && st.State != api.JobRunning) {
				err = fmt.Errorf("state %s in %q (%s)", st.State, st.Region, st.Reason)
			}
			return err
		})
	})
}

// TestLocalReserve: a leader keeps the last LocalReserve of its region's
// compute for work that cannot leave. A batch job that would eat into it
// is offered to the market first and served abroad; an interactive job no
// other region can serve within its SLO is placed at home regardless; with
// the reserve turned off every job home can hold stays home.
func TestLocalReserve(t *testing.T) {
	for _, tc := range []struct {
		name         string
		reserve      float64
		secondAbroad bool
	}{{"default reserve", 0, true}, {"reserve off", -1, false}} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				ctx := context.Background()
				c := startCluster(t, ctx, simcluster.Config{Topology: threeRegions(t), Servers: 1, Workers: 1, Seed: 9,
					Capacity: workersOf(1000, 10), Market: true, Tuning: node.Tuning{LocalReserve: tc.reserve}})
				defer closeCluster(t, c)
				home, _ := c.Agent("us-east-1-0")
				waitFor(t, "home hears of another region's free capacity and leader", 2*time.Minute, func() error {
					for _, r := range []string{"eu-west-1-0", "ap-northeast-1-0"} {
						if rec, ok := home.Gossip().Record(r); ok && rec.Capacity.Market != nil && rec.Capacity.Market.Leader {
							if w, ok := home.Gossip().Record(strings.TrimSuffix(r, "-0") + "-1"); ok && w.Capacity.Free.ComputePerHour >= 400 {
								return nil
							}
						}
					}
					return errors.New("no other region known with room")
				})
				// The interactive job below must not look servable abroad:
				// wait until network coordinates put the other regions far.
				waitFor(t, "coordinates place the other regions beyond 50 ms", 5*time.Minute, func() error {
					for _, r := range []string{"eu-west-1", "ap-northeast-1"} {
						if d, ok := home.Gossip().RegionRTT("us-east-1", r); !ok || d < 50*time.Millisecond {
							return fmt.Errorf("RTT to %s estimated %v (%v)", r, d, ok)
						}
					}
					return nil
				})
				where := func(id string, want func(region string) bool, what string) {
					t.Helper()
					waitFor(t, id+" "+what, time.Minute, func() error {
						st, err := home.Job(ctx, id)
						if err == nil && (!want(st.Region) || st.State != api.JobTraded && st.State != api.JobRunning && st.State != api.JobPlaced) {
							err = fmt.Errorf("state %s in %q (%s)", st.State, st.Region, st.Reason)
						}
						return err
					})
				}
				atHome := func(r string) bool { return r == "us-east-1" }
				abroad := func(r string) bool { return r != "" && r != "us-east-1" }
				// 400 of 1000 leaves 60 % free: home.
				if _, _, err := home.SubmitJob(ctx, job("batch-1", "us-east-1", 400, 10*time.Minute)); err != nil {
					t.Fatal(err)
				}
				where("batch-1", atHome, "placed at home")
				// Another 400 would leave 20 %: abroad, unless the reserve is off.
				if _, _, err := home.SubmitJob(ctx, job("batch-2", "us-east-1", 400, 10*time.Minute)); err != nil {
					t.Fatal(err)
				}
				if tc.secondAbroad {
					where("batch-2", abroad, "served abroad")
				} else {
					where("batch-2", atHome, "placed at home")
				}
				// Interactive with a 5 ms SLO: only home can serve it, reserve
				// or not.
				inter := job("inter-1", "us-east-1", 150, 10*time.Minute)
				inter.LatencySLOMs = 5
				if _, _, err := home.SubmitJob(ctx, inter); err != nil {
					t.Fatal(err)
				}
				where("inter-1", atHome, "placed at home")
			})
		})
	}
}

// preemptionWorld is three regions (us-east-1, eu-west-1, ap-northeast-1)
// of one server (room 10) and one worker (room 1000) each, with the
// market on and no local reserve (every job home can hold stays home, so
// the only way to make room is preemption), once every leader knows every
// other's leader, free capacity and distance.
type preemptionWorld struct {
	t       *testing.T
	ctx     context.Context
	c       *simcluster.Cluster
	regions []string
}

func newPreemptionWorld(t *testing.T, seed int64) *preemptionWorld {
	ctx := context.Background()
	c := startCluster(t, ctx, simcluster.Config{Topology: threeRegions(t), Servers: 1, Workers: 1, Seed: seed,
		Capacity: workersOf(1000, 10), Market: true, Tuning: node.Tuning{LocalReserve: -1}})
	w := &preemptionWorld{t: t, ctx: ctx, c: c, regions: []string{"us-east-1", "eu-west-1", "ap-northeast-1"}}
	waitFor(t, "regions hear of each other", 5*time.Minute, func() error {
		for _, from := range w.regions {
			g := w.agent(from).Gossip()
			for _, to := range w.regions {
				if to == from {
					continue
				}
				if r, ok := g.Record(to + "-0"); !ok || r.Capacity.Market == nil || !r.Capacity.Market.Leader {
					return fmt.Errorf("%s has not heard of %s's leader", from, to)
				}
				if r, ok := g.Record(to + "-1"); !ok || r.Capacity.Free.ComputePerHour < 1000 {
					return fmt.Errorf("%s does not know %s's free capacity", from, to)
				}
				if d, ok := g.RegionRTT(from, to); !ok || d < 50*time.Millisecond {
					return fmt.Errorf("RTT %s→%s estimated %v (%v)", from, to, d, ok)
				}
			}
		}
		return nil
	})
	return w
}

// agent is the region's server (and leader).
func (w *preemptionWorld) agent(region string) *node.Agent {
	a, _ := w.c.Agent(region + "-0")
	return a
}

func (w *preemptionWorld) submit(a *node.Agent, spec api.JobSpec) {
	w.t.Helper()
	if _, _, err := a.SubmitJob(w.ctx, spec); err != nil {
		w.t.Fatal(err)
	}
}

// placedIn waits until job id, asked of a, is placed in a region ok
// accepts, and returns the region.
func (w *preemptionWorld) placedIn(a *node.Agent, id string, ok func(region string) bool, what string) string {
	w.t.Helper()
	var region string
	waitFor(w.t, id+" "+what, 2*time.Minute, func() error {
		st, err := a.Job(w.ctx, id)
		if err != nil {
			w.t.Fatalf("job %s: %v", id, err)
		}
		switch st.State {
		case api.JobPlaced, api.JobTraded, api.JobRunning:
			if ok(st.Region) {
				region = st.Region
				return nil
			}
		}
		return fmt.Errorf("state %s in %q (%s)", st.State, st.Region, st.Reason)
	})
	return region
}

// preempted checks that job id's only allocation in region was preempted.
func (w *preemptionWorld) preempted(a *node.Agent, id, region string) {
	w.t.Helper()
	allocs, err := a.Allocations(w.ctx, api.AllocationFilter{JobID: id, Region: region})
	if err != nil || len(allocs) != 1 || allocs[0].State != api.AllocPreempted {
		w.t.Fatalf("%s's allocations in %s: %+v %v; want one, preempted", id, region, allocs, err)
	}
}

// notOvercommitted checks every node of every region.
func (w *preemptionWorld) notOvercommitted() {
	w.t.Helper()
	for _, r := range w.regions {
		nodes, err := w.agent(r).Nodes(w.ctx)
		if err != nil {
			w.t.Fatal(err)
		}
		for _, n := range nodes {
			if n.Free.ComputePerHour < 0 {
				w.t.Errorf("node %s overcommitted: %+v", n.Name, n)
			}
		}
	}
}

func batchJob(id, origin string, compute float64) api.JobSpec {
	s := job(id, origin, compute, 30*time.Minute)
	s.Priority = 1
	return s
}

func interactiveJob(id, origin string, compute float64, slo time.Duration) api.JobSpec {
	s := job(id, origin, compute, 30*time.Minute)
	s.LatencySLOMs = int64(slo / time.Millisecond)
	return s
}

func inRegion(want string) func(string) bool { return func(r string) bool { return r == want } }

// TestPreemptionMovesWork: interactive work that only its own region can
// serve takes the room of lower-priority work that can move — another
// region's job the region sold room to, then one of its own — and the
// moved jobs are served elsewhere.
func TestPreemptionMovesWork(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := newPreemptionWorld(t, 13)
		defer closeCluster(t, w.c)
		home := w.agent("us-east-1")
		w.submit(home, batchJob("fill-1", "us-east-1", 300))
		w.placedIn(home, "fill-1", inRegion("us-east-1"), "placed at home")
		w.submit(home, batchJob("batch-1", "us-east-1", 800))
		first := w.placedIn(home, "batch-1", func(r string) bool { return r != "" && r != "us-east-1" }, "traded abroad")
		var third string
		for _, r := range w.regions[1:] {
			if r != first {
				third = r
			}
		}

		// The seller's own interactive job takes batch-1's room; batch-1
		// goes to the third region.
		seller := w.agent(first)
		w.submit(seller, interactiveJob("inter-seller", first, 600, 5*time.Millisecond))
		w.placedIn(seller, "inter-seller", inRegion(first), "placed in its region by preemption")
		w.placedIn(home, "batch-1", inRegion(third), "moved to the third region")
		w.preempted(seller, "batch-1", first)

		// Home's own interactive job takes fill-1's room once gossip says
		// fill-1 has somewhere to go (the seller has 400 free).
		waitFor(t, "home hears of the seller's room", 2*time.Minute, func() error {
			if r, ok := home.Gossip().Record(first + "-1"); !ok || r.Capacity.Free.ComputePerHour < 300 {
				return fmt.Errorf("%s's free capacity not known yet", first)
			}
			return nil
		})
		w.submit(home, interactiveJob("inter-home", "us-east-1", 800, 5*time.Millisecond))
		w.placedIn(home, "inter-home", inRegion("us-east-1"), "placed at home by preemption")
		w.placedIn(home, "fill-1", inRegion(first), "moved abroad")
		w.notOvercommitted()
	})
}

// TestSellerMakesRoom: an interactive job whose home is full of work of
// its own priority, and whose only other region within its SLO is full of
// that region's batch work, is sold room the seller makes by moving its
// batch job to a third region (seller-side preemption).
func TestSellerMakesRoom(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := newPreemptionWorld(t, 17)
		defer closeCluster(t, w.c)
		home, seller := w.agent("us-east-1"), w.agent("eu-west-1")
		// us-east-1 ↔ eu-west-1 is about 70 ms; ap-northeast-1 is over
		// 140 ms from both.
		const slo = 110 * time.Millisecond
		w.submit(home, interactiveJob("home-fill", "us-east-1", 800, slo))
		w.placedIn(home, "home-fill", inRegion("us-east-1"), "placed at home")
		w.submit(seller, batchJob("eu-batch", "eu-west-1", 800))
		w.placedIn(seller, "eu-batch", inRegion("eu-west-1"), "placed at home")
		waitFor(t, "home hears that eu-west-1 is full and where the regions are", 5*time.Minute, func() error {
			if r, ok := home.Gossip().Record("eu-west-1-1"); !ok || r.Capacity.Free.ComputePerHour > 300 {
				return fmt.Errorf("eu-west-1's use not known yet")
			}
			// Coordinates converge over the first minutes; until then the
			// far region may look within the SLO.
			g := home.Gossip()
			if d, ok := g.RegionRTT("us-east-1", "eu-west-1"); !ok || d > slo {
				return fmt.Errorf("RTT to eu-west-1 estimated %v", d)
			}
			if d, ok := g.RegionRTT("us-east-1", "ap-northeast-1"); !ok || d < slo {
				return fmt.Errorf("RTT to ap-northeast-1 estimated %v", d)
			}
			return nil
		})

		w.submit(home, interactiveJob("urgent", "us-east-1", 600, slo))
		w.placedIn(home, "urgent", inRegion("eu-west-1"), "sold room eu-west-1 made")
		w.placedIn(seller, "eu-batch", inRegion("ap-northeast-1"), "moved to the third region")
		w.preempted(seller, "eu-batch", "eu-west-1")
		if st, err := home.Job(w.ctx, "home-fill"); err != nil || st.Region != "us-east-1" {
			t.Errorf("home-fill = %+v %v; home's own work of the same priority must stay", st, err)
		}
		w.notOvercommitted()
	})
}
