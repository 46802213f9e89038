package gossip

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/serf/coordinate"

	"github.com/meridian-mesh/meridian/placement"
)

// ErrShutdown is returned by calls on an agent that was shut down.
var ErrShutdown = errors.New("gossip: agent is shut down")

// ErrLeft is returned by Join after the agent left the mesh.
var ErrLeft = errors.New("gossip: agent has left the mesh")

// coordinateRepublishDrift is how far our coordinate must move from the one
// in our published record before the record is re-issued with it. The new
// version travels by push/pull only, so coordinates cost no broadcasts.
const coordinateRepublishDrift = 2 * time.Millisecond

// reconnectBatch bounds the failed members tried per maintenance round.
const reconnectBatch = 3

// Agent is one node's membership in the mesh and its view of the others.
// Its methods are safe for concurrent use.
type Agent struct {
	cfg       Config
	log       *slog.Logger
	mlConf    *memberlist.Config
	ml        *memberlist.Memberlist
	view      *view
	queue     *recordQueue
	coord     *coordinate.Client
	transport *meteredTransport
	meta      []byte

	wake    chan struct{} // nudges the maintenance loop; buffered, size 1
	refresh chan string   // members whose records to fetch (Refresh); buffered
	stop    chan struct{} // closed by Shutdown
	done    chan struct{} // closed when the maintenance loop returns

	lifeMu   sync.Mutex // guards left and shutdown; held through Leave
	left     bool
	shutdown bool
}

// Start validates cfg, starts memberlist and the agent's maintenance loop.
// The agent is alone until Join is called. On error nothing keeps running;
// a Transport passed in cfg is then still the caller's to shut down.
func Start(cfg Config) (*Agent, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("gossip config: %w", err)
	}
	meta, err := EncodeMeta(Meta{
		Region:    cfg.Region,
		Role:      cfg.Role,
		HTTPAddr:  cfg.HTTPAddr,
		RaftAddr:  cfg.RaftAddr,
		P2PAddr:   cfg.P2PAddr,
		P2PPeerID: cfg.P2PPeerID,
		Version:   cfg.Version,
	})
	if err != nil {
		return nil, fmt.Errorf("gossip config: %w", err)
	}
	coordClient, err := coordinate.NewClient(coordinate.DefaultConfig())
	if err != nil {
		return nil, fmt.Errorf("gossip: coordinate client: %w", err)
	}

	conf := baseMemberlistConfig(cfg.Profile)
	conf.Name = cfg.Name
	conf.BindAddr, conf.BindPort = cfg.BindAddr, cfg.BindPort
	conf.AdvertiseAddr, conf.AdvertisePort = cfg.AdvertiseAddr, cfg.AdvertisePort
	if ip := net.ParseIP(cfg.BindAddr); cfg.Transport == nil && conf.AdvertiseAddr == "" && ip != nil && ip.IsUnspecified() {
		// Bound to every interface: advertise the address the node's
		// other channels advertise too, not memberlist's own pick, which
		// may be an IPv6 address that IPv4-bound peers cannot reach.
		conf.AdvertiseAddr = AdvertiseIP().String()
	}
	conf.Logger = newMemberlistLogger(cfg.Logger)
	conf.EnableCompression = !cfg.DisableCompression
	keyring, err := agentKeyring(&cfg)
	if err != nil {
		return nil, err
	}
	conf.Keyring = keyring

	a := &Agent{
		cfg:     cfg,
		log:     cfg.Logger.With("node", cfg.Name),
		mlConf:  conf,
		coord:   coordClient,
		meta:    meta,
		wake:    make(chan struct{}, 1),
		refresh: make(chan string, refreshQueue),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
	}
	recon := newReconnector(cfg.MaxReconnect, cfg.ReconnectInterval, cfg.ReconnectBackoffMax, cfg.ReconnectTimeout, cfg.Rand)
	a.view = newView(cfg.Name, cfg.Clock.Now, a.log, recon, cfg.TombstoneTimeout,
		func(n int) time.Duration { return suspicionMinTimeout(conf, n) + conf.ProbeInterval })
	a.queue = newRecordQueue(conf.RetransmitMult, a.view.aliveCount)

	inner := cfg.Transport
	var own *memberlist.NetTransport
	if inner == nil {
		own, err = memberlist.NewNetTransport(&memberlist.NetTransportConfig{
			BindAddrs: []string{cfg.BindAddr},
			BindPort:  cfg.BindPort,
			Logger:    conf.Logger,
		})
		if err != nil {
			return nil, fmt.Errorf("gossip: listen on %s:%d: %w", cfg.BindAddr, cfg.BindPort, err)
		}
		if cfg.BindPort == 0 {
			conf.BindPort = own.GetAutoBindPort()
			if conf.AdvertisePort == 0 {
				conf.AdvertisePort = conf.BindPort
			}
		}
		inner = own
	}
	if conf.AdvertisePort == 0 {
		conf.AdvertisePort = conf.BindPort
	}
	a.transport = &meteredTransport{NodeAwareTransport: inner}
	conf.Transport = a.transport
	conf.Delegate = delegate{a}
	conf.Events = eventDelegate{a}
	conf.Ping = pingDelegate{a}
	conf.Alive = aliveDelegate{a}
	conf.Conflict = conflictDelegate{a}
	// memberlist asks this only after a direct UDP probe of the node went
	// unanswered, just before it probes indirectly and over TCP: that is
	// the moment this agent starts to suspect the node. The answer keeps
	// the profile's TCP fallback.
	tcpPingsOff := conf.DisableTcpPings
	conf.DisableTcpPingsForNode = func(name string) bool {
		a.view.probeFailed(name)
		return tcpPingsOff
	}

	ml, err := memberlist.Create(conf)
	if err != nil {
		if own != nil {
			_ = own.Shutdown()
		}
		return nil, fmt.Errorf("gossip: start memberlist: %w", err)
	}
	a.ml = ml
	go a.maintain()
	a.log.Info("gossip: agent started", "region", cfg.Region, "role", cfg.Role, "profile", cfg.Profile,
		"addr", ml.LocalNode().Address(), "encrypted", keyring != nil)
	return a, nil
}

