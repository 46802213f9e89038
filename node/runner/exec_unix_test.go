//go:build unix

package runner_test

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/node/runner"
)

// --- exec driver: real child processes, so real time with deadlines ---

const wait = 30 * time.Second // generous: a loaded CI machine, never a fixed sleep

func execTask(id string, args ...string) runner.Task {
	return runner.Task{AllocID: id, JobID: "job-" + id, Driver: runner.DriverExec, Command: args}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestExecFailureRecordsExitCodeAndOutput(t *testing.T) {
	dir := t.TempDir()
	r, rec := newRunner(t, runner.Config{DataDir: dir})
	defer r.Close()
	if err := r.Start(execTask("a1", "/bin/sh", "-c", `echo "$MERIDIAN_JOB_ID"; echo oops >&2; exit 3`)); err != nil {
		t.Fatal(err)
	}
	if ev := rec.next(t, wait); ev.State != runner.StateRunning {
		t.Fatalf("first event = %+v; want running", ev)
	}
	ev := rec.next(t, wait)
	if ev.State != runner.StateFailed || ev.ExitCode == nil || *ev.ExitCode != 3 || ev.Reason != "exit status 3" {
		t.Fatalf("end event = %+v; want failed with exit code 3", ev)
	}
	taskDir := runner.TaskDir(dir, "a1")
	if got := readFile(t, filepath.Join(taskDir, "stdout")); got != "job-a1\n" {
		t.Errorf("stdout = %q; want the job ID", got)
	}
	if got := readFile(t, filepath.Join(taskDir, "stderr")); got != "oops\n" {
		t.Errorf("stderr = %q", got)
	}
}

func TestExecSuccessAndEnvironment(t *testing.T) {
	t.Setenv("MERIDIAN_TOKEN", "agent-secret")
	dir := t.TempDir()
	r, rec := newRunner(t, runner.Config{DataDir: dir})
	defer r.Close()
	task := execTask("a2", "/bin/sh", "-c", `echo "$GREETING $MERIDIAN_ALLOC_ID token=$MERIDIAN_TOKEN dir=$(pwd)"`)
	task.Env = map[string]string{"GREETING": "hello", "MERIDIAN_ALLOC_ID": "forged"}
	if err := r.Start(task); err != nil {
		t.Fatal(err)
	}
	rec.next(t, wait) // running
	ev := rec.next(t, wait)
	if ev.State != runner.StateCompleted || ev.ExitCode == nil || *ev.ExitCode != 0 {
		t.Fatalf("end event = %+v; want completed with exit code 0", ev)
	}
	taskDir := runner.TaskDir(dir, "a2")
	real, _ := filepath.EvalSymlinks(taskDir)
	want := "hello a2 token= dir=" + real + "\n"
	if got := readFile(t, filepath.Join(taskDir, "stdout")); got != want {
		t.Errorf("stdout = %q; want %q (job env, runner's IDs, no agent secrets, task dir as cwd)", got, want)
	}
}

// pidAlive reports whether a process still runs. A killed orphan stays a
// zombie until init reaps it, and kill(pid, 0) still succeeds on a zombie,
// so Linux's /proc state is read where there is one.
func pidAlive(pid int) bool {
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
		// The state follows the parenthesised command name: "pid (comm) S ...".
		if i := bytes.LastIndexByte(b, ')'); i >= 0 && i+2 < len(b) {
			return b[i+2] != 'Z' && b[i+2] != 'X'
		}
		return true
	} else if _, err := os.Stat("/proc/self/stat"); err == nil {
		return false // /proc works and the process is not in it
	}
	return syscall.Kill(pid, 0) == nil
}

// waitGone waits, with a deadline, for a process to disappear.
func waitGone(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for pidAlive(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("process %d still alive %v after its task ended", pid, wait)
		}
		time.Sleep(10 * time.Millisecond) // polling a condition, not waiting out a delay
	}
}

