package market

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/host"

	"github.com/meridian-mesh/meridian/consensus"
	"github.com/meridian-mesh/meridian/gossip"
	"github.com/meridian-mesh/meridian/placement"
	"github.com/meridian-mesh/meridian/placement/auction"
)

// Config wires a region server's market. Region, NodeName, Server, Gossip
// and Host are required; zero durations take the defaults shown.
type Config struct {
	// Region is the server's region; NodeName its node name (for logs and
	// IDs).
	Region, NodeName string
	// Server is the region's Raft server on this node: the market's ledger.
	Server *consensus.Server
	// Gossip is the node's gossip agent: where other regions, their leaders
	// and their surplus are read from.
	Gossip *gossip.Agent
	// Host is the node's libp2p host; its peer ID and address must be in
	// the node's gossip metadata (P2PPeerID, P2PAddr). Run serves the
	// market protocols on it; the caller closes it after Run returns.
	Host host.Host

	// Pricing sets the asking prices when this region sells (default
	// auction.DefaultPricing: cost-plus, rising with utilization).
	Pricing auction.PriceFunc
	// Score is how offers are ranked when this region buys (default
	// auction.DefaultScoreConfig, placement's cost-efficiency score with
	// its RTT penalty).
	Score *placement.ScoreConfig
	// SecondPrice pays winners the second-score (Vickrey) price instead of
	// their own bid.
	SecondPrice bool
	// AuctionWindow is how long a buyer waits for bids (default 1 s; the
	// farthest regions are about 0.4 s apart).
	AuctionWindow time.Duration
	// Protocol tunes the auction protocol (escrow TTL, in-doubt timeout,
	// retries...); its Region, Rule, Score and Price are set from the
	// fields above.
	Protocol auction.Config

	// Lease, when set, buys capacity leases ahead of need with its simple
	// threshold trigger: when the region's compute utilization reaches
	// Lease.BuyAbove and its unused leased capacity is below Lease.Amount,
	// the leader buys one lease (checked every LeaseInterval). Trade then
	// places jobs into held leases before it auctions them.
	Lease *auction.LeasePolicy
	// LeaseInterval is how often the lease trigger is checked (default 10 s).
	LeaseInterval time.Duration
	// Ask decides when the leader advertises the region's surplus in
	// gossip (Advertisement): default selling below 90% utilization, an
	// ask valid for 30 s.
	Ask auction.AskPolicy

	// RetryBackoff is how long a job Trade could not place is kept out of
	// further auctions (default 10 s).
	RetryBackoff time.Duration
	// DutyInterval is how often the leader reports ended allocations to
	// their buyers and reconciles orphaned trades (default 5 s; RemoteStopped
	// reports at once).
	DutyInterval time.Duration
	// RequestTimeout bounds one report or reconciliation exchange (default
	// 10 s).
	RequestTimeout time.Duration

	// OnPreempt, if set, is called (from a market goroutine; it must not
	// block) after the market stopped some of the region's running work
	// to make room for another region's job (seller-side preemption,
	// auction.Item.Preempt): the region's own stopped jobs are pending
	// again, for the leader to place. Protocol.NoPreempt turns selling so
	// off.
	OnPreempt func()
	// OnEvent, if set, receives every market event (auction.Event) from the
	// market's goroutine: for metrics and progress lines. It must not block.
	OnEvent func(auction.Event)
	// Clock is the market's clock (default time.Now); the region's
	// consensus.Server should use the same one.
	Clock func() time.Time
	// Logger receives the market's logs; nil discards them.
	Logger *slog.Logger
}