// agentKeyring returns the keyring the agent encrypts with: the configured
// one, one holding SecretKey, or one with a generated key; nil when
// encryption is disabled.
func agentKeyring(cfg *Config) (*memberlist.Keyring, error) {
	switch {
	case cfg.DisableEncryption:
		return nil, nil
	case cfg.Keyring != nil:
		if len(cfg.SecretKey) > 0 {
			if err := cfg.Keyring.AddKey(cfg.SecretKey); err != nil {
				return nil, fmt.Errorf("gossip config: secret_key: %w", err)
			}
			if err := cfg.Keyring.UseKey(cfg.SecretKey); err != nil {
				return nil, fmt.Errorf("gossip config: secret_key: %w", err)
			}
		}
		return cfg.Keyring, nil
	}
	key := cfg.SecretKey
	if len(key) == 0 {
		var err error
		if key, err = GenerateKey(); err != nil {
			return nil, err
		}
		cfg.Logger.Warn("gossip: no encryption key configured; generated one, which other agents need to join (Agent.Keyring)", "node", cfg.Name)
	}
	kr, err := memberlist.NewKeyring(nil, key)
	if err != nil {
		return nil, fmt.Errorf("gossip config: secret_key: %w", err)
	}
	return kr, nil
}

// Join contacts the given gossip addresses ("host:port", or
// "name/host:port") and merges state with each. It returns how many
// answered; it fails only if none did.
func (a *Agent) Join(addrs []string) (int, error) {
	a.lifeMu.Lock()
	switch {
	case a.shutdown:
		a.lifeMu.Unlock()
		return 0, ErrShutdown
	case a.left:
		a.lifeMu.Unlock()
		return 0, ErrLeft
	}
	a.lifeMu.Unlock()
	n, err := a.ml.Join(addrs)
	if err != nil {
		return n, fmt.Errorf("gossip: join %v: %w", addrs, err)
	}
	return n, nil
}

