package consensus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"github.com/vmihailenco/msgpack/v5"
	"go.etcd.io/bbolt"
)

// Server is one server of a region's Raft group. Its state machine is the
// region's ledger. All methods are safe for concurrent use.
type Server struct {
	cfg    Config
	logger *slog.Logger
	addr   string

	fsm   *FSM
	raft  *raft.Raft
	trans *raft.NetworkTransport
	mux   *mux
	rpc   *rpcClient
	store *raftboltdb.BoltStore
	prop  *proposer
	fwd   *forwarder

	ctx      context.Context
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	raftDone chan struct{}
	// dutiesDone is closed when, Close having begun, the leader's duties
	// have stopped for good.
	dutiesDone chan struct{}
	closing    atomic.Bool
	closeMu    sync.Mutex
	closed     bool

	observer     *raft.Observer
	observations chan raft.Observation
	leaderMu     sync.Mutex
	leaderChange chan struct{} // closed and replaced on every leader change
	readyReads   atomic.Bool   // the leader has applied every entry of earlier terms

	subsMu sync.Mutex
	subs   map[chan bool]struct{}

	memMu         sync.Mutex
	members       map[string]*member
	bootstrapPoke chan struct{}
	reconcilePoke chan struct{}

	forwarded atomic.Uint64
}

// Open starts a server: it opens (or creates) the bolt log and snapshot
// store under cfg.DataDir, restores the ledger from the latest snapshot,
// and joins Raft on cfg.StreamLayer. A server with existing state rejoins
// its group and catches up; a new one bootstraps once BootstrapExpect
// servers have been observed, or waits to be added by the leader.
func Open(cfg Config) (_ *Server, err error) {
	cfg, err = cfg.withDefaults()
	if err != nil {
		if cfg.StreamLayer != nil {
			cfg.StreamLayer.Close()
		}
		return nil, err
	}
	var cleanup []func()
	defer func() {
		if err != nil {
			for i := len(cleanup) - 1; i >= 0; i-- {
				cleanup[i]()
			}
		}
	}()
	cleanup = append(cleanup, func() { cfg.StreamLayer.Close() })
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("consensus: data dir: %w", err)
	}
	logger := cfg.Logger.With("component", "consensus", "region", cfg.Region, "server", cfg.NodeID)
	level, _ := parseRaftLogLevel(cfg.RaftLogLevel)
	hlog := newHCLogger(cfg.Logger.With("region", cfg.Region, "server", cfg.NodeID), "raft", level)

	dbPath := filepath.Join(cfg.DataDir, "raft.db")
	store, err := raftboltdb.New(raftboltdb.Options{
		Path:        dbPath,
		BoltOptions: boltOptions(),
		NoSync:      cfg.NoSync,
	})
	if err != nil {
		return nil, fmt.Errorf("consensus: open %s (is another server using the data dir?): %w", dbPath, err)
	}
	cleanup = append(cleanup, func() { store.Close() })
	logs, err := raft.NewLogCache(512, store)
	if err != nil {
		return nil, fmt.Errorf("consensus: log cache: %w", err)
	}
	snaps, err := raft.NewFileSnapshotStoreWithLogger(cfg.DataDir, cfg.SnapshotRetain, hlog.Named("snapshot"))
	if err != nil {
		return nil, fmt.Errorf("consensus: snapshot store in %s: %w", cfg.DataDir, err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	cleanup = append(cleanup, cancel)
	s := &Server{
		cfg:           cfg,
		logger:        logger,
		addr:          cfg.StreamLayer.Addr().String(),
		fsm:           NewFSM(cfg.Region),
		store:         store,
		ctx:           ctx,
		cancel:        cancel,
		raftDone:      make(chan struct{}),
		dutiesDone:    make(chan struct{}),
		leaderChange:  make(chan struct{}),
		subs:          make(map[chan bool]struct{}),
		members:       make(map[string]*member),
		bootstrapPoke: make(chan struct{}, 1),
		reconcilePoke: make(chan struct{}, 1),
	}
	s.mux = newMux(cfg.StreamLayer, logger, s.serveRPC)
	cleanup = append(cleanup, func() { s.mux.close() })
	s.rpc = newRPCClient(s.mux)
	s.trans = raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream:  s.mux.raftLayer(),
		MaxPool: 3,
		Timeout: 10 * time.Second,
		Logger:  hlog.Named("transport"),
	})
	cleanup = append(cleanup, func() { s.trans.Close() })

	hasState, err := raft.HasExistingState(logs, store, snaps)
	if err != nil {
		return nil, fmt.Errorf("consensus: read raft state: %w", err)
	}
	notify := make(chan bool, 16)
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.NodeID)
	rc.Logger = hlog
	rc.NotifyCh = notify
	rc.SnapshotThreshold = cfg.SnapshotThreshold
	rc.TrailingLogs = cfg.TrailingLogs
	rc.SnapshotInterval = cfg.SnapshotInterval
	rc.HeartbeatTimeout = cfg.HeartbeatTimeout
	rc.ElectionTimeout = cfg.ElectionTimeout
	rc.LeaderLeaseTimeout = cfg.LeaderLeaseTimeout
	rc.CommitTimeout = cfg.CommitTimeout
	rc.BatchApplyCh = true
	// A removed server stays up so that it can be added again; it cannot
	// start elections while it is not a voter.
	rc.ShutdownOnRemove = false
	if err := raft.ValidateConfig(rc); err != nil {
		return nil, fmt.Errorf("consensus: raft config: %w", err)
	}
	r, err := raft.NewRaft(rc, s.fsm, logs, store, snaps, s.trans)
	if err != nil {
		return nil, fmt.Errorf("consensus: start raft: %w", err)
	}
	s.raft = r
	s.prop = newProposer(r, cfg.Clock, cfg.MaxEntryCommands, cfg.MaxEntryBytes, cfg.MaxInflightEntries)
	s.fwd = newForwarder(s, cfg.MaxEntryCommands, cfg.MaxEntryBytes)

	s.observations = make(chan raft.Observation, 16)
	s.observer = raft.NewObserver(s.observations, false, func(o *raft.Observation) bool {
		_, ok := o.Data.(raft.LeaderObservation)
		return ok
	})
	r.RegisterObserver(s.observer)

	s.wg.Add(3)
	go s.watchLeader()
	go s.monitorLeadership(notify)
	go s.runBootstrap(hasState)
	logger.Info("server started", "addr", s.addr, "data_dir", cfg.DataDir, "existing_state", hasState,
		"ledger_index", s.fsm.AppliedIndex())
	return s, nil
}