func (c *Config) defaults() error {
	switch {
	case c.Region == "":
		return errors.New("market config: field \"region\" is required")
	case c.NodeName == "":
		return errors.New("market config: field \"node_name\" is required")
	case c.Server == nil:
		return errors.New("market config: field \"server\" is required")
	case c.Gossip == nil:
		return errors.New("market config: field \"gossip\" is required")
	case c.Host == nil:
		return errors.New("market config: field \"host\" is required")
	case c.Server.Region() != c.Region:
		return fmt.Errorf("market config: field \"server\": a server of region %q, not %q", c.Server.Region(), c.Region)
	}
	if c.Lease != nil {
		if err := c.Lease.Validate(); err != nil {
			return fmt.Errorf("market config: field \"lease\": %w", err)
		}
	}
	durations := []struct {
		name string
		v    *time.Duration
		def  time.Duration
	}{
		{"auction_window", &c.AuctionWindow, time.Second},
		{"lease_interval", &c.LeaseInterval, 10 * time.Second},
		{"retry_backoff", &c.RetryBackoff, 10 * time.Second},
		{"duty_interval", &c.DutyInterval, 5 * time.Second},
		{"request_timeout", &c.RequestTimeout, 10 * time.Second},
		{"ask.ttl", &c.Ask.TTL, 30 * time.Second},
	}
	for _, d := range durations {
		if *d.v < 0 {
			return fmt.Errorf("market config: field %q: must not be negative, got %v", d.name, *d.v)
		}
		if *d.v == 0 {
			*d.v = d.def
		}
	}
	if c.Ask.SellBelow == 0 {
		c.Ask.SellBelow = 0.9
	}
	if c.Ask.SellBelow < 0 || c.Ask.SellBelow > 1 {
		return fmt.Errorf("market config: field \"ask.sell_below\": must be in [0, 1], got %v", c.Ask.SellBelow)
	}
	if c.Clock == nil {
		c.Clock = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return nil
}

// Stats counts what the market did, for metrics and the progress line.
type Stats struct {
	// Leader and Term: whether this node acts for its region, and under
	// which Raft term.
	Leader bool
	Term   uint64
	// Offered counts jobs Trade put up for auction or into a lease.
	Offered uint64
	// Bought counts trades confirmed as buyer (jobs placed abroad, leases
	// bought); Unplaced, Failed and Abandoned count the other outcomes.
	Bought, Unplaced, Failed, Abandoned uint64
	// Sold counts allocations this region made for other regions' jobs.
	Sold uint64
	// LeasesBought counts leases acquired.
	LeasesBought uint64
	// ReportsSent and ReportsAcked count reports of ended allocations sent
	// to buyers and acknowledged by them; RemoteEnded counts the ends other
	// regions reported to this one.
	ReportsSent, ReportsAcked, RemoteEnded uint64
	// OrphansCancelled counts trades cancelled because the job no longer
	// ran under them (the client cancelled it).
	OrphansCancelled uint64
	// Preempted counts running allocations the region stopped to make
	// room for other regions' jobs (TradeUrgent's sellers).
	Preempted uint64
}

// Market is a region server's part in the cross-region market: it runs the
// auction protocol (placement/auction's Driver) on the region's ledger, the
// gossip view and the libp2p host, follows the region's Raft leadership,
// reports the ends of allocations sold to other regions, and buys leases
// with a threshold trigger. Only the leader trades; on other servers the
// market waits. Its methods are safe for concurrent use.
type Market struct {
	cfg Config
	log *slog.Logger
	drv *auction.Driver
	tr  *auction.StreamTransport
	led *regionLedger
	dir *directory

	dutyPoke chan struct{} // wakes the duty loop; buffered, size 1
	advPoke  chan struct{} // Advertisement changed; buffered, size 1
	events   eventQueue
	streams  group // report streams being served

	runOnce sync.Once
	runCtx  context.Context

	mu          sync.Mutex
	leader      bool
	term        uint64
	inflight    map[string]time.Time // job → when offered, while its auction or draw runs
	backoff     map[string]time.Time // job → not offered again before
	leaseBuying bool
	seq         uint64
	ask         cachedAsk
	stats       Stats
}

type cachedAsk struct {
	term uint64
	at   time.Time
	b    []byte
}

// New checks cfg and builds the market; Run starts it.
func New(cfg Config) (*Market, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	m := &Market{
		cfg:      cfg,
		log:      cfg.Logger.With("component", "market", "region", cfg.Region, "node", cfg.NodeName),
		led:      &regionLedger{srv: cfg.Server, region: cfg.Region},
		dir:      &directory{g: cfg.Gossip, region: cfg.Region},
		dutyPoke: make(chan struct{}, 1),
		advPoke:  make(chan struct{}, 1),
		inflight: make(map[string]time.Time),
		backoff:  make(map[string]time.Time),
	}
	pc := cfg.Protocol
	pc.Region = cfg.Region
	pc.Rule = auction.FirstPrice
	if cfg.SecondPrice {
		pc.Rule = auction.SecondPrice
	}
	pc.Score, pc.Price = cfg.Score, cfg.Pricing
	m.tr = auction.NewStreamTransport(cfg.Host, auction.StreamTransportConfig{Logger: m.log})
	drv, err := auction.NewDriver(auction.DriverConfig{
		Market: pc, Ledger: m.led, Transport: m.tr, Directory: m.dir, Authority: m.dir,
		AuctionWindow: cfg.AuctionWindow, OnEvent: m.onEvent, Logger: m.log, Now: cfg.Clock,
	})
	if err != nil {
		return nil, fmt.Errorf("market: %w", err)
	}
	m.drv = drv
	m.led.preempted = m.onPreempted
	m.events.init()
	return m, nil
}

// onPreempted runs when a hold stopped this region's running work to make
// room for a buyer: the buyers of stopped sold allocations hear of the end
// at once (the duty loop reports it), and the leader places the region's
// own stopped jobs again (OnPreempt). It must not block.
func (m *Market) onPreempted(allocIDs []string) {
	m.count(func(s *Stats) { s.Preempted += uint64(len(allocIDs)) })
	m.log.Info("running work stopped to make room for a buyer", "allocations", allocIDs)
	m.wakeDuty()
	if m.cfg.OnPreempt != nil {
		m.cfg.OnPreempt()
	}
}

// Run serves the market protocols on the host, follows the region's Raft
// leadership (the Driver becomes leader only after this server, as the new
// leader, has applied the whole log), and drives the auctions, reports and
// lease trigger until ctx ends. It returns ctx's error once every goroutine
// it started has stopped. Call it once.
func (m *Market) Run(ctx context.Context) error {
	first := false
	m.runOnce.Do(func() { first = true })
	if !first {
		return errors.New("market: Run called twice")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	m.runCtx = ctx
	m.streams.open()
	m.tr.Serve(m.drv.Handle)
	m.cfg.Host.SetStreamHandler(ReportProtocolID, m.serveReport)

	var wg sync.WaitGroup
	run := func(f func(context.Context)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f(ctx)
		}()
	}
	drvDone := make(chan struct{})
	go func() {
		defer close(drvDone)
		if err := m.drv.Run(ctx); err != nil && ctx.Err() == nil {
			m.log.Error("auction driver stopped", "err", err)
		}
	}()
	run(m.followLeadership)
	run(m.watchGossip)
	run(m.processEvents)
	run(m.dutyLoop)
	if m.cfg.Lease != nil {
		run(m.leaseLoop)
	}
	<-ctx.Done()
	m.cfg.Host.RemoveStreamHandler(ReportProtocolID)
	_ = m.tr.Close()
	m.streams.close()
	wg.Wait()
	<-drvDone
	m.setLeadership(0, false)
	return ctx.Err()
}

// --- leadership ---

// leadership returns the term and whether the market acts as leader.
func (m *Market) leadership() (uint64, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.term, m.leader
}

func (m *Market) setLeadership(term uint64, leader bool) {
	m.mu.Lock()
	changed := m.leader != leader || m.term != term
	m.leader, m.term = leader, term
	m.stats.Leader, m.stats.Term = leader, term
	if changed {
		// Volatile state of the old leadership is gone with it: its
		// auctions will send no more events.
		clear(m.inflight)
		m.leaseBuying = false
		m.ask = cachedAsk{}
	}
	m.mu.Unlock()
	if changed {
		poke(m.advPoke)
		poke(m.dutyPoke)
	}
}

// followLeadership makes the Driver follow the server's Raft leadership. A
// new leader first completes a linearizable read, which succeeds only once
// it has applied every entry of earlier terms, so the market's snapshot of
// the ledger is complete. The subscription keeps only the latest state, so
// the term is also checked every second (a leader re-elected under a new
// term must speak with the new term).
func (m *Market) followLeadership(ctx context.Context) {
	sub, unsubscribe := m.cfg.Server.SubscribeLeadership()
	defer unsubscribe()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		m.syncLeadership(ctx)
		select {
		case <-ctx.Done():
			return
		case <-sub:
		case <-tick.C:
		}
	}
}

