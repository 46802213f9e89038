package gossip

import (
	"bytes"
	"hash/maphash"
	"log/slog"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/serf/coordinate"
)

// rttAlpha is the weight of a new sample in the smoothed RTT (an EWMA, as
// TCP's SRTT uses 1/8; probes are rarer than TCP segments, so new samples
// weigh more).
const rttAlpha = 0.25

// tombstone remembers the version of a removed record, so that a peer that
// still holds it cannot bring it back through push/pull.
type tombstone struct {
	version uint64
	until   time.Time
}

// rttStat is the measured RTT to one peer.
type rttStat struct {
	smoothed, last time.Duration
	samples        int
}

// view is the agent's state: members, records, coordinates, measured RTTs,
// failed members to reconnect and event subscribers. mu guards all of it.
//
// Methods are called from memberlist's goroutines (through the delegates),
// from the maintenance loop and from API callers. None of them blocks while
// holding mu: they never call into memberlist or its broadcast queue (callers
// do that after the method returns) and events go to buffered channels with
// non-blocking sends.
type view struct {
	self             string
	now              func() time.Time
	log              *slog.Logger
	tombstoneTimeout time.Duration
	// suspectTTL bounds how long a member stays suspect without news: by
	// then memberlist has usually declared it dead, or the member answered
	// an indirect probe (which reports nothing to the agent).
	suspectTTL func(n int) time.Duration

	mu      sync.Mutex
	members map[string]*Member
	// live counts the members that are alive or suspect; memberlist asks
	// for it on every gossip round (to size retransmits), too often to
	// count the map each time. setStateLocked keeps it.
	live    int
	records map[string]entry
	// byHash indexes the records by a hash of their encoding, so that a
	// broadcast of a record already held, which gossip delivers several
	// times over, is recognised without decoding it. It maps to the
	// encoding itself (the entry's bytes, shared), which is all holds
	// compares.
	byHash     map[uint64][]byte
	tombstones map[string]tombstone
	coords     map[string]*coordinate.Coordinate
	rtts       map[string]rttStat
	suspects   map[string]time.Time // suspect member → when the mark lapses
	recon      *reconnector
	selfFloor  uint64            // highest version seen for our own records
	left       bool              // this node left the mesh
	repairs    map[string]repair // alive member without a record → when to fetch it
	rttCache   map[[2]string]cachedRTT
	subs       map[uint64]chan Event
	nextSub    uint64
	counters   counters
}

// counters are the view's statistics, guarded by view.mu.
type counters struct {
	recordsMerged, recordsRejected, messagesRejected uint64
	recordsDuplicate                                 uint64
	eventsDropped                                    uint64
	reconnectAttempts, reconnectSuccesses            uint64
}

func newView(self string, now func() time.Time, log *slog.Logger, recon *reconnector,
	tombstoneTimeout time.Duration, suspectTTL func(int) time.Duration) *view {
	return &view{
		self:             self,
		now:              now,
		log:              log,
		tombstoneTimeout: tombstoneTimeout,
		suspectTTL:       suspectTTL,
		members:          make(map[string]*Member),
		records:          make(map[string]entry),
		byHash:           make(map[uint64][]byte),
		tombstones:       make(map[string]tombstone),
		coords:           make(map[string]*coordinate.Coordinate),
		rtts:             make(map[string]rttStat),
		suspects:         make(map[string]time.Time),
		repairs:          make(map[string]repair),
		rttCache:         make(map[[2]string]cachedRTT),
		recon:            recon,
		subs:             make(map[uint64]chan Event),
	}
}

// publishLocked sends ev to every subscriber without blocking; a subscriber
// whose buffer is full misses the event and the drop is counted.
func (v *view) publishLocked(ev Event) {
	for _, ch := range v.subs {
		select {
		case ch <- ev:
		default:
			v.counters.eventsDropped++
		}
	}
}

func (v *view) subscribe(buffer int) (<-chan Event, func()) {
	ch := make(chan Event, max(buffer, 0))
	v.mu.Lock()
	id := v.nextSub
	v.nextSub++
	v.subs[id] = ch
	v.mu.Unlock()
	var once sync.Once
	return ch, func() {
		once.Do(func() {
			v.mu.Lock()
			defer v.mu.Unlock()
			if _, ok := v.subs[id]; ok {
				delete(v.subs, id)
				close(ch)
			}
		})
	}
}

