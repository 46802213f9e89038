package node

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"maps"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/meridian-mesh/meridian/consensus"
	"github.com/meridian-mesh/meridian/gossip"
	"github.com/meridian-mesh/meridian/node/api"
	"github.com/meridian-mesh/meridian/node/runner"
	"github.com/meridian-mesh/meridian/placement"
)

// reportState is what a node reports of a task to its region's leader.
type reportState string

const (
	reportRunning   reportState = "running"
	reportCompleted reportState = "completed"
	reportFailed    reportState = "failed"
)

// taskReport is one task state change on its way to the region's leader.
type taskReport struct {
	AllocID  string      `json:"alloc_id"`
	JobID    string      `json:"job_id"`
	State    reportState `json:"state"`
	ExitCode *int        `json:"exit_code,omitempty"`
	Reason   string      `json:"reason,omitempty"`
	Node     string      `json:"node"`
}

// exitPrefix starts the stop message of an allocation whose command exited,
// so the exit code survives in the ledger (see exitCodeOf).
const exitPrefix = "exit code "

func (r taskReport) message() string {
	msg := r.Reason
	if r.ExitCode != nil {
		msg = exitPrefix + strconv.Itoa(*r.ExitCode) + ": " + msg
	}
	if len(msg) > 900 {
		msg = msg[:900]
	}
	return msg
}

// exitCodeOf recovers the exit code from an allocation's stop message.
func exitCodeOf(msg string) *int {
	rest, ok := strings.CutPrefix(msg, exitPrefix)
	if !ok {
		return nil
	}
	num, _, _ := strings.Cut(rest, ":")
	c, err := strconv.Atoi(num)
	if err != nil {
		return nil
	}
	return &c
}

// workAlloc is an allocation as the node that runs it needs it.
type workAlloc struct {
	ID        string              `json:"id"`
	JobID     string              `json:"job_id"`
	JobRegion string              `json:"job_region"`
	Epoch     uint64              `json:"epoch"`
	Resources placement.Resources `json:"resources"`
	Duration  time.Duration       `json:"duration"`
	Task      *consensus.TaskSpec `json:"task,omitempty"`
	// Reservation marks capacity sold as a lease: held, not run. Jobs
	// drawn on it (InLease) are run, and count against the lease, not
	// again against the node.
	Reservation bool `json:"reservation,omitempty"`
	InLease     bool `json:"in_lease,omitempty"`
}

// nodeWork lists a node's live allocations from the ledger l.
func nodeWork(l *consensus.Ledger, node string) []workAlloc {
	var out []workAlloc
	for _, al := range l.NodeAllocations(node) {
		if !al.Live() {
			continue
		}
		w := workAlloc{Reservation: al.Kind.IsLease(), InLease: al.InLease != "", ID: al.ID, JobID: al.JobID, JobRegion: al.JobRegion, Epoch: al.Epoch,
			Resources: al.Resources, Duration: al.Duration, Task: al.Task}
		if al.JobRegion == l.Region() {
			if j, ok := l.Job(al.JobID); ok {
				w.Duration, w.Task = j.Spec.Duration, j.Task
			}
		}
		out = append(out, w)
	}
	slices.SortFunc(out, func(x, y workAlloc) int { return strings.Compare(x.ID, y.ID) })
	return out
}

// onTaskEvent queues a task's state change for the region's leader. The
// runner calls it from its own goroutines; it must not block.
func (a *Agent) onTaskEvent(ev runner.TaskEvent) {
	var st reportState
	switch ev.State {
	case runner.StateRunning:
		st = reportRunning
	case runner.StateCompleted:
		st = reportCompleted
	case runner.StateFailed:
		st = reportFailed
	default:
		// Cancelled: the node stopped the task because its allocation
		// ended; the ledger already says so.
		return
	}
	a.mu.Lock()
	prev, had := a.reports[ev.AllocID]
	if !had || prev.State == reportRunning {
		a.reports[ev.AllocID] = taskReport{AllocID: ev.AllocID, JobID: ev.JobID, State: st,
			ExitCode: ev.ExitCode, Reason: ev.Reason, Node: a.cfg.Name}
	}
	n := len(a.reports)
	a.mu.Unlock()
	a.metrics.reportsLeft.Set(float64(n))
	poke(a.capPoke)
	poke(a.reportPoke)
}

