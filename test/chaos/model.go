package chaos

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/meridian-mesh/meridian/node/api"
)

// The linearizability model: every job is a register whose value is the
// job's state, written by idempotent submits and by cancels, and moved on
// by the mesh itself (placement, trades, completion). Jobs are independent,
// so the history is partitioned by job (porcupine's Partition); a region's
// history is linearizable when every one of its jobs' is.
//
// The model is nondeterministic (porcupine.NondeterministicModel): a write
// whose outcome is unknown may or may not have happened, so the state is
// the set of states the job may be in. What it holds a job to:
//   - a job does not exist until a submit of it takes effect, and then
//     exists for good: a read must not miss an acknowledged job;
//   - exactly one submit creates a job (created = true); the others, and
//     retries, find it (created = false) with the same spec; what a submit
//     answers is a read of the job made after it existed, within the
//     submit's interval (opAnswer);
//   - the mesh may move a live job between pending, placed, traded and
//     running, and end it completed or failed, but only a client's cancel
//     cancels it;
//   - an ended job stays ended in the same state; a cancel of it returns
//     that state unchanged;
//   - the placement epoch never goes back.

// jobPhase is where a job is, as far as the model can tell.
type jobPhase uint8

const (
	phaseAbsent jobPhase = iota
	phaseLive            // pending, placed, traded or running: any of them, in any order
	phaseEnded           // completed, failed or cancelled, in modelState.end
)

// modelState is one state the job may be in.
type modelState struct {
	phase jobPhase
	end   api.JobState
	epoch uint64
}

func (s modelState) String() string {
	switch s.phase {
	case phaseAbsent:
		return "absent"
	case phaseLive:
		return fmt.Sprintf("live e%d", s.epoch)
	}
	return fmt.Sprintf("%s e%d", s.end, s.epoch)
}

// opAnswer is the job status a successful submit returned, as its own
// operation within the submit's interval: the agent commits the job, then
// waits for the first placement pass and reads the job again (Tuning's
// SubmitWait), so the answer may show a later state than the creation —
// a read concurrent with the submit may see the job pending at epoch 0
// while the submit answers placed at epoch 1. Checking the answer as the
// state at the moment of creation would call that a violation.
const opAnswer OpKind = "submit-answer"

// input is an operation as the model sees it.
type input struct {
	Kind OpKind
	Job  string
}

// result is an operation's outcome as the model sees it.
type result struct {
	Outcome Outcome
	Reason  string
	State   api.JobState
	Epoch   uint64
	Created bool
}

func describeResult(kind OpKind, r result) string {
	switch r.Outcome {
	case OutcomeOK:
		s := ""
		if kind == OpSubmit {
			if r.Created {
				s = "created "
			} else {
				s = "existing "
			}
		}
		return fmt.Sprintf("ok %s%s e%d", s, r.State, r.Epoch)
	case OutcomeFail:
		return "fail " + r.Reason
	}
	return "info (unknown outcome)"
}

// observe returns the state after the job was seen with state and epoch,
// and false if it cannot be seen so from s.
func observe(s modelState, state api.JobState, epoch uint64) (modelState, bool) {
	if epoch < s.epoch {
		return s, false
	}
	switch s.phase {
	case phaseLive:
		switch {
		case state == api.JobCancelled:
			return s, false // only a cancel cancels
		case state == api.JobCompleted || state == api.JobFailed:
			return modelState{phase: phaseEnded, end: state, epoch: epoch}, true
		case state.Valid():
			return modelState{phase: phaseLive, epoch: epoch}, true
		}
	case phaseEnded:
		if state == s.end {
			return modelState{phase: phaseEnded, end: s.end, epoch: epoch}, true
		}
	}
	return s, false
}