// closeSubscribers ends every subscription (at shutdown).
func (v *view) closeSubscribers() {
	v.mu.Lock()
	defer v.mu.Unlock()
	for id, ch := range v.subs {
		close(ch)
		delete(v.subs, id)
	}
}

// aliveCount is the number of members not known to be failed or gone; it
// sizes the broadcast retransmit limit.
func (v *view) aliveCount() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.aliveCountLocked()
}

func (v *view) aliveCountLocked() int { return v.live }

// counts reports whether a member in state s counts as alive.
func counts(s MemberState) bool { return s == StateAlive || s == StateSuspect }

// setStateLocked moves m to state s since now, keeping the live count.
func (v *view) setStateLocked(m *Member, s MemberState, now time.Time) {
	switch was, is := counts(m.State), counts(s); {
	case is && !was:
		v.live++
	case was && !is:
		v.live--
	}
	m.State, m.Since = s, now
}

// memberAlive records that a member is alive with the given metadata: a
// join (new member, or back from failed/left) or an update.
func (v *view) memberAlive(name string, addr []byte, port uint16, meta Meta) {
	v.mu.Lock()
	defer v.mu.Unlock()
	now := v.now()
	m, ok := v.members[name]
	if !ok {
		m = &Member{Name: name}
		v.members[name] = m
	}
	wasAlive := ok && counts(m.State)
	metaChanged := ok && m.Meta != meta
	m.Addr = append(m.Addr[:0:0], addr...)
	m.Port = port
	m.Meta = meta
	if m.State != StateAlive {
		v.setStateLocked(m, StateAlive, now)
	}
	delete(v.suspects, name)
	v.recon.remove(name)
	switch {
	case !wasAlive:
		if name != v.self {
			v.log.Info("gossip: member joined", "member", name, "region", meta.Region, "addr", m.Address())
		}
		v.publishLocked(Event{Type: EventMemberJoin, Member: *m})
	case metaChanged:
		v.publishLocked(Event{Type: EventMemberUpdate, Member: *m})
	}
}

// memberGone records that memberlist reported a member gone. memberlist
// does not say whether it left or failed; the member's last record does
// (Record.Leaving). A failed member is remembered for reconnection; a
// departed member's record is removed.
func (v *view) memberGone(name string, addr []byte, port uint16, meta Meta) {
	v.mu.Lock()
	defer v.mu.Unlock()
	now := v.now()
	m, ok := v.members[name]
	if !ok {
		m = &Member{Name: name, Meta: meta, Addr: append([]byte(nil), addr...), Port: port}
		v.members[name] = m
	}
	delete(v.suspects, name)
	if e, ok := v.records[name]; (ok && e.rec.Leaving) || (name == v.self && v.left) {
		v.leftLocked(m, now)
		return
	}
	v.setStateLocked(m, StateFailed, now)
	if name != v.self {
		v.recon.add(name, m.Address(), now)
	}
	v.log.Warn("gossip: member failed", "member", name, "region", m.Region, "addr", m.Address())
	v.publishLocked(Event{Type: EventMemberFailed, Member: *m})
}

// leftLocked marks a member as departed: no reconnection, record removed.
func (v *view) leftLocked(m *Member, now time.Time) {
	if m.State == StateLeft {
		return
	}
	v.setStateLocked(m, StateLeft, now)
	v.recon.remove(m.Name)
	if m.Name != v.self {
		v.removeRecordLocked(m.Name, now)
	}
	v.log.Info("gossip: member left", "member", m.Name, "region", m.Region)
	v.publishLocked(Event{Type: EventMemberLeave, Member: *m})
}

// selfLeft marks the local member as left (graceful leave).
func (v *view) selfLeft() {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.left = true
	if m, ok := v.members[v.self]; ok {
		v.leftLocked(m, v.now())
	}
}

func (v *view) removeRecordLocked(name string, now time.Time) {
	if e, ok := v.records[name]; ok {
		v.tombstones[name] = tombstone{version: e.rec.Version, until: now.Add(v.tombstoneTimeout)}
		delete(v.records, name)
		v.unindexLocked(e)
	}
	delete(v.coords, name)
	delete(v.rtts, name)
}

func (v *view) hasLeft() bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.left
}

