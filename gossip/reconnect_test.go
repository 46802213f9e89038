package gossip

import (
	"math/rand/v2"
	"testing"
	"time"
)

func TestBackoff(t *testing.T) {
	const iv, capd = 30 * time.Second, 5 * time.Minute
	for _, tc := range []struct {
		attempts int
		jitter   float64
		want     time.Duration
	}{
		{0, 0.5, 30 * time.Second},
		{1, 0.5, time.Minute},
		{3, 0.5, 4 * time.Minute},
		{4, 0.5, 5 * time.Minute}, // capped
		{60, 0.5, 5 * time.Minute},
		{0, 0, 15 * time.Second},
		{0, 0.999, 44970 * time.Millisecond},
	} {
		if got := backoff(iv, capd, tc.attempts, tc.jitter); got != tc.want {
			t.Errorf("backoff(%v, %v, %d, %v) = %v; want %v", iv, capd, tc.attempts, tc.jitter, got, tc.want)
		}
	}
}

func TestReconnectorSchedules(t *testing.T) {
	now := t0
	r := newReconnector(3, 30*time.Second, 5*time.Minute, time.Hour, rand.New(rand.NewPCG(3, 4)))
	r.add("a", "10.0.0.1:7946", now)
	r.add("b", "10.0.0.2:7946", now)
	if due := r.due(now, 10); len(due) != 0 {
		t.Fatalf("due right after failing = %v; want nothing before the first interval", due)
	}
	next, ok := r.nextAttempt()
	if !ok || next.Sub(now) < 15*time.Second || next.Sub(now) >= 45*time.Second {
		t.Fatalf("nextAttempt = %v, %v; want within [15s, 45s) of the failure", next.Sub(now), ok)
	}
	now = now.Add(time.Minute)
	due := r.due(now, 1)
	if len(due) != 1 || due[0].name != "a" {
		t.Fatalf("due(limit 1) = %v; want the oldest failure, a", due)
	}
	due = r.due(now, 10)
	if len(due) != 1 || due[0].name != "b" {
		t.Fatalf("due again at the same time = %v; want only b (a was just tried)", due)
	}
	// The second attempt of a comes after a longer wait.
	if f := r.failed["a"]; f.attempts != 1 || f.next.Sub(now) < 30*time.Second {
		t.Fatalf("after one attempt a is due in %v (attempts %d); want at least 30s", f.next.Sub(now), f.attempts)
	}
	// New address for a known member keeps its schedule.
	r.add("a", "10.0.0.9:7946", now)
	if f := r.failed["a"]; f.addr != "10.0.0.9:7946" || f.attempts != 1 {
		t.Fatalf("re-adding a = %+v; want the new address and the old schedule", *f)
	}
	// Bounded: the oldest failures are forgotten first.
	r.add("c", "10.0.0.3:7946", now)
	r.add("d", "10.0.0.4:7946", now)
	if r.len() != 3 || r.failed["a"] != nil {
		t.Fatalf("after 4 failures with room for 3: %v; want a forgotten", r.order)
	}
	r.remove("c")
	if r.len() != 2 || r.failed["c"] != nil || r.order[0] != "b" || r.order[1] != "d" {
		t.Fatalf("after remove(c): %v; want [b d]", r.order)
	}
	// Expiry.
	if gone := r.expire(t0.Add(59 * time.Minute)); len(gone) != 0 {
		t.Fatalf("expire before the timeout = %v; want nothing", gone)
	}
	if gone := r.expire(now.Add(time.Hour)); len(gone) != 2 || r.len() != 0 {
		t.Fatalf("expire after the timeout = %v (left %d); want b and d", gone, r.len())
	}
	if _, ok := r.nextAttempt(); ok {
		t.Fatal("nextAttempt with nothing remembered = ok; want none")
	}
}
