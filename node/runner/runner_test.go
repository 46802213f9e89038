package runner_test

import (
	"errors"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"

	"github.com/meridian-mesh/meridian/node/runner"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// recorder collects events; OnEvent may be called from many goroutines.
type recorder struct{ ch chan runner.TaskEvent }

func newRecorder() *recorder { return &recorder{ch: make(chan runner.TaskEvent, 64)} }

func (r *recorder) on(ev runner.TaskEvent) { r.ch <- ev }

// next returns the next event, failing the test if none comes within the
// deadline (real time outside a bubble, virtual time inside one).
func (r *recorder) next(t *testing.T, within time.Duration) runner.TaskEvent {
	t.Helper()
	select {
	case ev := <-r.ch:
		return ev
	case <-time.After(within):
		t.Fatalf("no task event within %v", within)
		return runner.TaskEvent{}
	}
}

// none checks that no event is pending.
func (r *recorder) none(t *testing.T) {
	t.Helper()
	select {
	case ev := <-r.ch:
		t.Fatalf("unexpected event %+v", ev)
	default:
	}
}

func newRunner(t *testing.T, cfg runner.Config) (*runner.Runner, *recorder) {
	t.Helper()
	rec := newRecorder()
	cfg.OnEvent = rec.on
	r, err := runner.New(cfg)
	if err != nil {
		t.Fatalf("New = %v", err)
	}
	return r, rec
}

func TestSimCompletesAtItsDuration(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r, rec := newRunner(t, runner.Config{})
		defer r.Close()
		start := time.Now()
		if err := r.Start(runner.Task{AllocID: "a1", JobID: "j1", Duration: time.Hour}); err != nil {
			t.Fatal(err)
		}
		ev := rec.next(t, time.Second)
		if ev.State != runner.StateRunning || ev.AllocID != "a1" || ev.JobID != "j1" || !ev.Time.Equal(start) {
			t.Fatalf("first event = %+v; want a1/j1 running at %v", ev, start)
		}
		time.Sleep(time.Hour - time.Nanosecond)
		synctest.Wait()
		rec.none(t)
		if got := r.Running(); len(got) != 1 || got[0] != "a1" {
			t.Errorf("Running() = %v just before the duration; want [a1]", got)
		}
		ev = rec.next(t, time.Second)
		if ev.State != runner.StateCompleted || !ev.Time.Equal(start.Add(time.Hour)) || ev.ExitCode != nil {
			t.Errorf("end event = %+v; want completed at start+1h without an exit code", ev)
		}
		if got := r.Running(); len(got) != 0 {
			t.Errorf("Running() = %v after completion", got)
		}
	})
}

func TestSimRunsUntilStopped(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r, rec := newRunner(t, runner.Config{})
		defer r.Close()
		if err := r.Start(runner.Task{AllocID: "a1", JobID: "j1"}); err != nil {
			t.Fatal(err)
		}
		rec.next(t, time.Second) // running
		time.Sleep(1000 * time.Hour)
		synctest.Wait()
		rec.none(t)
		r.Stop("a1")
		ev := rec.next(t, time.Second)
		if ev.State != runner.StateCancelled || ev.Reason != "stopped" {
			t.Errorf("after Stop: %+v; want cancelled", ev)
		}
		r.Stop("a1") // again: a no-op
		r.Stop("never-started")
		synctest.Wait()
		rec.none(t)
	})
}

func TestStartIsIdempotentAndCloseStopsAll(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r, rec := newRunner(t, runner.Config{})
		for _, id := range []string{"a1", "a2", "a1"} {
			if err := r.Start(runner.Task{AllocID: id, Duration: time.Hour}); err != nil {
				t.Fatal(err)
			}
		}
		synctest.Wait()
		if len(rec.ch) != 2 {
			t.Fatalf("%d events after starting a1, a2, a1; want 2 running events", len(rec.ch))
		}
		rec.next(t, time.Second)
		rec.next(t, time.Second)
		if err := r.Close(); err != nil {
			t.Fatal(err)
		}
		// Close returns after every task has reported its end.
		ended := map[string]runner.State{}
		for len(rec.ch) > 0 {
			ev := <-rec.ch
			ended[ev.AllocID] = ev.State
		}
		if ended["a1"] != runner.StateCancelled || ended["a2"] != runner.StateCancelled || len(ended) != 2 {
			t.Errorf("after Close: %v; want a1 and a2 cancelled", ended)
		}
		if err := r.Start(runner.Task{AllocID: "a3"}); !errors.Is(err, runner.ErrClosed) {
			t.Errorf("Start after Close = %v; want ErrClosed", err)
		}
	})
}

func TestStartRefusesInvalidTasks(t *testing.T) {
	r, rec := newRunner(t, runner.Config{})
	defer r.Close()
	for _, tc := range []struct {
		task runner.Task
		want string
	}{
		{runner.Task{}, "alloc_id"},
		{runner.Task{AllocID: "../etc"}, "alloc_id"},
		{runner.Task{AllocID: ".."}, "alloc_id"},
		{runner.Task{AllocID: "a", Driver: "docker"}, `driver "docker"`},
		{runner.Task{AllocID: "a", Duration: -time.Second}, "negative"},
		{runner.Task{AllocID: "a", Driver: runner.DriverExec}, "command"},
		{runner.Task{AllocID: "a", Driver: runner.DriverExec, Command: []string{"true"}}, "data directory"},
	} {
		if err := r.Start(tc.task); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Start(%+v) = %v; want an error about %s", tc.task, err, tc.want)
		}
	}
	rec.none(t)
}
