package market

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/meridian-mesh/meridian/gossip"
	"github.com/meridian-mesh/meridian/placement/auction"
)

// view is the part of the gossip agent the market reads: members with their
// metadata (role, region, libp2p contact), capacity records (free capacity
// and, for servers, their market announcement) and RTT estimates. A
// *gossip.Agent has it; every method returns a copy and does not block.
type view interface {
	Members() []gossip.Member
	Records() []gossip.Record
	RegionRecords(region string) []gossip.Record
	RegionRTT(from, to string) (time.Duration, bool)
	// Refresh asks for a member's records to be fetched from it at once
	// (rate-limited, in the background).
	Refresh(name string) bool
}

var _ view = (*gossip.Agent)(nil)

// directory implements auction.Directory and auction.Authority over the
// gossip view. Both are read from the current view at each call, so a
// leadership change is seen as soon as its record arrives.
type directory struct {
	g      view
	region string
}

var (
	_ auction.Directory = (*directory)(nil)
	_ auction.Authority = (*directory)(nil)
)

// mesh is one snapshot of the view: members by name and records by node.
type mesh struct {
	members []gossip.Member
	records map[string]gossip.Record
}

func (d *directory) snapshot() mesh {
	m := mesh{members: d.g.Members(), records: make(map[string]gossip.Record)}
	for _, r := range d.g.Records() {
		m.records[r.Node] = r
	}
	return m
}

func up(m gossip.Member) bool { return m.State == gossip.StateAlive || m.State == gossip.StateSuspect }

// claim is a server's claim, in its gossip record, to lead its region.
type claim struct {
	member gossip.Member
	term   uint64
	ask    []byte
}

// leaders returns, per region, the live servers that claim to lead it,
// highest term first (several claim it while a deposed leader's record is
// still around).
func (m mesh) leaders() map[string][]claim {
	out := make(map[string][]claim)
	for _, mem := range m.members {
		if mem.Role != gossip.RoleServer || !up(mem) {
			continue
		}
		rec, ok := m.records[mem.Name]
		if !ok || rec.Market == nil || !rec.Market.Leader || rec.Region != mem.Region {
			continue
		}
		out[mem.Region] = append(out[mem.Region], claim{member: mem, term: rec.Market.Term, ask: rec.Market.Ask})
	}
	for _, cs := range out {
		sort.Slice(cs, func(i, j int) bool {
			if cs[i].term != cs[j].term {
				return cs[i].term > cs[j].term
			}
			return cs[i].member.Name < cs[j].member.Name
		})
	}
	return out
}

// contact returns a member's libp2p peer ID and address from its metadata.
func contact(m gossip.Member) (peer.AddrInfo, error) {
	if m.P2PPeerID == "" || m.P2PAddr == "" {
		return peer.AddrInfo{}, fmt.Errorf("member %s publishes no libp2p contact", m.Name)
	}
	id, err := peer.Decode(m.P2PPeerID)
	if err != nil {
		return peer.AddrInfo{}, fmt.Errorf("member %s: field \"p2p_peer_id\": %w", m.Name, err)
	}
	addr, err := ma.NewMultiaddr(m.P2PAddr)
	if err != nil {
		return peer.AddrInfo{}, fmt.Errorf("member %s: field \"p2p_addr\": %w", m.Name, err)
	}
	// The address may carry the peer ID itself (/p2p/...).
	if transport, pid := peer.SplitAddr(addr); pid != "" {
		if pid != id {
			return peer.AddrInfo{}, fmt.Errorf("member %s: field \"p2p_addr\" names peer %s, its metadata %s", m.Name, pid, id)
		}
		addr = transport
	}
	return peer.AddrInfo{ID: id, Addrs: []ma.Multiaddr{addr}}, nil
}

// Regions implements auction.Directory: every region gossip knows, with its
// free capacity (the sum, and the largest on one node, over its live
// members' records), the ask its leader publishes, and whether a leader is
// known.
func (d *directory) Regions() []auction.RegionInfo {
	m := d.snapshot()
	leaders := m.leaders()
	byRegion := make(map[string]*auction.RegionInfo)
	for _, mem := range m.members {
		if !up(mem) {
			continue
		}
		ri := byRegion[mem.Region]
		if ri == nil {
			ri = &auction.RegionInfo{Region: mem.Region}
			byRegion[mem.Region] = ri
		}
		rec, ok := m.records[mem.Name]
		if !ok || rec.Leaving {
			continue
		}
		ri.Surplus = ri.Surplus.Add(rec.Free)
		if rec.Free.ComputePerHour > ri.LargestNode.ComputePerHour {
			ri.LargestNode = rec.Free
		}
	}
	out := make([]auction.RegionInfo, 0, len(byRegion))
	for region, ri := range byRegion {
		if cs := leaders[region]; len(cs) > 0 {
			if _, err := contact(cs[0].member); err == nil {
				ri.Reachable = true
			}
			if ask, ok := decodeAsk(region, cs[0]); ok {
				ri.Ask = &ask
			}
		}
		out = append(out, *ri)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Region < out[j].Region })
	return out
}

