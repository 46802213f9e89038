package runner

import (
	"context"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// inheritedEnv lists the agent's variables an exec task sees. Nothing else
// is passed on: the agent's own environment may hold secrets such as
// MERIDIAN_TOKEN.
var inheritedEnv = []string{"PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "TZ", "TMPDIR"}

// TaskDir returns the directory of an allocation's task: its working
// directory and where its stdout and stderr files are kept.
func TaskDir(dataDir, allocID string) string {
	return filepath.Join(dataDir, "allocs", allocID)
}

// taskEnv builds an exec task's environment: the inherited variables, then
// the job's, then the runner's own, which win.
func taskEnv(t Task, dir string) []string {
	env := make(map[string]string)
	for _, k := range inheritedEnv {
		if v, ok := os.LookupEnv(k); ok {
			env[k] = v
		}
	}
	for k, v := range t.Env {
		if !strings.HasPrefix(strings.ToUpper(k), "MERIDIAN_") {
			env[k] = v
		}
	}
	env["MERIDIAN_JOB_ID"] = t.JobID
	env["MERIDIAN_ALLOC_ID"] = t.AllocID
	env["MERIDIAN_ALLOC_DIR"] = dir
	out := make([]string, 0, len(env))
	for _, k := range slices.Sorted(maps.Keys(env)) {
		out = append(out, k+"="+env[k])
	}
	return out
}

// runExec runs the task's command to its end: its own exit, its duration,
// or a stop (SIGTERM to the process group, SIGKILL after the grace period).
// Whatever ends the task, what is left of its process group is killed, so no
// child outlives it.
func (r *Runner) runExec(tk *task, t Task, running func()) TaskEvent {
	dir := TaskDir(r.cfg.DataDir, t.AllocID)
	failed := func(format string, args ...any) TaskEvent {
		return TaskEvent{State: StateFailed, Reason: fmt.Sprintf(format, args...)}
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return failed("creating the task directory: %v", err)
	}
	// Appending keeps the output of an earlier run of the same allocation.
	open := func(name string) (*os.File, error) {
		return os.OpenFile(filepath.Join(dir, name), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	}
	stdout, err := open("stdout")
	if err != nil {
		return failed("opening stdout: %v", err)
	}
	defer stdout.Close()
	stderr, err := open("stderr")
	if err != nil {
		return failed("opening stderr: %v", err)
	}
	defer stderr.Close()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cmd := exec.CommandContext(ctx, t.Command[0], t.Command[1:]...)
	cmd.Dir = dir
	cmd.Env = taskEnv(t, dir)
	cmd.Stdout, cmd.Stderr = stdout, stderr
	setProcessGroup(cmd)
	// Cancelling ctx sends SIGTERM to the group; if the process is still
	// there KillGrace later, Wait kills it.
	cmd.Cancel = func() error { return terminateGroup(cmd.Process) }
	cmd.WaitDelay = r.cfg.KillGrace
	if err := cmd.Start(); err != nil {
		return failed("starting %q: %v", t.Command[0], err)
	}
	running()

	var deadline <-chan time.Time // nil, never ready, when the task has no duration
	if t.Duration > 0 {
		tm := r.cfg.Clock.NewTimer(t.Duration)
		defer tm.Stop()
		deadline = tm.C()
	}
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()

	var ended string // why the runner ended the task; empty if it exited by itself
	select {
	case <-waited:
	case <-tk.stop:
		ended = "stopped"
		cancel()
		<-waited
	case <-deadline:
		ended = fmt.Sprintf("stopped at the end of its duration of %v", t.Duration)
		cancel()
		<-waited
	}
	_ = killGroup(cmd.Process) // leftovers; ErrProcessDone when there are none

	ev := TaskEvent{}
	ps := cmd.ProcessState
	if ps != nil {
		code := ps.ExitCode()
		ev.ExitCode = &code
	}
	switch {
	case ended == "stopped":
		ev.State, ev.Reason = StateCancelled, "stopped"
	case ended != "":
		ev.State, ev.Reason = StateCompleted, ended
	case ps == nil:
		ev.State, ev.Reason = StateFailed, "the process could not be waited for"
	case ps.Success():
		ev.State, ev.Reason = StateCompleted, ps.String()
	default:
		ev.State, ev.Reason = StateFailed, ps.String()
	}
	if ps != nil && ended != "" {
		ev.Reason += " (" + ps.String() + ")"
	}
	return ev
}
