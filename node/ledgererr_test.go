package node

import (
	"errors"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/consensus"
	"github.com/meridian-mesh/meridian/node/api"
	"github.com/meridian-mesh/meridian/placement"
)

// TestLedgerErrSaysTheSentinelOnce: the ledger's errors begin with their
// sentinel and the API's end with theirs, the same word; mapped, the
// message says it once, and still matches the API's sentinel.
func TestLedgerErrSaysTheSentinelOnce(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	job := placement.Job{ID: "train-7", OriginRegion: "us-east-1", Demand: placement.Resources{ComputePerHour: 100}}
	l, res := consensus.NewLedger("us-east-1").Apply(now, consensus.SubmitJob{Job: job})
	if res.Err != nil {
		t.Fatalf("first submit: %v", res.Err)
	}
	job.Demand.ComputePerHour = 101
	_, res = l.Apply(now, consensus.SubmitJob{Job: job})
	if !errors.Is(res.Err, consensus.ErrConflict) {
		t.Fatalf("second submit with another demand: %v, want a conflict", res.Err)
	}
	err := ledgerErr(res.Err)
	if want := `job "train-7" was submitted before with a different spec: conflict`; err.Error() != want {
		t.Errorf("conflict: %q, want %q", err, want)
	}
	if !errors.Is(err, api.ErrConflict) {
		t.Errorf("conflict %v does not match api.ErrConflict", err)
	}

	_, res = l.Apply(now, consensus.SetNodeState{ID: "nope", State: consensus.NodeDown})
	if !errors.Is(res.Err, consensus.ErrNotFound) {
		t.Fatalf("marking an unknown node down: %v, want not found", res.Err)
	}
	err = ledgerErr(res.Err)
	if want := `node "nope" is not registered: not found`; err.Error() != want {
		t.Errorf("not found: %q, want %q", err, want)
	}
	if !errors.Is(err, api.ErrNotFound) {
		t.Errorf("not found %v does not match api.ErrNotFound", err)
	}
}
