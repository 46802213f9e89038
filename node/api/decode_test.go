package api_test

import (
	"encoding/json"
	"errors"
	"testing"

	"github.com/meridian-mesh/meridian/node/api"
)

func TestDecodeJobSpecRoundTrip(t *testing.T) {
	in := `{"id":"j1","origin_region":"us-east-1","home_region":"eu-west-1",
	 "demand":{"compute":100.5,"storage_gb":1,"bandwidth_gbs":0.5,"gpus":2},
	 "latency_slo_ms":120,"max_price_per_hour":9.5,"priority":70,"duration_s":600,
	 "gpu_type":"A100","driver":"exec","command":["python3","train.py"],"env":{"EPOCHS":"3"}}`
	s, err := api.DecodeJobSpec([]byte(in))
	if err != nil {
		t.Fatalf("DecodeJobSpec = %v", err)
	}
	if err := s.Validate(); err != nil {
		t.Fatalf("Validate = %v", err)
	}
	if s.Demand.GPUs != 2 || s.Command[1] != "train.py" || s.Env["EPOCHS"] != "3" || s.LatencySLOMs != 120 {
		t.Errorf("decoded %+v", s)
	}
	out, _ := json.Marshal(s)
	back, err := api.DecodeJobSpec(out)
	if err != nil || !back.Equal(s) {
		t.Errorf("round trip = %+v, %v; want %+v", back, err, s)
	}
}

// FuzzDecodeJobSpec: no input panics; what decodes re-encodes to the same
// spec; what validates converts to a placement.Job placement accepts; and
// the strict decoder never accepts what encoding/json refuses.
func FuzzDecodeJobSpec(f *testing.F) {
	for _, s := range []string{
		validJob,
		`{"id":"j","origin_region":"r","demand":{"compute":1,"gpus":1},"gpu_type":"H100","driver":"exec","command":["sh","-c","exit 3"],"env":{"A":"b"}}`,
		`{"id":"j","origin_region":"r","demand":{"compute":"ten"}}`,
		`{"id":"j","id":"k"}`,
		`{"demand":{"compute":1e400}}`,
		`{"ID":"x"}`,
		`[{"id":1}]`,
		`{"env":{"A":{"b":[1,2,{"c":null}]}}}`,
		`{"id":"x"} trailing`,
		`null`,
		``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := api.DecodeJobSpec(data)
		if err != nil {
			var fe *api.FieldError
			if !errors.As(err, &fe) || !errors.Is(err, api.ErrInvalid) {
				t.Fatalf("DecodeJobSpec error %T %v is not a *FieldError", err, err)
			}
			return
		}
		var loose api.JobSpec
		if err := json.Unmarshal(data, &loose); err != nil {
			t.Fatalf("strict decoding accepted what encoding/json refuses (%v): %q", err, data)
		}
		out, err := json.Marshal(s)
		if err != nil {
			t.Fatalf("Marshal(%+v) = %v", s, err)
		}
		back, err := api.DecodeJobSpec(out)
		if err != nil {
			t.Fatalf("re-decoding %s = %v", out, err)
		}
		if !back.Equal(s) {
			t.Fatalf("round trip %+v -> %s -> %+v", s, out, back)
		}
		if s.Validate() != nil {
			return
		}
		j, err := s.PlacementJob()
		if err != nil {
			t.Fatalf("PlacementJob of a valid spec = %v", err)
		}
		if err := j.Validate(); err != nil {
			t.Fatalf("placement refuses a valid spec's job %+v: %v", j, err)
		}
	})
}

func BenchmarkDecodeJobSpec(b *testing.B) {
	data := []byte(`{"id":"train-7","origin_region":"eu-west-1","home_region":"us-east-1","demand":{"compute":250.5,"storage_gb":100,"bandwidth_gbs":2.5,"gpus":4},"latency_slo_ms":80,"max_price_per_hour":40,"priority":90,"duration_s":86400,"gpu_type":"H100","driver":"exec","command":["python3","-m","train"],"env":{"EPOCHS":"3"}}`)
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		s, err := api.DecodeJobSpec(data)
		if err != nil || s.Validate() != nil {
			b.Fatal(err)
		}
	}
}