// Close shuts the server down: Raft stops, pending proposals fail with
// ErrShutdown (or ErrOutcomeUnknown if already handed to Raft), the
// network layer and the bolt store are closed. It does not leave the group:
// call Leave first for that. Close is idempotent.
func (s *Server) Close() error {
	s.closeMu.Lock()
	defer s.closeMu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	s.closing.Store(true)
	// Everything of this server's that waits on a Raft future stops first,
	// while Raft still runs: a future that Raft holds when it shuts down can
	// stay unresolved for ever (one still queued for its main loop or its
	// state machine; hashicorp/raft#498), and its waiter with it. While
	// Raft runs, each resolves: applied, or failed when this server is not
	// or stops being the leader (at the latest one leader lease after it
	// loses its quorum).
	s.cancel()
	<-s.dutiesDone
	s.prop.close()
	s.fwd.close()
	var errs []error
	if err := s.raft.Shutdown().Error(); err != nil {
		errs = append(errs, fmt.Errorf("raft shutdown: %w", err))
	}
	close(s.raftDone)
	s.wg.Wait()
	s.raft.DeregisterObserver(s.observer)
	if err := s.trans.Close(); err != nil {
		errs = append(errs, fmt.Errorf("raft transport: %w", err))
	}
	s.rpc.close()
	if err := s.mux.close(); err != nil && !errors.Is(err, net.ErrClosed) {
		errs = append(errs, fmt.Errorf("stream layer: %w", err))
	}
	if err := s.store.Close(); err != nil {
		errs = append(errs, fmt.Errorf("bolt store: %w", err))
	}
	s.logger.Info("server stopped")
	return errors.Join(errs...)
}