// step returns the states the job may be in after the operation, none if
// the operation could not have returned what it did from s.
func step(s modelState, in input, out result) []modelState {
	one := func(n modelState, ok bool) []modelState {
		if !ok {
			return nil
		}
		return []modelState{n}
	}
	switch in.Kind {
	case OpSubmit:
		switch out.Outcome {
		case OutcomeInfo:
			if s.phase == phaseAbsent {
				return []modelState{s, {phase: phaseLive}}
			}
			return []modelState{s}
		case OutcomeFail:
			// Our client sends one spec per ID: a conflict is a lie. A
			// refusal (invalid, not found) changed nothing.
			return one(s, out.Reason != ReasonConflict)
		}
		// What the submit returns is split off as an opAnswer (see
		// porcupineOps): here only its creating, or finding, the job.
		if out.Created {
			return one(modelState{phase: phaseLive}, s.phase == phaseAbsent)
		}
		return one(s, s.phase != phaseAbsent)
	case opAnswer:
		if s.phase == phaseAbsent {
			return nil
		}
		return one(observe(s, out.State, out.Epoch))
	case OpStatus:
		switch out.Outcome {
		case OutcomeInfo:
			return []modelState{s}
		case OutcomeFail:
			if out.Reason == ReasonNotFound {
				return one(s, s.phase == phaseAbsent)
			}
			return []modelState{s}
		}
		if s.phase == phaseAbsent {
			return nil
		}
		return one(observe(s, out.State, out.Epoch))
	case OpCancel:
		switch out.Outcome {
		case OutcomeInfo:
			if s.phase == phaseLive {
				return []modelState{s, {phase: phaseEnded, end: api.JobCancelled, epoch: s.epoch}}
			}
			return []modelState{s}
		case OutcomeFail:
			if out.Reason == ReasonNotFound {
				return one(s, s.phase == phaseAbsent)
			}
			return []modelState{s}
		}
		switch s.phase {
		case phaseAbsent:
			return nil
		case phaseLive:
			if out.State == api.JobCancelled {
				return one(modelState{phase: phaseEnded, end: api.JobCancelled, epoch: out.Epoch}, out.Epoch >= s.epoch)
			}
			// It ended on its own just before the cancel, which then
			// changed nothing.
			if out.State == api.JobCompleted || out.State == api.JobFailed {
				return one(observe(s, out.State, out.Epoch))
			}
			return nil
		default:
			return one(observe(s, out.State, out.Epoch))
		}
	}
	return nil
}

// jobModel is the porcupine model of the job registers, partitioned by job.
var jobModel = (&porcupine.NondeterministicModel{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		byJob := map[string][]porcupine.Operation{}
		var order []string
		for _, op := range history {
			j := op.Input.(input).Job
			if _, ok := byJob[j]; !ok {
				order = append(order, j)
			}
			byJob[j] = append(byJob[j], op)
		}
		out := make([][]porcupine.Operation, len(order))
		for i, j := range order {
			out[i] = byJob[j]
		}
		return out
	},
	Init: func() []interface{} { return []interface{}{modelState{}} },
	Step: func(state, in, out interface{}) []interface{} {
		next := step(state.(modelState), in.(input), out.(result))
		res := make([]interface{}, len(next))
		for i, n := range next {
			res[i] = n
		}
		return res
	},
	DescribeOperation: func(in, out interface{}) string {
		i := in.(input)
		return fmt.Sprintf("%s(%s) → %s", i.Kind, i.Job, describeResult(i.Kind, out.(result)))
	},
}).ToModel()

// porcupineOps converts a history to porcupine operations. Reads whose
// outcome is unknown are dropped (they changed nothing and said nothing);
// writes whose outcome is unknown get an open end: they may take effect at
// any time after their call, even after the history ends.
func porcupineOps(ops []Op) []porcupine.Operation {
	var out []porcupine.Operation
	for _, o := range ops {
		if !o.Done && o.Kind == OpStatus {
			continue
		}
		ret := o.ReturnSeq
		oc := o.Outcome
		if !o.Done {
			oc = OutcomeInfo
		}
		if oc == OutcomeInfo {
			if o.Kind == OpStatus {
				continue
			}
			ret = math.MaxInt64
		}
		res := result{Outcome: oc, Reason: o.Reason, State: o.State, Epoch: o.Epoch, Created: o.Created}
		out = append(out, porcupine.Operation{
			ClientId: o.Client,
			Input:    input{Kind: o.Kind, Job: o.Job},
			Call:     o.CallSeq,
			Output:   res,
			Return:   ret,
			Metadata: o.Index,
		})
		if o.Kind == OpSubmit && oc == OutcomeOK {
			out = append(out, porcupine.Operation{
				ClientId: o.Client,
				Input:    input{Kind: opAnswer, Job: o.Job},
				Call:     o.CallSeq,
				Output:   res,
				Return:   ret,
				Metadata: o.Index,
			})
		}
	}
	return out
}

