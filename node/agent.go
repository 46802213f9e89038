package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	manet "github.com/multiformats/go-multiaddr/net"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meridian-mesh/meridian/consensus"
	"github.com/meridian-mesh/meridian/gossip"
	"github.com/meridian-mesh/meridian/node/api"
	"github.com/meridian-mesh/meridian/node/loop"
	"github.com/meridian-mesh/meridian/node/runner"
	"github.com/meridian-mesh/meridian/placement"
)

// Agent is one Meridian agent: its gossip membership, its region's Raft
// server (on servers), the placement and market duties of a region leader,
// the task runner (on nodes with capacity) and the HTTP API. *Agent
// implements api.Service. Its methods are safe for concurrent use.
type Agent struct {
	cfg Config
	log *slog.Logger

	gossip *gossip.Agent
	server *consensus.Server // nil on workers
	host   host.Host         // libp2p host of a server with the market on
	desk   tradingDesk       // nil without the market
	runner *runner.Runner    // nil on a node without capacity
	place  *placement.Pipeline

	httpLn   net.Listener
	httpAddr string // what other nodes dial for this node's API
	httpSrv  *http.Server
	handler  http.Handler
	peers    *http.Client // node-to-node calls over Network

	registry *prometheus.Registry
	metrics  *agentMetrics
	demand   atomic.Pointer[loop.Controller] // the leader's demand loop, for the API

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	placePoke chan struct{}
	syncPoke  chan struct{}
	capPoke   chan struct{}
	// reportPoke wakes the worker loop out of its wait for new work when
	// a task report is queued.
	reportPoke chan struct{}

	// mu guards the fields below: what the region leader knows beyond its
	// ledger (why a job is still pending, who waits for its placement) and
	// the node's task reports waiting to reach the leader.
	mu       sync.Mutex
	reasons  map[string]string          // pending job → why it is not placed yet
	waiters  map[string][]chan struct{} // job → submitters waiting for a placement pass
	tradedAt map[string]time.Time       // job → when it was last offered to the market
	offered  map[string]bool            // job → offered abroad for price once already
	reports  map[string]taskReport      // allocation → last unreported task state
	lastUsed placement.Resources        // what the node's live allocations use (workers)
	closed   bool
	left     bool
}

// tradingDesk is what the agent needs of the market (node/market).
type tradingDesk interface {
	// Run follows the region's leadership and runs the auction protocol
	// until ctx ends.
	Run(ctx context.Context) error
	// Trade offers home jobs to other regions: jobs the leader could not
	// place locally, and jobs another region serves clearly cheaper (with
	// Spec.MaxPricePerHour lowered to what home would cost).
	Trade(ctx context.Context, jobs []consensus.Job) error
	// TradeUrgent is Trade for jobs no region has room for and home could
	// not make room for: sellers within their SLO may make room by moving
	// their lower-priority work.
	TradeUrgent(ctx context.Context, jobs []consensus.Job) error
	// CheaperElsewhere reports whether another region asks clearly less,
	// by margin, for j than localPrice (US dollars per node-hour).
	CheaperElsewhere(j consensus.Job, localPrice, margin float64) bool
	// ServableElsewhere reports, for each of jobs, whether another region
	// could serve it within its latency SLO and price limit, per gossip.
	ServableElsewhere(jobs []consensus.Job) []bool
	// FitElsewhere is ServableElsewhere for jobs moved together: each is
	// counted into the room the ones before it took.
	FitElsewhere(jobs []consensus.Job) []bool
	// LeasesFit reports, for each of jobs, whether a lease the region
	// holds would take it now; Trade then places it there.
	LeasesFit(ctx context.Context, jobs []consensus.Job) []bool
	// Trading reports whether job id is being auctioned now.
	Trading(id string) bool
	// RemoteStopped tells a job's home region that its allocation here
	// ended.
	RemoteStopped(ctx context.Context, a consensus.Allocation) error
}

