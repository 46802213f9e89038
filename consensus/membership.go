package consensus

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/hashicorp/raft"
)

// Membership follows what gossip sees. consensus does not import gossip:
// the node agent calls ObserveServer and ServerLeft as its membership
// events arrive, and the server turns them into Raft configuration changes:
//
//   - Bootstrap: a server with no Raft state waits until BootstrapExpect
//     servers of the region (itself included) are alive, asks each of them
//     whether it already belongs to a group, and if none does, bootstraps
//     the group with the first BootstrapExpect of them by ID as voters.
//     Every server computes the same set, so all bootstrap the same
//     configuration (as Consul's bootstrap_expect does).
//   - The leader reconciles every ReconcileInterval and on every event: it
//     removes servers that left, adds new servers as non-voters, replaces a
//     voter that gossip has reported failed for DeadServerTimeout by a
//     healthy non-voter, removes non-voters failed that long, and promotes
//     healthy non-voters while there are fewer than MaxVoters voters
//     (keeping the number of voters odd). A non-voter is healthy when it
//     has been alive for ServerStabilizationTime and its log trails the
//     leader's by at most MaxNonvoterLag entries.

// ServerInfo is what gossip reports about a server of the region.
type ServerInfo struct {
	// ID is the server's Raft ID (its node name).
	ID string
	// Region is the server's region; servers of other regions are
	// ignored. Empty means this server's region.
	Region string
	// RaftAddr is the address its Raft and RPC listen on.
	RaftAddr string
	// Alive is false when gossip reports the server failed.
	Alive bool
}

type member struct {
	info  ServerInfo
	since time.Time // when Alive last changed, by Config.Clock
	left  bool
}

// ObserveServer records what gossip reports about a server of the region
// (call it on join, update and failure events; calling it for this server
// itself is harmless). It never blocks.
func (s *Server) ObserveServer(info ServerInfo) {
	if info.Region != "" && info.Region != s.cfg.Region {
		return
	}
	if checkID("id", info.ID) != nil || info.RaftAddr == "" {
		s.logger.Warn("ignoring server observation without ID or address", "id", info.ID, "addr", info.RaftAddr)
		return
	}
	info.Region = s.cfg.Region
	now := s.cfg.Clock()
	s.memMu.Lock()
	m, ok := s.members[info.ID]
	switch {
	case !ok:
		s.members[info.ID] = &member{info: info, since: now}
	default:
		if m.info.Alive != info.Alive {
			m.since = now
		}
		m.info = info
		if info.Alive {
			m.left = false
		}
	}
	s.memMu.Unlock()
	s.poke()
}

// ServerLeft records that a server left the region for good (a graceful
// leave seen in gossip); the leader removes it from the group.
func (s *Server) ServerLeft(id string) {
	now := s.cfg.Clock()
	s.memMu.Lock()
	m, ok := s.members[id]
	if !ok {
		m = &member{info: ServerInfo{ID: id, Region: s.cfg.Region}}
		s.members[id] = m
	}
	m.left, m.info.Alive, m.since = true, false, now
	s.memMu.Unlock()
	s.poke()
}

