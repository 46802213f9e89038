package auction

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/placement"
)

// world drives several regions' Markets by hand, deterministically: it
// commits their proposals in their memLedgers, delivers their messages in
// FIFO order, and advances a fake clock. Links can be cut (requests fail at
// once) or made to lose replies (the requester times out at the deadline).
type world struct {
	t       testing.TB
	now     time.Time
	regions map[string]*testRegion
	names   []string
	rtt     RTTTable

	queue   []*flight                     // requests not yet delivered
	waiting map[string]map[uint64]*flight // receiver → its request ID → flight
	lost    []*flight                     // replies lost: requester fails at deadline
	nextReq uint64

	cut       map[[2]string]bool // both directions: requests fail at once
	loseReply map[[2]string]bool // replies from [0] to [1] are lost
	holdProps map[string]bool    // region's proposals wait until releaseProps

	events []Event
	trace  []string
}

type testRegion struct {
	name   string
	m      *Market
	l      *memLedger
	term   uint64
	held   []Proposal // proposals held back by holdProps
	events []Event
}

type flight struct {
	id       uint64 // the sender's Outbound.ID
	from, to string
	env      *Envelope
	deadline time.Time
}

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func newWorld(t testing.TB) *world {
	w := &world{
		t: t, now: t0, regions: make(map[string]*testRegion), rtt: RTTTable{},
		waiting: make(map[string]map[uint64]*flight), cut: make(map[[2]string]bool),
		loseReply: make(map[[2]string]bool), holdProps: make(map[string]bool),
	}
	return w
}

// addRegion adds a region with nodes, leader at term 1.
func (w *world) addRegion(name string, cfg Config, nodes ...placement.Node) *testRegion {
	w.t.Helper()
	cfg.Region = name
	m, err := NewMarket(cfg)
	if err != nil {
		w.t.Fatalf("NewMarket(%s): %v", name, err)
	}
	r := &testRegion{name: name, m: m, l: newMemLedger(name, nodes...), term: 1}
	w.regions[name] = r
	w.names = append(w.names, name)
	slices.Sort(w.names)
	w.waiting[name] = make(map[uint64]*flight)
	snap, _ := r.l.MarketSnapshot()
	m.BecomeLeader(w.now, r.term, snap)
	return r
}

func (w *world) logf(format string, args ...any) {
	w.trace = append(w.trace, fmt.Sprintf("%7s ", w.now.Sub(t0))+fmt.Sprintf(format, args...))
}

func pair(a, b string) [2]string {
	if a > b {
		a, b = b, a
	}
	return [2]string{a, b}
}

// collect drains every region's Ready until none has output, committing
// proposals and matching replies.
func (w *world) collect() bool {
	progressed := false
	for {
		any := false
		for _, name := range w.names {
			r := w.regions[name]
			if !r.m.HasReady() {
				continue
			}
			any, progressed = true, true
			rd := r.m.Ready()
			for _, ev := range rd.Events {
				w.events = append(w.events, ev)
				r.events = append(r.events, ev)
				w.logf("%s event %s %s job=%s seller=%s node=%s price=%.4g epoch=%d %s", name, ev.Kind, ev.Trade, ev.JobID, ev.Seller, ev.Node, ev.Price, ev.Epoch, ev.Reason)
			}
			for _, p := range rd.Proposals {
				if w.holdProps[name] {
					r.held = append(r.held, p)
					continue
				}
				w.commit(r, p)
			}
			for _, ob := range rd.Messages {
				w.queue = append(w.queue, &flight{id: ob.ID, from: name, to: ob.To, env: ob.Env, deadline: ob.Deadline})
			}
			for _, rep := range rd.Replies {
				w.replied(r, rep)
			}
		}
		if !any {
			return progressed
		}
	}
}

func (w *world) commit(r *testRegion, p Proposal) {
	res, err := r.l.apply(p.Ops)
	var parts []string
	for i, op := range p.Ops {
		s := fmt.Sprintf("%s(%s)", op.Kind, op.Trade.Item)
		if err == nil && res[i].Err != nil {
			s += "!" + errLabel(res[i].Err)
		}
		parts = append(parts, s)
	}
	if err != nil {
		w.logf("%s commit FAILED %s: %v", r.name, strings.Join(parts, " "), err)
	} else {
		w.logf("%s commit %s", r.name, strings.Join(parts, " "))
	}
	r.m.Committed(w.now, p.ID, res, err)
}