// workerLoop runs the node's allocations: it asks the region's leader for
// them (a blocking query that answers when they change), starts the ones
// not running, stops the ones that ended, and sends task reports until the
// leader has committed them.
func (a *Agent) workerLoop() {
	// finished are allocations whose task ended here; a lagging ledger
	// must not make the node run them again.
	finished := map[string]bool{}
	known := ""
	for a.ctx.Err() == nil {
		a.flushReports(a.ctx)
		work, version, err := a.awaitWork(known)
		switch {
		case a.ctx.Err() != nil:
			return
		case errors.Is(err, errReportQueued):
			continue
		case err != nil:
			a.log.Debug("could not fetch allocations; keeping tasks running", "err", err)
			known = ""
			select {
			case <-a.ctx.Done():
				return
			case <-a.reportPoke:
			case <-time.After(a.cfg.Tuning.PollInterval):
			}
			continue
		}
		known = version
		a.reconcileTasks(work, finished)
	}
}

// errReportQueued ends a wait for new work early: a task report is ready
// to send.
var errReportQueued = errors.New("task report queued")

// awaitWork asks for the node's allocations, waiting up to WorkWait at the
// leader while they are still those of version known ("" answers at once).
// A queued task report interrupts the wait.
func (a *Agent) awaitWork(known string) ([]workAlloc, string, error) {
	var version string
	work, err := waitOrPoke(a.ctx, a.reportPoke, func(ctx context.Context) ([]workAlloc, error) {
		w, v, err := a.fetchWork(ctx, known, a.cfg.Tuning.WorkWait)
		version = v
		return w, err
	})
	return work, version, err
}

// waitOrPoke runs fetch with a context that a signal on signal (a channel
// of capacity one, written with poke) cancels, and then answers
// errReportQueued. A signal that comes as fetch ends on its own ended no
// wait; it is put back, so that the caller's next wait sees it (a lost
// signal would leave a report unsent until the work changed, up to
// WorkWait).
func waitOrPoke[T any](parent context.Context, signal chan struct{}, fetch func(context.Context) (T, error)) (T, error) {
	ctx, cancel := context.WithCancelCause(parent)
	defer cancel(nil)
	stop := make(chan struct{})
	took := make(chan bool, 1) // whether the watcher took a signal
	go func() {
		select {
		case <-signal:
			cancel(errReportQueued)
			took <- true
		case <-stop:
			took <- false
		}
	}()
	v, err := fetch(ctx)
	close(stop)
	if <-took {
		if err != nil && errors.Is(context.Cause(ctx), errReportQueued) {
			var zero T
			return zero, errReportQueued
		}
		poke(signal)
	}
	return v, err
}

func (a *Agent) reconcileTasks(work []workAlloc, finished map[string]bool) {
	live := make(map[string]workAlloc, len(work))
	var used placement.Resources
	for _, w := range work {
		if !w.InLease {
			used = used.Add(w.Resources)
		}
		if !w.Reservation {
			live[w.ID] = w
		}
	}
	a.mu.Lock()
	a.lastUsed = used
	for id, rep := range a.reports {
		if rep.State != reportRunning {
			finished[id] = true
		}
	}
	a.mu.Unlock()
	running := map[string]bool{}
	for _, id := range a.runner.Running() {
		running[id] = true
		if _, ok := live[id]; !ok {
			a.runner.Stop(id)
		}
	}
	for id := range finished {
		if _, ok := live[id]; !ok {
			delete(finished, id)
		}
	}
	for _, id := range slices.Sorted(maps.Keys(live)) {
		w := live[id]
		if running[id] || finished[id] {
			continue
		}
		task := runner.Task{AllocID: w.ID, JobID: w.JobID, Driver: runner.DriverSim, Duration: w.Duration}
		if w.Task != nil {
			task.Driver = driverOf(w.Task.Driver)
			task.Command = w.Task.Command
			task.Env = w.Task.Env
		}
		if err := a.runner.Start(task); err != nil {
			a.log.Warn("could not start task", "alloc", w.ID, "err", err)
			a.onTaskEvent(runner.TaskEvent{AllocID: w.ID, JobID: w.JobID, State: runner.StateFailed,
				Reason: "task did not start: " + err.Error(), Time: time.Now()})
		}
	}
}

