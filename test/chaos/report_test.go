package chaos

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestReportJSON(t *testing.T) {
	var rep Report
	rep.Add(&RunResult{Seed: 1, Scenario: "random", Minutes: 5, Schedule: []string{"10s partition {a} | rest", "40s heal"},
		JobsSubmitted: 40, JobsAcked: 38, Linearizable: true, MaxConvergeS: 12.5, Trades: 3})
	rep.Add(&RunResult{Seed: 2, Scenario: "random", Minutes: 5, JobsSubmitted: 50, JobsAcked: 50, JobsLost: 1,
		Linearizable: false, MaxConvergeS: 20, Failures: []string{"lost: 1 acknowledged job"}})
	var buf bytes.Buffer
	if err := rep.WriteJSON(&buf); err != nil {
		t.Fatal(err)
	}
	var got struct {
		Runs   []map[string]any `json:"runs"`
		Totals map[string]any   `json:"totals"`
	}
	if err := json.Unmarshal(buf.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	if len(got.Runs) != 2 {
		t.Fatalf("%d runs", len(got.Runs))
	}
	for _, k := range []string{"seed", "scenario", "schedule", "jobs_submitted", "jobs_acked", "jobs_lost", "jobs_duplicated",
		"overcommits", "escrow_leaks", "linearizable", "max_converge_s"} {
		if _, ok := got.Runs[0][k]; !ok {
			t.Errorf("run object lacks %q: %v", k, got.Runs[0])
		}
	}
	tot := got.Totals
	if tot["runs"] != 2.0 || tot["passed"] != 1.0 || tot["failed"] != 1.0 || tot["jobs_submitted"] != 90.0 ||
		tot["jobs_lost"] != 1.0 || tot["linearizable"] != 1.0 || tot["max_converge_s"] != 20.0 {
		t.Errorf("totals %v", tot)
	}
	if fs, _ := tot["failed_seeds"].([]any); len(fs) != 1 || fs[0] != 2.0 {
		t.Errorf("failed_seeds %v", tot["failed_seeds"])
	}

	path := filepath.Join(t.TempDir(), "chaos.json")
	if err := rep.WriteFile(path); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(path); err != nil || !bytes.Equal(b, buf.Bytes()) {
		t.Errorf("WriteFile wrote %d bytes, %v", len(b), err)
	}
	if err := rep.WriteFile(filepath.Join(t.TempDir(), "missing", "x.json")); err == nil || !strings.Contains(err.Error(), "chaos report") {
		t.Errorf("WriteFile into a missing directory: %v", err)
	}
}

func TestRunSummary(t *testing.T) {
	r := &RunResult{Seed: 17, Scenario: "split-servers", Minutes: 3, Schedule: []string{"20s split eu-west-1 servers, leader in the minority #s1"},
		Failures: []string{"linearizability: 1 job"}, Evidence: []string{"job j1:\n  #1 submit\n  #2 status"}}
	s := r.Summary()
	for _, want := range []string{"FAIL seed=17 scenario=split-servers", "jobs_submitted=0", "linearizable=false", "split eu-west-1",
		"failed: linearizability", "    #2 status", "-seed 17 -scenario split-servers -minutes 3"} {
		if !strings.Contains(s, want) {
			t.Errorf("summary lacks %q:\n%s", want, s)
		}
	}
	r.Failures, r.Evidence = nil, nil
	if s := r.Summary(); !strings.HasPrefix(s, "PASS") || strings.Contains(s, "replay") {
		t.Errorf("passing summary:\n%s", s)
	}
}