// ID returns the server's Raft ID.
func (s *Server) ID() string { return s.cfg.NodeID }

// Region returns the server's region.
func (s *Server) Region() string { return s.cfg.Region }

// Addr returns the address other servers dial to reach this one.
func (s *Server) Addr() string { return s.addr }

// --- writes ---

// Propose commits commands to the region's ledger and returns one Result
// per command, in order. Commands in one call are applied in one log entry,
// one after another; each succeeds or fails on its own (Result.Err), the
// same way on every replica.
//
// Concurrent calls are packed into shared log entries. On a follower the
// commands are forwarded to the leader. The error is non-nil only when the
// commands could not be committed: ErrNoLeader (no leader within
// HoldTimeout), ErrTooLarge, ErrShutdown, a context error, or
// ErrOutcomeUnknown when they may or may not have been committed.
func (s *Server) Propose(ctx context.Context, cmds ...Command) ([]Result, error) {
	if len(cmds) == 0 {
		return nil, nil
	}
	envs, err := encodeCommands(cmds)
	if err != nil {
		return nil, err
	}
	return s.proposeEnvelopes(ctx, envs)
}

func (s *Server) checkSize(envs []Envelope) error {
	if n := len(envs); n > s.cfg.MaxEntryCommands {
		return fmt.Errorf("%w: %d commands, at most %d per proposal", ErrTooLarge, n, s.cfg.MaxEntryCommands)
	}
	if n := envelopesSize(envs); n > s.cfg.MaxEntryBytes {
		return fmt.Errorf("%w: %d bytes, at most %d per proposal", ErrTooLarge, n, s.cfg.MaxEntryBytes)
	}
	return nil
}

func (s *Server) proposeEnvelopes(ctx context.Context, envs []Envelope) ([]Result, error) {
	if err := s.checkSize(envs); err != nil {
		return nil, err
	}
	var lastErr error
	w := s.newLeaderWait()
	for {
		if s.closing.Load() {
			return nil, ErrShutdown
		}
		if s.raft.State() == raft.Leader {
			res, err := s.prop.propose(ctx, envs)
			if !errors.Is(err, errNotLeaderRetry) {
				return res, err
			}
			lastErr = err
		} else if addr, id := s.raft.LeaderWithID(); addr != "" && string(id) != s.cfg.NodeID {
			s.forwarded.Add(1)
			res, err := s.fwd.forward(ctx, string(addr), envs)
			if err == nil || !retryable(err) {
				return res, err
			}
			lastErr = err
		}
		if err := w.wait(ctx, lastErr); err != nil {
			return nil, err
		}
	}
}

// retryable reports whether a forwarded call certainly did not reach the
// leader's log, so that it may be sent again.
func retryable(err error) bool {
	return errors.Is(err, errUnsent) || errors.Is(err, ErrNotLeader) || errors.Is(err, errNotLeaderRetry)
}

// forwardRPC sends envelopes to the leader at addr as one proposal, in one
// RPC, and returns their results.
func (s *Server) forwardRPC(ctx context.Context, addr string, envs []Envelope) ([]Result, error) {
	payload, err := encodeEntry(envs)
	if err != nil {
		return nil, fmt.Errorf("encode forwarded proposal: %w", err)
	}
	resp, err := s.rpc.call(ctx, addr, s.request(ctx, opPropose, payload))
	if err != nil {
		if errors.Is(err, errUnsent) {
			return nil, err
		}
		return nil, fmt.Errorf("%w: forward to leader %s: %w", ErrOutcomeUnknown, addr, err)
	}
	if err := resp.err(); err != nil {
		if errors.Is(err, ErrShutdown) && !errors.Is(err, ErrOutcomeUnknown) {
			// The leader is closing and did not take the proposal.
			return nil, fmt.Errorf("leader %s: %w: %w", addr, errNotLeaderRetry, err)
		}
		return nil, err
	}
	results, err := decodeResults(resp.Payload)
	if err != nil {
		return nil, fmt.Errorf("%w: leader %s: %w", ErrOutcomeUnknown, addr, err)
	}
	if len(results) != len(envs) {
		return nil, fmt.Errorf("%w: leader %s returned %d results for %d commands", ErrOutcomeUnknown, addr, len(results), len(envs))
	}
	return results, nil
}