// fetchWork asks the region's leader for this node's live allocations and
// their version. While they are still those of version known, the leader
// holds the ask for up to wait; known "" answers at once.
func (a *Agent) fetchWork(ctx context.Context, known string, wait time.Duration) ([]workAlloc, string, error) {
	if a.IsLeader() {
		work, version, err := a.waitWork(ctx, a.cfg.Name, known, wait)
		if err == nil || !errors.Is(err, api.ErrNoLeader) {
			return work, version, err
		}
	}
	ctx, cancel := context.WithTimeout(ctx, wait+a.cfg.Tuning.RequestTimeout)
	defer cancel()
	q := url.Values{"node": {a.cfg.Name}}
	if known != "" {
		q.Set("known", known)
		q.Set("wait", wait.String())
	}
	var out []workAlloc
	if err := a.callRegionLeader(ctx, "GET", "/v1/internal/work?"+q.Encode(), nil, &out); err != nil {
		return nil, "", err
	}
	return out, workVersion(out), nil
}

// maxWorkWait bounds the wait a node may ask for.
const maxWorkWait = 10 * time.Minute

// waitWork is the leader's half of a blocking query for node's allocations:
// it answers once they differ from version known, when wait has passed,
// or when this server stops leading (so the node asks the new leader).
func (a *Agent) waitWork(ctx context.Context, node, known string, wait time.Duration) ([]workAlloc, string, error) {
	deadline := time.Now().Add(wait)
	for {
		if !a.IsLeader() {
			return nil, "", fmt.Errorf("not the region's leader: %w", api.ErrNoLeader)
		}
		l := a.server.Ledger()
		work := nodeWork(l, node)
		version := workVersion(work)
		left := time.Until(deadline)
		if version != known || left <= 0 {
			return work, version, nil
		}
		// Look again at the next commit, and at least every few polls to
		// notice a lost leadership that brings no commit here.
		// Either a commit or the slice's end: both mean look again.
		waitCtx, cancel := context.WithTimeout(ctx, min(left, 5*a.cfg.Tuning.PollInterval))
		_, _ = a.server.WaitLedger(waitCtx, l.Index())
		cancel()
		if ctx.Err() != nil {
			return nil, "", ctx.Err()
		}
	}
}

// workVersion fingerprints a node's allocations as the worker sees them, so
// the leader can tell whether a waiting worker's copy is current.
func workVersion(work []workAlloc) string {
	h := fnv.New64a()
	enc := json.NewEncoder(h)
	for _, w := range work {
		_ = enc.Encode(w) // writes to a hash cannot fail
	}
	return strconv.FormatUint(h.Sum64(), 36)
}

// flushReports sends queued task reports to the region's leader and drops
// those it committed.
func (a *Agent) flushReports(ctx context.Context) {
	a.mu.Lock()
	reps := slices.Collect(maps.Values(a.reports))
	a.mu.Unlock()
	if len(reps) == 0 {
		return
	}
	slices.SortFunc(reps, func(x, y taskReport) int { return strings.Compare(x.AllocID, y.AllocID) })
	ctx, cancel := context.WithTimeout(ctx, a.cfg.Tuning.RequestTimeout)
	defer cancel()
	var err error
	if a.IsLeader() {
		for _, r := range reps {
			if err = a.applyReport(ctx, r); err != nil {
				break
			}
		}
	} else {
		err = a.callRegionLeader(ctx, "POST", "/v1/internal/reports", reps, nil)
	}
	if err != nil {
		a.log.Debug("task reports not delivered; retrying", "reports", len(reps), "err", err)
		return
	}
	a.mu.Lock()
	for _, r := range reps {
		if cur, ok := a.reports[r.AllocID]; ok && cur.State == r.State {
			delete(a.reports, r.AllocID)
		}
	}
	n := len(a.reports)
	a.mu.Unlock()
	a.metrics.reportsLeft.Set(float64(n))
}

// handOver asks the region's leader to re-place this node's allocations
// before it leaves: it publishes a leaving record, which the leader's node
// sync treats as the node gone, and waits until its allocations are stopped.
func (a *Agent) handOver(ctx context.Context) error {
	if _, err := a.gossip.SetCapacity(gossip.Capacity{}); err != nil {
		return err
	}
	for {
		a.flushReports(ctx)
		work, _, err := a.fetchWork(ctx, "", 0)
		if err == nil && len(work) == 0 {
			return nil
		}
		if !sleepCtx(ctx, a.cfg.Tuning.PollInterval) {
			if err != nil {
				return fmt.Errorf("%w (last: %v)", ctx.Err(), err)
			}
			return fmt.Errorf("%d allocations still on the node: %w", len(work), ctx.Err())
		}
	}
}

