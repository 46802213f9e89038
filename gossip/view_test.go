package gossip

import (
	"net"
	"testing"
	"time"
)

var testIP = net.IPv4(198, 18, 0, 9).To4()

func meta(region string) Meta { return Meta{Region: region, Role: RoleWorker} }

func TestViewMembershipEvents(t *testing.T) {
	now := t0
	v := newTestView("self", &now)
	events, cancel := v.subscribe(16)
	v.memberAlive("self", testIP, 7946, meta("r1"))
	v.memberAlive("p", testIP, 7946, meta("r1"))
	v.memberAlive("p", testIP, 7946, meta("r1")) // no change: no event
	m2 := meta("r1")
	m2.HTTPAddr = "198.18.0.9:8080"
	v.memberAlive("p", testIP, 7946, m2)
	now = now.Add(time.Second)
	v.memberGone("p", testIP, 7946, m2)
	v.memberAlive("p", testIP, 7946, m2)
	leaving := testRecord("p", 9)
	leaving.Leaving = true
	v.merge(mustEntry(t, leaving))
	v.memberGone("p", testIP, 7946, m2)
	cancel()
	cancel() // idempotent
	var got []EventType
	for ev := range events {
		if ev.Member.Name == "p" {
			got = append(got, ev.Type)
		}
	}
	want := []EventType{EventMemberJoin, EventMemberUpdate, EventMemberFailed, EventMemberJoin, EventMemberLeave}
	if len(got) != len(want) {
		t.Fatalf("events = %v; want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("events = %v; want %v", got, want)
		}
	}
	if m, _ := v.member("p"); m.State != StateLeft || m.HTTPAddr != m2.HTTPAddr {
		t.Fatalf("member p = %+v; want left with the updated metadata", m)
	}
}

func TestViewSlowSubscriberDropsWithoutBlocking(t *testing.T) {
	now := t0
	v := newTestView("self", &now)
	slow, cancelSlow := v.subscribe(1)
	defer cancelSlow()
	fast, cancelFast := v.subscribe(100)
	defer cancelFast()
	for i := 0; i < 10; i++ {
		v.memberAlive(string(rune('a'+i)), testIP, 7946, meta("r"))
	}
	if st := v.stats(); st.EventsDropped != 9 {
		t.Fatalf("EventsDropped = %d; want 9 (slow subscriber holds 1 of 10)", st.EventsDropped)
	}
	if len(slow) != 1 || len(fast) != 10 {
		t.Fatalf("slow has %d, fast has %d events; want 1 and 10", len(slow), len(fast))
	}
}

func TestViewFailedMembersAreRetriedAndForgotten(t *testing.T) {
	now := t0
	v := newTestView("self", &now)
	v.memberAlive("p", testIP, 7946, meta("r"))
	v.merge(mustEntry(t, testRecord("p", 5)))
	v.memberGone("p", testIP, 7946, meta("r"))
	if v.recon.len() != 1 {
		t.Fatalf("failed member not remembered for reconnection")
	}
	now = now.Add(time.Minute)
	if due := v.reconnectDue(5); len(due) != 1 || due[0].addr != "198.18.0.9:7946" {
		t.Fatalf("reconnectDue = %v; want p at 198.18.0.9:7946", due)
	}
	// Past the reconnect timeout (1 h in newTestView) the member and its
	// record go, and the record cannot come back through push/pull.
	now = t0.Add(time.Hour)
	v.expire()
	if _, ok := v.member("p"); ok {
		t.Fatal("failed member still in the view after the reconnect timeout")
	}
	if _, ok := v.record("p"); ok {
		t.Fatal("record of a forgotten member still in the view")
	}
	if v.merge(mustEntry(t, testRecord("p", 5))) {
		t.Fatal("a forgotten record came back through merge; want the tombstone to stop it")
	}
	if !v.merge(mustEntry(t, testRecord("p", 6))) {
		t.Fatal("a newer record of a forgotten node (it restarted) was refused")
	}
}