func (m *Market) syncLeadership(ctx context.Context) {
	_, _, term := m.cfg.Server.Leader()
	isLeader := m.cfg.Server.IsLeader()
	cur, leading := m.leadership()
	switch {
	case isLeader && (!leading || cur != term):
		rctx, cancel := context.WithTimeout(ctx, m.cfg.RequestTimeout)
		_, err := m.cfg.Server.ConsistentLedger(rctx)
		cancel()
		if err != nil {
			if ctx.Err() == nil {
				m.log.Info("new leader not ready for the market yet", "term", term, "err", err)
			}
			return
		}
		_, _, after := m.cfg.Server.Leader()
		if !m.cfg.Server.IsLeader() || after != term {
			return // lost or re-won meanwhile: the next round decides
		}
		if leading {
			m.stepDown(ctx)
		}
		if err := m.drv.SetLeadership(ctx, term, true); err != nil {
			if ctx.Err() == nil {
				m.log.Warn("market could not take the leadership", "term", term, "err", err)
			}
			return
		}
		m.setLeadership(term, true)
		m.log.Info("market leader", "term", term)
	case !isLeader && leading:
		m.stepDown(ctx)
		m.log.Info("market follower", "term", term)
	}
}

func (m *Market) stepDown(ctx context.Context) {
	m.setLeadership(0, false)
	if err := m.drv.SetLeadership(ctx, 0, false); err != nil && ctx.Err() == nil {
		m.log.Warn("market step down", "err", err)
	}
}