// LinFailure is a job whose history is not linearizable.
type LinFailure struct {
	Job    string `json:"job"`
	Region string `json:"region"`
	// Ops is the size of the job's whole history.
	Ops int `json:"ops"`
	// Minimal is a smallest slice of it that is still not linearizable:
	// removing any one of these operations makes it linearizable.
	Minimal []Op `json:"minimal"`
	// Linearized is the longest prefix porcupine could linearize, as op
	// indexes: where the explanation starts to fail.
	Linearized []int `json:"linearized,omitempty"`
}

// LinResult is the linearizability verdict of a history.
type LinResult struct {
	// OK is true when every region's history is linearizable.
	OK bool `json:"ok"`
	// Unknown is true when the checker ran out of time on some job.
	Unknown bool `json:"unknown,omitempty"`
	// Regions gives each region's verdict.
	Regions map[string]bool `json:"regions"`
	// Failures are the non-linearizable jobs, by region and job.
	Failures []LinFailure `json:"failures,omitempty"`
}

// CheckLinearizable checks the history, region by region, with porcupine
// (each region's history partitioned by job), and shrinks each failing
// job's history to a minimal non-linearizable slice. timeout bounds each
// porcupine call; a call that runs out is Unknown, not a failure.
func CheckLinearizable(ops []Op, timeout time.Duration) LinResult {
	res := LinResult{OK: true, Regions: map[string]bool{}}
	byRegion := map[string][]Op{}
	for _, o := range ops {
		byRegion[o.Region] = append(byRegion[o.Region], o)
	}
	regions := make([]string, 0, len(byRegion))
	for r := range byRegion {
		regions = append(regions, r)
	}
	slices.Sort(regions)
	for _, region := range regions {
		rops := byRegion[region]
		verdict := porcupine.CheckOperationsTimeout(jobModel, porcupineOps(rops), timeout)
		res.Regions[region] = verdict == porcupine.Ok
		switch verdict {
		case porcupine.Ok:
			continue
		case porcupine.Unknown:
			res.Unknown = true
			continue
		}
		res.OK = false
		byJob := map[string][]Op{}
		var jobs []string
		for _, o := range rops {
			if _, ok := byJob[o.Job]; !ok {
				jobs = append(jobs, o.Job)
			}
			byJob[o.Job] = append(byJob[o.Job], o)
		}
		for _, job := range jobs {
			jops := byJob[job]
			v, info := porcupine.CheckOperationsVerbose(jobModel, porcupineOps(jops), timeout)
			if v != porcupine.Illegal {
				continue
			}
			f := LinFailure{Job: job, Region: region, Ops: len(jops), Minimal: minimize(jops, timeout)}
			f.Linearized = longestLinearized(info)
			res.Failures = append(res.Failures, f)
		}
	}
	return res
}

// longestLinearized returns the op indexes of porcupine's longest partial
// linearization.
func longestLinearized(info porcupine.LinearizationInfo) []int {
	var best []porcupine.Operation
	for _, part := range info.PartialLinearizationsOperations() {
		for _, lin := range part {
			if len(lin) > len(best) {
				best = lin
			}
		}
	}
	out := make([]int, len(best))
	for i, o := range best {
		out[i] = o.Metadata.(int)
	}
	return out
}

// minimize removes operations from a non-linearizable history one at a
// time, keeping each removal that leaves it non-linearizable, until no
// single removal does: a 1-minimal slice, the shortest story of the bug.
// Submits that may have created the job are kept: without them any read
// of the job would be a violation of its own, and the slice would no longer
// tell the story of the real one.
func minimize(ops []Op, timeout time.Duration) []Op {
	cur := slices.Clone(ops)
	for changed := true; changed; {
		changed = false
		for i := 0; i < len(cur); i++ {
			if cur[i].Kind == OpSubmit && cur[i].Outcome != OutcomeFail {
				continue
			}
			try := slices.Delete(slices.Clone(cur), i, i+1)
			if porcupine.CheckOperationsTimeout(jobModel, porcupineOps(try), timeout) == porcupine.Illegal {
				cur, changed = try, true
				i--
			}
		}
	}
	return cur
}

// FormatOps renders ops one per line, times relative to start.
func FormatOps(ops []Op, start time.Time) string {
	var b strings.Builder
	for _, o := range ops {
		b.WriteString("  ")
		b.WriteString(o.format(start))
		b.WriteByte('\n')
	}
	return b.String()
}
