package gossip

import (
	"fmt"
	"net"
	"time"

	"github.com/hashicorp/memberlist"
)

// MaxAddrLength bounds each address, peer ID and version field of Meta.
const MaxAddrLength = 255

// Role is what a node does in the mesh.
type Role string

const (
	// RoleServer nodes vote in their region's Raft group.
	RoleServer Role = "server"
	// RoleWorker nodes only run work.
	RoleWorker Role = "worker"
)

// Valid reports whether r is a known role.
func (r Role) Valid() bool { return r == RoleServer || r == RoleWorker }

// MemberState is what this agent believes about a member.
type MemberState uint8

const (
	// StateAlive members answer probes.
	StateAlive MemberState = iota + 1
	// StateSuspect members are alive for memberlist but this agent's last
	// direct probe of them went unanswered; memberlist is deciding whether
	// they failed (see docs/gossip.md).
	StateSuspect
	// StateFailed members were declared dead by memberlist without leaving;
	// the agent keeps trying to reconnect to them.
	StateFailed
	// StateLeft members left gracefully.
	StateLeft
)

// String returns the state's name as operators see it.
func (s MemberState) String() string {
	switch s {
	case StateAlive:
		return "alive"
	case StateSuspect:
		return "suspect"
	case StateFailed:
		return "failed"
	case StateLeft:
		return "left"
	}
	return fmt.Sprintf("unknown(%d)", uint8(s))
}

// MarshalText lets JSON and logs show the state by name.
func (s MemberState) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// Member is one node of the mesh as this agent sees it.
type Member struct {
	// Name is the node's unique name.
	Name string
	// Addr and Port are the node's gossip address.
	Addr net.IP
	Port uint16
	// Meta is what the node announces about itself.
	Meta
	// State is alive, suspect, failed or left.
	State MemberState
	// Since is when the agent last saw State change.
	Since time.Time
}

// Address returns the member's gossip address as host:port.
func (m Member) Address() string {
	return net.JoinHostPort(m.Addr.String(), fmt.Sprint(m.Port))
}

// Meta is the metadata every node announces in memberlist's alive messages.
// Encoded, it must fit memberlist.MetaMaxSize (512 bytes).
type Meta struct {
	// Region is the region the node runs in.
	Region string `msgpack:"r"`
	// Role is server or worker.
	Role Role `msgpack:"o"`
	// HTTPAddr is the node's HTTP API address (host:port).
	HTTPAddr string `msgpack:"h,omitempty"`
	// RaftAddr is the node's Raft transport address (host:port).
	RaftAddr string `msgpack:"f,omitempty"`
	// P2PAddr is the node's libp2p multiaddr.
	P2PAddr string `msgpack:"p,omitempty"`
	// P2PPeerID is the node's libp2p peer ID.
	P2PPeerID string `msgpack:"i,omitempty"`
	// Version is the node's build version.
	Version string `msgpack:"v,omitempty"`
}

func (m Meta) fields() []struct{ name, value string } {
	return []struct{ name, value string }{
		{"region", m.Region},
		{"role", string(m.Role)},
		{"http_addr", m.HTTPAddr},
		{"raft_addr", m.RaftAddr},
		{"p2p_addr", m.P2PAddr},
		{"p2p_peer_id", m.P2PPeerID},
		{"version", m.Version},
	}
}

// Validate checks the fields one by one.
func (m Meta) Validate() error {
	if err := checkName("region", m.Region, true); err != nil {
		return err
	}
	if !m.Role.Valid() {
		return fieldErr("role", fmt.Sprintf("must be %q or %q, got %q", RoleServer, RoleWorker, m.Role))
	}
	for _, f := range m.fields()[2:] {
		if err := checkText(f.name, f.value, false, MaxAddrLength); err != nil {
			return err
		}
	}
	return nil
}

// EncodeMeta validates m and encodes it; the result fits memberlist's
// MetaMaxSize or the error names the field that takes the most room.
func EncodeMeta(m Meta) ([]byte, error) {
	if err := m.Validate(); err != nil {
		return nil, fmt.Errorf("node metadata: %w", err)
	}
	b, err := marshal(&m)
	if err != nil {
		return nil, fmt.Errorf("node metadata: %w", err)
	}
	if len(b) > memberlist.MetaMaxSize {
		longest := m.fields()[0]
		for _, f := range m.fields() {
			if len(f.value) > len(longest.value) {
				longest = f
			}
		}
		return nil, fmt.Errorf("node metadata is %d bytes, over memberlist's %d-byte limit; the longest field is %s (%d bytes): %w",
			len(b), memberlist.MetaMaxSize, longest.name, len(longest.value), ErrTooLarge)
	}
	return b, nil
}

// DecodeMeta decodes and validates metadata from an alive message.
func DecodeMeta(b []byte) (Meta, error) {
	if len(b) > memberlist.MetaMaxSize {
		return Meta{}, fmt.Errorf("node metadata: %d bytes, over the %d-byte limit: %w", len(b), memberlist.MetaMaxSize, ErrTooLarge)
	}
	var m Meta
	if err := unmarshalExact(b, &m); err != nil {
		return Meta{}, fmt.Errorf("node metadata: %w", err)
	}
	if err := m.Validate(); err != nil {
		return Meta{}, fmt.Errorf("node metadata: %w", err)
	}
	return m, nil
}