// watchGossip tells the Driver when another region's leadership changes or
// comes back, so awards in doubt with it are settled at once.
func (m *Market) watchGossip(ctx context.Context) {
	evs, unsubscribe := m.cfg.Gossip.Subscribe(64)
	defer unsubscribe()
	known := make(map[string]string)  // region → leader@term
	claims := make(map[string]string) // server → the term it claims to lead in, "" for none
	check := func() {
		for region, cs := range m.dir.snapshot().leaders() {
			if region == m.cfg.Region || len(cs) == 0 {
				continue
			}
			k := leaderKey(cs[0])
			if known[region] == k {
				continue
			}
			known[region] = k
			if _, leading := m.leadership(); leading {
				if err := m.drv.RegionReachable(ctx, region); err != nil {
					return
				}
			}
		}
	}
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-evs:
			if !ok {
				return
			}
			switch ev.Type {
			case gossip.EventMemberFailed, gossip.EventMemberLeave:
				delete(known, ev.Member.Region)
				delete(claims, ev.Member.Name)
			case gossip.EventRecordUpdate:
				if ev.Member.Role != gossip.RoleServer {
					// Only servers claim leadership: a worker's capacity
					// changes are most of the updates, and a look at the
					// claims copies every member and record.
					continue
				}
				if r := ev.Record; r != nil {
					// A server's record changes with its capacity far more
					// often than with its claim: look only when the claim
					// (leading, and in which term) changed.
					c := ""
					if r.Market != nil && r.Market.Leader {
						c = strconv.FormatUint(r.Market.Term, 10)
					}
					if prev, seen := claims[r.Node]; seen && prev == c {
						continue
					}
					claims[r.Node] = c
				}
			}
			check()
		}
	}
}

// --- buying ---

// Trade offers home jobs the region leader could not place well locally:
// each job gets a new placement epoch, goes into a held lease that fits if
// there is one, and otherwise into one auction among the regions gossip
// says could serve it. It returns once the jobs are offered; the outcome
// lands in the ledger: a job placed abroad becomes traded (its Remote
// placement names the seller and the trade), one no seller took stays
// pending with the reason. Jobs not pending, already being traded, or
// recently unplaced (RetryBackoff) are skipped. It returns
// auction.ErrNotLeader on a follower and an error wrapping
// auction.ErrNoSellers when no region could serve any of the jobs (their
// reasons are recorded).
func (m *Market) Trade(ctx context.Context, jobs []consensus.Job) error {
	return m.trade(ctx, jobs, false)
}

// TradeUrgent is Trade for jobs no region had room for, and that their home
// could not make room for by preemption: every region within a job's SLO
// and price limit is invited, room or not, and a seller may stop running
// work of lower priority that can move elsewhere to make room
// (auction.Item.Preempt).
func (m *Market) TradeUrgent(ctx context.Context, jobs []consensus.Job) error {
	return m.trade(ctx, jobs, true)
}