func (s *Server) request(ctx context.Context, op uint8, payload []byte) rpcRequest {
	var timeout time.Duration
	if d, ok := ctx.Deadline(); ok {
		timeout = time.Until(d)
	}
	return rpcRequest{Op: op, Region: s.cfg.Region, From: s.cfg.NodeID, Timeout: timeout, Payload: payload}
}

// leaderWait waits for a leader to appear, within HoldTimeout.
type leaderWait struct {
	s       *Server
	until   time.Time
	backoff time.Duration
}

func (s *Server) newLeaderWait() *leaderWait {
	return &leaderWait{s: s, until: time.Now().Add(s.cfg.HoldTimeout), backoff: 5 * time.Millisecond}
}

func (w *leaderWait) wait(ctx context.Context, lastErr error) error {
	left := time.Until(w.until)
	if left <= 0 {
		if lastErr != nil {
			return fmt.Errorf("%w within %v (last attempt: %v)", ErrNoLeader, w.s.cfg.HoldTimeout, lastErr)
		}
		return fmt.Errorf("%w within %v", ErrNoLeader, w.s.cfg.HoldTimeout)
	}
	t := time.NewTimer(min(w.backoff, left))
	defer t.Stop()
	w.backoff = min(2*w.backoff, 250*time.Millisecond)
	select {
	case <-w.s.leaderChanged():
	case <-t.C:
	case <-ctx.Done():
		return ctx.Err()
	case <-w.s.ctx.Done():
		return ErrShutdown
	}
	return nil
}

// --- reads ---

// Ledger returns the latest ledger this server has applied. It may be
// behind the leader's (a stale read): use it where freshness within a
// heartbeat or so is enough.
func (s *Server) Ledger() *Ledger { return s.fsm.Ledger() }

// WaitLedger blocks until this server applies a command entry after index,
// or ctx ends, and returns the latest ledger: a blocking stale read, for
// callers that wait for the ledger to change.
func (s *Server) WaitLedger(ctx context.Context, index uint64) (*Ledger, error) {
	return s.fsm.WaitIndex(ctx, index+1)
}

// ConsistentLedger returns a ledger that reflects every command
// acknowledged anywhere before the call (a linearizable read). The leader
// confirms it still leads a quorum (VerifyLeader) and reports its applied
// index; this server waits until it has applied that index itself. On a
// follower the index comes from the leader over the forwarding RPC, so the
// ledger is read locally.
func (s *Server) ConsistentLedger(ctx context.Context) (*Ledger, error) {
	var lastErr error
	w := s.newLeaderWait()
	for {
		if s.closing.Load() {
			return nil, ErrShutdown
		}
		var (
			idx uint64
			err error
		)
		retry := false
		if s.raft.State() == raft.Leader {
			idx, err = s.readIndex()
			retry = errors.Is(err, ErrNotLeader)
		} else if addr, id := s.raft.LeaderWithID(); addr != "" && string(id) != s.cfg.NodeID {
			var resp rpcResponse
			resp, err = s.rpc.call(ctx, string(addr), s.request(ctx, opReadIndex, nil))
			if err == nil {
				idx, err = resp.Index, resp.err()
				retry = errors.Is(err, ErrNotLeader) || errors.Is(err, ErrNoLeader)
			} else {
				// A read has no effect: any failed call may be repeated.
				retry = true
			}
		} else {
			err, retry = ErrNoLeader, true
		}
		if err == nil {
			return s.fsm.WaitIndex(ctx, idx)
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if !retry {
			return nil, err
		}
		lastErr = err
		if err := w.wait(ctx, lastErr); err != nil {
			return nil, err
		}
	}
}

// readIndex is the leader's half of a consistent read: the index every
// acknowledged command is applied at, confirmed after checking that this
// server still leads.
func (s *Server) readIndex() (uint64, error) {
	if !s.readyReads.Load() {
		return 0, fmt.Errorf("%w: the new leader has not yet applied the entries of earlier terms", ErrNotLeader)
	}
	// Acknowledged commands were applied here before their callers heard
	// of it, so the index taken now covers them all; VerifyLeader then
	// proves no other leader could have acknowledged anything since.
	idx := s.fsm.AppliedIndex()
	if err := s.raft.VerifyLeader().Error(); err != nil {
		if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) {
			return 0, fmt.Errorf("%w: %w", ErrNotLeader, err)
		}
		return 0, fmt.Errorf("verify leadership: %w", err)
	}
	return idx, nil
}

