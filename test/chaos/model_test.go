package chaos

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/node/api"
)

// hist builds hand-made histories: each op is given its call and return
// positions in the global order of events.
type hist struct{ ops []Op }

func (h *hist) add(kind OpKind, job string, call, ret int64, r result) *hist {
	h.ops = append(h.ops, Op{
		Index: len(h.ops), Client: len(h.ops), Kind: kind, Job: job, Region: regionOf(job), Entry: "n",
		CallSeq: call, ReturnSeq: ret, Done: true,
		Outcome: r.Outcome, Reason: r.Reason, State: r.State, Epoch: r.Epoch, Created: r.Created,
	})
	return h
}

func regionOf(job string) string {
	if i := strings.IndexByte(job, '.'); i >= 0 {
		return job[i+1:]
	}
	return "r1"
}

func ok(st api.JobState, epoch uint64) result {
	return result{Outcome: OutcomeOK, State: st, Epoch: epoch}
}
func created(st api.JobState) result {
	return result{Outcome: OutcomeOK, State: st, Created: true}
}

var (
	info     = result{Outcome: OutcomeInfo}
	notFound = result{Outcome: OutcomeFail, Reason: ReasonNotFound}
	conflict = result{Outcome: OutcomeFail, Reason: ReasonConflict}
)

func TestLinearizableHistories(t *testing.T) {
	cases := []struct {
		name string
		h    *hist
	}{
		{"a job's whole life", new(hist).
			add(OpStatus, "j1", 1, 2, notFound).
			add(OpSubmit, "j1", 3, 4, created(api.JobPending)).
			add(OpStatus, "j1", 5, 6, ok(api.JobPlaced, 1)).
			add(OpStatus, "j1", 7, 8, ok(api.JobRunning, 1)).
			add(OpStatus, "j1", 9, 10, ok(api.JobPending, 2)). // its node failed: placed again
			add(OpStatus, "j1", 11, 12, ok(api.JobTraded, 3)).
			add(OpStatus, "j1", 13, 14, ok(api.JobCompleted, 3)).
			add(OpCancel, "j1", 15, 16, ok(api.JobCompleted, 3)).
			add(OpSubmit, "j1", 17, 18, ok(api.JobCompleted, 3))},
		{"a read concurrent with the submit may miss the job", new(hist).
			add(OpSubmit, "j1", 1, 4, created(api.JobPending)).
			add(OpStatus, "j1", 2, 3, notFound).
			add(OpStatus, "j1", 5, 6, ok(api.JobPending, 0))},
		{"an unknown submit may take effect late", new(hist).
			add(OpSubmit, "j1", 1, 2, info).
			add(OpStatus, "j1", 3, 4, notFound).
			add(OpStatus, "j1", 5, 6, ok(api.JobPending, 0))},
		{"an unknown submit may never take effect", new(hist).
			add(OpSubmit, "j1", 1, 2, info).
			add(OpStatus, "j1", 3, 4, notFound)},
		{"a retry finds the job its lost answer created", new(hist).
			add(OpSubmit, "j1", 1, 2, info).
			add(OpSubmit, "j1", 3, 4, ok(api.JobPlaced, 1))},
		{"a cancel", new(hist).
			add(OpSubmit, "j1", 1, 2, created(api.JobPending)).
			add(OpCancel, "j1", 3, 4, ok(api.JobCancelled, 1)).
			add(OpStatus, "j1", 5, 6, ok(api.JobCancelled, 1)).
			add(OpCancel, "j1", 7, 8, ok(api.JobCancelled, 1))},
		{"an unknown cancel may or may not have happened", new(hist).
			add(OpSubmit, "j1", 1, 2, created(api.JobPending)).
			add(OpCancel, "j1", 3, 4, info).
			add(OpStatus, "j1", 5, 6, ok(api.JobRunning, 1)).
			add(OpStatus, "j1", 7, 8, ok(api.JobCancelled, 1))},
		{"a cancel racing the job's completion", new(hist).
			add(OpSubmit, "j1", 1, 2, created(api.JobPending)).
			add(OpCancel, "j1", 3, 4, ok(api.JobCompleted, 1)).
			add(OpStatus, "j1", 5, 6, ok(api.JobCompleted, 1))},
		{"a read during a submit sees the job before the submit's answer does", new(hist). // seed 18 of random
													add(OpSubmit, "j1", 1, 2, info).
													add(OpSubmit, "j1", 3, 4, info).
													add(OpSubmit, "j1", 5, 7, ok(api.JobPlaced, 1)).
													add(OpStatus, "j1", 6, 8, ok(api.JobPending, 0))},
		{"a submit whose answer is read after placement", new(hist).
			add(OpSubmit, "j1", 1, 4, result{Outcome: OutcomeOK, State: api.JobPlaced, Epoch: 1, Created: true}).
			add(OpStatus, "j1", 2, 3, ok(api.JobPending, 0))},
		{"a cancel of a job never submitted", new(hist).
			add(OpCancel, "j1", 1, 2, notFound)},
		{"a refused submit changes nothing", new(hist).
			add(OpSubmit, "j1", 1, 2, result{Outcome: OutcomeFail, Reason: ReasonInvalid}).
			add(OpStatus, "j1", 3, 4, notFound)},
		{"unknown reads say nothing", new(hist).
			add(OpSubmit, "j1", 1, 2, created(api.JobPending)).
			add(OpStatus, "j1", 3, 4, info)},
	}
	for _, c := range cases {
		r := CheckLinearizable(c.h.ops, 10*time.Second)
		if !r.OK || r.Unknown || len(r.Failures) > 0 {
			t.Errorf("%s: %+v; want linearizable", c.name, r)
		}
	}
}