// Leave tells the mesh this node is leaving, waiting up to timeout for the
// message to go out, and stops reconnecting to failed members. The agent
// keeps answering until Shutdown.
func (a *Agent) Leave(timeout time.Duration) error {
	a.lifeMu.Lock()
	defer a.lifeMu.Unlock()
	if a.shutdown {
		return ErrShutdown
	}
	if a.left {
		return nil
	}
	a.left = true
	// Tell the mesh this is a departure, not a failure, before memberlist
	// announces that the node is gone; the record goes out with the same
	// gossip rounds and, for anyone who misses it, by push/pull.
	if e, err := a.view.setLeaving(a.cfg.Region, a.coord.GetCoordinate()); err != nil {
		a.log.Error("gossip: cannot issue the leaving record", "err", err)
	} else {
		a.queueRecord(e)
	}
	a.view.selfLeft()
	if err := a.ml.Leave(timeout); err != nil {
		return fmt.Errorf("gossip: leave: %w", err)
	}
	return nil
}

// Shutdown stops the agent without telling the mesh (peers will mark it
// failed; call Leave first to leave gracefully). It waits for a reconnect
// attempt in flight, which may take up to the profile's TCP timeout, and
// closes every subscription. Safe to call more than once.
func (a *Agent) Shutdown() error {
	a.lifeMu.Lock()
	if a.shutdown {
		a.lifeMu.Unlock()
		return nil
	}
	a.shutdown = true
	a.lifeMu.Unlock()
	close(a.stop)
	err := a.ml.Shutdown()
	<-a.done
	a.view.closeSubscribers()
	if err != nil {
		return fmt.Errorf("gossip: shutdown: %w", err)
	}
	return nil
}

func (a *Agent) stopped() bool {
	select {
	case <-a.stop:
		return true
	default:
		return false
	}
}

func (a *Agent) wakeMaintenance() {
	select {
	case a.wake <- struct{}{}:
	default:
	}
}

// maintenanceInterval is how often the loop expires state and checks the
// coordinate, when no reconnect is due sooner.
func (a *Agent) maintenanceInterval() time.Duration {
	return 2 * a.mlConf.ProbeInterval
}

// maintain is the agent's one goroutine: it retries failed members, expires
// old state and re-issues our record when needed.
func (a *Agent) maintain() {
	defer close(a.done)
	timer := time.NewTimer(a.maintenanceInterval())
	defer timer.Stop()
	refreshed := make(map[string]time.Time) // member → when last fetched (Refresh)
	for {
		select {
		case <-a.stop:
			return
		case name := <-a.refresh:
			a.refreshFrom(name, refreshed)
			continue
		case <-a.wake:
		case <-timer.C:
		}
		for _, name := range a.view.expire() {
			a.coord.ForgetNode(name)
		}
		if !a.view.hasLeft() {
			a.reconnect()
			a.repairRecords()
			a.republish()
		}

		wait := a.maintenanceInterval()
		if next, ok := a.view.nextReconnect(); ok {
			wait = min(wait, max(time.Until(next), time.Millisecond))
		}
		timer.Reset(wait)
	}
}

// reconnect tries to join the failed members that are due.
func (a *Agent) reconnect() {
	for _, f := range a.view.reconnectDue(reconnectBatch) {
		if a.stopped() {
			return
		}
		if _, err := a.ml.Join([]string{f.name + "/" + f.addr}); err != nil {
			a.log.Debug("gossip: reconnect failed", "member", f.name, "addr", f.addr, "attempt", f.attempts+1, "err", err)
			continue
		}
		a.view.reconnectSucceeded()
		a.log.Info("gossip: reconnected to a failed member", "member", f.name, "addr", f.addr, "attempt", f.attempts+1)
	}
}

// refreshQueue bounds the Refresh requests waiting for the maintenance
// loop; more are dropped (a caller asks again when it still needs one).
const refreshQueue = 16

// RefreshInterval is the least time between two fetches from one member
// by Refresh.
const RefreshInterval = 5 * time.Second