// --- leadership ---

// Leader returns the current leader's ID and address as this server knows
// them (empty when there is none) and the current term.
func (s *Server) Leader() (id, addr string, term uint64) {
	a, i := s.raft.LeaderWithID()
	return string(i), string(a), s.raft.CurrentTerm()
}

// IsLeader reports whether this server is the leader.
func (s *Server) IsLeader() bool { return s.raft.State() == raft.Leader }

// SubscribeLeadership returns a channel that receives true when this server
// becomes the leader and false when it stops being it, starting with the
// current state. The channel keeps only the latest value, so a slow reader
// may miss a flip but never reads a stale state last. cancel releases it.
func (s *Server) SubscribeLeadership() (<-chan bool, func()) {
	ch := make(chan bool, 1)
	s.subsMu.Lock()
	s.subs[ch] = struct{}{}
	ch <- s.IsLeader()
	s.subsMu.Unlock()
	return ch, func() {
		s.subsMu.Lock()
		delete(s.subs, ch)
		s.subsMu.Unlock()
	}
}

func (s *Server) broadcastLeadership(leader bool) {
	s.subsMu.Lock()
	defer s.subsMu.Unlock()
	for ch := range s.subs {
		select {
		case <-ch:
		default:
		}
		ch <- leader
	}
}

func (s *Server) leaderChanged() <-chan struct{} {
	s.leaderMu.Lock()
	defer s.leaderMu.Unlock()
	return s.leaderChange
}

// watchLeader turns Raft's leader observations into a broadcast.
func (s *Server) watchLeader() {
	defer s.wg.Done()
	for {
		select {
		case o := <-s.observations:
			lo, _ := o.Data.(raft.LeaderObservation)
			s.logger.Debug("leader changed", "leader", string(lo.LeaderID), "addr", string(lo.LeaderAddr))
			s.leaderMu.Lock()
			close(s.leaderChange)
			s.leaderChange = make(chan struct{})
			s.leaderMu.Unlock()
		case <-s.raftDone:
			return
		}
	}
}

// monitorLeadership runs the leader's duties while this server leads.
func (s *Server) monitorLeadership(notify <-chan bool) {
	defer s.wg.Done()
	var (
		stop     context.CancelFunc
		leaderWG sync.WaitGroup
	)
	stopLeading := func() {
		if stop != nil {
			stop()
			leaderWG.Wait()
			stop = nil
		}
	}
	defer stopLeading()
	ctxDone := s.ctx.Done()
	for {
		select {
		case leader := <-notify:
			s.broadcastLeadership(leader)
			if !leader {
				s.logger.Info("lost leadership")
				stopLeading()
				continue
			}
			if stop != nil || s.ctx.Err() != nil {
				continue
			}
			s.logger.Info("became leader", "term", s.raft.CurrentTerm())
			ctx, cancel := context.WithCancel(s.ctx)
			stop = cancel
			leaderWG.Add(1)
			go func() {
				defer leaderWG.Done()
				s.leaderLoop(ctx)
			}()
		case <-ctxDone:
			// Close: the duties end while Raft still runs (see Close).
			// Raft's notifications are still taken until it stops, since
			// it blocks on them.
			stopLeading()
			close(s.dutiesDone)
			ctxDone = nil
		case <-s.raftDone:
			return
		}
	}
}

