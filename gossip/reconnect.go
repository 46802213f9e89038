package gossip

import (
	"math/rand/v2"
	"time"
)

// reconnector remembers members that failed (memberlist declared them dead
// without a leave) and plans when to try joining each again. It is pure
// bookkeeping: the agent's maintenance loop does the joins and reports back.
// It is not safe for concurrent use; the view's mutex guards it.
//
// memberlist reaps dead members after GossipToTheDeadTime and never probes
// them again, so without this, two halves of a healed partition would stay
// apart until an operator joined them (serf solves the same with its
// reconnect loop).
type reconnector struct {
	max        int           // bound on remembered members; the oldest go first
	interval   time.Duration // first retry, and base of the backoff
	maxBackoff time.Duration // cap of the backoff
	timeout    time.Duration // forget a member this long after it failed
	rnd        *rand.Rand

	order  []string // names, oldest failure first
	failed map[string]*failedMember
}

// failedMember is a member the reconnector retries.
type failedMember struct {
	name     string
	addr     string // host:port
	failedAt time.Time
	next     time.Time // next attempt
	attempts int
}

func newReconnector(max int, interval, maxBackoff, timeout time.Duration, rnd *rand.Rand) *reconnector {
	return &reconnector{
		max:        max,
		interval:   interval,
		maxBackoff: maxBackoff,
		timeout:    timeout,
		rnd:        rnd,
		failed:     make(map[string]*failedMember),
	}
}

// backoff returns how long to wait before attempt number attempts+1: the
// interval doubled per failed attempt, capped, then scaled by a jitter factor
// in [0.5, 1.5) so that a whole region does not retry in lockstep.
func backoff(interval, maxBackoff time.Duration, attempts int, jitter float64) time.Duration {
	d := interval
	for i := 0; i < attempts && d < maxBackoff; i++ {
		d *= 2
	}
	d = min(d, maxBackoff)
	return time.Duration(float64(d) * (0.5 + jitter))
}

// add remembers a failed member. A member already remembered keeps its
// schedule but takes the new address.
func (r *reconnector) add(name, addr string, now time.Time) {
	if f, ok := r.failed[name]; ok {
		f.addr = addr
		return
	}
	for len(r.order) >= r.max && len(r.order) > 0 {
		delete(r.failed, r.order[0])
		r.order = r.order[1:]
	}
	r.failed[name] = &failedMember{
		name:     name,
		addr:     addr,
		failedAt: now,
		next:     now.Add(backoff(r.interval, r.maxBackoff, 0, r.rnd.Float64())),
	}
	r.order = append(r.order, name)
}

// remove forgets a member (it is alive again, or left).
func (r *reconnector) remove(name string) {
	if _, ok := r.failed[name]; !ok {
		return
	}
	delete(r.failed, name)
	for i, n := range r.order {
		if n == name {
			r.order = append(r.order[:i], r.order[i+1:]...)
			break
		}
	}
}

// due returns up to limit members whose next attempt is at or before now,
// oldest schedule first, and schedules their following attempt, so that a
// member is not tried twice while an attempt is in flight.
func (r *reconnector) due(now time.Time, limit int) []failedMember {
	var out []failedMember
	for _, name := range r.order {
		f := r.failed[name]
		if f.next.After(now) {
			continue
		}
		out = append(out, *f)
		f.attempts++
		f.next = now.Add(backoff(r.interval, r.maxBackoff, f.attempts, r.rnd.Float64()))
		if len(out) == limit {
			break
		}
	}
	return out
}

// expire forgets members that failed more than timeout ago and returns them.
func (r *reconnector) expire(now time.Time) []string {
	var gone []string
	kept := r.order[:0]
	for _, name := range r.order {
		if f := r.failed[name]; now.Sub(f.failedAt) >= r.timeout {
			delete(r.failed, name)
			gone = append(gone, name)
			continue
		}
		kept = append(kept, name)
	}
	r.order = kept
	return gone
}

// nextAttempt returns the earliest scheduled attempt.
func (r *reconnector) nextAttempt() (time.Time, bool) {
	var next time.Time
	for _, f := range r.failed {
		if next.IsZero() || f.next.Before(next) {
			next = f.next
		}
	}
	return next, !next.IsZero()
}

// len returns the number of remembered members.
func (r *reconnector) len() int { return len(r.order) }