func TestViewLeftMemberRecordTombstoned(t *testing.T) {
	now := t0
	v := newTestView("self", &now)
	v.memberAlive("p", testIP, 7946, meta("r"))
	leaving := testRecord("p", 5)
	leaving.Leaving = true
	v.merge(mustEntry(t, leaving))
	v.memberGone("p", testIP, 7946, meta("r"))
	if _, ok := v.record("p"); ok {
		t.Fatal("record of a member that left is still in the view")
	}
	if v.recon.len() != 0 {
		t.Fatal("a member that left is being reconnected")
	}
	if v.merge(mustEntry(t, testRecord("p", 5))) {
		t.Fatal("record of a departed member came back; want the tombstone to stop it")
	}
	now = now.Add(time.Hour)
	v.expire()
	if _, ok := v.member("p"); ok {
		t.Fatal("departed member still listed after the tombstone timeout")
	}
	if _, ok := v.tombstones["p"]; ok {
		t.Fatal("tombstone outlived the tombstone timeout")
	}
}

// TestViewLeaveRecordAfterFailure covers the leaving record arriving after
// memberlist reported the member gone (it is then failed until the record
// says otherwise).
func TestViewLeaveRecordAfterFailure(t *testing.T) {
	now := t0
	v := newTestView("self", &now)
	events, cancel := v.subscribe(8)
	defer cancel()
	v.memberAlive("p", testIP, 7946, meta("r"))
	v.memberGone("p", testIP, 7946, meta("r"))
	if m, _ := v.member("p"); m.State != StateFailed || v.recon.len() != 1 {
		t.Fatalf("p = %v with %d reconnects; want failed and retried", m.State, v.recon.len())
	}
	leaving := testRecord("p", 5)
	leaving.Leaving = true
	if !v.merge(mustEntry(t, leaving)) {
		t.Fatal("a leaving record is news; want it re-broadcast")
	}
	if m, _ := v.member("p"); m.State != StateLeft || v.recon.len() != 0 {
		t.Fatalf("after p's leaving record: %v with %d reconnects; want left, none", m.State, v.recon.len())
	}
	var types []EventType
	for len(events) > 0 {
		types = append(types, (<-events).Type)
	}
	if len(types) != 3 || types[2] != EventMemberLeave {
		t.Fatalf("events = %v; want join, failed, leave", types)
	}
}

func TestViewLocalVersionOnlyGrows(t *testing.T) {
	now := t0
	v := newTestView("self", &now)
	e1, changed, err := v.setLocal("r", testCapacity(1), nil, false)
	if err != nil || !changed || e1.rec.Version != uint64(t0.UnixNano()) {
		t.Fatalf("first setLocal = v%d, %v, %v; want the clock's nanoseconds", e1.rec.Version, changed, err)
	}
	if _, changed, _ := v.setLocal("r", testCapacity(1), nil, false); changed {
		t.Fatal("setLocal with the same capacity issued a new version")
	}
	now = t0.Add(-time.Hour) // the clock went back
	e2, _, _ := v.setLocal("r", testCapacity(2), nil, false)
	if e2.rec.Version != e1.rec.Version+1 {
		t.Fatalf("version after the clock went back = %d; want %d", e2.rec.Version, e1.rec.Version+1)
	}
	// A peer holds a newer version of our record (from before a restart):
	// we must republish above it.
	stale := testRecord("self", e2.rec.Version+100)
	if v.merge(mustEntry(t, stale)) {
		t.Fatal("merge accepted a peer's copy of our own record")
	}
	if !v.needsRepublish() {
		t.Fatal("needsRepublish = false with a newer copy of our record out there")
	}
	e3, _, _ := v.setLocal("r", testCapacity(2), nil, true)
	if e3.rec.Version <= stale.Version || v.needsRepublish() {
		t.Fatalf("republished version %d; want above %d", e3.rec.Version, stale.Version)
	}
	// Our own version coming back is not a reason to republish.
	v.merge(e3)
	if v.needsRepublish() {
		t.Fatal("needsRepublish after seeing our own current version")
	}
}