func (s *Server) leaderLoop(ctx context.Context) {
	// A new leader may not yet have applied what earlier leaders
	// committed; a barrier does, after which consistent reads are served.
	for backoff := 10 * time.Millisecond; ; backoff = min(2*backoff, time.Second) {
		err := s.raft.Barrier(0).Error()
		if err == nil {
			break
		}
		s.logger.Warn("leader barrier failed", "err", err)
		if !sleepCtx(ctx, backoff) {
			return
		}
	}
	s.readyReads.Store(true)
	defer s.readyReads.Store(false)

	reconcile := time.NewTicker(s.cfg.ReconcileInterval)
	defer reconcile.Stop()
	expire := time.NewTicker(s.cfg.ExpireInterval)
	defer expire.Stop()
	prune := time.NewTicker(s.cfg.PruneInterval)
	defer prune.Stop()
	s.reconcile(ctx)
	s.expireDue(ctx)
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.reconcilePoke:
			s.reconcile(ctx)
		case <-reconcile.C:
			s.reconcile(ctx)
		case <-expire.C:
			s.expireDue(ctx)
		case <-prune.C:
			s.pruneHistory(ctx)
		}
	}
}

// expireDue proposes Expire when an escrow or allocation lease is past
// its expiry by the leader's clock.
func (s *Server) expireDue(ctx context.Context) {
	t, ok := s.fsm.Ledger().NextExpiry()
	if !ok || t.After(s.cfg.Clock()) {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.HoldTimeout)
	defer cancel()
	res, err := s.Propose(ctx, Expire{})
	if err == nil && res[0].Err != nil {
		err = res[0].Err
	}
	if err != nil {
		if ctx.Err() == nil {
			s.logger.Warn("propose Expire failed", "err", err)
		}
		return
	}
	s.logger.Debug("expired escrows and leases", "ids", res[0].Expired)
}

func (s *Server) pruneHistory(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.HoldTimeout)
	defer cancel()
	res, err := s.Propose(ctx, Prune{Before: s.cfg.Clock().Add(-s.cfg.PruneAfter)})
	if err == nil && res[0].Err != nil {
		err = res[0].Err
	}
	if err != nil {
		if ctx.Err() == nil {
			s.logger.Warn("propose Prune failed", "err", err)
		}
		return
	}
	if res[0].Pruned > 0 {
		s.logger.Info("pruned ledger history", "records", res[0].Pruned)
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

// --- operations ---

// Snapshot makes Raft take a snapshot of the ledger now and compact its
// log (beyond TrailingLogs).
func (s *Server) Snapshot() error {
	if err := s.raft.Snapshot().Error(); err != nil {
		return fmt.Errorf("consensus: snapshot: %w", err)
	}
	return nil
}

// RaftServer is a member of the group's Raft configuration.
type RaftServer struct {
	ID      string
	Address string
	Voter   bool
	Leader  bool
}

// Servers returns the group's current Raft configuration.
func (s *Server) Servers() ([]RaftServer, error) {
	f := s.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, fmt.Errorf("consensus: raft configuration: %w", err)
	}
	_, leader := s.raft.LeaderWithID()
	var out []RaftServer
	for _, srv := range f.Configuration().Servers {
		out = append(out, RaftServer{
			ID: string(srv.ID), Address: string(srv.Address),
			Voter: srv.Suffrage == raft.Voter, Leader: srv.ID == leader,
		})
	}
	return out, nil
}