func (m *Market) trade(ctx context.Context, jobs []consensus.Job, urgent bool) error {
	if _, leading := m.leadership(); !leading {
		return auction.ErrNotLeader
	}
	now := m.now()
	l := m.cfg.Server.Ledger()
	var bumps []consensus.Command
	var cand []consensus.Job
	m.mu.Lock()
	for id, until := range m.backoff {
		if !now.Before(until) {
			delete(m.backoff, id)
		}
	}
	for _, j := range jobs {
		cur, ok := l.Job(j.ID)
		if !ok || cur.State != consensus.JobPending || cur.AllocID != "" || cur.Remote != nil {
			continue
		}
		if c := j.Spec.MaxPricePerHour; c > 0 && (cur.Spec.MaxPricePerHour == 0 || c < cur.Spec.MaxPricePerHour) {
			// The caller's tighter cap: a job home could serve is
			// offered only below what home would cost.
			cur.Spec.MaxPricePerHour = c
		}
		if _, busy := m.inflight[j.ID]; busy {
			continue
		}
		if until, wait := m.backoff[j.ID]; wait && now.Before(until) {
			continue
		}
		m.inflight[j.ID] = now
		cand = append(cand, cur)
		bumps = append(bumps, consensus.BumpEpoch{JobID: cur.ID, Epoch: cur.Epoch + 1, Reason: "offered to other regions"})
	}
	m.mu.Unlock()
	if len(cand) == 0 {
		return nil
	}
	release := func(ids ...string) {
		m.mu.Lock()
		for _, id := range ids {
			delete(m.inflight, id)
		}
		m.mu.Unlock()
	}
	// A new epoch for each job: the award is recorded under it, so that
	// any placement made meanwhile (or later, after a failed trade) is told
	// apart from this one.
	var items []auction.Item
	for start := 0; start < len(bumps); start += maxCommandsPerProposal {
		end := min(start+maxCommandsPerProposal, len(bumps))
		res, err := m.cfg.Server.Propose(ctx, bumps[start:end]...)
		if err != nil {
			for _, j := range cand[start:] {
				release(j.ID)
			}
			return fmt.Errorf("market: new epochs for %d jobs: %w", len(bumps)-start, err)
		}
		for i, r := range res {
			j := cand[start+i]
			if r.Err != nil {
				release(j.ID)
				continue
			}
			spec := j.Spec
			if spec.OriginRegion == "" {
				spec.OriginRegion = m.cfg.Region
			}
			items = append(items, auction.Item{ID: j.ID, Kind: auction.ItemJob, Job: spec, Epoch: r.Epoch, Preempt: urgent})
		}
	}
	var auctioned []auction.Item
	for _, it := range items {
		if it.Validate("") != nil {
			release(it.ID)
			m.notePending(ctx, []string{it.ID}, "the market cannot trade this job: "+it.Validate("").Error())
			continue
		}
		if _, err := m.drv.PlaceInLease(ctx, it); err == nil {
			m.count(func(s *Stats) { s.Offered++ })
			continue
		} else if !errors.Is(err, auction.ErrNoLease) {
			m.log.Debug("lease draw not possible; auctioning", "job", it.ID, "err", err)
		}
		auctioned = append(auctioned, it)
	}
	var errs []error
	for len(auctioned) > 0 {
		n := min(len(auctioned), auction.MaxItems)
		batch := auctioned[:n]
		auctioned = auctioned[n:]
		_, err := m.drv.Buy(ctx, batch)
		if err == nil {
			m.count(func(s *Stats) { s.Offered += uint64(n) })
			continue
		}
		ids := make([]string, n)
		for i, it := range batch {
			ids[i] = it.ID
		}
		release(ids...)
		m.backOff(ids...)
		if errors.Is(err, auction.ErrNoSellers) {
			m.notePending(ctx, ids, "no other region can serve it now (capacity, latency SLO or price per gossip)")
		}
		errs = append(errs, fmt.Errorf("market: auction of %d jobs: %w", n, err))
	}
	return errors.Join(errs...)
}

// CheaperElsewhere reports whether another region asks clearly less — by
// margin (0.1 = 10 %) — for job j than localPrice, what the node home would
// place it on costs (US dollars per node-hour), per gossip. The leader then
// offers j to the market, capped at localPrice, before placing it at home.
func (m *Market) CheaperElsewhere(j consensus.Job, localPrice, margin float64) bool {
	spec := j.Spec
	if spec.OriginRegion == "" {
		spec.OriginRegion = m.cfg.Region
	}
	_, ok := m.drv.CheaperElsewhere(auction.Item{ID: j.ID, Kind: auction.ItemJob, Job: spec}, localPrice, margin)
	return ok
}

