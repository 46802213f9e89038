// Package runner runs a node's allocations as tasks and reports what
// becomes of them.
//
// Two drivers exist. "sim" (the default) stands in for real work: the task
// runs for the job's duration on the injected clock and then completes, or
// runs until stopped when the duration is zero; it is what netsim clusters
// and chaos tests run, in virtual time. "exec" runs the job's command as a
// child process in its own process group, with stdout and stderr in
// <DataDir>/allocs/<alloc ID>/, and reports its exit status.
//
// The runner holds no ledger state: the agent starts and stops tasks as its
// region's ledger says, and commits what the events report.
package runner

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"
)

// Drivers.
const (
	DriverSim  = "sim"
	DriverExec = "exec"
)

// DefaultKillGrace is how long a stopped exec task has between SIGTERM and
// SIGKILL.
const DefaultKillGrace = 10 * time.Second

// ErrClosed is returned by Start after Close.
var ErrClosed = errors.New("runner: closed")

// State is where a task is.
type State string

// Task states. A task reports StateRunning once, then exactly one of the
// others.
const (
	StateRunning   State = "running"
	StateCompleted State = "completed" // ran its duration, or its command exited 0
	StateFailed    State = "failed"    // its command could not start or exited non-zero
	StateCancelled State = "cancelled" // stopped by Stop or Close
)

// Terminal reports whether s is a final state.
func (s State) Terminal() bool { return s != StateRunning }

// Task is one allocation to run.
type Task struct {
	// AllocID names the allocation; it is also the name of the task's
	// directory, so it is limited to [A-Za-z0-9._-]{1,128}.
	AllocID string
	// JobID is the job the allocation runs.
	JobID string
	// Driver is DriverSim (the default when empty) or DriverExec.
	Driver string
	// Duration is how long the task runs; zero means until stopped. An exec
	// task still running at its duration is stopped and reported completed.
	Duration time.Duration
	// Command is the exec driver's program and arguments.
	Command []string
	// Env is extra environment for an exec task.
	Env map[string]string
}

// TaskEvent reports a task's change of state.
type TaskEvent struct {
	AllocID string
	JobID   string
	State   State
	// ExitCode is an exec task's exit status once its process has exited
	// (-1 when a signal ended it); nil otherwise.
	ExitCode *int
	// Reason explains a terminal state ("exit status 3", "stopped", ...).
	Reason string
	// Time is when the change happened, on the runner's clock.
	Time time.Time
}

// Config configures a Runner.
type Config struct {
	// DataDir is the node's data directory; exec tasks keep their output in
	// DataDir/allocs/<alloc ID>/. Required for the exec driver.
	DataDir string
	// OnEvent receives every TaskEvent. It is called from the task's own
	// goroutine, so calls for different tasks may be concurrent, while those
	// of one task come in order (running, then one terminal state); it must be
	// safe for concurrent use and should return quickly. Nil drops events.
	OnEvent func(TaskEvent)
	// Clock times sim tasks and task durations; nil means the real clock.
	Clock Clock
	// KillGrace is the time between SIGTERM and SIGKILL when an exec task
	// is stopped; 0 means DefaultKillGrace.
	KillGrace time.Duration
	// Logger receives task starts and ends at debug level; nil discards.
	Logger *slog.Logger
}

// Runner runs tasks. Its methods are safe for concurrent use. One mutex
// guards the table of live tasks; each task's goroutine owns everything
// else about its task.
type Runner struct {
	cfg Config
	wg  sync.WaitGroup

	mu     sync.Mutex
	tasks  map[string]*task // live tasks by alloc ID
	closed bool
}

// task is a live task's handle: closing stop asks its goroutine to end.
type task struct {
	stop     chan struct{}
	stopping bool // guarded by Runner.mu
}

// New returns a Runner. It fails when DataDir is set but cannot be used.
func New(cfg Config) (*Runner, error) {
	if cfg.Clock == nil {
		cfg.Clock = realClock{}
	}
	if cfg.KillGrace <= 0 {
		cfg.KillGrace = DefaultKillGrace
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.OnEvent == nil {
		cfg.OnEvent = func(TaskEvent) {}
	}
	if cfg.DataDir != "" {
		if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
			return nil, fmt.Errorf("runner: data dir: %w", err)
		}
	}
	return &Runner{cfg: cfg, tasks: make(map[string]*task)}, nil
}