func TestNonLinearizableHistories(t *testing.T) {
	cases := []struct {
		name    string
		h       *hist
		minimal int // ops in the minimal slice
	}{
		{"an acknowledged job is lost", new(hist).
			add(OpSubmit, "j1", 1, 2, created(api.JobPending)).
			add(OpStatus, "j1", 3, 4, notFound), 2},
		{"an acknowledged job read from a stale replica", new(hist).
			add(OpSubmit, "j1", 1, 2, created(api.JobPending)).
			add(OpStatus, "j1", 3, 4, ok(api.JobPlaced, 1)).
			add(OpStatus, "j1", 5, 6, ok(api.JobPending, 0)), 3},
		{"two submits both create the job", new(hist).
			add(OpSubmit, "j1", 1, 2, created(api.JobPending)).
			add(OpSubmit, "j1", 3, 4, created(api.JobPending)), 2},
		{"a submit answers with an older epoch than a read before it", new(hist).
			add(OpSubmit, "j1", 1, 2, created(api.JobPending)).
			add(OpStatus, "j1", 3, 4, ok(api.JobPlaced, 2)).
			add(OpSubmit, "j1", 5, 6, ok(api.JobPending, 1)), 3},
		{"a submit finds a job nobody submitted", new(hist).
			add(OpSubmit, "j1", 1, 2, ok(api.JobPending, 0)), 1},
		{"a job is cancelled without a cancel", new(hist).
			add(OpSubmit, "j1", 1, 2, created(api.JobPending)).
			add(OpStatus, "j1", 3, 4, ok(api.JobCancelled, 0)), 2},
		{"an ended job runs again", new(hist).
			add(OpSubmit, "j1", 1, 2, created(api.JobPending)).
			add(OpStatus, "j1", 3, 4, ok(api.JobCompleted, 1)).
			add(OpStatus, "j1", 5, 6, ok(api.JobRunning, 1)), 3},
		{"an ended job ends differently", new(hist).
			add(OpSubmit, "j1", 1, 2, created(api.JobPending)).
			add(OpStatus, "j1", 3, 4, ok(api.JobFailed, 1)).
			add(OpStatus, "j1", 5, 6, ok(api.JobCompleted, 1)), 3},
		{"an acknowledged cancel is undone", new(hist).
			add(OpSubmit, "j1", 1, 2, created(api.JobPending)).
			add(OpCancel, "j1", 3, 4, ok(api.JobCancelled, 1)).
			add(OpStatus, "j1", 5, 6, ok(api.JobRunning, 1)), 3},
		{"a cancel answers with a live state", new(hist).
			add(OpSubmit, "j1", 1, 2, created(api.JobPending)).
			add(OpCancel, "j1", 3, 4, ok(api.JobRunning, 1)), 2},
		{"the epoch goes back", new(hist).
			add(OpSubmit, "j1", 1, 2, created(api.JobPending)).
			add(OpStatus, "j1", 3, 4, ok(api.JobPlaced, 3)).
			add(OpStatus, "j1", 5, 6, ok(api.JobPlaced, 2)), 3},
		{"a conflict for the same spec", new(hist).
			add(OpSubmit, "j1", 1, 2, conflict), 1},
		{"a cancel of an existing job is not found", new(hist).
			add(OpSubmit, "j1", 1, 2, created(api.JobPending)).
			add(OpCancel, "j1", 3, 4, notFound), 2},
	}
	for _, c := range cases {
		r := CheckLinearizable(c.h.ops, 10*time.Second)
		if r.OK || len(r.Failures) != 1 {
			t.Errorf("%s: %+v; want one non-linearizable job", c.name, r)
			continue
		}
		f := r.Failures[0]
		if f.Job != "j1" || f.Region != "r1" || r.Regions["r1"] {
			t.Errorf("%s: failure %+v, regions %v", c.name, f, r.Regions)
		}
		if len(f.Minimal) != c.minimal {
			t.Errorf("%s: minimal slice has %d ops; want %d:\n%s", c.name, len(f.Minimal), c.minimal, FormatOps(f.Minimal, time.Time{}))
		}
	}
}