// Start starts an agent: it binds its network, opens the Raft server (a
// server), starts gossip and the API, and begins joining cfg.Join in the
// background. ctx bounds only the start itself.
func Start(ctx context.Context, cfg Config) (_ *Agent, err error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("node: data dir: %w", err)
	}
	if cfg.BridgeMetrics {
		if err := installMetricsBridge(); err != nil {
			return nil, fmt.Errorf("node: metrics: %w", err)
		}
	}
	a := &Agent{
		cfg:        cfg,
		log:        cfg.Logger.With("node", cfg.Name, "region", cfg.Region),
		placePoke:  make(chan struct{}, 1),
		syncPoke:   make(chan struct{}, 1),
		capPoke:    make(chan struct{}, 1),
		reportPoke: make(chan struct{}, 1),
		reasons:    map[string]string{},
		waiters:    map[string][]chan struct{}{},
		tradedAt:   map[string]time.Time{},
		offered:    map[string]bool{},
		reports:    map[string]taskReport{},
		registry:   prometheus.NewRegistry(),
	}
	var cleanup []func()
	defer func() {
		if err != nil {
			for i := len(cleanup) - 1; i >= 0; i-- {
				cleanup[i]()
			}
		}
	}()
	a.ctx, a.cancel = context.WithCancel(context.Background())
	cleanup = append(cleanup, a.cancel)
	a.metrics = newAgentMetrics(a.registry)

	a.httpLn, a.httpAddr, err = cfg.Network.listenHTTP()
	if err != nil {
		return nil, fmt.Errorf("node: http: %w", err)
	}
	cleanup = append(cleanup, func() { a.httpLn.Close() })
	a.peers = &http.Client{Transport: &hopTransport{base: &http.Transport{
		DialContext:         cfg.Network.dial,
		MaxIdleConnsPerHost: 4,
		IdleConnTimeout:     30 * time.Second,
	}}}
	cleanup = append(cleanup, a.peers.CloseIdleConnections)

	role := gossip.RoleWorker
	var raftAddr, p2pAddr, peerID string
	if cfg.Server {
		role = gossip.RoleServer
		layer, err := cfg.Network.raftLayer()
		if err != nil {
			return nil, fmt.Errorf("node: raft: %w", err)
		}
		a.server, err = consensus.Open(consensus.Config{
			NodeID:            cfg.Name,
			Region:            cfg.Region,
			DataDir:           filepath.Join(cfg.DataDir, "raft"),
			StreamLayer:       layer,
			BootstrapExpect:   cfg.BootstrapExpect,
			MaxVoters:         cfg.MaxVoters,
			DeadServerTimeout: cfg.Tuning.DeadServerTimeout,
			Logger:            cfg.Logger, // it names its region and server itself
			RaftLogLevel:      cfg.RaftLogLevel,
			NoSync:            cfg.NoSync,
		})
		if err != nil {
			return nil, fmt.Errorf("node: %w", err)
		}
		cleanup = append(cleanup, func() { a.server.Close() })
		raftAddr = a.server.Addr()
		if cfg.Market {
			a.host, err = cfg.Network.p2pHost(cfg.DataDir)
			if err != nil {
				return nil, fmt.Errorf("node: libp2p: %w", err)
			}
			cleanup = append(cleanup, func() { a.host.Close() })
			peerID = a.host.ID().String()
			p2pAddr = advertisedP2PAddr(a.host)
			if adv, err := cfg.Network.p2pAdvertise(a.host); err != nil {
				return nil, fmt.Errorf("node: %w", err)
			} else if adv != "" {
				p2pAddr = adv
			}
		}
	}

	gcfg := gossip.Config{
		Name:              cfg.Name,
		Region:            cfg.Region,
		Role:              role,
		HTTPAddr:          a.httpAddr,
		RaftAddr:          raftAddr,
		P2PAddr:           p2pAddr,
		P2PPeerID:         peerID,
		Version:           cfg.Version,
		SecretKey:         cfg.GossipKey,
		DisableEncryption: cfg.GossipKey == nil,
		Logger:            cfg.Logger, // it names its node and region itself
		Rand:              rand.New(rand.NewPCG(uint64(cfg.Seed), 0x6d6572696469616e)),
	}
	if err := cfg.Network.configureGossip(&gcfg); err != nil {
		return nil, fmt.Errorf("node: %w", err)
	}
	a.gossip, err = gossip.Start(gcfg)
	if err != nil {
		return nil, fmt.Errorf("node: %w", err)
	}
	cleanup = append(cleanup, func() { a.gossip.Shutdown() })
	a.place, err = placement.NewPipeline(placement.Config{RTT: regionRTT{a.gossip, cfg.Region}})
	if err != nil {
		return nil, fmt.Errorf("node: placement: %w", err)
	}

	if !cfg.Resources.IsZero() {
		a.runner, err = runner.New(runner.Config{
			DataDir:   filepath.Join(cfg.DataDir, "tasks"),
			OnEvent:   a.onTaskEvent,
			KillGrace: cfg.Tuning.KillGrace,
			Logger:    a.log,
		})
		if err != nil {
			return nil, fmt.Errorf("node: %w", err)
		}
		cleanup = append(cleanup, func() { a.runner.Close() })
		registerTaskGauge(a.registry, func() int { return len(a.runner.Running()) })
	}
	if a.server != nil && cfg.Market {
		a.desk, err = newDesk(a)
		if err != nil {
			return nil, fmt.Errorf("node: market: %w", err)
		}
	}

	a.handler = a.newHandler()
	a.httpSrv = &http.Server{Handler: a.handler, ReadHeaderTimeout: 10 * time.Second}
	a.goFunc(func() {
		if err := a.httpSrv.Serve(a.httpLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.log.Error("http server stopped", "err", err)
		}
	})
	a.goFunc(a.gossipLoop)
	a.goFunc(a.joinLoop)
	a.goFunc(a.capacityLoop)
	if a.server != nil {
		a.goFunc(a.leadershipLoop)
		if a.desk != nil {
			a.goFunc(func() {
				if err := a.desk.Run(a.ctx); err != nil && a.ctx.Err() == nil {
					a.log.Error("market stopped", "err", err)
				}
			})
		}
	}
	if a.runner != nil {
		a.goFunc(a.workerLoop)
	}
	a.log.Info("agent started", "role", role, "http", a.httpAddr, "raft", raftAddr, "p2p", p2pAddr)
	return a, nil
}