// ServableElsewhere reports, for each of jobs, whether per gossip another
// region could serve it (room on a node, within its latency SLO and price
// limit). The leader offers such a job to the market before placing it at
// home when home's free capacity is down to its reserve.
func (m *Market) ServableElsewhere(jobs []consensus.Job) []bool {
	return m.drv.ServableElsewhere(m.items(jobs))
}

// FitElsewhere reports, for each of jobs in order, whether per gossip
// another region could serve it in the room the jobs before it were
// counted into (auction.FitElsewhere): whether jobs moved together would
// all find room. The leader checks preemption's victims so.
func (m *Market) FitElsewhere(jobs []consensus.Job) []bool {
	return m.drv.FitElsewhere(m.items(jobs))
}

// LeasesFit reports, for each of jobs, whether a lease the region holds
// would take it now (each counted against the room the ones before it
// took). Trade places such a job in the lease without an auction.
func (m *Market) LeasesFit(ctx context.Context, jobs []consensus.Job) []bool {
	return m.drv.LeasesFit(ctx, m.items(jobs))
}

// items makes auction items of home jobs, their origin defaulting to home.
func (m *Market) items(jobs []consensus.Job) []auction.Item {
	items := make([]auction.Item, len(jobs))
	for i, j := range jobs {
		spec := j.Spec
		if spec.OriginRegion == "" {
			spec.OriginRegion = m.cfg.Region
		}
		items[i] = auction.Item{ID: j.ID, Kind: auction.ItemJob, Job: spec}
	}
	return items
}

// Trading reports whether job id is being auctioned now: its outcome is not
// known yet, so the leader must not place it at home meanwhile.
func (m *Market) Trading(id string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, ok := m.inflight[id]
	return ok
}

func (m *Market) backOff(ids ...string) {
	until := m.now().Add(m.cfg.RetryBackoff)
	m.mu.Lock()
	for _, id := range ids {
		m.backoff[id] = until
	}
	m.mu.Unlock()
}

// notePending records in the ledger why pending jobs were not traded.
func (m *Market) notePending(ctx context.Context, ids []string, reason string) {
	cmds := make([]consensus.Command, len(ids))
	for i, id := range ids {
		cmds[i] = consensus.SetJobState{JobID: id, State: consensus.JobPending, Reason: truncate(reason)}
	}
	for start := 0; start < len(cmds); start += maxCommandsPerProposal {
		end := min(start+maxCommandsPerProposal, len(cmds))
		if _, err := m.cfg.Server.Propose(ctx, cmds[start:end]...); err != nil {
			if ctx.Err() == nil {
				m.log.Debug("pending reasons not recorded", "jobs", end-start, "err", err)
			}
			return
		}
	}
}

// RemoteStopped reports to a job's home region that an allocation this
// region ran for it has ended. The seller leader calls it after it
// committed the end (completed, failed, lost) of such an allocation; the
// buyer's ledger then moves the job to completed, or back to pending under
// a new epoch. It returns once the buyer acknowledged, or with an error;
// either way the market keeps reporting unacknowledged ends from the
// ledger until they are acknowledged (every DutyInterval), so a caller may
// ignore the error or pass a short ctx. Allocations the buyer cancelled
// itself are not reported.
func (m *Market) RemoteStopped(ctx context.Context, a consensus.Allocation) error {
	if !a.Sold() || a.JobRegion == m.cfg.Region {
		return fmt.Errorf("market: allocation %s is not one this region sold", a.ID)
	}
	cur, ok := m.cfg.Server.Ledger().Allocation(a.ID)
	switch {
	case !ok:
		return fmt.Errorf("market: allocation %s is not in the ledger", a.ID)
	case cur.Live():
		return fmt.Errorf("market: allocation %s is still live", a.ID)
	case cur.Reported || cur.StopReason == consensus.StopCancelled:
		return nil
	}
	if err := m.reportEnded(ctx, map[string]bool{a.ID: true}); err != nil {
		return fmt.Errorf("market: report the end of %s to %s: %w", a.ID, a.JobRegion, err)
	}
	return nil
}