func errLabel(err error) string {
	for _, e := range []error{ErrInsufficientCapacity, ErrEscrowGone, ErrStaleEpoch, ErrUnknownTrade} {
		if errors.Is(err, e) {
			return e.Error()
		}
	}
	return err.Error()
}

// releaseProps commits the proposals held back for region.
func (w *world) releaseProps(name string) {
	r := w.regions[name]
	w.holdProps[name] = false
	held := r.held
	r.held = nil
	for _, p := range held {
		w.commit(r, p)
	}
}

func (w *world) replied(r *testRegion, rep Reply) {
	f, ok := w.waiting[r.name][rep.Request]
	if !ok {
		return
	}
	delete(w.waiting[r.name], rep.Request)
	sender := w.regions[f.from]
	switch {
	case rep.Env == nil:
		w.logf("%s -> %s closed %s without reply", r.name, f.from, f.env.Kind)
		sender.m.HandleSendFailure(w.now, f.id)
	case w.cut[pair(r.name, f.from)] || w.loseReply[[2]string{r.name, f.from}]:
		w.logf("%s -> %s %s LOST", r.name, f.from, describe(rep.Env))
		w.lost = append(w.lost, f)
	default:
		w.logf("%s -> %s %s", r.name, f.from, describe(rep.Env))
		if err := sender.m.HandleReply(w.now, f.id, rep.Env); err != nil {
			w.logf("%s refused reply: %v", f.from, err)
		}
	}
}

// deliver hands every queued request to its recipient.
func (w *world) deliver() bool {
	if len(w.queue) == 0 {
		return false
	}
	q := w.queue
	w.queue = nil
	for _, f := range q {
		sender := w.regions[f.from]
		r, ok := w.regions[f.to]
		if !ok || w.cut[pair(f.from, f.to)] {
			w.logf("%s -> %s %s UNREACHABLE", f.from, f.to, describe(f.env))
			if f.env.Kind.ExpectsReply() {
				sender.m.HandleSendFailure(w.now, f.id)
			}
			continue
		}
		w.logf("%s -> %s %s", f.from, f.to, describe(f.env))
		w.nextReq++
		inv, _ := r.l.Inventory(w.now)
		err := r.m.Receive(w.now, Inbound{Request: w.nextReq, Env: f.env, Inventory: inv})
		if err != nil {
			w.logf("%s refused: %v", f.to, err)
			if f.env.Kind.ExpectsReply() {
				sender.m.HandleSendFailure(w.now, f.id)
			}
			continue
		}
		if f.env.Kind.ExpectsReply() {
			w.waiting[f.to][w.nextReq] = f
		}
	}
	return true
}

// stabilize runs until no region has output and no request is queued.
func (w *world) stabilize() {
	for i := 0; ; i++ {
		if i > 10000 {
			w.t.Fatalf("world does not stabilize")
		}
		a := w.collect()
		b := w.deliver()
		if !a && !b {
			return
		}
	}
}

// advance moves the clock forward by d, stopping at every timeout on the
// way: market timers and lost replies' deadlines.
func (w *world) advance(d time.Duration) {
	end := w.now.Add(d)
	for {
		w.stabilize()
		next, ok := end, false
		for _, name := range w.names {
			if t, has := w.regions[name].m.NextTimeout(); has && t.Before(next) {
				next, ok = t, true
			}
		}
		for _, f := range w.lost {
			if f.deadline.Before(next) {
				next, ok = f.deadline, true
			}
		}
		for _, recv := range w.names {
			for _, f := range w.waiting[recv] {
				if f.deadline.Before(next) {
					next, ok = f.deadline, true
				}
			}
		}
		if next.After(w.now) {
			w.now = next
		}
		var keep []*flight
		for _, f := range w.lost {
			if !w.now.Before(f.deadline) {
				w.logf("%s: request %s to %s timed out", f.from, f.env.Kind, f.to)
				w.regions[f.from].m.HandleSendFailure(w.now, f.id)
			} else {
				keep = append(keep, f)
			}
		}
		w.lost = keep
		// A request whose reply does not come by its deadline fails for the
		// requester; a reply after that finds no one waiting.
		for _, recv := range w.names {
			for _, req := range sortedIDs(mapKeys(w.waiting[recv])) {
				f := w.waiting[recv][req]
				if !w.now.Before(f.deadline) {
					delete(w.waiting[recv], req)
					w.logf("%s: request %s to %s timed out", f.from, f.env.Kind, f.to)
					w.regions[f.from].m.HandleSendFailure(w.now, f.id)
				}
			}
		}
		for _, name := range w.names {
			w.regions[name].m.Tick(w.now)
		}
		w.stabilize()
		if !ok {
			w.now = end
			for _, name := range w.names {
				w.regions[name].m.Tick(w.now)
			}
			w.stabilize()
			return
		}
	}
}