// probeFailed marks a member suspect: this agent's direct probe of it went
// unanswered and memberlist is now checking it indirectly.
func (v *view) probeFailed(name string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	m, ok := v.members[name]
	if !ok || m.State != StateAlive {
		return
	}
	now := v.now()
	v.setStateLocked(m, StateSuspect, now)
	v.suspects[name] = now.Add(v.suspectTTL(v.aliveCountLocked()))
}

// pingComplete records a measured RTT and, when the ack carried one, the
// peer's coordinate.
func (v *view) pingComplete(name string, rtt time.Duration, c *coordinate.Coordinate) {
	v.mu.Lock()
	defer v.mu.Unlock()
	s := v.rtts[name]
	if s.samples == 0 {
		s.smoothed = rtt
	} else {
		s.smoothed = time.Duration(rttAlpha*float64(rtt) + (1-rttAlpha)*float64(s.smoothed))
	}
	s.last = rtt
	s.samples++
	v.rtts[name] = s
	if c != nil {
		v.coords[name] = c
	}
	if m, ok := v.members[name]; ok && m.State == StateSuspect {
		v.setStateLocked(m, StateAlive, v.now())
		delete(v.suspects, name)
	}
}

// merge applies a record received from a peer and reports whether it
// brought a capacity the view did not have (then the caller re-broadcasts
// it, which is how broadcasts spread).
func (v *view) merge(e entry) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.mergeLocked(e)
}

// mergeAll applies the records of a push/pull state and returns those that
// brought news (see merge).
func (v *view) mergeAll(es []entry) []entry {
	v.mu.Lock()
	defer v.mu.Unlock()
	var fresh []entry
	for _, e := range es {
		if v.mergeLocked(e) {
			fresh = append(fresh, e)
		}
	}
	return fresh
}

// mergeLocked stores e if it is newer than what the view holds and reports
// whether its capacity is news: a record whose version moved only to carry
// a new coordinate is stored but not worth a broadcast.
func (v *view) mergeLocked(e entry) bool {
	name := e.rec.Node
	if name == v.self {
		// Our own record, as a peer holds it. Only we issue it; a peer may
		// hold a version from before a restart, which our next version must
		// exceed.
		v.selfFloor = max(v.selfFloor, e.rec.Version)
		return false
	}
	if t, ok := v.tombstones[name]; ok {
		if e.rec.Version <= t.version {
			return false
		}
		delete(v.tombstones, name)
	}
	cur, had := v.records[name]
	if had && !newer(e, cur) {
		return false
	}
	v.putRecordLocked(name, e)
	v.counters.recordsMerged++
	if e.rec.Coordinate != nil {
		v.coords[name] = e.rec.Coordinate
	}
	if e.rec.Leaving {
		// memberlist may have reported the member gone (as failed) before
		// this record arrived; now we know it left.
		if m, ok := v.members[name]; ok && m.State == StateFailed {
			v.leftLocked(m, v.now())
		}
		return !had || !cur.rec.Leaving
	}
	if had && capacityEqual(cur.rec.Capacity, e.rec.Capacity) {
		return false
	}
	rec := e.rec
	ev := Event{Type: EventRecordUpdate, Record: &rec}
	if m, ok := v.members[name]; ok {
		ev.Member = *m
	}
	v.publishLocked(ev)
	return true
}

// setLocal issues a new version of the local record. It reports false when
// neither the capacity nor the coordinate changed (nothing to send).
func (v *view) setLocal(region string, c Capacity, coord *coordinate.Coordinate, force bool) (entry, bool, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.setLocalLocked(region, c, coord, force, false)
}

// setLeaving issues the local record's last version, flagged Leaving (with
// an empty capacity when the node never published one).
func (v *view) setLeaving(region string, coord *coordinate.Coordinate) (entry, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	e, _, err := v.setLocalLocked(region, v.records[v.self].rec.Capacity, coord, true, true)
	return e, err
}