// capacityLoop publishes the node's capacity in gossip when it differs from
// the record gossip holds, at most once per CapacityInterval. It compares
// with gossip's record rather than with what it last set, so a record that
// changed under it (a re-issue from a stale copy, as gossip once made) is
// put right at the next pass instead of never.
func (a *Agent) capacityLoop() {
	var published bool
	var lastAt time.Time
	t := time.NewTicker(a.cfg.Tuning.CapacityInterval)
	defer t.Stop()
	var advChanged <-chan struct{}
	if adv, ok := a.desk.(advertiser); ok {
		advChanged = adv.AdvertisementChanged()
	}
	urgent := false
	for {
		c := a.currentCapacity()
		a.mu.Lock()
		leaving := a.left
		a.mu.Unlock()
		// A change of market leadership goes out at once: other regions
		// find this region's leader, and trust its messages, only from it.
		due := urgent || time.Since(lastAt) >= a.cfg.Tuning.CapacityInterval
		urgent = false
		held, ok := a.gossip.Record(a.cfg.Name)
		if !leaving && (!ok || !capacityEqual(c, held.Capacity)) && due {
			if _, err := a.gossip.SetCapacity(c); err != nil {
				a.log.Warn("could not publish capacity", "err", err)
			} else {
				published, lastAt = true, time.Now()
			}
		}
		select {
		case <-a.ctx.Done():
			return
		case <-t.C:
		case <-advChanged:
			urgent = true
		case <-a.capPoke:
			if !published {
				continue
			}
			// Coalesce bursts of task events into one record.
			if !sleepCtx(a.ctx, max(0, a.cfg.Tuning.CapacityInterval-time.Since(lastAt))) {
				return
			}
		}
	}
}

// currentCapacity is the node's capacity as its region's ledger accounts
// for it (the local replica on a server, the last fetched work on a worker).
func (a *Agent) currentCapacity() gossip.Capacity {
	total := a.cfg.Resources
	c := gossip.Capacity{Total: total, Free: total, PricePerHour: a.cfg.PricePerHour, GPUType: a.cfg.GPUType}
	if adv, ok := a.desk.(advertiser); ok {
		info := adv.Advertisement()
		c.Market = &info
	}
	if total.IsZero() {
		c.PricePerHour, c.GPUType = 0, ""
		return c
	}
	var used placement.Resources
	if l := a.Ledger(); l != nil {
		if n, ok := l.Node(a.cfg.Name); ok {
			used = n.Used
		}
	} else if a.runner != nil {
		a.mu.Lock()
		used = a.lastUsed
		a.mu.Unlock()
	}
	c.Free = clampRes(total.Sub(used))
	if total.ComputePerHour > 0 {
		c.Utilization = min(1, max(0, used.ComputePerHour/total.ComputePerHour))
	}
	if a.runner != nil {
		c.QueueLength = len(a.runner.Running())
	}
	return c
}

func clampRes(r placement.Resources) placement.Resources {
	r.ComputePerHour = max(0, r.ComputePerHour)
	r.StorageGB = max(0, r.StorageGB)
	r.BandwidthGBps = max(0, r.BandwidthGBps)
	r.GPUs = max(0, r.GPUs)
	return r
}

func capacityEqual(x, y gossip.Capacity) bool {
	return x.Total == y.Total && x.Free == y.Free && x.PricePerHour == y.PricePerHour &&
		x.GPUType == y.GPUType && x.Utilization == y.Utilization && x.QueueLength == y.QueueLength &&
		marketEqual(x.Market, y.Market)
}

func marketEqual(x, y *gossip.MarketInfo) bool {
	if x == nil || y == nil {
		return x == y
	}
	return x.Leader == y.Leader && x.Term == y.Term && bytes.Equal(x.Ask, y.Ask)
}

// advertiser is what the market publishes through the node's gossip
// record: its leadership, term and ask.
type advertiser interface {
	Advertisement() gossip.MarketInfo
	AdvertisementChanged() <-chan struct{}
}
