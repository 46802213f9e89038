package auction

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// DriverConfig wires a Driver to its region.
type DriverConfig struct {
	// Market configures the protocol state machine.
	Market Config
	// Ledger is the region's replicated ledger (required).
	Ledger Ledger
	// Transport reaches other regions' leaders (required).
	Transport Transport
	// Directory is the gossip view of the other regions (required).
	Directory Directory
	// Authority checks that a peer speaks for a region's leader (required).
	Authority Authority
	// AuctionWindow is how long a buyer waits for bids (default 1s; the
	// farthest region pair is about 0.4 s apart).
	AuctionWindow time.Duration
	// MaxSellers bounds the regions invited to one auction (default 8).
	MaxSellers int
	// ProposeTimeout bounds one ledger proposal (default 10s).
	ProposeTimeout time.Duration
	// OnEvent, if set, is called from the Driver's goroutine with each
	// event. It must not block; hand the event to another goroutine.
	OnEvent func(Event)
	// Logger receives refusals and failures; nil discards.
	Logger *slog.Logger
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Driver runs a region's Market in one goroutine (Run) and connects it to
// the ledger, the transport, gossip and the leader check. Its methods are
// safe for concurrent use; they hand work to the loop and wait for it.
type Driver struct {
	cfg DriverConfig
	log *slog.Logger

	inbox chan func()
	done  chan struct{} // closed when Run returns
	start sync.Once

	// Owned by the loop goroutine.
	m       *Market
	waiters map[uint64]chan *Envelope
	nextReq uint64
	seq     uint64
	workCtx context.Context
	workers sync.WaitGroup
}

// NewDriver checks cfg and returns a Driver whose Market is not leader.
func NewDriver(cfg DriverConfig) (*Driver, error) {
	switch {
	case cfg.Ledger == nil:
		return nil, errors.New("auction driver: field \"ledger\" is required")
	case cfg.Transport == nil:
		return nil, errors.New("auction driver: field \"transport\" is required")
	case cfg.Directory == nil:
		return nil, errors.New("auction driver: field \"directory\" is required")
	case cfg.Authority == nil:
		return nil, errors.New("auction driver: field \"authority\" is required")
	case cfg.AuctionWindow < 0 || cfg.ProposeTimeout < 0 || cfg.MaxSellers < 0:
		return nil, errors.New("auction driver: auction_window, propose_timeout and max_sellers must not be negative")
	}
	m, err := NewMarket(cfg.Market)
	if err != nil {
		return nil, fmt.Errorf("auction driver: %w", err)
	}
	if cfg.AuctionWindow == 0 {
		cfg.AuctionWindow = time.Second
	}
	if cfg.AuctionWindow >= m.cfg.MaxAuctionWindow {
		return nil, fmt.Errorf("auction driver: field \"auction_window\": %v must be shorter than the market's max_auction_window %v", cfg.AuctionWindow, m.cfg.MaxAuctionWindow)
	}
	if cfg.MaxSellers == 0 {
		cfg.MaxSellers = 8
	}
	if cfg.ProposeTimeout == 0 {
		cfg.ProposeTimeout = 10 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return &Driver{
		cfg: cfg, log: log.With("region", cfg.Market.Region), m: m,
		inbox: make(chan func(), 256), done: make(chan struct{}),
		waiters: make(map[uint64]chan *Envelope),
	}, nil
}

// Run drives the Market until ctx ends, then waits for its workers (ledger
// proposals and requests in flight, whose contexts it cancels) and returns
// ctx's error. Call it once.
func (d *Driver) Run(ctx context.Context) error {
	started := false
	d.start.Do(func() { started = true })
	if !started {
		return errors.New("auction driver: Run called twice")
	}
	workCtx, cancel := context.WithCancel(ctx)
	d.workCtx = workCtx
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer func() {
		cancel()
		timer.Stop()
		d.m.StepDown()
		d.flush()
		close(d.done)
		d.workers.Wait()
	}()
	for {
		d.flush()
		var wake <-chan time.Time
		if t, ok := d.m.NextTimeout(); ok {
			timer.Reset(max(0, t.Sub(d.cfg.Now())))
			wake = timer.C
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case f := <-d.inbox:
			f()
		case <-wake:
			d.m.Tick(d.cfg.Now())
		}
		if wake != nil && !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
	}
}

// do runs f in the loop goroutine and waits for it. It returns false if the
// Driver stopped (or ctx ended) first.
func (d *Driver) do(ctx context.Context, f func()) bool {
	fin := make(chan struct{})
	select {
	case d.inbox <- func() { f(); close(fin) }:
	case <-ctx.Done():
		return false
	case <-d.done:
		return false
	}
	select {
	case <-fin:
		return true
	case <-d.done:
		return false
	}
}

// post hands f to the loop without waiting; it drops f if the Driver
// stopped.
func (d *Driver) post(f func()) {
	select {
	case d.inbox <- f:
	case <-d.done:
	}
}

// ErrStopped is returned by Driver methods once Run has returned.
var ErrStopped = errors.New("auction driver stopped")

// SetLeadership tells the Driver whether this node now leads its region and
// under which term. node/ calls it on every Raft leadership change, after a
// new leader's Barrier. Becoming leader reads the ledger's MarketSnapshot;
// if that fails the Market stays follower and the error is returned.
func (d *Driver) SetLeadership(ctx context.Context, term uint64, leader bool) error {
	var err error
	if !d.do(ctx, func() {
		if !leader {
			d.m.StepDown()
			return
		}
		snap, serr := d.cfg.Ledger.MarketSnapshot()
		if serr != nil {
			d.m.StepDown()
			err = fmt.Errorf("become market leader at term %d: %w", term, serr)
			return
		}
		d.m.BecomeLeader(d.cfg.Now(), term, snap)
	}) {
		return stopErr(ctx)
	}
	return err
}

func stopErr(ctx context.Context) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return ErrStopped
}

// Buy auctions items: it invites the regions gossip says could serve them
// (SelectSellers) and returns the auction ID at once; the outcome arrives as
// events (EventAllocated/EventConfirmed, or EventUnplaced per item). It
// returns ErrNotLeader on a follower and ErrNoSellers when no region could
// serve any item.
func (d *Driver) Buy(ctx context.Context, items []Item) (string, error) {
	var id string
	var err error
	if !d.do(ctx, func() { id, err = d.buy(items) }) {
		return "", stopErr(ctx)
	}
	return id, err
}

func (d *Driver) buy(items []Item) (string, error) {
	term, leader := d.m.Leader()
	if !leader {
		return "", ErrNotLeader
	}
	now := d.cfg.Now()
	home := d.m.cfg.Region
	regions := d.cfg.Directory.Regions() // a snapshot of gossip: take one
	rtt := d.rttTable(items, regions)
	sellers := SelectSellers(home, items, regions, rtt, now, d.cfg.MaxSellers)
	if len(sellers) == 0 {
		return "", ErrNoSellers
	}
	d.seq++
	id := fmt.Sprintf("%s/%d/%d", home, term, d.seq)
	err := d.m.StartAuction(now, AuctionSpec{ID: id, Items: items, Sellers: sellers, Deadline: now.Add(d.cfg.AuctionWindow), RTT: rtt})
	if err != nil {
		return "", err
	}
	return id, nil
}

// CheaperElsewhere is CheaperSeller over what the Directory says now: a
// region that asks clearly less (by margin) than localPrice for it. It
// reads only the Directory, so any goroutine may call it.
func (d *Driver) CheaperElsewhere(it Item, localPrice, margin float64) (string, bool) {
	regions := d.cfg.Directory.Regions()
	return CheaperSeller(d.m.cfg.Region, it, localPrice, margin, regions, d.rttTable([]Item{it}, regions), d.cfg.Now())
}

// FitElsewhere is FitElsewhere over one look at what the Directory says
// now. It reads only the Directory, so any goroutine may call it.
func (d *Driver) FitElsewhere(items []Item) []bool {
	regions := d.cfg.Directory.Regions()
	return FitElsewhere(d.m.cfg.Region, items, regions, d.rttTable(items, regions), d.cfg.Now())
}

// ServableElsewhere is ServableElsewhere over one look at what the
// Directory says now, for each of items. It reads only the Directory, so
// any goroutine may call it.
func (d *Driver) ServableElsewhere(items []Item) []bool {
	regions := d.cfg.Directory.Regions()
	rtt := d.rttTable(items, regions)
	now := d.cfg.Now()
	out := make([]bool, len(items))
	for i, it := range items {
		out[i] = ServableElsewhere(d.m.cfg.Region, it, regions, rtt, now)
	}
	return out
}

// movable is the running work the seller may stop for items that ask for
// preemption: allocations of lower priority than the most important such
// item (the ledger's RunningWork) whose work gossip shows another region
// could serve now. Nil when no item asks, the market does not preempt, or
// the ledger cannot tell.
func (d *Driver) movable(items []Item) []Movable {
	rw, ok := d.cfg.Ledger.(RunningWork)
	if !ok || d.m.cfg.NoPreempt {
		return nil
	}
	top, asked := 0, false
	for _, it := range items {
		if it.Preempt && it.Kind == ItemJob {
			top, asked = max(top, it.Job.Priority), true
		}
	}
	if !asked {
		return nil
	}
	run, err := rw.Preemptible(top)
	if err != nil {
		d.log.Warn("running work unavailable; not preempting", "err", err)
		return nil
	}
	if len(run) == 0 {
		return nil
	}
	work := make([]Item, len(run))
	for i, r := range run {
		work[i] = Item{ID: r.AllocID, Kind: ItemJob, Job: r.Job}
	}
	var out []Movable
	for i, ok := range d.ServableElsewhere(work) {
		if ok {
			out = append(out, run[i])
		}
	}
	return out
}

// rttTable asks the Directory for the RTT from every item's origin (or the
// home region) to every region.
func (d *Driver) rttTable(items []Item, regions []RegionInfo) RTTTable {
	rtt := RTTTable{}
	origins := map[string]bool{d.m.cfg.Region: true}
	for _, it := range items {
		if it.Job.OriginRegion != "" {
			origins[it.Job.OriginRegion] = true
		}
	}
	for o := range origins {
		for _, r := range regions {
			if v, ok := d.cfg.Directory.RTT(o, r.Region); ok {
				rtt.Set(o, r.Region, v)
			}
		}
	}
	return rtt
}

// LeasesFit reports, for each job item, whether a lease the region holds
// would take it now (Market.LeasesFit), each counted against the room the
// ones before it took; all false if ctx ends first.
func (d *Driver) LeasesFit(ctx context.Context, items []Item) []bool {
	var out []bool
	if !d.do(ctx, func() {
		out = d.m.LeasesFit(d.cfg.Now(), items, d.rttTable(items, d.leaseSellers()))
	}) {
		return make([]bool, len(items))
	}
	return out
}

// leaseSellers lists the regions that sold the leases held, as RegionInfo
// for rttTable (run on the Driver's goroutine).
func (d *Driver) leaseSellers() []RegionInfo {
	var sellers []RegionInfo
	for _, l := range d.m.Leases() {
		if !slices.ContainsFunc(sellers, func(r RegionInfo) bool { return r.Region == l.Seller }) {
			sellers = append(sellers, RegionInfo{Region: l.Seller})
		}
	}
	return sellers
}

// PlaceInLease places a job into a lease the region holds, without an
// auction (Market.PlaceInLease); it returns the trade, whose outcome arrives
// as events.
func (d *Driver) PlaceInLease(ctx context.Context, it Item) (TradeRef, error) {
	var ref TradeRef
	var err error
	if !d.do(ctx, func() {
		term, _ := d.m.Leader()
		d.seq++
		// Only the lease sellers' regions matter; the directory's full
		// listing (every region's ask decoded) is not needed per job.
		rtt := d.rttTable([]Item{it}, d.leaseSellers())
		ref, err = d.m.PlaceInLease(d.cfg.Now(), fmt.Sprintf("%s/%d/d%d", d.m.cfg.Region, term, d.seq), it, rtt)
	}) {
		return TradeRef{}, stopErr(ctx)
	}
	return ref, err
}

// RegionReachable tells the Driver that gossip sees region's leader again;
// node/ calls it when a region comes back after being unreachable (or gets
// a new leader), so awards in doubt with it are settled at once.
func (d *Driver) RegionReachable(ctx context.Context, region string) error {
	if !d.do(ctx, func() { d.m.Reachable(d.cfg.Now(), region) }) {
		return stopErr(ctx)
	}
	return nil
}

// Leases returns the leases the region holds as buyer.
func (d *Driver) Leases(ctx context.Context) ([]LeaseRecord, error) {
	var out []LeaseRecord
	if !d.do(ctx, func() { out = d.m.Leases() }) {
		return nil, stopErr(ctx)
	}
	return out, nil
}

// Stats returns what the Market is tracking.
func (d *Driver) Stats(ctx context.Context) (Stats, error) {
	var s Stats
	if !d.do(ctx, func() { s = d.m.Stats() }) {
		return Stats{}, stopErr(ctx)
	}
	return s, nil
}

// Handle is the Handler to serve on the Transport: it authenticates the
// sender with the Authority, hands the request to the Market and waits for
// its reply. Unauthenticated or refused requests get no reply.
func (d *Driver) Handle(ctx context.Context, from peer.ID, env *Envelope) *Envelope {
	if err := d.cfg.Authority.Authorize(from, env.From, env.Term); err != nil {
		d.log.Warn("market request refused", "from_peer", from, "from_region", env.From, "kind", env.Kind, "term", env.Term, "err", err)
		return nil
	}
	ch := make(chan *Envelope, 1)
	if !d.do(ctx, func() { d.receive(env, ch) }) {
		return nil
	}
	select {
	case r := <-ch:
		return r
	case <-ctx.Done():
		return nil
	case <-d.done:
		return nil
	}
}

func (d *Driver) receive(env *Envelope, ch chan *Envelope) {
	now := d.cfg.Now()
	d.nextReq++
	in := Inbound{Request: d.nextReq, Env: env}
	if env.Kind == KindCallForBids {
		inv, err := d.cfg.Ledger.Inventory(now)
		if err != nil {
			d.log.Warn("inventory unavailable; not bidding", "auction", env.Auction, "err", err)
			ch <- nil
			return
		}
		in.Inventory = inv
		in.Movable = d.movable(env.CallForBids.Items)
	}
	if err := d.m.Receive(now, in); err != nil {
		d.log.Info("market request refused", "from_region", env.From, "kind", env.Kind, "auction", env.Auction, "err", err)
		ch <- nil
		return
	}
	if !env.Kind.ExpectsReply() {
		ch <- nil
		return
	}
	d.waiters[in.Request] = ch
}

// flush carries out everything the Market asked for, until it asks nothing.
func (d *Driver) flush() {
	for d.m.HasReady() {
		rd := d.m.Ready()
		for _, r := range rd.Replies {
			if ch, ok := d.waiters[r.Request]; ok {
				delete(d.waiters, r.Request)
				ch <- r.Env
			}
		}
		if len(rd.Proposals) > 0 {
			d.propose(rd.Proposals)
		}
		for _, ob := range rd.Messages {
			d.sendMessage(ob)
		}
		if d.cfg.OnEvent != nil {
			for _, e := range rd.Events {
				d.cfg.OnEvent(e)
			}
		}
	}
}

// propose commits every proposal of one Ready in a single ledger batch (one
// Raft entry), then reports each proposal's share of the results.
func (d *Driver) propose(ps []Proposal) {
	if d.workCtx == nil || d.workCtx.Err() != nil {
		return // stopping: the Market has stepped down and ignores results
	}
	var ops []LedgerOp
	for _, p := range ps {
		ops = append(ops, p.Ops...)
	}
	d.workers.Add(1)
	go func() {
		defer d.workers.Done()
		ctx, cancel := context.WithTimeout(d.workCtx, d.cfg.ProposeTimeout)
		res, err := d.cfg.Ledger.Propose(ctx, ops)
		cancel()
		if err == nil && len(res) != len(ops) {
			err = fmt.Errorf("ledger returned %d results for %d operations", len(res), len(ops))
		}
		if err != nil {
			d.log.Warn("market ledger proposal failed", "ops", len(ops), "err", err)
		}
		d.post(func() {
			now := d.cfg.Now()
			off := 0
			for _, p := range ps {
				if err != nil {
					d.m.Committed(now, p.ID, nil, err)
					continue
				}
				d.m.Committed(now, p.ID, res[off:off+len(p.Ops)], nil)
				off += len(p.Ops)
			}
		})
	}()
}

func (d *Driver) sendMessage(ob Outbound) {
	if d.workCtx == nil || d.workCtx.Err() != nil {
		return
	}
	to, ok := d.cfg.Directory.Leader(ob.To)
	if !ok {
		d.log.Info("no known leader for region; request fails", "to", ob.To, "kind", ob.Env.Kind)
		if ob.Env.Kind.ExpectsReply() {
			d.m.HandleSendFailure(d.cfg.Now(), ob.ID)
		}
		return
	}
	d.workers.Add(1)
	go func() {
		defer d.workers.Done()
		ctx, cancel := context.WithDeadline(d.workCtx, ob.Deadline)
		reply, err := d.cfg.Transport.Request(ctx, to, ob.Env)
		cancel()
		if !ob.Env.Kind.ExpectsReply() {
			if err != nil {
				d.log.Debug("one-way market message not delivered", "to", ob.To, "kind", ob.Env.Kind, "err", err)
			}
			return
		}
		if err == nil && reply == nil {
			err = errors.New("closed without a reply")
		}
		if err == nil {
			if aerr := d.cfg.Authority.Authorize(to.ID, reply.From, reply.Term); aerr != nil {
				err = fmt.Errorf("reply not from %s's leader: %w", ob.To, aerr)
			}
		}
		d.post(func() {
			now := d.cfg.Now()
			if err != nil {
				d.log.Info("market request failed", "to", ob.To, "kind", ob.Env.Kind, "auction", ob.Env.Auction, "err", err)
				d.m.HandleSendFailure(now, ob.ID)
				return
			}
			if rerr := d.m.HandleReply(now, ob.ID, reply); rerr != nil {
				d.log.Info("market reply refused", "from", ob.To, "kind", reply.Kind, "auction", ob.Env.Auction, "err", rerr)
			}
		})
	}()
}