func (v *view) setLocalLocked(region string, c Capacity, coord *coordinate.Coordinate, force, leaving bool) (entry, bool, error) {
	cur, had := v.records[v.self]
	if had && cur.rec.Leaving && !leaving {
		return cur, false, nil // the last word of a node that left stays
	}
	if had && !force && capacityEqual(cur.rec.Capacity, c) {
		return cur, false, nil
	}
	now := v.now()
	version := uint64(max(now.UnixNano(), 1))
	if floor := max(v.selfFloor, cur.rec.Version); version <= floor {
		version = floor + 1
	}
	rec := Record{Node: v.self, Region: region, Version: version, Capacity: cloneCapacity(c), UpdatedAt: now, Coordinate: coord, Leaving: leaving}
	raw, err := EncodeRecord(rec)
	if err != nil {
		return entry{}, false, err
	}
	e := entry{rec: rec, raw: raw}
	v.putRecordLocked(v.self, e)
	if coord != nil {
		v.coords[v.self] = coord
	}
	if !had || leaving || !capacityEqual(cur.rec.Capacity, c) {
		v.publishLocked(Event{Type: EventRecordUpdate, Member: v.memberLocked(v.self), Record: &rec})
	}
	return e, true, nil
}

// reissueLocal issues a new version of the local record with the capacity
// it holds and coord, when due says so for that record (behind: a peer
// holds a newer version of it). The capacity is read under the same lock as
// the write, so a concurrent setLocal is never reverted. It reports false
// when nothing was issued.
func (v *view) reissueLocal(region string, coord *coordinate.Coordinate, due func(rec Record, behind bool) bool) (entry, bool, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	cur, ok := v.records[v.self]
	if !ok || !due(cur.rec, v.selfFloor > cur.rec.Version) {
		return entry{}, false, nil
	}
	return v.setLocalLocked(region, cur.rec.Capacity, coord, true, false)
}

// needsRepublish reports whether a peer holds a newer version of our record
// than ours (one we issued before a restart, with a clock that was ahead).
func (v *view) needsRepublish() bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	e, ok := v.records[v.self]
	return ok && v.selfFloor > e.rec.Version
}

func (v *view) member(name string) (Member, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	m, ok := v.members[name]
	if !ok {
		return Member{}, false
	}
	return *m, true
}

func (v *view) record(name string) (Record, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	e, ok := v.records[name]
	return e.rec, ok
}

func (v *view) rtt(peer string) (rttStat, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	s, ok := v.rtts[peer]
	return s, ok
}

func (v *view) coordinate(name string) (*coordinate.Coordinate, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	c, ok := v.coords[name]
	return c, ok
}

// stats returns the view's part of Stats.
func (v *view) stats() Stats {
	v.mu.Lock()
	defer v.mu.Unlock()
	st := Stats{
		Records:            len(v.records),
		RecordsMerged:      v.counters.recordsMerged,
		RecordsDuplicate:   v.counters.recordsDuplicate,
		RecordsRejected:    v.counters.recordsRejected,
		MessagesRejected:   v.counters.messagesRejected,
		EventsDropped:      v.counters.eventsDropped,
		PendingReconnects:  v.recon.len(),
		ReconnectAttempts:  v.counters.reconnectAttempts,
		ReconnectSuccesses: v.counters.reconnectSuccesses,
	}
	for _, m := range v.members {
		switch m.State {
		case StateAlive:
			st.Alive++
		case StateSuspect:
			st.Suspect++
		case StateFailed:
			st.Failed++
		case StateLeft:
			st.Left++
		}
	}
	return st
}

func (v *view) memberLocked(name string) Member {
	if m, ok := v.members[name]; ok {
		return *m
	}
	return Member{}
}

func capacityEqual(a, b Capacity) bool {
	if (a.Forecast == nil) != (b.Forecast == nil) {
		return false
	}
	if a.Forecast != nil && *a.Forecast != *b.Forecast {
		return false
	}
	if !a.Market.equal(b.Market) {
		return false
	}
	a.Forecast, b.Forecast = nil, nil
	a.Market, b.Market = nil, nil
	return a == b
}

func cloneCapacity(c Capacity) Capacity {
	if c.Forecast != nil {
		f := *c.Forecast
		c.Forecast = &f
	}
	c.Market = c.Market.clone()
	return c
}

// state returns the encodings of every record, for push/pull.
func (v *view) state() [][]byte {
	v.mu.Lock()
	defer v.mu.Unlock()
	names := make([]string, 0, len(v.records))
	for name := range v.records {
		names = append(names, name)
	}
	sort.Strings(names)
	raws := make([][]byte, 0, len(names))
	for _, name := range names {
		raws = append(raws, v.records[name].raw)
	}
	return raws
}