func (a *Agent) goFunc(f func()) {
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		f()
	}()
}

func poke(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// Name returns the node's name.
func (a *Agent) Name() string { return a.cfg.Name }

// Region returns the node's region.
func (a *Agent) Region() string { return a.cfg.Region }

// IsServer reports whether the node is a Raft server of its region.
func (a *Agent) IsServer() bool { return a.server != nil }

// IsLeader reports whether the node is its region's Raft leader.
func (a *Agent) IsLeader() bool { return a.server != nil && a.server.IsLeader() }

// Ledger returns the local replica of the region's ledger (an immutable
// snapshot, possibly stale on a follower), or nil on a worker.
func (a *Agent) Ledger() *consensus.Ledger {
	if a.server == nil {
		return nil
	}
	return a.server.Ledger()
}

// Gossip returns the node's gossip agent.
func (a *Agent) Gossip() *gossip.Agent { return a.gossip }

// Handler returns the node's HTTP API, for serving on another listener too
// (the operator-facing socket of a simulation).
func (a *Agent) Handler() http.Handler { return a.handler }

// HTTPAddr returns the address other nodes dial for this node's API.
func (a *Agent) HTTPAddr() string { return a.httpAddr }

// Registry returns the agent's Prometheus registry (its own metrics; the
// bridged memberlist and Raft metrics are served beside it on /metrics).
func (a *Agent) Registry() *prometheus.Registry { return a.registry }

// Leave leaves the mesh gracefully: the node stops taking work, tells its
// region's leader so its allocations are re-placed, leaves Raft (a server),
// announces its departure in gossip and shuts down.
func (a *Agent) Leave(ctx context.Context) error {
	a.mu.Lock()
	if a.closed || a.left {
		a.mu.Unlock()
		return nil
	}
	a.left = true
	a.mu.Unlock()
	var errs []error
	if a.runner != nil {
		// Tell the leader first, while this node can still reach it, so the
		// work is re-placed before the node disappears.
		if err := a.handOver(ctx); err != nil {
			errs = append(errs, fmt.Errorf("hand over allocations: %w", err))
		}
	}
	if a.server != nil {
		if err := a.server.Leave(ctx); err != nil {
			errs = append(errs, fmt.Errorf("leave raft: %w", err))
		}
	}
	// As serf does, wait a few seconds at most for the leave to spread:
	// when the whole mesh stops at once there is nobody left to hear it,
	// and the departure is then noticed as a failure instead.
	timeout := 5 * time.Second
	if d, ok := ctx.Deadline(); ok {
		timeout = min(timeout, max(time.Until(d), time.Second))
	}
	if err := a.gossip.Leave(timeout); err != nil {
		a.log.Warn("leave not confirmed by the mesh; peers will see this node fail instead", "err", err)
	}
	if err := a.Close(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Close stops the agent at once, without telling anyone: to its peers it
// looks like a crash. It waits for every goroutine the agent started.
func (a *Agent) Close() error {
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return nil
	}
	a.closed = true
	for id, ws := range a.waiters {
		for _, w := range ws {
			close(w)
		}
		delete(a.waiters, id)
	}
	a.mu.Unlock()
	a.cancel()
	var errs []error
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	if err := a.httpSrv.Shutdown(shutdownCtx); err != nil {
		a.httpSrv.Close()
	}
	cancel()
	a.peers.CloseIdleConnections()
	if a.runner != nil {
		if err := a.runner.Close(); err != nil {
			errs = append(errs, fmt.Errorf("runner: %w", err))
		}
	}
	if err := a.gossip.Shutdown(); err != nil && !errors.Is(err, gossip.ErrShutdown) {
		errs = append(errs, fmt.Errorf("gossip: %w", err))
	}
	if a.server != nil {
		if err := a.server.Close(); err != nil {
			errs = append(errs, fmt.Errorf("consensus: %w", err))
		}
	}
	if a.host != nil {
		if err := a.host.Close(); err != nil {
			errs = append(errs, fmt.Errorf("libp2p: %w", err))
		}
	}
	a.wg.Wait()
	a.log.Info("agent stopped")
	return errors.Join(errs...)
}

// joinLoop joins the configured peers, retrying with backoff until one
// answers: nodes of a cluster start in any order.
func (a *Agent) joinLoop() {
	if len(a.cfg.Join) == 0 {
		return
	}
	for backoff := time.Second; ; backoff = min(2*backoff, 30*time.Second) {
		n, err := a.gossip.Join(a.cfg.Join)
		if err == nil {
			a.log.Info("joined the mesh", "contacted", n)
			return
		}
		a.log.Debug("join failed; retrying", "err", err, "in", backoff)
		if !sleepCtx(a.ctx, backoff) {
			return
		}
	}
}

// gossipLoop feeds gossip's view to the Raft server (which servers of the
// region exist and live) and wakes the leader's node sync.
func (a *Agent) gossipLoop() {
	events, stop := a.gossip.Subscribe(256)
	defer stop()
	if a.server != nil {
		for _, m := range a.gossip.Members() {
			a.observe(m)
		}
	}
	for {
		select {
		case <-a.ctx.Done():
			return
		case ev, ok := <-events:
			if !ok {
				return
			}
			if a.server != nil && ev.Type != gossip.EventRecordUpdate {
				a.observe(ev.Member)
			}
			if ev.Member.Region == a.cfg.Region && a.needsSync(ev) {
				poke(a.syncPoke)
			}
		}
	}
}

// needsSync reports whether a gossip event of the region may change what
// syncNodes writes to the ledger. Workers republish their free capacity
// every few seconds, which syncNodes does not record; only membership, a
// leaving node, or a capacity, price or GPU type the ledger does not hold
// yet are worth a pass before the periodic one.
func (a *Agent) needsSync(ev gossip.Event) bool {
	if ev.Type != gossip.EventRecordUpdate || ev.Record == nil || a.server == nil {
		return true
	}
	r := ev.Record
	if r.Leaving {
		return true
	}
	n, ok := a.server.Ledger().Node(r.Node)
	if !ok {
		return !r.Total.IsZero()
	}
	return n.Total != r.Total || n.PricePerHour != r.PricePerHour || n.GPUType != r.GPUType ||
		n.State != consensus.NodeReady
}

func (a *Agent) observe(m gossip.Member) {
	if m.Region != a.cfg.Region || m.Role != gossip.RoleServer || m.RaftAddr == "" {
		return
	}
	if m.State == gossip.StateLeft {
		a.server.ServerLeft(m.Name)
		return
	}
	a.server.ObserveServer(consensus.ServerInfo{
		ID: m.Name, Region: m.Region, RaftAddr: m.RaftAddr,
		Alive: m.State == gossip.StateAlive || m.State == gossip.StateSuspect,
	})
}

// leadershipLoop runs the region leader's duties while this server leads.
func (a *Agent) leadershipLoop() {
	ch, unsubscribe := a.server.SubscribeLeadership()
	defer unsubscribe()
	var stop context.CancelFunc
	var done chan struct{}
	end := func() {
		if stop != nil {
			stop()
			<-done
			stop = nil
		}
	}
	defer end()
	if a.server.IsLeader() {
		ctx, cancel := context.WithCancel(a.ctx)
		stop, done = cancel, make(chan struct{})
		go func() { defer close(done); a.leaderDuties(ctx) }()
	}
	for {
		select {
		case <-a.ctx.Done():
			return
		case leader, ok := <-ch:
			if !ok {
				return
			}
			end()
			if leader {
				ctx, cancel := context.WithCancel(a.ctx)
				stop, done = cancel, make(chan struct{})
				go func() { defer close(done); a.leaderDuties(ctx) }()
			}
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// errNotServing is returned by calls on a closed agent.
var errNotServing = fmt.Errorf("node is shutting down: %w", api.ErrUnavailable)

// advertisedP2PAddr picks the libp2p address other regions dial: a host
// bound to every interface lists one per interface, loopback first.
func advertisedP2PAddr(h host.Host) string {
	addrs := h.Addrs()
	for _, m := range addrs {
		if ip, err := manet.ToIP(m); err == nil && !ip.IsLoopback() {
			return m.String()
		}
	}
	if len(addrs) > 0 {
		return addrs[0].String()
	}
	return ""
}