// Stats describes the server for operators and metrics.
type Stats struct {
	NodeID, Region, Addr string
	// State is Raft's state: Follower, Candidate, Leader or Shutdown.
	State                string
	Term                 uint64
	LeaderID, LeaderAddr string
	LastLogIndex         uint64
	CommitIndex          uint64
	AppliedIndex         uint64
	LastSnapshotIndex    uint64
	// LedgerIndex is the index of the last command entry in the ledger.
	LedgerIndex uint64
	LedgerNow   time.Time
	Voters      int
	Nonvoters   int
	// ProposedEntries and ProposedCommands count what this server's
	// proposal queue handed to Raft as leader: their ratio is the mean
	// batch size.
	ProposedEntries  uint64
	ProposedCommands uint64
	// ForwardedProposals counts proposals sent to a leader as follower,
	// and ForwardRPCs the RPCs that carried them (concurrent proposals
	// share one).
	ForwardedProposals uint64
	ForwardRPCs        uint64
	Ledger             Counts
}

// Stats returns the server's statistics. It counts the ledger's tables,
// which walks the allocations.
func (s *Server) Stats() Stats {
	id, addr, term := s.Leader()
	l := s.fsm.Ledger()
	st := Stats{
		NodeID: s.cfg.NodeID, Region: s.cfg.Region, Addr: s.addr,
		State: s.raft.State().String(), Term: term, LeaderID: id, LeaderAddr: addr,
		LastLogIndex: s.raft.LastIndex(), CommitIndex: s.raft.CommitIndex(), AppliedIndex: s.raft.AppliedIndex(),
		LedgerIndex: l.Index(), LedgerNow: l.Now(),
		ProposedEntries: s.prop.entries.Load(), ProposedCommands: s.prop.commands.Load(),
		ForwardedProposals: s.forwarded.Load(), ForwardRPCs: s.fwd.rpcs.Load(),
		Ledger: l.Counts(),
	}
	raw := s.raft.Stats()
	st.LastSnapshotIndex, _ = strconv.ParseUint(raw["last_snapshot_index"], 10, 64)
	if f := s.raft.GetConfiguration(); f.Error() == nil {
		for _, srv := range f.Configuration().Servers {
			if srv.Suffrage == raft.Voter {
				st.Voters++
			} else {
				st.Nonvoters++
			}
		}
	}
	return st
}

// ServerStatus is what a server reports about itself to the others (over
// the RPC), used for bootstrap and for judging a non-voter's health.
type ServerStatus struct {
	ID           string `msgpack:"id"`
	Region       string `msgpack:"region"`
	Addr         string `msgpack:"addr"`
	State        string `msgpack:"state"`
	Term         uint64 `msgpack:"term"`
	LastIndex    uint64 `msgpack:"last_index"`
	LedgerIndex  uint64 `msgpack:"ledger_index"`
	Bootstrapped bool   `msgpack:"bootstrapped"`
	LeaderID     string `msgpack:"leader"`
}

func (s *Server) status() ServerStatus {
	_, leader := s.raft.LeaderWithID()
	return ServerStatus{
		ID: s.cfg.NodeID, Region: s.cfg.Region, Addr: s.addr, State: s.raft.State().String(),
		Term: s.raft.CurrentTerm(), LastIndex: s.raft.LastIndex(), LedgerIndex: s.fsm.AppliedIndex(),
		Bootstrapped: s.hasRaftState(), LeaderID: string(leader),
	}
}

func (s *Server) hasRaftState() bool {
	return s.raft.LastIndex() > 0 || s.raft.CurrentTerm() > 0
}

// --- the RPC server ---

