package api_test

import (
	"errors"
	"math"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/node/api"
	"github.com/meridian-mesh/meridian/placement"
)

func baseSpec() api.JobSpec {
	return api.JobSpec{ID: "j1", OriginRegion: "us-east-1", Demand: placement.Resources{ComputePerHour: 100}}
}

func TestPlacementJob(t *testing.T) {
	s := baseSpec()
	s.Demand = placement.Resources{ComputePerHour: 100, StorageGB: 20, BandwidthGBps: 2, GPUs: 1}
	s.LatencySLOMs = 150
	s.MaxPricePerHour = 12.5
	s.DurationS = 3600
	s.GPUType = "H100"
	j, err := s.PlacementJob()
	if err != nil {
		t.Fatalf("PlacementJob(%+v) = %v", s, err)
	}
	want := placement.Job{
		ID: "j1", OriginRegion: "us-east-1", Demand: s.Demand, LatencySLO: 150 * time.Millisecond,
		MaxPricePerHour: 12.5, Priority: api.DefaultPriority, Duration: time.Hour, GPUType: "H100",
	}
	if j != want {
		t.Errorf("PlacementJob = %+v; want %+v", j, want)
	}

	s.Priority = 101
	if _, err := s.PlacementJob(); !errors.Is(err, api.ErrInvalid) {
		t.Errorf("PlacementJob with priority 101 = %v; want ErrInvalid", err)
	}
}

// TestValidateNonFinite covers values JSON cannot carry but Go callers (the
// CLI's flags, say) can.
func TestValidateNonFinite(t *testing.T) {
	for _, tc := range []struct {
		mut   func(*api.JobSpec)
		field string
	}{
		{func(s *api.JobSpec) { s.Demand.ComputePerHour = math.NaN() }, "demand.compute"},
		{func(s *api.JobSpec) { s.Demand.StorageGB = math.Inf(1) }, "demand.storage_gb"},
		{func(s *api.JobSpec) { s.Demand.BandwidthGBps = math.NaN() }, "demand.bandwidth_gbs"},
		{func(s *api.JobSpec) { s.MaxPricePerHour = math.Inf(-1) }, "max_price_per_hour"},
	} {
		s := baseSpec()
		tc.mut(&s)
		var fe *api.FieldError
		if err := s.Validate(); !errors.As(err, &fe) || fe.Field != tc.field {
			t.Errorf("Validate(%+v) = %v; want a FieldError on %s", s, err, tc.field)
		}
	}
}

func TestNormalizedAndEqual(t *testing.T) {
	a := baseSpec()
	n := a.Normalized()
	if n.HomeRegion != "us-east-1" || n.Driver != api.DriverSim || n.Priority != api.DefaultPriority {
		t.Errorf("Normalized = %+v", n)
	}
	if !a.Equal(n) || !n.Equal(a) {
		t.Error("a spec is not Equal to its normalized form")
	}
	b := baseSpec()
	b.Command, b.Env = []string{}, map[string]string{}
	if !a.Equal(b) {
		t.Error("empty command and env differ from nil ones")
	}
	exec := baseSpec()
	exec.Driver, exec.Command, exec.Env = api.DriverExec, []string{"echo", "hi"}, map[string]string{"A": "1"}
	other := exec.Normalized()
	other.Command[1] = "bye"
	if exec.Command[1] != "hi" {
		t.Error("Normalized shares the command slice with its receiver")
	}
	for _, mut := range []func(*api.JobSpec){
		func(s *api.JobSpec) { s.Command = []string{"echo", "bye"} },
		func(s *api.JobSpec) { s.Env = map[string]string{"A": "2"} },
		func(s *api.JobSpec) { s.HomeRegion = "eu-west-1" },
		func(s *api.JobSpec) { s.Demand.GPUs = 1 },
		func(s *api.JobSpec) { s.Priority = 49 },
		func(s *api.JobSpec) { s.DurationS = 1 },
	} {
		o := exec.Normalized()
		mut(&o)
		if exec.Equal(o) {
			t.Errorf("Equal(%+v, %+v) = true; want false", exec, o)
		}
	}
}

func TestValidID(t *testing.T) {
	for id, want := range map[string]bool{
		"a": true, "train-1.v2_final": true, "": false, ".": false, "..": false, "a b": false, "é": false,
		string(make([]byte, 129)): false,
	} {
		if got := api.ValidID(id); got != want {
			t.Errorf("ValidID(%q) = %v; want %v", id, got, want)
		}
	}
}
