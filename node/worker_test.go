package node

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
)

// TestWaitOrPokeKeepsLateSignal: a report signal already queued when a
// fetch returns on its own must survive the call, whichever goroutine runs
// first; losing it left a task's report unsent for up to WorkWait (the
// flaky TestRealAgentLeaksNoGoroutines).
func TestWaitOrPokeKeepsLateSignal(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		signal := make(chan struct{}, 1)
		for i := range 2000 {
			poke(signal)
			got, err := waitOrPoke(t.Context(), signal, func(context.Context) (int, error) { return i, nil })
			synctest.Wait() // every goroutine the call started has ended or blocked
			switch {
			case errors.Is(err, errReportQueued):
				// The signal ended the wait: it was used, not lost.
			case err != nil || got != i:
				t.Fatalf("call %d: got %d, %v", i, got, err)
			case len(signal) != 1:
				t.Fatalf("call %d: the signal that came as the fetch returned was lost", i)
			default:
				<-signal
			}
		}
	})
}

// TestWaitOrPokeEndsWaitOnSignal: a signal during a wait cancels it and
// is reported as errReportQueued; without one the fetch's answer passes
// through.
func TestWaitOrPokeEndsWaitOnSignal(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		signal := make(chan struct{}, 1)
		waiting := make(chan struct{})
		go func() {
			<-waiting
			poke(signal)
		}()
		_, err := waitOrPoke(t.Context(), signal, func(ctx context.Context) (int, error) {
			close(waiting)
			<-ctx.Done()
			return 0, ctx.Err()
		})
		if !errors.Is(err, errReportQueued) {
			t.Fatalf("a signal during the wait gave %v, want errReportQueued", err)
		}
		if len(signal) != 0 {
			t.Fatal("the signal that ended the wait is still queued")
		}
		got, err := waitOrPoke(t.Context(), signal, func(context.Context) (string, error) { return "work", nil })
		if err != nil || got != "work" || len(signal) != 0 {
			t.Fatalf("without a signal: got %q, %v, %d queued", got, err, len(signal))
		}
	})
}