// partition cuts a from b (both ways); heal undoes every cut.
func (w *world) partition(a, b string) {
	w.cut[pair(a, b)] = true
	w.logf("partition %s | %s", a, b)
}

// heal undoes every cut; gossip then reports every region reachable.
func (w *world) heal() {
	w.cut = make(map[[2]string]bool)
	w.loseReply = make(map[[2]string]bool)
	w.logf("heal")
	for _, a := range w.names {
		for _, b := range w.names {
			if a != b {
				w.regions[a].m.Reachable(w.now, b)
			}
		}
	}
}

// stepDown deposes a region's leader; elect makes it (or its successor)
// leader at the next term, resuming from its ledger.
func (w *world) stepDown(name string) {
	r := w.regions[name]
	r.m.StepDown()
	w.logf("%s steps down (term %d)", name, r.term)
	// Requests it was asked are answered with nil by StepDown; requests it
	// sent will never see their replies: pending replies to it are dropped.
	w.collect()
	for recv, m := range w.waiting {
		for id, f := range m {
			if f.from == name {
				delete(m, id)
				_ = recv
			}
		}
	}
	r.held = nil
}

func (w *world) elect(name string) {
	r := w.regions[name]
	r.term++
	snap, err := r.l.MarketSnapshot()
	if err != nil {
		w.t.Fatalf("snapshot: %v", err)
	}
	r.m.BecomeLeader(w.now, r.term, snap)
	w.logf("%s becomes leader (term %d): %d trades, %d escrows, %d leases", name, r.term, len(snap.Trades), len(snap.Escrows), len(snap.Leases))
}

func describe(env *Envelope) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s t%d", env.Kind, env.Auction, env.Term)
	switch env.Kind {
	case KindCallForBids:
		fmt.Fprintf(&b, " items=%d deadline=+%v", len(env.CallForBids.Items), env.CallForBids.Deadline.Sub(t0))
		if len(env.CallForBids.Release) > 0 {
			fmt.Fprintf(&b, " release=%s:%v", env.CallForBids.Supersedes, env.CallForBids.Release)
		}
	case KindBid:
		for _, it := range env.Bid.Items {
			fmt.Fprintf(&b, " %s@%s:%.4g(escrow %s)", it.Item, it.Node, it.Price, it.Escrow)
		}
		for _, d := range env.Bid.Declined {
			fmt.Fprintf(&b, " %s:declined", d.Item)
		}
	case KindNoBid:
		fmt.Fprintf(&b, " %q", env.NoBid.Reason)
	case KindAward:
		for _, it := range env.Award.Items {
			fmt.Fprintf(&b, " %s:e%d:%.4g", it.Item, it.Epoch, it.Price)
			if it.Lease != nil {
				fmt.Fprintf(&b, ":lease=%s/%s", it.Lease.Auction, it.Lease.Item)
			}
		}
	case KindAck:
		for _, st := range env.Ack.Items {
			fmt.Fprintf(&b, " %s:%s:e%d", st.Item, st.Status, st.Epoch)
		}
	case KindStatusReply:
		for _, st := range env.StatusReply.Items {
			fmt.Fprintf(&b, " %s:%s:e%d", st.Item, st.Status, st.Epoch)
		}
	case KindRelease:
		if len(env.Release.Items) == 0 {
			b.WriteString(" all")
		}
		for _, it := range env.Release.Items {
			fmt.Fprintf(&b, " %s", it)
		}
	case KindStatusQuery:
		for _, it := range env.StatusQuery.Items {
			fmt.Fprintf(&b, " %s", it)
		}
	case KindCancel:
		for _, it := range env.Cancel.Items {
			fmt.Fprintf(&b, " %s:e%d", it.Item, it.Epoch)
		}
	}
	return b.String()
}

// job returns a job item of compute demand d with epoch 1, registered in
// the buyer's ledger.
func (w *world) job(buyer, id string, d float64, opts ...func(*placement.Job)) Item {
	j := placement.Job{ID: id, OriginRegion: buyer, Demand: placement.Resources{ComputePerHour: d, StorageGB: 10, BandwidthGBps: 1}}
	for _, o := range opts {
		o(&j)
	}
	w.regions[buyer].l.addJob(id, 1)
	return Item{ID: id, Kind: ItemJob, Job: j, Epoch: 1}
}