// reconnectDue returns the failed members to try now.
func (v *view) reconnectDue(limit int) []failedMember {
	v.mu.Lock()
	defer v.mu.Unlock()
	due := v.recon.due(v.now(), limit)
	v.counters.reconnectAttempts += uint64(len(due))
	return due
}

func (v *view) reconnectSucceeded() {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.counters.reconnectSuccesses++
}

// nextReconnect returns when the next reconnect attempt is due.
func (v *view) nextReconnect() (time.Time, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.recon.nextAttempt()
}

// expire drops what has outlived its time: failed members past the
// reconnect timeout (with their records), departed members and tombstones
// past the tombstone timeout, and suspect marks past suspectTTL.
//
// It returns the members it forgot.
func (v *view) expire() (forgotten []string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	now := v.now()
	for _, name := range v.recon.expire(now) {
		if m, ok := v.members[name]; ok && m.State == StateFailed {
			v.log.Info("gossip: forgetting failed member after the reconnect timeout", "member", name)
			delete(v.members, name)
			v.removeRecordLocked(name, now)
			forgotten = append(forgotten, name)
		}
	}
	for name, m := range v.members {
		if m.State == StateLeft && name != v.self && now.Sub(m.Since) >= v.tombstoneTimeout {
			delete(v.members, name)
			forgotten = append(forgotten, name)
		}
	}
	for name, t := range v.tombstones {
		if !now.Before(t.until) {
			delete(v.tombstones, name)
		}
	}
	for name, until := range v.suspects {
		if !now.Before(until) {
			delete(v.suspects, name)
			if m, ok := v.members[name]; ok && m.State == StateSuspect {
				v.setStateLocked(m, StateAlive, now)
			}
		}
	}
	return forgotten
}

// repair schedules fetching one member's missing record.
type repair struct {
	next     time.Time
	attempts int
}

// recordRepair picks an alive member whose record this agent still lacks
// grace after first noticing, so that the caller fetches it with a direct
// push/pull (a join) instead of waiting for a periodic one: memberlist
// retransmits a broadcast a bounded number of times, so a few nodes can miss
// one, and push/pull rounds are minutes apart. The same member is tried
// again after backoff, doubling up to maxBackoff (a node that publishes no
// capacity costs little).
func (v *view) recordRepair(grace, backoff, maxBackoff time.Duration) (name, addr string, ok bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	now := v.now()
	for n := range v.repairs {
		m, known := v.members[n]
		if _, has := v.records[n]; has || !known || m.State != StateAlive {
			delete(v.repairs, n)
		}
	}
	var due time.Time
	for n, m := range v.members {
		if n == v.self || m.State != StateAlive {
			continue
		}
		if _, has := v.records[n]; has {
			continue
		}
		r, seen := v.repairs[n]
		if !seen {
			v.repairs[n] = repair{next: now.Add(grace)}
			continue
		}
		if r.next.After(now) {
			continue
		}
		if !ok || r.next.Before(due) || (r.next.Equal(due) && n < name) {
			name, addr, due, ok = n, m.Address(), r.next, true
		}
	}
	if ok {
		r := v.repairs[name]
		wait := backoff
		for i := 0; i < r.attempts && wait < maxBackoff; i++ {
			wait *= 2
		}
		v.repairs[name] = repair{next: now.Add(min(wait, maxBackoff)), attempts: r.attempts + 1}
	}
	return name, addr, ok
}

// rejected counts a record or message that failed to decode.
func (v *view) rejected(message bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if message {
		v.counters.messagesRejected++
	} else {
		v.counters.recordsRejected++
	}
}

// cachedRTT is a region-to-region estimate and when it was made.
type cachedRTT struct {
	d  time.Duration
	ok bool
	at time.Time
}

