package chaos

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

// RunResult is what one run found. The json names of the headline figures
// are the report's contract with scripts.
type RunResult struct {
	Seed     int64  `json:"seed"`
	Scenario string `json:"scenario"`
	// Minutes is the length of the fault phase, in virtual minutes.
	Minutes float64 `json:"minutes"`
	// Schedule is the fault schedule, one step per line; Applied says what
	// each step did when it ran (the node a crash-leader picked, whether a
	// trigger fired).
	Schedule []string `json:"schedule"`
	Applied  []string `json:"applied,omitempty"`

	JobsSubmitted    int     `json:"jobs_submitted"`
	JobsAcked        int     `json:"jobs_acked"`
	JobsLost         int     `json:"jobs_lost"`
	JobsDuplicated   int     `json:"jobs_duplicated"`
	StaleAllocations int     `json:"stale_allocations"`
	Overcommits      int     `json:"overcommits"`
	EscrowLeaks      int     `json:"escrow_leaks"`
	Linearizable     bool    `json:"linearizable"`
	MaxConvergeS     float64 `json:"max_converge_s"`
	// MaxRecordConvergeS is the worst time for every capacity record to
	// reach every node after a heal (-1: not within the run). Reported,
	// not judged.
	MaxRecordConvergeS float64 `json:"max_record_converge_s"`

	// Ops counts client operations by outcome; Trades the trades the
	// buyers' ledgers recorded; Snapshots the ledger snapshots checked.
	Ops       map[string]int `json:"ops"`
	Trades    int            `json:"trades"`
	Snapshots int            `json:"snapshots"`
	// MidAuctionKills counts kill-leader steps whose trigger fired (the
	// crash landed in an auction) against those that timed out.
	MidAuctionKills     int `json:"mid_auction_kills"`
	KillsWithoutAuction int `json:"kills_without_auction"`
	// FinalJobs counts the jobs of the final ledgers by state, and the live
	// allocations sold to other regions: what the mesh held at the end.
	FinalJobs map[string]int `json:"final_jobs"`
	// SettleS is how long the mesh took to settle after the final heal.
	SettleS float64 `json:"settle_s"`
	// WallS is the run's wall-clock time.
	WallS float64 `json:"wall_s"`

	// Failures says, one line each, which checks failed; Evidence is the
	// shortest history or ledger excerpt that shows each failure.
	Failures     []string      `json:"failures,omitempty"`
	Evidence     []string      `json:"evidence,omitempty"`
	Violations   []Violation   `json:"violations,omitempty"`
	Linearity    *LinResult    `json:"linearizability,omitempty"`
	Convergences []Convergence `json:"convergences,omitempty"`
	// Notes say what limited the run without failing it.
	Notes []string `json:"notes,omitempty"`
	// Error is set when the run itself could not be carried out (the
	// cluster did not start, say); such a run counts as failed.
	Error string `json:"error,omitempty"`
}

// Passed reports whether every check held.
func (r *RunResult) Passed() bool { return len(r.Failures) == 0 && r.Error == "" }

// Summary renders the run's headline figures in a few lines.
func (r *RunResult) Summary() string {
	var b strings.Builder
	status := "PASS"
	if !r.Passed() {
		status = "FAIL"
	}
	fmt.Fprintf(&b, "%s seed=%d scenario=%s minutes=%g wall=%.1fs\n", status, r.Seed, r.Scenario, r.Minutes, r.WallS)
	fmt.Fprintf(&b, "  jobs_submitted=%d jobs_acked=%d jobs_lost=%d jobs_duplicated=%d stale_allocations=%d overcommits=%d escrow_leaks=%d linearizable=%v max_converge_s=%.1f max_record_converge_s=%.1f\n",
		r.JobsSubmitted, r.JobsAcked, r.JobsLost, r.JobsDuplicated, r.StaleAllocations, r.Overcommits, r.EscrowLeaks, r.Linearizable, r.MaxConvergeS, r.MaxRecordConvergeS)
	fmt.Fprintf(&b, "  ops=%v trades=%d snapshots=%d kills_mid_auction=%d kills_without_auction=%d settle_s=%.1f\n",
		r.Ops, r.Trades, r.Snapshots, r.MidAuctionKills, r.KillsWithoutAuction, r.SettleS)
	fmt.Fprintf(&b, "  final_jobs=%v\n", r.FinalJobs)
	b.WriteString("  schedule:\n")
	for _, s := range r.Applied {
		fmt.Fprintf(&b, "    %s\n", s)
	}
	if len(r.Applied) == 0 {
		for _, s := range r.Schedule {
			fmt.Fprintf(&b, "    %s\n", s)
		}
	}
	for _, n := range r.Notes {
		fmt.Fprintf(&b, "  note: %s\n", n)
	}
	if r.Error != "" {
		fmt.Fprintf(&b, "  error: %s\n", r.Error)
	}
	for _, f := range r.Failures {
		fmt.Fprintf(&b, "  failed: %s\n", f)
	}
	for _, e := range r.Evidence {
		fmt.Fprintf(&b, "  evidence:\n%s", indent(e, "    "))
	}
	if !r.Passed() {
		fmt.Fprintf(&b, "  replay: go test ./test/chaos/ -run 'TestChaos$' -v -args -seed %d -scenario %s -minutes %g\n", r.Seed, r.Scenario, r.Minutes)
	}
	return b.String()
}

