package chaos

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/meridian-mesh/meridian/node/api"
)

// Outcome is what a client learnt from an operation, in Jepsen's terms.
type Outcome string

// The outcomes.
const (
	// OutcomeOK: the operation happened and returned its result.
	OutcomeOK Outcome = "ok"
	// OutcomeFail: the operation definitely did not happen (the server
	// said so: not found, conflict, invalid).
	OutcomeFail Outcome = "fail"
	// OutcomeInfo: the outcome is unknown (timeout, no leader, broken
	// connection, crashed agent): a write may have happened, then or at any
	// later time.
	OutcomeInfo Outcome = "info"
)

// Failure reasons of OutcomeFail, from the API's sentinel errors.
const (
	ReasonNotFound = "not-found"
	ReasonConflict = "conflict"
	ReasonInvalid  = "invalid"
)

// Classify maps an API call's error to its outcome and, for a definite
// failure, its reason. Only answers that say the request was refused count
// as definite; everything else (no leader, unavailable, timeouts, context
// ends, internal errors) may hide a write that was committed.
func Classify(err error) (Outcome, string) {
	switch {
	case err == nil:
		return OutcomeOK, ""
	case errors.Is(err, api.ErrNotFound):
		return OutcomeFail, ReasonNotFound
	case errors.Is(err, api.ErrConflict):
		return OutcomeFail, ReasonConflict
	case errors.Is(err, api.ErrInvalid):
		return OutcomeFail, ReasonInvalid
	}
	return OutcomeInfo, ""
}

// Op is one client operation as the recorder saw it.
type Op struct {
	// Index is the operation's position in the history, in call order.
	Index int `json:"index"`
	// Client numbers the goroutine that made the call.
	Client int    `json:"client"`
	Kind   OpKind `json:"kind"`
	Job    string `json:"job"`
	// Region is the job's home region.
	Region string `json:"region"`
	// Entry is the agent the client called.
	Entry string `json:"entry"`
	// Attempt counts retries of a submit, from 1.
	Attempt int `json:"attempt,omitempty"`
	// Call and Return are the virtual times of the call and its return.
	Call   time.Time `json:"call"`
	Return time.Time `json:"return"`
	// CallSeq and ReturnSeq order every call and return of the history as
	// they happened: Return of one op before Call of another (a smaller
	// number) means the first returned before the second was called. They
	// are what the linearizability checker orders by, because many events
	// share one virtual instant.
	CallSeq   int64 `json:"call_seq"`
	ReturnSeq int64 `json:"return_seq"`
	// Done is false while the call is in flight.
	Done    bool    `json:"done"`
	Outcome Outcome `json:"outcome"`
	// Reason is a definite failure's reason.
	Reason string `json:"reason,omitempty"`
	// State, Epoch and Created are the answer of a successful call.
	State   api.JobState `json:"state,omitempty"`
	Epoch   uint64       `json:"epoch,omitempty"`
	Created bool         `json:"created,omitempty"`
	// Err is the error's text, when there was one.
	Err string `json:"error,omitempty"`
}

// String renders the op on one line, with times relative to start:
// "#12 [1m2.5s, 1m2.8s] c3 submit j00012.eu-west-1 @eu-west-1-3 → ok created pending e1".
func (o Op) String() string { return o.format(time.Time{}) }

func (o Op) format(start time.Time) string {
	rel := func(t time.Time) string {
		if start.IsZero() {
			return t.Format("15:04:05.000")
		}
		return t.Sub(start).Round(time.Millisecond).String()
	}
	var b strings.Builder
	fmt.Fprintf(&b, "#%d [%s, ", o.Index, rel(o.Call))
	if o.Done {
		b.WriteString(rel(o.Return))
	} else {
		b.WriteString("…")
	}
	fmt.Fprintf(&b, "] c%d %s %s @%s", o.Client, o.Kind, o.Job, o.Entry)
	if o.Attempt > 1 {
		fmt.Fprintf(&b, " (attempt %d)", o.Attempt)
	}
	b.WriteString(" → ")
	b.WriteString(describeResult(o.Kind, result{Outcome: o.Outcome, Reason: o.Reason, State: o.State, Epoch: o.Epoch, Created: o.Created}))
	if o.Outcome != OutcomeOK && o.Err != "" {
		fmt.Fprintf(&b, " (%s)", o.Err)
	}
	return b.String()
}

// History records client operations. Its methods are safe for concurrent
// use; one mutex guards it.
type History struct {
	mu  sync.Mutex
	seq int64
	ops []Op
}

// Call records the call of an operation and returns its index, which
// Return takes.
func (h *History) Call(client int, kind OpKind, job, region, entry string, attempt int) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.seq++
	i := len(h.ops)
	h.ops = append(h.ops, Op{
		Index: i, Client: client, Kind: kind, Job: job, Region: region, Entry: entry,
		Attempt: attempt, Call: time.Now(), CallSeq: h.seq,
	})
	return i
}

// Return records the return of operation i with the status the API gave
// (ignored unless err is nil) and its error.
func (h *History) Return(i int, st api.JobStatus, created bool, err error) {
	now := time.Now()
	h.mu.Lock()
	defer h.mu.Unlock()
	h.seq++
	o := &h.ops[i]
	o.Return, o.ReturnSeq, o.Done = now, h.seq, true
	o.Outcome, o.Reason = Classify(err)
	if err != nil {
		o.Err = err.Error()
		return
	}
	o.State, o.Epoch, o.Created = st.State, st.Epoch, created
}

// Ops returns a copy of the operations recorded so far, in call order.
func (h *History) Ops() []Op {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.ops)
}

// Close marks every operation still in flight as returned with an unknown
// outcome, at the end of time: a write in flight may still take effect.
func (h *History) Close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for i := range h.ops {
		if !h.ops[i].Done {
			h.ops[i].Done, h.ops[i].Outcome, h.ops[i].ReturnSeq = true, OutcomeInfo, math.MaxInt64
			h.ops[i].Err = "still in flight when the history ended"
		}
	}
}

// JobCounts summarizes a history: jobs whose submit was called at least
// once, and jobs a submit acknowledged.
func JobCounts(ops []Op) (submitted, acked map[string]string) {
	submitted, acked = map[string]string{}, map[string]string{}
	for _, o := range ops {
		if o.Kind != OpSubmit {
			continue
		}
		submitted[o.Job] = o.Region
		if o.Done && o.Outcome == OutcomeOK {
			acked[o.Job] = o.Region
		}
	}
	return submitted, acked
}