func maxPrice(p float64) func(*placement.Job) {
	return func(j *placement.Job) { j.MaxPricePerHour = p }
}

func slo(d time.Duration) func(*placement.Job) { return func(j *placement.Job) { j.LatencySLO = d } }

// start opens an auction from buyer to sellers with a 2 s deadline.
func (w *world) start(buyer, id string, sellers []string, items ...Item) {
	w.t.Helper()
	err := w.regions[buyer].m.StartAuction(w.now, AuctionSpec{
		ID: id, Items: items, Sellers: sellers, Deadline: w.now.Add(2 * time.Second), RTT: w.rtt,
	})
	if err != nil {
		w.t.Fatalf("StartAuction(%s): %v", id, err)
	}
	w.logf("%s starts auction %s: %d items to %v", buyer, id, len(items), sellers)
}

// eventsOf returns the events of kind k seen so far.
func (w *world) eventsOf(k EventKind) []Event {
	var out []Event
	for _, e := range w.events {
		if e.Kind == k {
			out = append(out, e)
		}
	}
	return out
}

// checkInvariants verifies, after the world settled: no ledger ever
// overcommitted a node; no escrow outlives its expiry (every escrow record
// left has expired and is being released — none after a final advance);
// and every job of jobs has exactly one live allocation in the whole mesh,
// the one its home ledger names.
func (w *world) checkInvariants(home string, jobs ...string) {
	w.t.Helper()
	for _, name := range w.names {
		r := w.regions[name]
		if v := r.l.violationsList(); len(v) > 0 {
			w.t.Errorf("ledger %s: %v", name, v)
		}
		if recs := r.l.escrowRecords(); len(recs) > 0 {
			for _, e := range recs {
				if e.Expiry.After(w.now) {
					continue // still live: allowed
				}
				w.t.Errorf("ledger %s: escrow %s expired at %v is still recorded at %v", name, e.Trade, e.Expiry.Sub(t0), w.now.Sub(t0))
			}
		}
	}
	hl := w.regions[home].l
	for _, job := range jobs {
		var live []string
		for _, name := range w.names {
			for _, ref := range w.regions[name].l.liveAllocations(home, job) {
				live = append(live, name+":"+ref.String())
			}
		}
		named, ok := hl.confirmedTrade(job)
		switch {
		case !ok:
			w.t.Errorf("job %s: home ledger names no confirmed allocation at epoch %d; live: %v", job, hl.epoch(job), live)
		case len(live) != 1:
			w.t.Errorf("job %s: %d live allocations %v, want exactly 1", job, len(live), live)
		case live[0] != named.Seller+":"+named.Trade.String():
			w.t.Errorf("job %s: live allocation %s, home ledger names %s:%s", job, live[0], named.Seller, named.Trade)
		}
	}
}

func (w *world) dumpTrace() string { return strings.Join(w.trace, "\n") + "\n" }

var update = flag.Bool("update", false, "rewrite the golden traces in testdata/")

// golden compares the world's trace with testdata/<name>.golden (rewritten
// with -update). The traces are the protocol's story, message by message:
// review them when they change.
func (w *world) golden(name string) {
	w.t.Helper()
	path := filepath.Join("testdata", name+".golden")
	got := w.dumpTrace()
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			w.t.Fatalf("write %s: %v", path, err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		w.t.Fatalf("read %s: %v (run with -update to create it)", path, err)
	}
	if got != string(want) {
		w.t.Errorf("trace differs from %s (run with -update to accept):\n%s", path, lineDiff(string(want), got))
	}
}

// lineDiff shows the first lines where want and got differ.
func lineDiff(want, got string) string {
	wl, gl := strings.Split(want, "\n"), strings.Split(got, "\n")
	var b strings.Builder
	shown := 0
	for i := 0; i < max(len(wl), len(gl)) && shown < 12; i++ {
		var a, c string
		if i < len(wl) {
			a = wl[i]
		}
		if i < len(gl) {
			c = gl[i]
		}
		if a != c {
			fmt.Fprintf(&b, "line %d:\n  want: %s\n  got:  %s\n", i+1, a, c)
			shown++
		}
	}
	return b.String()
}

func mapKeys[V any](m map[uint64]V) map[uint64]bool {
	out := make(map[uint64]bool, len(m))
	for k := range m {
		out[k] = true
	}
	return out
}