// regionRTT estimates the RTT between two regions from the coordinates of
// their alive members (self being this node's live coordinate), reusing an
// estimate younger than ttl.
func (v *view) regionRTT(from, to string, self *coordinate.Coordinate, ttl time.Duration) (time.Duration, bool) {
	key := [2]string{min(from, to), max(from, to)}
	v.mu.Lock()
	now := v.now()
	if c, ok := v.rttCache[key]; ok && now.Sub(c.at) < ttl && !c.at.After(now) {
		v.mu.Unlock()
		return c.d, c.ok
	}
	var a, b []*coordinate.Coordinate
	for name, m := range v.members {
		if (m.Region != from && m.Region != to) || (m.State != StateAlive && m.State != StateSuspect) {
			continue
		}
		c, ok := v.coords[name]
		if name == v.self {
			c, ok = self, true
		}
		if !ok {
			continue
		}
		if m.Region == from {
			a = append(a, c)
		}
		if m.Region == to && from != to {
			b = append(b, c)
		}
	}
	v.mu.Unlock()
	if from == to {
		b = a
	}
	d, ok := medianDistance(a, b, from == to)
	v.mu.Lock()
	if len(v.rttCache) > 4096 {
		clear(v.rttCache)
	}
	v.rttCache[key] = cachedRTT{d: d, ok: ok, at: now}
	v.mu.Unlock()
	return d, ok
}

// snapshot copies what summaries and estimates read.
// putRecordLocked stores name's record and indexes its encoding.
func (v *view) putRecordLocked(name string, e entry) {
	if cur, ok := v.records[name]; ok {
		v.unindexLocked(cur)
	}
	v.records[name] = e
	v.byHash[rawHash(e.raw)] = e.raw
}

func (v *view) unindexLocked(e entry) {
	h := rawHash(e.raw)
	if bytes.Equal(v.byHash[h], e.raw) {
		delete(v.byHash, h)
	}
}

// holds reports whether the view holds a record encoded exactly as raw,
// and counts such duplicates.
func (v *view) holds(raw []byte) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	if held, ok := v.byHash[rawHash(raw)]; ok && bytes.Equal(held, raw) {
		v.counters.recordsDuplicate++
		return true
	}
	return false
}

// rawSeed seeds rawHash; byHash lives in memory only, so any seed will do.
var rawSeed = maphash.MakeSeed()

// superseded reports whether raw is a copy of a peer's record older than
// the one held (or than its tombstone), read from its node and version
// alone. Our own record is never superseded here: mergeLocked learns from
// every version of it a peer holds.
func (v *view) superseded(raw []byte) bool {
	node, version, ok := peekRecord(raw)
	if !ok {
		return false
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if node == v.self {
		return false
	}
	if t, ok := v.tombstones[node]; ok && version <= t.version {
		v.counters.recordsDuplicate++
		return true
	}
	if e, ok := v.records[node]; ok && e.rec.Version > version {
		v.counters.recordsDuplicate++
		return true
	}
	return false
}

func rawHash(raw []byte) uint64 { return maphash.Bytes(rawSeed, raw) }

// memberList copies the members alone (of region, or all for ""), sorted by name: Members is called
// on every forwarded request, and copying the records and coordinates too
// was most of its cost.
func (v *view) memberList(region string) []Member {
	v.mu.Lock()
	names := make([]string, 0, len(v.members))
	for name, m := range v.members {
		if region == "" || m.Region == region {
			names = append(names, name)
		}
	}
	slices.Sort(names) // sorting the large Member values cost more than copying them
	out := make([]Member, len(names))
	for i, name := range names {
		out[i] = *v.members[name]
	}
	v.mu.Unlock()
	return out
}

// recordList copies the records alone (of region, or all for ""), cloned,
// sorted by node name.
func (v *view) recordList(region string) []Record {
	v.mu.Lock()
	out := make([]Record, 0, len(v.records))
	for _, e := range v.records {
		if region == "" || e.rec.Region == region {
			out = append(out, cloneRecord(e.rec))
		}
	}
	v.mu.Unlock()
	slices.SortFunc(out, func(a, b Record) int { return strings.Compare(a.Node, b.Node) })
	return out
}

func (v *view) snapshot() snapshot {
	v.mu.Lock()
	defer v.mu.Unlock()
	s := snapshot{
		members: make([]Member, 0, len(v.members)),
		records: make(map[string]Record, len(v.records)),
		coords:  maps.Clone(v.coords),
	}
	for _, m := range v.members {
		s.members = append(s.members, *m)
	}
	sort.Slice(s.members, func(i, j int) bool { return s.members[i].Name < s.members[j].Name })
	for name, e := range v.records {
		s.records[name] = e.rec
	}
	return s
}