// serveRPC answers requests on one connection until it closes.
func (s *Server) serveRPC(c net.Conn) {
	for {
		frame, err := readFrame(c)
		if err != nil {
			return
		}
		var resp rpcResponse
		req, err := decodeRequest(frame)
		if err != nil {
			resp = errResponse(cmdErr(CodeMalformed, "", "%v", err))
		} else {
			resp = s.handleRPC(req)
		}
		body, err := encodeResponse(resp)
		if err != nil {
			s.logger.Error("encode RPC response", "err", err)
			return
		}
		c.SetWriteDeadline(time.Now().Add(10 * time.Second))
		if err := writeFrame(c, body); err != nil {
			return
		}
		c.SetWriteDeadline(time.Time{})
	}
}

func (s *Server) handleRPC(req rpcRequest) rpcResponse {
	if req.Region != s.cfg.Region {
		return errResponse(invalid("region", "request for region %q reached server %q of region %q", req.Region, s.cfg.NodeID, s.cfg.Region))
	}
	timeout := req.Timeout
	if timeout <= 0 || timeout > 5*time.Minute {
		timeout = 30 * time.Second
	}
	ctx, cancel := context.WithTimeout(s.ctx, timeout)
	defer cancel()
	switch req.Op {
	case opPropose:
		if s.raft.State() != raft.Leader {
			return errResponse(fmt.Errorf("%w: %s is not the leader", ErrNotLeader, s.cfg.NodeID))
		}
		envs, err := decodeEntry(req.Payload)
		if err != nil {
			return errResponse(cmdErr(CodeMalformed, "", "forwarded proposal: %v", err))
		}
		if err := s.checkSize(envs); err != nil {
			return errResponse(err)
		}
		results, err := s.prop.propose(ctx, envs)
		if errors.Is(err, errNotLeaderRetry) {
			return errResponse(fmt.Errorf("%w: %s lost leadership", ErrNotLeader, s.cfg.NodeID))
		}
		if err != nil {
			return errResponse(err)
		}
		payload, err := encodeResults(results)
		if err != nil {
			return errResponse(fmt.Errorf("%w: encode results: %w", ErrOutcomeUnknown, err))
		}
		return rpcResponse{Index: results[0].Index, Payload: payload}
	case opReadIndex:
		if s.raft.State() != raft.Leader {
			return errResponse(fmt.Errorf("%w: %s is not the leader", ErrNotLeader, s.cfg.NodeID))
		}
		idx, err := s.readIndex()
		if err != nil {
			return errResponse(err)
		}
		return rpcResponse{Index: idx}
	case opStatus:
		payload, err := msgpack.Marshal(s.status())
		if err != nil {
			return errResponse(err)
		}
		return rpcResponse{Payload: payload}
	case opRemoveServer:
		id := string(req.Payload)
		if err := checkID("server_id", id); err != nil {
			return errResponse(err)
		}
		if err := s.removeServerAsLeader(id); err != nil {
			return errResponse(err)
		}
		return rpcResponse{}
	}
	return errResponse(cmdErr(CodeUnsupported, "", "RPC op %d", req.Op))
}

// statusOf asks another server for its status.
func (s *Server) statusOf(ctx context.Context, addr string) (ServerStatus, error) {
	var st ServerStatus
	resp, err := s.rpc.call(ctx, addr, s.request(ctx, opStatus, nil))
	if err != nil {
		return st, err
	}
	if err := resp.err(); err != nil {
		return st, err
	}
	if err := unmarshal(resp.Payload, &st); err != nil {
		return st, fmt.Errorf("status from %s: %w", addr, err)
	}
	return st, nil
}

// boltOptions tunes raft.db: the freelist is not written at every commit
// (bolt rebuilds it by scanning the file when it is opened), as Consul's
// raft_logstore.boltdb.no_freelist_sync does, since once snapshots have
// truncated the log the freelist is large and would be rewritten on every
// append; the initial mmap is large (address space, not memory), so that
// the file growing does not remap it under a writer; and the open timeout
// turns a data dir locked by another process into an error, not a hang.
func boltOptions() *bbolt.Options {
	return &bbolt.Options{
		Timeout:         2 * time.Second,
		NoFreelistSync:  true,
		FreelistType:    bbolt.FreelistMapType,
		InitialMmapSize: 256 << 20,
	}
}