// Refresh asks for a member's records to be fetched at once by a direct
// push/pull with it, instead of waiting for a broadcast that may have
// missed this node or for a periodic push/pull (about a minute on the WAN
// profile). A caller uses it when a record it relies on looks stale: a peer
// speaks as its region's leader, and its record here does not say so. It
// returns at once; the fetch runs on the agent's maintenance loop, at most
// once per RefreshInterval per member, and the record arrives as any
// other. It reports whether the request was taken.
func (a *Agent) Refresh(name string) bool {
	if name == a.cfg.Name || a.stopped() {
		return false
	}
	select {
	case a.refresh <- name:
		return true
	default:
		return false
	}
}

// refreshFrom fetches name's records by push/pull, unless it did so less
// than RefreshInterval ago. last is the maintenance loop's own.
func (a *Agent) refreshFrom(name string, last map[string]time.Time) {
	if a.view.hasLeft() || !refreshDue(last, name, a.cfg.Clock.Now()) {
		return
	}
	m, ok := a.view.member(name)
	if !ok || !counts(m.State) {
		return
	}
	if _, err := a.ml.Join([]string{name + "/" + m.Address()}); err != nil {
		a.log.Debug("gossip: refreshing a member's records failed", "member", name, "err", err)
		return
	}
	a.log.Debug("gossip: refreshed a member's records by push/pull", "member", name)
}

// refreshDue reports whether name may be fetched from at now, and if so
// notes it in last (forgetting fetches older than RefreshInterval).
func refreshDue(last map[string]time.Time, name string, now time.Time) bool {
	for n, at := range last {
		if now.Sub(at) >= RefreshInterval {
			delete(last, n)
		}
	}
	if _, recent := last[name]; recent {
		return false
	}
	last[name] = now
	return true
}

// repairRecords fetches, by a direct push/pull, the record of one alive
// member whose record is still missing (see view.recordRepair).
func (a *Agent) repairRecords() {
	grace := 2 * a.maintenanceInterval()
	name, addr, ok := a.view.recordRepair(grace, 6*grace, time.Hour)
	if !ok || a.stopped() {
		return
	}
	if _, err := a.ml.Join([]string{name + "/" + addr}); err != nil {
		a.log.Debug("gossip: fetching a missing record failed", "member", name, "err", err)
		return
	}
	a.log.Debug("gossip: fetched missing records by push/pull", "member", name)
}

// republish re-issues our record when a peer holds a newer version of it
// (we restarted with a clock behind our last version; it goes out as a
// broadcast), or when our coordinate moved away from the published one (it
// goes out by push/pull only). The view re-issues it with the capacity it
// holds at that moment: a copy read before a concurrent SetCapacity would
// revert that capacity, and the node, which compares with what it last set,
// would not set it again.
func (a *Agent) republish() {
	cur := a.coord.GetCoordinate()
	broadcast := false
	e, changed, err := a.view.reissueLocal(a.cfg.Region, cur, func(rec Record, behind bool) bool {
		if behind {
			broadcast = true
			return true
		}
		return rec.Coordinate == nil || !rec.Coordinate.IsCompatibleWith(cur) || rec.Coordinate.DistanceTo(cur) > coordinateRepublishDrift
	})
	if err != nil {
		a.log.Warn("gossip: could not re-issue the local record", "err", err)
		return
	}
	if changed && broadcast {
		a.queueRecord(e)
	}
}

// SetCapacity publishes the node's capacity: it issues a new version of the
// local record and queues it for gossip. A capacity equal to the current one
// issues nothing. Invalid capacity is refused with an error naming the field
// (wrapping placement.ErrInvalid).
func (a *Agent) SetCapacity(c Capacity) (Record, error) {
	if err := c.Validate(); err != nil {
		return Record{}, fmt.Errorf("gossip: set capacity: %w", err)
	}
	if a.stopped() {
		return Record{}, ErrShutdown
	}
	e, err := a.setCapacity(c, false, true)
	if err != nil {
		return Record{}, err
	}
	return cloneRecord(e.rec), nil
}

