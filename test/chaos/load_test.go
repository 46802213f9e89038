package chaos

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/placement"
)

func testLoad() LoadConfig {
	return LoadConfig{
		Regions:         []string{"ap-northeast-1", "eu-west-1", "us-east-1"},
		HotRegion:       "eu-west-1",
		HotFactor:       3,
		HotBurst:        8,
		Duration:        10 * time.Minute,
		JobsPerMinute:   6,
		StatusPerMinute: 12,
		CancelFraction:  0.2,
		Unit:            placement.Resources{ComputePerHour: 25, StorageGB: 100, BandwidthGBps: 1, GPUs: 2},
		MinRun:          20 * time.Second,
		MaxRun:          2 * time.Minute,
	}
}

func TestPlanLoadDeterministic(t *testing.T) {
	a, err := PlanLoad(9, testLoad())
	if err != nil {
		t.Fatal(err)
	}
	b, _ := PlanLoad(9, testLoad())
	if !reflect.DeepEqual(a, b) {
		t.Fatal("two plans of seed 9 differ")
	}
	c, _ := PlanLoad(10, testLoad())
	if reflect.DeepEqual(a, c) {
		t.Fatal("seeds 9 and 10 planned the same load")
	}
}

func TestPlanLoadShape(t *testing.T) {
	cfg := testLoad()
	ops, err := PlanLoad(4, cfg)
	if err != nil {
		t.Fatal(err)
	}
	submits := map[string]PlannedOp{}
	perRegion := map[string]int{}
	kinds := map[OpKind]int{}
	var last time.Duration
	notYet := 0
	for _, op := range ops {
		if op.At < last || op.At >= cfg.Duration {
			t.Fatalf("op at %v out of order or past %v", op.At, cfg.Duration)
		}
		last = op.At
		kinds[op.Kind]++
		switch op.Kind {
		case OpSubmit:
			if _, dup := submits[op.Job]; dup {
				t.Fatalf("job %s submitted twice in the plan", op.Job)
			}
			if err := op.Spec.Validate(); err != nil {
				t.Fatalf("job %s: invalid spec: %v", op.Job, err)
			}
			if op.Spec.ID != op.Job || op.Spec.OriginRegion != op.Region || !strings.HasSuffix(op.Job, "."+op.Region) {
				t.Fatalf("job %s: spec %+v does not match the op", op.Job, op.Spec)
			}
			if d := op.Spec.Demand; d != cfg.Unit && d != scale(cfg.Unit, 2) {
				t.Fatalf("job %s: demand %+v is neither one nor two units", op.Job, d)
			}
			if r := time.Duration(op.Spec.DurationS) * time.Second; r < cfg.MinRun || r > cfg.MaxRun {
				t.Fatalf("job %s: runs %v, outside [%v, %v]", op.Job, r, cfg.MinRun, cfg.MaxRun)
			}
			submits[op.Job] = op
			perRegion[op.Region]++
		case OpCancel:
			s, ok := submits[op.Job]
			if !ok || s.Region != op.Region || op.At <= s.At {
				t.Fatalf("cancel of %s at %v without an earlier submit", op.Job, op.At)
			}
		case OpStatus:
			if s, ok := submits[op.Job]; !ok || s.Region != op.Region {
				notYet++
			}
		}
	}
	if kinds[OpSubmit] == 0 || kinds[OpStatus] == 0 || kinds[OpCancel] == 0 {
		t.Fatalf("plan has ops %v; want every kind", kinds)
	}
	// Poisson arrivals: 6/min for 10 min is 60 ± a few tens; the hot
	// region gets three times as many.
	for _, r := range cfg.Regions {
		want := 60.0
		if r == cfg.HotRegion {
			want = 180
		}
		if r == cfg.HotRegion {
			want += float64(cfg.HotBurst)
		}
		if n := float64(perRegion[r]); n < want*0.6 || n > want*1.4 {
			t.Errorf("region %s: %v submits; want about %v", r, n, want)
		}
	}
	if c := float64(kinds[OpCancel]) / float64(kinds[OpSubmit]); c < 0.1 || c > 0.3 {
		t.Errorf("cancel share %.2f; want about %.2f", c, cfg.CancelFraction)
	}
	burst := 0
	for _, op := range ops {
		if op.Kind == OpSubmit && op.Region == cfg.HotRegion && op.At < BurstWindow && op.Spec.Demand == cfg.Unit {
			burst++
		}
	}
	if burst < cfg.HotBurst {
		t.Errorf("%d size-1 submits of the hot region in the first %v; want its burst of %d", burst, BurstWindow, cfg.HotBurst)
	}
	if notYet == 0 || notYet > kinds[OpStatus]/5 {
		t.Errorf("%d of %d reads are of jobs not submitted yet; want a few", notYet, kinds[OpStatus])
	}
}

func TestLoadConfigValidate(t *testing.T) {
	cases := []struct {
		mut   func(*LoadConfig)
		error string
	}{
		{func(c *LoadConfig) { c.Regions = nil }, "regions"},
		{func(c *LoadConfig) { c.HotRegion = "x" }, "hot region"},
		{func(c *LoadConfig) { c.JobsPerMinute = -1 }, "jobs per minute"},
		{func(c *LoadConfig) { c.CancelFraction = 2 }, "cancel fraction"},
		{func(c *LoadConfig) { c.HotBurst = -1 }, "hot burst"},
		{func(c *LoadConfig) { c.Duration = 0 }, "duration"},
		{func(c *LoadConfig) { c.Unit.ComputePerHour = 0 }, "unit compute"},
		{func(c *LoadConfig) { c.Unit.StorageGB = -1 }, "storage"},
		{func(c *LoadConfig) { c.MinRun = 0 }, "run time"},
		{func(c *LoadConfig) { c.MaxRun = c.MinRun / 2 }, "run time"},
	}
	for _, c := range cases {
		cfg := testLoad()
		c.mut(&cfg)
		if _, err := PlanLoad(1, cfg); err == nil || !strings.Contains(err.Error(), c.error) {
			t.Errorf("PlanLoad = %v; want an error containing %q", err, c.error)
		}
	}
}

func TestUnitFor(t *testing.T) {
	total := placement.Resources{ComputePerHour: 96, StorageGB: 8000, BandwidthGBps: 50, GPUs: 8}
	u, err := UnitFor(total, 4)
	if err != nil {
		t.Fatal(err)
	}
	if want := (placement.Resources{ComputePerHour: 24, StorageGB: 2000, BandwidthGBps: 12.5, GPUs: 2}); u != want {
		t.Errorf("UnitFor(4) = %+v; want %+v", u, want)
	}
	if u, _ := UnitFor(total, 16); u.GPUs != 1 {
		t.Errorf("UnitFor(16) asks %d GPUs; want at least 1 of a GPU node", u.GPUs)
	}
	if _, err := UnitFor(total, 0); err == nil {
		t.Error("UnitFor(0 slots): no error")
	}
	if _, err := UnitFor(placement.Resources{}, 4); err == nil {
		t.Error("UnitFor(no compute): no error")
	}
}