func TestViewSuspicion(t *testing.T) {
	now := t0
	v := newTestView("self", &now)
	v.memberAlive("p", testIP, 7946, meta("r"))
	v.probeFailed("p")
	if m, _ := v.member("p"); m.State != StateSuspect {
		t.Fatalf("after a failed probe p is %v; want suspect", m.State)
	}
	v.pingComplete("p", 80*time.Millisecond, nil)
	if m, _ := v.member("p"); m.State != StateAlive {
		t.Fatalf("after an ack p is %v; want alive", m.State)
	}
	v.probeFailed("p")
	now = now.Add(59 * time.Second)
	v.expire()
	if m, _ := v.member("p"); m.State != StateSuspect {
		t.Fatalf("59s into a 1-minute suspicion p is %v; want suspect", m.State)
	}
	now = now.Add(time.Second)
	v.expire()
	if m, _ := v.member("p"); m.State != StateAlive {
		t.Fatalf("after the suspicion bound with no news p is %v; want alive (it refuted)", m.State)
	}
	v.probeFailed("unknown") // no panic, no member
	if _, ok := v.member("unknown"); ok {
		t.Fatal("probeFailed created a member")
	}
}

func TestViewSmoothedRTT(t *testing.T) {
	now := t0
	v := newTestView("self", &now)
	v.pingComplete("p", 100*time.Millisecond, nil)
	v.pingComplete("p", 200*time.Millisecond, nil)
	s, ok := v.rtt("p")
	if want := 125 * time.Millisecond; !ok || s.smoothed != want || s.last != 200*time.Millisecond || s.samples != 2 {
		t.Fatalf("rtt = %+v; want smoothed %v after 100ms then 200ms", s, want)
	}
}

func TestViewRecordRepair(t *testing.T) {
	now := t0
	v := newTestView("self", &now)
	v.memberAlive("self", testIP, 7946, meta("r"))
	v.memberAlive("p", testIP, 7946, meta("r"))
	v.memberAlive("q", testIP, 7947, meta("r"))
	v.merge(mustEntry(t, testRecord("q", 1)))
	if _, _, ok := v.recordRepair(20*time.Second, 2*time.Minute, time.Hour); ok {
		t.Fatal("repair picked on first notice; want a grace period")
	}
	now = now.Add(20 * time.Second)
	name, addr, ok := v.recordRepair(20*time.Second, 2*time.Minute, time.Hour)
	if !ok || name != "p" || addr != "198.18.0.9:7946" {
		t.Fatalf("recordRepair = %q, %q, %v; want p (q has a record, self is self)", name, addr, ok)
	}
	if _, _, ok := v.recordRepair(20*time.Second, 2*time.Minute, time.Hour); ok {
		t.Fatal("repair of p picked again within the backoff")
	}
	now = now.Add(2 * time.Minute)
	if name, _, ok := v.recordRepair(20*time.Second, 2*time.Minute, time.Hour); !ok || name != "p" {
		t.Fatalf("second repair after the backoff = %q, %v; want p", name, ok)
	}
	now = now.Add(2 * time.Minute)
	if _, _, ok := v.recordRepair(20*time.Second, 2*time.Minute, time.Hour); ok {
		t.Fatal("third repair of p came after 2 minutes; want the backoff doubled to 4")
	}
	v.merge(mustEntry(t, testRecord("p", 1)))
	now = now.Add(time.Hour)
	if name, _, ok := v.recordRepair(20*time.Second, 2*time.Minute, time.Hour); ok {
		t.Fatalf("recordRepair = %q with every record present; want none", name)
	}
}