func (a *Agent) setCapacity(c Capacity, force, broadcast bool) (entry, error) {
	e, changed, err := a.view.setLocal(a.cfg.Region, c, a.coord.GetCoordinate(), force)
	if err != nil {
		return entry{}, fmt.Errorf("gossip: set capacity: %w", err)
	}
	if changed && broadcast {
		a.queueRecord(e)
	}
	return e, nil
}

// queueRecord queues a record broadcast. Records are encoded within
// MaxRecordSize, so the message always fits MaxMessageSize.
func (a *Agent) queueRecord(e entry) {
	msg, err := recordMessage(e.raw)
	if err != nil {
		a.log.Error("gossip: record does not fit a broadcast", "member", e.rec.Node, "err", err)
		return
	}
	a.queue.queue(e.rec.Node, msg)
}

// LocalMember returns this node as a member.
func (a *Agent) LocalMember() Member {
	m, _ := a.view.member(a.cfg.Name)
	return cloneMember(m)
}

// Members returns every member the agent knows, sorted by name: alive and
// suspect ones, failed ones until ReconnectTimeout and departed ones until
// TombstoneTimeout.
func (a *Agent) Members() []Member {
	members := a.view.memberList("")
	for i := range members {
		members[i] = cloneMember(members[i])
	}
	return members
}

// Records returns every capacity record, sorted by node name, including
// those of failed members (check Members for state).
func (a *Agent) Records() []Record {
	return a.view.recordList("")
}

// RegionMembers returns the members of one region, as Members would.
func (a *Agent) RegionMembers(region string) []Member {
	members := a.view.memberList(region)
	for i := range members {
		members[i] = cloneMember(members[i])
	}
	return members
}

// RegionRecords returns the capacity records of one region's nodes, as
// Records would.
func (a *Agent) RegionRecords(region string) []Record {
	return a.view.recordList(region)
}

// Record returns the capacity record of a node.
func (a *Agent) Record(name string) (Record, bool) {
	r, ok := a.view.record(name)
	if !ok {
		return Record{}, false
	}
	return cloneRecord(r), true
}

// RTT returns the smoothed RTT this node measured to a peer with its own
// probes, if it has probed it.
func (a *Agent) RTT(peer string) (time.Duration, bool) {
	s, ok := a.view.rtt(peer)
	return s.smoothed, ok
}

// Coordinate returns this node's network coordinate.
func (a *Agent) Coordinate() *coordinate.Coordinate { return a.coord.GetCoordinate() }

// coordinateOf returns a node's latest coordinate; this node's is live.
func (a *Agent) coordinateOf(name string) (*coordinate.Coordinate, bool) {
	if name == a.cfg.Name {
		return a.coord.GetCoordinate(), true
	}
	return a.view.coordinate(name)
}

// EstimateRTT estimates the RTT between two nodes from their network
// coordinates, neither of which needs to be this node.
func (a *Agent) EstimateRTT(from, to string) (time.Duration, bool) {
	ca, ok := a.coordinateOf(from)
	if !ok {
		return 0, false
	}
	cb, ok := a.coordinateOf(to)
	if !ok || !ca.IsCompatibleWith(cb) {
		return 0, false
	}
	return ca.DistanceTo(cb), true
}

// RegionRTT estimates the RTT between two regions: the median of the
// coordinate distances between their alive members (for from == to, between
// distinct members of the region). It implements placement's RTT estimator.
//
// Placement may call it for every candidate, so estimates are cached for a
// second (coordinates move over minutes).
func (a *Agent) RegionRTT(from, to string) (time.Duration, bool) {
	return a.view.regionRTT(from, to, a.coord.GetCoordinate(), time.Second)
}

var _ placement.RTTEstimator = (*Agent)(nil)

// RegionSummaries summarizes every region the view knows, sorted by region.
func (a *Agent) RegionSummaries() []RegionSummary {
	return summarize(a.snapshot())
}