// --- events ---

// onEvent runs on the Driver's goroutine: it must not block.
func (m *Market) onEvent(e auction.Event) {
	m.mu.Lock()
	job := e.ItemKind != auction.ItemLease
	switch e.Kind {
	case auction.EventConfirmed:
		m.stats.Bought++
		if job {
			delete(m.inflight, e.JobID)
		} else {
			m.leaseBuying = false
		}
	case auction.EventUnplaced, auction.EventFailed, auction.EventAbandoned:
		switch e.Kind {
		case auction.EventUnplaced:
			m.stats.Unplaced++
		case auction.EventFailed:
			m.stats.Failed++
		default:
			m.stats.Abandoned++
		}
		if job {
			delete(m.inflight, e.JobID)
			if e.Kind == auction.EventUnplaced {
				m.backoff[e.JobID] = e.At.Add(m.cfg.RetryBackoff)
			}
		} else {
			m.leaseBuying = false
		}
	case auction.EventLeaseAcquired:
		m.stats.LeasesBought++
	case auction.EventAllocationCreated:
		m.stats.Sold++
	}
	m.mu.Unlock()
	m.events.push(e)
	if m.cfg.OnEvent != nil {
		m.cfg.OnEvent(e)
	}
}

// processEvents records in the ledger what the events imply beyond the
// protocol's own commits: why a job stayed pending.
func (m *Market) processEvents(ctx context.Context) {
	for {
		evs, ok := m.events.wait(ctx)
		if !ok {
			return
		}
		reasons := make(map[string]string)
		for _, e := range evs {
			if e.Kind == auction.EventUnplaced && e.ItemKind != auction.ItemLease && e.Trade.Buyer == m.cfg.Region {
				reasons[e.JobID] = "no region took it in auction " + e.Trade.Auction + ": " + e.Reason
			}
		}
		for _, id := range sortedKeys(reasons) {
			m.notePending(ctx, []string{id}, reasons[id])
		}
	}
}

// --- duties ---

// dutyLoop reports ended allocations to their buyers and cancels orphaned
// trades, every DutyInterval and when poked.
func (m *Market) dutyLoop(ctx context.Context) {
	tick := time.NewTicker(m.cfg.DutyInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-m.dutyPoke:
		}
		if _, leading := m.leadership(); !leading {
			continue
		}
		if err := m.reportEnded(ctx, nil); err != nil && ctx.Err() == nil {
			m.log.Debug("reports of ended allocations pending", "err", err)
		}
		if err := m.cancelOrphans(ctx); err != nil && ctx.Err() == nil {
			m.log.Debug("orphaned trades not reconciled yet", "err", err)
		}
	}
}

func (m *Market) wakeDuty() { poke(m.dutyPoke) }

// leaseLoop is the lease trigger: every LeaseInterval the leader checks the
// policy against the ledger's nodes and the leases it holds, and buys one
// lease when the policy wants one and none is being bought.
func (m *Market) leaseLoop(ctx context.Context) {
	tick := time.NewTicker(m.cfg.LeaseInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if _, err := m.BuyLeaseIfNeeded(ctx); err != nil && ctx.Err() == nil && !errors.Is(err, auction.ErrNotLeader) {
			m.log.Info("lease not bought", "err", err)
		}
	}
}

// BuyLeaseIfNeeded runs the lease trigger once (the lease loop calls it
// every LeaseInterval): if the policy wants a lease now and none is being
// bought, it starts an auction for one and returns its ID.
func (m *Market) BuyLeaseIfNeeded(ctx context.Context) (string, error) {
	if m.cfg.Lease == nil {
		return "", errors.New("market: no lease policy configured")
	}
	term, leading := m.leadership()
	if !leading {
		return "", auction.ErrNotLeader
	}
	now := m.now()
	nodes, _ := m.led.Inventory(now)
	held, err := m.drv.Leases(ctx)
	if err != nil {
		return "", err
	}
	m.mu.Lock()
	if m.leaseBuying {
		m.mu.Unlock()
		return "", nil
	}
	m.seq++
	id := fmt.Sprintf("lease-%s-%d-%d", m.cfg.Region, term, m.seq)
	item, want := m.cfg.Lease.Want(m.cfg.Region, id, nodes, held, now)
	if want {
		m.leaseBuying = true
	}
	m.mu.Unlock()
	if !want {
		return "", nil
	}
	auctionID, err := m.drv.Buy(ctx, []auction.Item{item})
	if err != nil {
		m.mu.Lock()
		m.leaseBuying = false
		m.mu.Unlock()
		return "", fmt.Errorf("market: buy lease %s: %w", id, err)
	}
	m.log.Info("buying a lease", "lease", id, "auction", auctionID, "amount", item.Job.Demand, "duration", item.Job.Duration)
	return auctionID, nil
}