func TestViewRegionRTT(t *testing.T) {
	now := t0
	v := newTestView("self", &now)
	v.memberAlive("self", testIP, 7946, meta("a"))
	v.memberAlive("a2", testIP, 7946, meta("a"))
	v.memberAlive("b1", testIP, 7946, meta("b"))
	v.memberAlive("b2", testIP, 7946, meta("b"))
	v.pingComplete("a2", time.Millisecond, coordAt(0.002))
	v.pingComplete("b1", time.Millisecond, coordAt(0.050))
	v.pingComplete("b2", time.Millisecond, coordAt(0.070))
	self := coordAt(0)
	// a = {0, 2 ms}, b = {50, 70 ms}: pairs 50, 70, 48, 68 → median 59 ms.
	if d, ok := v.regionRTT("a", "b", self, time.Second); !ok || !near(d, 59*time.Millisecond) {
		t.Fatalf("regionRTT(a, b) = %v, %v; want 59ms", d, ok)
	}
	if d, ok := v.regionRTT("b", "b", self, time.Second); !ok || !near(d, 20*time.Millisecond) {
		t.Fatalf("regionRTT(b, b) = %v, %v; want 20ms", d, ok)
	}
	// A failed member no longer counts, once the cached estimate expires.
	v.memberGone("b2", testIP, 7946, meta("b"))
	if d, _ := v.regionRTT("b", "a", self, time.Second); !near(d, 59*time.Millisecond) {
		t.Fatalf("regionRTT(b, a) within the cache TTL = %v; want the cached 59ms", d)
	}
	now = now.Add(time.Second)
	if d, ok := v.regionRTT("a", "b", self, time.Second); !ok || !near(d, 49*time.Millisecond) {
		t.Fatalf("regionRTT(a, b) after b2 failed = %v, %v; want 49ms", d, ok)
	}
	if _, ok := v.regionRTT("a", "nowhere", self, time.Second); ok {
		t.Fatal("regionRTT to an unknown region = ok")
	}
}

// TestViewRecognisesDuplicateBroadcasts checks the index that lets the
// delegate drop a broadcast of a record it holds without decoding it: only
// the exact encoding of the record held now counts, not an older version.
func TestViewRecognisesDuplicateBroadcasts(t *testing.T) {
	now := t0
	v := newTestView("self", &now)
	old := mustEntry(t, testRecord("p", 1))
	cur := mustEntry(t, testRecord("p", 2))
	if v.holds(old.raw) {
		t.Fatal("an empty view holds a record")
	}
	v.merge(old)
	if !v.holds(old.raw) {
		t.Fatal("the record just merged is not recognised")
	}
	v.merge(cur)
	if v.holds(old.raw) || !v.holds(cur.raw) {
		t.Fatalf("after a newer version: holds old %v, current %v; want false, true", v.holds(old.raw), v.holds(cur.raw))
	}
	v.mu.Lock()
	v.removeRecordLocked("p", now)
	v.mu.Unlock()
	if v.holds(cur.raw) {
		t.Fatal("a removed record is still recognised")
	}
	if got := v.stats().RecordsDuplicate; got != 2 {
		t.Fatalf("RecordsDuplicate = %d; want 2", got)
	}
}

// TestViewRecognisesSupersededBroadcasts checks that a copy of an older
// version is dropped on its node and version alone, while newer versions,
// our own record and bytes that do not peek pass through to be decoded.
func TestViewRecognisesSupersededBroadcasts(t *testing.T) {
	now := t0
	v := newTestView("self", &now)
	v1 := mustEntry(t, testRecord("p", 1))
	v2 := mustEntry(t, testRecord("p", 2))
	v3 := mustEntry(t, testRecord("p", 3))
	if v.superseded(v1.raw) {
		t.Fatal("an empty view supersedes a record")
	}
	v.merge(v2)
	if !v.superseded(v1.raw) {
		t.Fatal("version 1 not superseded by the held version 2")
	}
	if v.superseded(v2.raw) || v.superseded(v3.raw) {
		t.Fatal("the held or a newer version counted as superseded")
	}
	self := mustEntry(t, testRecord("self", 1))
	v.mu.Lock()
	v.records["self"] = mustEntry(t, testRecord("self", 5))
	v.mu.Unlock()
	if v.superseded(self.raw) {
		t.Fatal("an old copy of our own record was dropped; mergeLocked must see it")
	}
	for _, raw := range [][]byte{nil, {0x80}, {0xc1}, v1.raw[:3]} {
		if v.superseded(raw) {
			t.Fatalf("superseded(%x) = true; want false for bytes that do not peek", raw)
		}
	}
	// A tombstone supersedes the versions it covers.
	v.mu.Lock()
	v.removeRecordLocked("p", now)
	v.mu.Unlock()
	if !v.superseded(v2.raw) || v.superseded(v3.raw) {
		t.Fatalf("after removal at version 2: superseded v2 %v, v3 %v; want true, false", v.superseded(v2.raw), v.superseded(v3.raw))
	}
}