// snapshot is the view's snapshot with this node's live coordinate.
func (a *Agent) snapshot() snapshot {
	s := a.view.snapshot()
	s.coords[a.cfg.Name] = a.coord.GetCoordinate()
	return s
}

// Subscribe returns a channel of view events with the given buffer, and a
// function that ends the subscription (and closes the channel). Events are
// never waited for: when the buffer is full the event is dropped and
// counted in Stats.EventsDropped. Shutdown closes every subscription.
func (a *Agent) Subscribe(buffer int) (<-chan Event, func()) {
	return a.view.subscribe(buffer)
}

// Keyring returns the encryption keyring, nil when encryption is disabled.
// Its AddKey, UseKey and RemoveKey rotate keys on this node (see
// docs/gossip.md for the cluster-wide procedure).
func (a *Agent) Keyring() *memberlist.Keyring { return a.mlConf.Keyring }

// Stats are counters for monitoring an agent.
type Stats struct {
	// Members counts members by state.
	Alive, Suspect, Failed, Left int
	// Records is the number of capacity records held.
	Records int
	// RecordsMerged counts records that replaced an older version.
	RecordsMerged uint64
	// RecordsDuplicate counts broadcasts of a record already held, or of
	// an older version of it, dropped without decoding.
	RecordsDuplicate uint64
	// RecordsRejected and MessagesRejected count input that did not decode.
	RecordsRejected, MessagesRejected uint64
	// EventsDropped counts events not delivered to a full subscriber.
	EventsDropped uint64
	// BroadcastsQueued is the number of record broadcasts waiting.
	BroadcastsQueued int
	// PendingReconnects is the number of failed members being retried;
	// ReconnectAttempts and ReconnectSuccesses count the joins tried.
	PendingReconnects                     int
	ReconnectAttempts, ReconnectSuccesses uint64
	// PacketsSent and PacketBytesSent count UDP-style packets sent;
	// StreamBytesSent and StreamBytesReceived count the bytes of the streams
	// this node opened (push/pull, joins, TCP probes); StreamsOpened counts
	// those streams.
	PacketsSent, PacketBytesSent         uint64
	StreamsOpened                        uint64
	StreamBytesSent, StreamBytesReceived uint64
	// CoordinateResets counts Vivaldi resets after invalid updates.
	CoordinateResets int
}

// Stats returns the agent's counters.
func (a *Agent) Stats() Stats {
	st := a.view.stats()
	st.BroadcastsQueued = a.queue.len()
	st.PacketsSent = a.transport.packets.Load()
	st.PacketBytesSent = a.transport.packetBytes.Load()
	st.StreamsOpened = a.transport.streams.Load()
	st.StreamBytesSent = a.transport.streamOut.Load()
	st.StreamBytesReceived = a.transport.streamIn.Load()
	st.CoordinateResets = a.coord.Stats().Resets
	return st
}

func cloneMember(m Member) Member {
	m.Addr = slices.Clone(m.Addr)
	return m
}

func cloneRecord(r Record) Record {
	r.Capacity = cloneCapacity(r.Capacity)
	if r.Coordinate != nil {
		r.Coordinate = r.Coordinate.Clone()
	}
	return r
}

// Ping probes a member directly now and records the RTT as a probe of
// memberlist's own would (the smoothed RTT that RTT returns). A region
// leader uses it to measure its own region at once: memberlist's probes
// visit members in random order, and network coordinates are poor at the
// short distances within a region.
func (a *Agent) Ping(name string) (time.Duration, error) {
	var addr net.Addr
	for _, n := range a.ml.Members() {
		if n.Name == name {
			addr = &net.UDPAddr{IP: n.Addr, Port: int(n.Port)}
			break
		}
	}
	if addr == nil {
		return 0, fmt.Errorf("gossip: ping %q: not a member", name)
	}
	rtt, err := a.ml.Ping(name, addr)
	if err != nil {
		return 0, fmt.Errorf("gossip: ping %q: %w", name, err)
	}
	a.view.pingComplete(name, rtt, nil)
	return rtt, nil
}