func (s *Server) poke() {
	for _, ch := range []chan struct{}{s.bootstrapPoke, s.reconcilePoke} {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

func (s *Server) memberSnapshot() map[string]member {
	s.memMu.Lock()
	defer s.memMu.Unlock()
	out := make(map[string]member, len(s.members))
	for id, m := range s.members {
		out[id] = *m
	}
	return out
}

// --- bootstrap ---

func (s *Server) runBootstrap(hasState bool) {
	defer s.wg.Done()
	if hasState || s.cfg.BootstrapExpect == 0 {
		return
	}
	retry := time.NewTicker(s.cfg.ReconcileInterval)
	defer retry.Stop()
	for {
		if s.hasRaftState() || s.tryBootstrap() {
			return
		}
		select {
		case <-s.ctx.Done():
			return
		case <-s.bootstrapPoke:
		case <-retry.C:
		}
	}
}

// tryBootstrap bootstraps the group if the time has come; it reports
// whether this server is done with bootstrapping.
func (s *Server) tryBootstrap() bool {
	expect := s.cfg.BootstrapExpect
	servers := []raft.Server{{ID: raft.ServerID(s.cfg.NodeID), Address: raft.ServerAddress(s.addr), Suffrage: raft.Voter}}
	var peers []ServerInfo
	for id, m := range s.memberSnapshot() {
		if id == s.cfg.NodeID || !m.info.Alive || m.left {
			continue
		}
		peers = append(peers, m.info)
		servers = append(servers, raft.Server{ID: raft.ServerID(id), Address: raft.ServerAddress(m.info.RaftAddr), Suffrage: raft.Voter})
	}
	if len(servers) < expect {
		return false
	}
	slices.SortFunc(servers, func(a, b raft.Server) int {
		switch {
		case a.ID < b.ID:
			return -1
		case a.ID > b.ID:
			return 1
		}
		return 0
	})
	servers = servers[:expect]
	if !slices.ContainsFunc(servers, func(srv raft.Server) bool { return string(srv.ID) == s.cfg.NodeID }) {
		s.logger.Info("not among the bootstrap servers; waiting to be added by the leader")
		return false
	}
	// If any peer already belongs to a group, this server must join it
	// rather than found another.
	for _, p := range peers {
		ctx, cancel := context.WithTimeout(s.ctx, 2*time.Second)
		st, err := s.statusOf(ctx, p.RaftAddr)
		cancel()
		if err != nil {
			s.logger.Debug("bootstrap: peer status unavailable; will retry", "peer", p.ID, "err", err)
			return false
		}
		if st.Bootstrapped {
			s.logger.Info("bootstrap: a group exists; waiting to be added", "peer", p.ID, "leader", st.LeaderID)
			return false
		}
	}
	err := s.raft.BootstrapCluster(raft.Configuration{Servers: servers}).Error()
	switch {
	case err == nil:
		s.logger.Info("bootstrapped the region's group", "servers", serverIDs(servers))
	case errors.Is(err, raft.ErrCantBootstrap):
		s.logger.Debug("bootstrap: raft state exists")
	default:
		s.logger.Warn("bootstrap failed; will retry", "err", err)
		return false
	}
	return true
}

func serverIDs(servers []raft.Server) []string {
	ids := make([]string, len(servers))
	for i, srv := range servers {
		ids[i] = string(srv.ID)
	}
	return ids
}

// --- reconcile (leader) ---

const membershipTimeout = 10 * time.Second

func (s *Server) configuration() (raft.Configuration, error) {
	f := s.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return raft.Configuration{}, err
	}
	return f.Configuration(), nil
}

func (s *Server) reconcile(ctx context.Context) {
	if ctx.Err() != nil || !s.IsLeader() {
		return
	}
	conf, err := s.configuration()
	if err != nil {
		s.logger.Warn("reconcile: read configuration", "err", err)
		return
	}
	members := s.memberSnapshot()
	now := s.cfg.Clock()
	self := raft.ServerID(s.cfg.NodeID)
	inConf := make(map[raft.ServerID]raft.Server, len(conf.Servers))
	for _, srv := range conf.Servers {
		inConf[srv.ID] = srv
	}

	// Servers that left go first.
	for _, srv := range conf.Servers {
		if m, ok := members[string(srv.ID)]; ok && m.left && srv.ID != self {
			s.membershipChange("remove departed server", srv.ID, s.raft.RemoveServer(srv.ID, 0, membershipTimeout))
			delete(inConf, srv.ID)
		}
	}
	// New servers join as non-voters; moved servers get their new address.
	ids := make([]string, 0, len(members))
	for id := range members {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		m := members[id]
		sid := raft.ServerID(id)
		if !m.info.Alive || m.left || sid == self {
			continue
		}
		srv, ok := inConf[sid]
		switch {
		case !ok:
			s.membershipChange("add non-voter", sid, s.raft.AddNonvoter(sid, raft.ServerAddress(m.info.RaftAddr), 0, membershipTimeout))
		case string(srv.Address) != m.info.RaftAddr && srv.Suffrage == raft.Voter:
			s.membershipChange("update voter address", sid, s.raft.AddVoter(sid, raft.ServerAddress(m.info.RaftAddr), 0, membershipTimeout))
		case string(srv.Address) != m.info.RaftAddr:
			s.membershipChange("update non-voter address", sid, s.raft.AddNonvoter(sid, raft.ServerAddress(m.info.RaftAddr), 0, membershipTimeout))
		}
	}

	if conf, err = s.configuration(); err != nil {
		return
	}
	dead := func(id raft.ServerID) bool {
		m, ok := members[string(id)]
		return ok && !m.left && !m.info.Alive && now.Sub(m.since) >= s.cfg.DeadServerTimeout
	}
	healthy := s.healthyNonvoters(ctx, conf, members, now)
	voters := 0
	for _, srv := range conf.Servers {
		if srv.Suffrage == raft.Voter {
			voters++
		}
	}
	for _, srv := range conf.Servers {
		if srv.ID == self || !dead(srv.ID) {
			continue
		}
		if srv.Suffrage != raft.Voter {
			s.membershipChange("remove failed non-voter", srv.ID, s.raft.RemoveServer(srv.ID, 0, membershipTimeout))
			continue
		}
		if len(healthy) == 0 {
			s.logger.Warn("voter failed and no healthy non-voter can replace it", "server", string(srv.ID),
				"failed_for", now.Sub(members[string(srv.ID)].since))
			continue
		}
		// Promote first, then remove: the group never has fewer voters
		// than before the failure.
		h := healthy[0]
		healthy = healthy[1:]
		if s.membershipChange("promote non-voter to replace failed voter", h.ID, s.raft.AddVoter(h.ID, h.Address, 0, membershipTimeout)) {
			s.membershipChange("remove failed voter", srv.ID, s.raft.RemoveServer(srv.ID, 0, membershipTimeout))
		}
	}
	if conf, err = s.configuration(); err != nil {
		return
	}
	voters = 0
	for _, srv := range conf.Servers {
		if srv.Suffrage == raft.Voter {
			voters++
		}
	}
	target := min(s.cfg.MaxVoters, voters+len(healthy))
	if target%2 == 0 {
		target--
	}
	for ; voters < target && len(healthy) > 0; voters++ {
		h := healthy[0]
		healthy = healthy[1:]
		s.membershipChange("promote non-voter", h.ID, s.raft.AddVoter(h.ID, h.Address, 0, membershipTimeout))
	}
}

// healthyNonvoters returns the non-voters that may become voters, by ID.
func (s *Server) healthyNonvoters(ctx context.Context, conf raft.Configuration, members map[string]member, now time.Time) []raft.Server {
	var out []raft.Server
	last := s.raft.LastIndex()
	for _, srv := range conf.Servers {
		if srv.Suffrage == raft.Voter {
			continue
		}
		m, ok := members[string(srv.ID)]
		if !ok || !m.info.Alive || m.left || now.Sub(m.since) < s.cfg.ServerStabilizationTime {
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		st, err := s.statusOf(cctx, string(srv.Address))
		cancel()
		if err != nil {
			s.logger.Debug("non-voter status unavailable", "server", string(srv.ID), "err", err)
			continue
		}
		if st.LastIndex+s.cfg.MaxNonvoterLag < last {
			s.logger.Debug("non-voter still catching up", "server", string(srv.ID), "its_index", st.LastIndex, "leader_index", last)
			continue
		}
		out = append(out, srv)
	}
	slices.SortFunc(out, func(a, b raft.Server) int {
		switch {
		case a.ID < b.ID:
			return -1
		case a.ID > b.ID:
			return 1
		}
		return 0
	})
	return out
}

func (s *Server) membershipChange(what string, id raft.ServerID, f raft.IndexFuture) bool {
	if err := f.Error(); err != nil {
		s.logger.Warn("membership change failed", "change", what, "server", string(id), "err", err)
		return false
	}
	s.logger.Info("membership changed", "change", what, "server", string(id), "index", f.Index())
	return true
}

// removeServerAsLeader removes a server at its own request (Leave).
func (s *Server) removeServerAsLeader(id string) error {
	if !s.IsLeader() {
		return fmt.Errorf("%w: %s is not the leader", ErrNotLeader, s.cfg.NodeID)
	}
	if id == s.cfg.NodeID {
		return invalid("server_id", "the leader cannot remove itself; transfer leadership first")
	}
	// Remember the departure, or the next reconcile would add the server
	// back while gossip still reports it alive.
	s.memMu.Lock()
	m, ok := s.members[id]
	if !ok {
		m = &member{info: ServerInfo{ID: id, Region: s.cfg.Region}}
		s.members[id] = m
	}
	m.left, m.info.Alive, m.since = true, false, s.cfg.Clock()
	s.memMu.Unlock()
	if err := s.raft.RemoveServer(raft.ServerID(id), 0, membershipTimeout).Error(); err != nil {
		if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) {
			return fmt.Errorf("%w: %w", ErrNotLeader, err)
		}
		return fmt.Errorf("remove server %q: %w", id, err)
	}
	s.logger.Info("membership changed", "change", "remove leaving server", "server", id)
	return nil
}

// Leave removes this server from the group gracefully: a leader first
// hands leadership to another voter, then the leader removes this server.
// Call Close afterwards. Leave of the last server of a group does nothing.
func (s *Server) Leave(ctx context.Context) error {
	conf, err := s.configuration()
	if err != nil {
		return fmt.Errorf("consensus: leave: %w", err)
	}
	others := 0
	in := false
	for _, srv := range conf.Servers {
		if string(srv.ID) == s.cfg.NodeID {
			in = true
		} else if srv.Suffrage == raft.Voter {
			others++
		}
	}
	if !in {
		return nil
	}
	if others == 0 {
		s.logger.Info("leave: last voter of the group; nothing to hand over")
		return nil
	}
	if s.IsLeader() {
		if err := s.raft.LeadershipTransfer().Error(); err != nil {
			s.logger.Warn("leave: leadership transfer failed", "err", err)
		}
	}
	w := s.newLeaderWait()
	w.until = time.Now().Add(24 * time.Hour) // bounded by ctx
	for {
		var err error
		if addr, id := s.raft.LeaderWithID(); addr != "" && string(id) != s.cfg.NodeID {
			var resp rpcResponse
			resp, err = s.rpc.call(ctx, string(addr), s.request(ctx, opRemoveServer, []byte(s.cfg.NodeID)))
			if err == nil {
				if err = resp.err(); err == nil {
					s.logger.Info("left the group")
					return nil
				}
			}
		} else if s.IsLeader() {
			// The transfer did not happen: try again.
			if terr := s.raft.LeadershipTransfer().Error(); terr != nil {
				err = terr
			}
		}
		if ctx.Err() != nil {
			return fmt.Errorf("consensus: leave: %w (last error: %v)", ctx.Err(), err)
		}
		if err := w.wait(ctx, err); err != nil {
			return fmt.Errorf("consensus: leave: %w", err)
		}
	}
}