func indent(s, prefix string) string {
	var b strings.Builder
	for _, line := range strings.Split(strings.TrimRight(s, "\n"), "\n") {
		b.WriteString(prefix)
		b.WriteString(line)
		b.WriteByte('\n')
	}
	return b.String()
}

// Totals adds up the runs of a report.
type Totals struct {
	Runs             int     `json:"runs"`
	Passed           int     `json:"passed"`
	Failed           int     `json:"failed"`
	FailedSeeds      []int64 `json:"failed_seeds,omitempty"`
	JobsSubmitted    int     `json:"jobs_submitted"`
	JobsAcked        int     `json:"jobs_acked"`
	JobsLost         int     `json:"jobs_lost"`
	JobsDuplicated   int     `json:"jobs_duplicated"`
	StaleAllocations int     `json:"stale_allocations"`
	Overcommits      int     `json:"overcommits"`
	EscrowLeaks      int     `json:"escrow_leaks"`
	// Linearizable counts the runs whose history was linearizable.
	Linearizable int     `json:"linearizable"`
	MaxConvergeS float64 `json:"max_converge_s"`
	Trades       int     `json:"trades"`
	// WallS adds up the runs' wall times.
	WallS float64 `json:"wall_s"`
}

// Report is the JSON file -json writes: one object per run, and totals.
type Report struct {
	Started time.Time `json:"started"`
	// ElapsedS is the wall time of the whole report's runs, which may run
	// in parallel (Totals.WallS adds up each run's).
	ElapsedS float64      `json:"elapsed_s"`
	Runs     []*RunResult `json:"runs"`
	Totals   Totals       `json:"totals"`
}

// Add appends a run and updates the totals.
func (rep *Report) Add(r *RunResult) {
	rep.Runs = append(rep.Runs, r)
	t := &rep.Totals
	t.Runs++
	if r.Passed() {
		t.Passed++
	} else {
		t.Failed++
		t.FailedSeeds = append(t.FailedSeeds, r.Seed)
	}
	t.JobsSubmitted += r.JobsSubmitted
	t.JobsAcked += r.JobsAcked
	t.JobsLost += r.JobsLost
	t.JobsDuplicated += r.JobsDuplicated
	t.StaleAllocations += r.StaleAllocations
	t.Overcommits += r.Overcommits
	t.EscrowLeaks += r.EscrowLeaks
	if r.Linearizable {
		t.Linearizable++
	}
	if r.MaxConvergeS > t.MaxConvergeS {
		t.MaxConvergeS = r.MaxConvergeS
	}
	t.Trades += r.Trades
	t.WallS += r.WallS
}

// WriteJSON writes the report, indented.
func (rep *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(rep); err != nil {
		return fmt.Errorf("encoding the chaos report: %w", err)
	}
	return nil
}

// WriteFile writes the report to path, replacing it.
func (rep *Report) WriteFile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("chaos report: %w", err)
	}
	if err := rep.WriteJSON(f); err != nil {
		f.Close()
		return fmt.Errorf("chaos report %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("chaos report %s: %w", path, err)
	}
	return nil
}