// Start starts t and returns at once; its events follow through OnEvent.
// Starting an allocation that is already running does nothing, so an agent
// that replays its ledger after a restart may call Start again safely. An
// invalid task is refused with an error naming the field; a command that
// cannot be started is reported as a failed event instead.
func (r *Runner) Start(t Task) error {
	if err := r.validate(t); err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return ErrClosed
	}
	if _, ok := r.tasks[t.AllocID]; ok {
		return nil
	}
	tk := &task{stop: make(chan struct{})}
	r.tasks[t.AllocID] = tk
	r.wg.Add(1)
	go r.run(tk, t)
	return nil
}

// Stop asks the allocation's task to stop and returns at once; a cancelled
// event follows once it has. Stopping an unknown or finished allocation does
// nothing.
func (r *Runner) Stop(allocID string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if tk, ok := r.tasks[allocID]; ok {
		r.stopLocked(tk)
	}
}

func (r *Runner) stopLocked(tk *task) {
	if !tk.stopping {
		tk.stopping = true
		close(tk.stop)
	}
}

// Running returns the IDs of the allocations whose tasks are live.
func (r *Runner) Running() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	ids := make([]string, 0, len(r.tasks))
	for id := range r.tasks {
		ids = append(ids, id)
	}
	return ids
}

// Close stops every task and waits until each has ended and reported its
// last event. Later Starts fail with ErrClosed.
func (r *Runner) Close() error {
	r.mu.Lock()
	r.closed = true
	for _, tk := range r.tasks {
		r.stopLocked(tk)
	}
	r.mu.Unlock()
	r.wg.Wait()
	return nil
}

func (r *Runner) validate(t Task) error {
	if !validAllocID(t.AllocID) {
		return fmt.Errorf("runner: alloc_id %q: must be 1 to 128 characters of [A-Za-z0-9._-], not . or ..", t.AllocID)
	}
	if t.Duration < 0 {
		return fmt.Errorf("runner: alloc %s: duration %v is negative", t.AllocID, t.Duration)
	}
	switch t.Driver {
	case "", DriverSim:
		return nil
	case DriverExec:
		if len(t.Command) == 0 || t.Command[0] == "" {
			return fmt.Errorf("runner: alloc %s: command: required with the exec driver", t.AllocID)
		}
		if r.cfg.DataDir == "" {
			return fmt.Errorf("runner: alloc %s: the exec driver needs a data directory", t.AllocID)
		}
		return nil
	}
	return fmt.Errorf("runner: alloc %s: driver %q: must be %q or %q", t.AllocID, t.Driver, DriverSim, DriverExec)
}

func validAllocID(id string) bool {
	if id == "" || len(id) > 128 || id == "." || id == ".." {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// run is a task's goroutine: it drives the task to its end, removes it from
// the table, then reports the terminal event.
func (r *Runner) run(tk *task, t Task) {
	defer r.wg.Done()
	running := func() { r.emit(t, TaskEvent{State: StateRunning}) }
	var end TaskEvent
	if t.Driver == DriverExec {
		end = r.runExec(tk, t, running)
	} else {
		end = r.runSim(tk, t, running)
	}
	r.mu.Lock()
	delete(r.tasks, t.AllocID)
	r.mu.Unlock()
	r.emit(t, end)
}

func (r *Runner) emit(t Task, ev TaskEvent) {
	ev.AllocID, ev.JobID = t.AllocID, t.JobID
	if ev.Time.IsZero() {
		ev.Time = r.cfg.Clock.Now()
	}
	attrs := []any{"alloc", t.AllocID, "job", t.JobID, "state", ev.State}
	if ev.Reason != "" {
		attrs = append(attrs, "reason", ev.Reason)
	}
	r.cfg.Logger.Debug("runner: task", attrs...)
	r.cfg.OnEvent(ev)
}

// runSim waits out the task's duration, or until it is stopped.
func (r *Runner) runSim(tk *task, t Task, running func()) TaskEvent {
	running()
	if t.Duration == 0 {
		<-tk.stop
		return TaskEvent{State: StateCancelled, Reason: "stopped"}
	}
	tm := r.cfg.Clock.NewTimer(t.Duration)
	defer tm.Stop()
	select {
	case <-tm.C():
		return TaskEvent{State: StateCompleted, Reason: fmt.Sprintf("ran for its duration of %v", t.Duration)}
	case <-tk.stop:
		return TaskEvent{State: StateCancelled, Reason: "stopped"}
	}
}