// The minimal slice drops everything that does not take part in the
// violation, including other jobs and the job's own noise, and the other
// regions keep their own verdicts.
func TestLinearizabilityMinimizes(t *testing.T) {
	h := new(hist)
	seq := int64(0)
	next := func() (int64, int64) { seq += 2; return seq - 1, seq }
	for i := range 5 {
		c, r := next()
		h.add(OpSubmit, fmt.Sprintf("k%d.r2", i), c, r, created(api.JobPending))
	}
	c, r := next()
	h.add(OpSubmit, "j1.r1", c, r, created(api.JobPending))
	for range 6 {
		c, r = next()
		h.add(OpStatus, "j1.r1", c, r, ok(api.JobRunning, 1))
	}
	c, r = next()
	h.add(OpStatus, "j1.r1", c, r, ok(api.JobCompleted, 1))
	c, r = next()
	h.add(OpStatus, "j1.r1", c, r, ok(api.JobRunning, 1)) // back from the dead
	c, r = next()
	h.add(OpStatus, "j1.r1", c, r, ok(api.JobCompleted, 1))

	res := CheckLinearizable(h.ops, 10*time.Second)
	if res.OK || !res.Regions["r2"] || res.Regions["r1"] || len(res.Failures) != 1 {
		t.Fatalf("verdict %+v; want r1 failing, r2 linearizable", res)
	}
	f := res.Failures[0]
	if f.Ops != 10 || len(f.Minimal) != 3 {
		t.Fatalf("failure %+v; want 10 ops shrunk to 3:\n%s", f, FormatOps(f.Minimal, time.Time{}))
	}
	if !f.Minimal[0].Created || f.Minimal[1].State != api.JobCompleted || f.Minimal[2].State != api.JobRunning {
		t.Fatalf("minimal slice:\n%s\nwant the submit, completed, then running", FormatOps(f.Minimal, time.Time{}))
	}
	if len(f.Linearized) == 0 {
		t.Error("no partial linearization reported")
	}
}

// The recorder orders events as they happen and closes what is in flight
// with an unknown outcome.
func TestHistoryRecorder(t *testing.T) {
	var h History
	i := h.Call(1, OpSubmit, "j1", "r1", "n0", 1)
	j := h.Call(2, OpStatus, "j1", "r1", "n1", 0)
	h.Return(j, api.JobStatus{}, false, fmt.Errorf("GET: %w", api.ErrNotFound))
	h.Return(i, api.JobStatus{ID: "j1", State: api.JobPending, Epoch: 0}, true, nil)
	k := h.Call(3, OpCancel, "j1", "r1", "n2", 0)
	h.Close()
	ops := h.Ops()
	if len(ops) != 3 {
		t.Fatalf("%d ops", len(ops))
	}
	if ops[0].CallSeq != 1 || ops[1].CallSeq != 2 || ops[1].ReturnSeq != 3 || ops[0].ReturnSeq != 4 || ops[2].CallSeq != 5 {
		t.Fatalf("sequence numbers %+v", ops)
	}
	if ops[0].Outcome != OutcomeOK || !ops[0].Created || ops[0].State != api.JobPending {
		t.Errorf("submit %+v", ops[0])
	}
	if ops[1].Outcome != OutcomeFail || ops[1].Reason != ReasonNotFound || ops[1].Err == "" {
		t.Errorf("status %+v", ops[1])
	}
	if o := ops[k]; !o.Done || o.Outcome != OutcomeInfo || o.ReturnSeq != math.MaxInt64 {
		t.Errorf("in-flight cancel after Close: %+v", o)
	}
	sub, acked := JobCounts(ops)
	if len(sub) != 1 || acked["j1"] != "r1" {
		t.Errorf("JobCounts = %v, %v", sub, acked)
	}
	if s := ops[0].String(); !strings.Contains(s, "submit j1 @n0 → ok created pending e0") {
		t.Errorf("String() = %q", s)
	}
	if r := CheckLinearizable(ops, 10*time.Second); !r.OK {
		t.Errorf("recorded history: %+v", r)
	}
}

func TestClassify(t *testing.T) {
	cases := []struct {
		err     error
		outcome Outcome
		reason  string
	}{
		{nil, OutcomeOK, ""},
		{fmt.Errorf("x: %w", api.ErrNotFound), OutcomeFail, ReasonNotFound},
		{&api.Error{StatusCode: 404}, OutcomeFail, ReasonNotFound},
		{&api.Error{StatusCode: 409}, OutcomeFail, ReasonConflict},
		{&api.FieldError{Field: "id", Message: "bad"}, OutcomeFail, ReasonInvalid},
		{fmt.Errorf("x: %w", api.ErrNoLeader), OutcomeInfo, ""},
		{&api.Error{StatusCode: 503, Code: api.CodeUnavailable}, OutcomeInfo, ""},
		{context.DeadlineExceeded, OutcomeInfo, ""},
		{errors.New("connection reset"), OutcomeInfo, ""},
	}
	for _, c := range cases {
		o, r := Classify(c.err)
		if o != c.outcome || r != c.reason {
			t.Errorf("Classify(%v) = %s, %q; want %s, %q", c.err, o, r, c.outcome, c.reason)
		}
	}
}