// startWithChild runs a shell that starts a background child, writes its
// PID to a file and waits; it returns the child's PID once known.
func startWithChild(t *testing.T, r *runner.Runner, rec *recorder, dir, id, script string) int {
	t.Helper()
	if err := r.Start(execTask(id, "/bin/sh", "-c", script)); err != nil {
		t.Fatal(err)
	}
	if ev := rec.next(t, wait); ev.State != runner.StateRunning {
		t.Fatalf("first event = %+v; want running", ev)
	}
	pidFile := filepath.Join(runner.TaskDir(dir, id), "child.pid")
	deadline := time.Now().Add(wait)
	for {
		if b, err := os.ReadFile(pidFile); err == nil && strings.HasSuffix(string(b), "\n") {
			pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
			if err != nil {
				t.Fatal(err)
			}
			return pid
		}
		if time.Now().After(deadline) {
			t.Fatalf("the task never wrote %s", pidFile)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestExecStopKillsTheProcessGroup(t *testing.T) {
	dir := t.TempDir()
	r, rec := newRunner(t, runner.Config{DataDir: dir})
	defer r.Close()
	child := startWithChild(t, r, rec, dir, "a3", `sleep 60 & echo $! > child.pid; wait`)
	start := time.Now()
	r.Stop("a3")
	ev := rec.next(t, wait)
	if ev.State != runner.StateCancelled || ev.ExitCode == nil {
		t.Fatalf("after Stop: %+v; want cancelled with an exit code", ev)
	}
	if took := time.Since(start); took > runner.DefaultKillGrace {
		t.Errorf("Stop took %v: SIGTERM did not end the task before the grace period", took)
	}
	waitGone(t, child)
}

func TestExecStopEscalatesToSIGKILL(t *testing.T) {
	dir := t.TempDir()
	r, rec := newRunner(t, runner.Config{DataDir: dir, KillGrace: 100 * time.Millisecond})
	defer r.Close()
	// The shell and its child ignore SIGTERM; only SIGKILL ends them.
	child := startWithChild(t, r, rec, dir, "a4", `trap "" TERM; sleep 60 & echo $! > child.pid; wait`)
	r.Stop("a4")
	ev := rec.next(t, wait)
	if ev.State != runner.StateCancelled || ev.ExitCode == nil || *ev.ExitCode != -1 || !strings.Contains(ev.Reason, "killed") {
		t.Fatalf("after Stop: %+v; want cancelled, killed by a signal (exit code -1)", ev)
	}
	waitGone(t, child)
}

func TestExecLeftoverChildrenDieWithTheTask(t *testing.T) {
	dir := t.TempDir()
	r, rec := newRunner(t, runner.Config{DataDir: dir})
	defer r.Close()
	// The shell exits at once, leaving a background child behind.
	if err := r.Start(execTask("a5", "/bin/sh", "-c", `sleep 60 & echo $! > child.pid`)); err != nil {
		t.Fatal(err)
	}
	rec.next(t, wait) // running
	if ev := rec.next(t, wait); ev.State != runner.StateCompleted {
		t.Fatalf("end event = %+v; want completed", ev)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(readFile(t, filepath.Join(runner.TaskDir(dir, "a5"), "child.pid"))))
	if err != nil {
		t.Fatal(err)
	}
	waitGone(t, pid)
}

func TestExecStopsAtItsDuration(t *testing.T) {
	dir := t.TempDir()
	r, rec := newRunner(t, runner.Config{DataDir: dir})
	defer r.Close()
	task := execTask("a6", "sleep", "60")
	task.Duration = 50 * time.Millisecond
	if err := r.Start(task); err != nil {
		t.Fatal(err)
	}
	rec.next(t, wait) // running
	ev := rec.next(t, wait)
	if ev.State != runner.StateCompleted || !strings.Contains(ev.Reason, "end of its duration") {
		t.Fatalf("end event = %+v; want completed at the end of its duration", ev)
	}
}

func TestExecBadCommand(t *testing.T) {
	dir := t.TempDir()
	r, rec := newRunner(t, runner.Config{DataDir: dir})
	defer r.Close()
	notExec := filepath.Join(t.TempDir(), "notes.txt")
	if err := os.WriteFile(notExec, []byte("not a program\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for id, tc := range map[string]struct {
		cmd  string
		want string
	}{
		"missing-path": {"/nonexistent/prog", "no such file or directory"},
		"not-on-path":  {"meridian-no-such-program", "executable file not found"},
		"not-exec":     {notExec, "permission denied"},
	} {
		if err := r.Start(execTask(id, tc.cmd)); err != nil {
			t.Fatal(err)
		}
		ev := rec.next(t, wait) // no running event: it never ran
		if ev.AllocID != id || ev.State != runner.StateFailed || ev.ExitCode != nil ||
			!strings.Contains(ev.Reason, tc.want) || !strings.Contains(ev.Reason, tc.cmd) {
			t.Errorf("%s: event %+v; want failed naming %q and %q", id, ev, tc.cmd, tc.want)
		}
	}
}

func TestExecCloseStopsRunningProcesses(t *testing.T) {
	dir := t.TempDir()
	r, rec := newRunner(t, runner.Config{DataDir: dir})
	child := startWithChild(t, r, rec, dir, "a7", `sleep 60 & echo $! > child.pid; wait`)
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if ev := rec.next(t, time.Second); ev.State != runner.StateCancelled {
		t.Errorf("after Close: %+v; want cancelled", ev)
	}
	waitGone(t, child)
}