// decodeAsk decodes a leader's published ask, ignoring one that does not
// decode or speaks for another region or term.
func decodeAsk(region string, c claim) (auction.Ask, bool) {
	if len(c.ask) == 0 {
		return auction.Ask{}, false
	}
	from, term, ask, err := auction.DecodeAsk(c.ask)
	if err != nil || from != region || term != c.term {
		return auction.Ask{}, false
	}
	return ask, true
}

// Leader implements auction.Directory: the live server of region whose
// record claims the leadership under the highest term.
func (d *directory) Leader(region string) (peer.AddrInfo, bool) {
	for _, c := range d.snapshot().leaders()[region] {
		if ai, err := contact(c.member); err == nil {
			return ai, true
		}
	}
	return peer.AddrInfo{}, false
}

// RTT implements auction.Directory with gossip's network-coordinate
// estimate between the regions.
func (d *directory) RTT(from, to string) (time.Duration, bool) { return d.g.RegionRTT(from, to) }

// Authorize implements auction.Authority. p speaks for region's leader
// under term when gossip lists p as a live server of region whose record
// claims the leadership under exactly that term, and no other live server
// of the region claims it under a later one.
func (d *directory) Authorize(p peer.ID, region string, term uint64) error {
	// Every auction message is authorized: read the members and only the
	// records of the region, not a snapshot of every record.
	m := mesh{members: d.g.Members(), records: make(map[string]gossip.Record)}
	for _, r := range d.g.RegionRecords(region) {
		m.records[r.Node] = r
	}
	var self *gossip.Member
	for i := range m.members {
		mem := &m.members[i]
		if mem.P2PPeerID == "" {
			continue
		}
		if id, err := peer.Decode(mem.P2PPeerID); err == nil && id == p {
			self = mem
			break
		}
	}
	switch {
	case self == nil:
		return fmt.Errorf("peer %s is not a member of the mesh", p)
	case self.Region != region:
		return fmt.Errorf("peer %s is member %s of region %q, not %q", p, self.Name, self.Region, region)
	case self.Role != gossip.RoleServer:
		return fmt.Errorf("peer %s is member %s, a %s, not a server of region %q", p, self.Name, self.Role, region)
	case !up(*self):
		return fmt.Errorf("peer %s is member %s, which gossip reports %s", p, self.Name, self.State)
	}
	rec, ok := m.records[self.Name]
	switch {
	case !ok:
		d.g.Refresh(self.Name)
		return fmt.Errorf("member %s does not lead region %q according to gossip: no record of it", self.Name, region)
	case rec.Market == nil || !rec.Market.Leader:
		// The claim may be on its way, or a broadcast missed this node:
		// fetch the member's record now rather than at the next periodic
		// push/pull, so that its retry is judged on its latest record. The
		// record's issue time tells a reader of the log which it was.
		d.g.Refresh(self.Name)
		return fmt.Errorf("member %s does not lead region %q according to gossip: its record issued %s claims no leadership",
			self.Name, region, rec.UpdatedAt.UTC().Format(time.RFC3339Nano))
	case rec.Market.Term != term:
		if rec.Market.Term < term {
			d.g.Refresh(self.Name) // a later term than gossip has heard of
		}
		return fmt.Errorf("member %s leads region %q under term %d according to gossip, the message claims term %d", self.Name, region, rec.Market.Term, term)
	}
	for _, c := range m.leaders()[region] {
		if c.term > term {
			return fmt.Errorf("member %s was deposed: %s leads region %q under term %d", self.Name, c.member.Name, region, c.term)
		}
	}
	return nil
}

// leaderKey identifies a region's leadership as gossip reports it, to tell
// when it changes.
func leaderKey(c claim) string {
	return strings.Join([]string{c.member.Name, fmt.Sprint(c.term)}, "@")
}