// TestViewListsByRegion checks the region filters of the member and record
// lists that the region leader and request forwarding use.
func TestViewListsByRegion(t *testing.T) {
	now := t0
	v := newTestView("self", &now)
	v.memberAlive("b", testIP, 7946, meta("r2"))
	v.memberAlive("a", testIP, 7946, meta("r1"))
	v.memberAlive("c", testIP, 7946, meta("r1"))
	other := testRecord("b", 1)
	other.Region = "r2"
	mine := testRecord("a", 1)
	mine.Region = "r1"
	v.merge(mustEntry(t, other))
	v.merge(mustEntry(t, mine))
	var names []string
	for _, m := range v.memberList("r1") {
		names = append(names, m.Name)
	}
	if len(names) != 2 || names[0] != "a" || names[1] != "c" {
		t.Errorf("members of r1 = %v; want [a c]", names)
	}
	if all := v.memberList(""); len(all) != 3 {
		t.Errorf("%d members in all; want 3", len(all))
	}
	if recs := v.recordList("r2"); len(recs) != 1 || recs[0].Node != "b" {
		t.Errorf("records of r2 = %+v; want b's", recs)
	}
	if recs := v.recordList(""); len(recs) != 2 || recs[0].Node != "a" {
		t.Errorf("all records = %d, first %q; want 2, a first", len(recs), recs[0].Node)
	}
}

// TestViewAliveCountFollowsTransitions checks the kept count of live
// members against a recount after every kind of transition.
func TestViewAliveCountFollowsTransitions(t *testing.T) {
	now := t0
	v := newTestView("self", &now)
	recount := func() int {
		v.mu.Lock()
		defer v.mu.Unlock()
		n := 0
		for _, m := range v.members {
			if m.State == StateAlive || m.State == StateSuspect {
				n++
			}
		}
		return n
	}
	steps := []struct {
		name string
		do   func()
		want int
	}{
		{"self and two peers join", func() {
			v.memberAlive("self", testIP, 7946, meta("r"))
			v.memberAlive("p", testIP, 7947, meta("r"))
			v.memberAlive("q", testIP, 7948, meta("r"))
		}, 3},
		{"p suspected", func() { v.probeFailed("p") }, 3},
		{"p acks", func() { v.pingComplete("p", time.Millisecond, nil) }, 3},
		{"q updates its metadata", func() { v.memberAlive("q", testIP, 7948, meta("r2")) }, 3},
		{"q fails", func() { v.memberGone("q", testIP, 7948, meta("r2")) }, 2},
		{"q fails twice", func() { v.memberGone("q", testIP, 7948, meta("r2")) }, 2},
		{"an unknown member is reported gone", func() { v.memberGone("u", testIP, 7949, meta("r")) }, 2},
		{"q comes back", func() { v.memberAlive("q", testIP, 7948, meta("r")) }, 3},
		{"p suspected then expires to alive", func() {
			v.probeFailed("p")
			now = now.Add(time.Hour)
			v.expire()
		}, 3},
		{"failed members forgotten", func() {
			v.memberGone("p", testIP, 7947, meta("r"))
			now = now.Add(2 * time.Hour)
			v.expire()
		}, 2},
	}
	for _, s := range steps {
		s.do()
		if got, n := v.aliveCount(), recount(); got != s.want || got != n {
			t.Fatalf("after %s: aliveCount = %d, recount %d; want %d", s.name, got, n, s.want)
		}
	}
}