// --- what the agent publishes and reads ---

// Advertisement is what the node publishes in its gossip capacity record
// (gossip.Capacity.Market): on the leader, its leadership, term and the
// region's ask; on any other server, that it does not lead. Other regions'
// markets find the leader, and check that a peer speaks for it, from
// these. Publish it with every capacity update, and again whenever
// AdvertisementChanged fires.
func (m *Market) Advertisement() gossip.MarketInfo {
	term, leading := m.leadership()
	if !leading {
		return gossip.MarketInfo{}
	}
	now := m.now()
	m.mu.Lock()
	cached := m.ask
	m.mu.Unlock()
	if cached.term == term && !cached.at.IsZero() && now.Sub(cached.at) < m.cfg.Ask.TTL/2 {
		return gossip.MarketInfo{Leader: true, Term: term, Ask: slices.Clone(cached.b)}
	}
	var b []byte
	nodes, _ := m.led.Inventory(now)
	if ask, ok := m.cfg.Ask.MakeAsk(nodes, m.cfg.Pricing, now); ok {
		enc, err := auction.EncodeAsk(m.cfg.Region, term, ask, now)
		if err == nil && len(enc) <= gossip.MaxAskSize {
			b = enc
		} else if err != nil {
			m.log.Debug("ask not encoded", "err", err)
		}
	}
	m.mu.Lock()
	if m.term == term && m.leader {
		m.ask = cachedAsk{term: term, at: now, b: b}
	}
	m.mu.Unlock()
	return gossip.MarketInfo{Leader: true, Term: term, Ask: slices.Clone(b)}
}

// AdvertisementChanged fires (a buffered channel of size 1) when the
// market's leadership changes, so the node republishes its capacity record
// at once rather than at its next periodic update.
func (m *Market) AdvertisementChanged() <-chan struct{} { return m.advPoke }

// Stats returns the market's counters.
func (m *Market) Stats() Stats {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.stats
}

// Leases returns the leases the region holds as buyer (on the leader).
func (m *Market) Leases(ctx context.Context) ([]auction.LeaseRecord, error) {
	return m.drv.Leases(ctx)
}

func (m *Market) count(f func(*Stats)) {
	m.mu.Lock()
	f(&m.stats)
	m.mu.Unlock()
}

// --- small helpers ---

func poke(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// eventQueue hands events from the Driver's goroutine (which must not
// block) to the event processor, without ever dropping one.
type eventQueue struct {
	mu    sync.Mutex
	queue []auction.Event
	ready chan struct{}
}

func (q *eventQueue) init() { q.ready = make(chan struct{}, 1) }

func (q *eventQueue) push(e auction.Event) {
	q.mu.Lock()
	q.queue = append(q.queue, e)
	q.mu.Unlock()
	poke(q.ready)
}

// wait returns the queued events once there are some, or false when ctx
// ends.
func (q *eventQueue) wait(ctx context.Context) ([]auction.Event, bool) {
	for {
		q.mu.Lock()
		evs := q.queue
		q.queue = nil
		q.mu.Unlock()
		if len(evs) > 0 {
			return evs, true
		}
		select {
		case <-ctx.Done():
			return nil, false
		case <-q.ready:
		}
	}
}

// group runs goroutines until closed, then refuses new ones; close waits
// for those running.
type group struct {
	mu     sync.Mutex
	wg     sync.WaitGroup
	closed bool
}

func (g *group) open() {
	g.mu.Lock()
	g.closed = false
	g.mu.Unlock()
}

// TryGo runs f in a goroutine unless the group is closed.
func (g *group) TryGo(f func()) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return false
	}
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		f()
	}()
	return true
}

func (g *group) close() {
	g.mu.Lock()
	g.closed = true
	g.mu.Unlock()
	g.wg.Wait()
}
