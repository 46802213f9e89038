package gossip

import (
	"bytes"
	"fmt"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/serf/coordinate"
)

// The delegates below are called by memberlist from its own goroutines
// (packet handler, probe, gossip and push/pull loops), concurrently. Each
// takes the view's mutex briefly and never blocks on I/O.

// delegate carries metadata, record broadcasts and the push/pull state.
type delegate struct{ a *Agent }

var _ memberlist.Delegate = delegate{}

// NodeMeta returns the metadata encoded (and size-checked) at Start.
func (d delegate) NodeMeta(limit int) []byte { return d.a.meta }

// NotifyMsg handles a broadcast from a peer. memberlist may reuse b after
// the call, so whatever is kept is copied.
func (d delegate) NotifyMsg(b []byte) {
	if len(b) > 1 && MessageType(b[0]) == MessageRecord && (d.a.view.holds(b[1:]) || d.a.view.superseded(b[1:])) {
		return // a copy of a record held already, or of an older one: gossip repeats itself
	}
	_, rec, err := DecodeMessage(b)
	if err != nil {
		d.a.view.rejected(true)
		d.a.log.Warn("gossip: rejected a broadcast message", "bytes", len(b), "err", err)
		return
	}
	e := entry{rec: rec, raw: bytes.Clone(b[1:])}
	if d.a.view.merge(e) {
		// Spread it further: memberlist does not re-gossip user messages.
		d.a.queueRecord(e)
	} else if rec.Node == d.a.cfg.Name {
		d.a.wakeMaintenance()
	}
}

// GetBroadcasts hands memberlist the queued record broadcasts.
func (d delegate) GetBroadcasts(overhead, limit int) [][]byte {
	return d.a.queue.GetBroadcasts(overhead, limit)
}

// LocalState returns every record, for push/pull and joins.
func (d delegate) LocalState(join bool) []byte {
	raws := d.a.view.state()
	if len(raws) > MaxRecords {
		d.a.log.Error("gossip: more records than a push/pull carries; sending the first ones by name",
			"records", len(raws), "limit", MaxRecords)
	}
	b, err := encodeState(raws)
	if err != nil {
		d.a.log.Error("gossip: cannot encode the push/pull state", "err", err)
		return nil
	}
	return b
}

// MergeRemoteState merges a peer's records. Records that do not decode are
// skipped, logged and counted; a malformed envelope is rejected whole.
func (d delegate) MergeRemoteState(buf []byte, join bool) {
	good, rejected, err := decodeState(buf, d.a.view.holds)
	for _, r := range rejected {
		d.a.view.rejected(false)
		d.a.log.Warn("gossip: rejected a record in a push/pull state", "err", r)
	}
	if err != nil {
		d.a.view.rejected(true)
		d.a.log.Warn("gossip: rejected a push/pull state", "bytes", len(buf), "err", err)
	}
	fresh := d.a.view.mergeAll(good)
	if !join {
		// A periodic push/pull that brings a record we lacked found a gap
		// the broadcast left; re-broadcasting it closes the same gap
		// elsewhere in seconds rather than push/pull rounds. (A join brings
		// the whole table, which the peer's gossip is already spreading.)
		for _, e := range fresh {
			d.a.queueRecord(e)
		}
	}
	if d.a.view.needsRepublish() {
		d.a.wakeMaintenance()
	}
}

// eventDelegate follows membership. memberlist calls it with its node lock
// held, never concurrently, so reading the Node's fields here is safe. (Its
// State field is not: memberlist keeps the state elsewhere and leaves it
// zero, which is why leaving is told by the record, see Record.Leaving.)
type eventDelegate struct{ a *Agent }

var _ memberlist.EventDelegate = eventDelegate{}

func (e eventDelegate) NotifyJoin(n *memberlist.Node) { e.alive(n) }

func (e eventDelegate) NotifyUpdate(n *memberlist.Node) { e.alive(n) }

func (e eventDelegate) alive(n *memberlist.Node) {
	meta, err := DecodeMeta(n.Meta)
	if err != nil {
		// aliveDelegate keeps such nodes out; this is a belt and braces.
		e.a.log.Warn("gossip: member with invalid metadata", "member", n.Name, "err", err)
		return
	}
	e.a.view.memberAlive(n.Name, n.Addr, n.Port, meta)
}

func (e eventDelegate) NotifyLeave(n *memberlist.Node) {
	meta, _ := DecodeMeta(n.Meta) // validated when it joined
	e.a.view.memberGone(n.Name, n.Addr, n.Port, meta)
	e.a.wakeMaintenance()
}

// aliveDelegate keeps nodes whose metadata does not decode out of the
// cluster, so every member the view knows has a region and a role.
type aliveDelegate struct{ a *Agent }

var _ memberlist.AliveDelegate = aliveDelegate{}

func (d aliveDelegate) NotifyAlive(n *memberlist.Node) error {
	if _, err := DecodeMeta(n.Meta); err != nil {
		d.a.log.Warn("gossip: ignoring a node with invalid metadata", "member", n.Name, "err", err)
		return fmt.Errorf("member %q: %w", n.Name, err)
	}
	return nil
}

// conflictDelegate reports two nodes claiming one name.
type conflictDelegate struct{ a *Agent }

func (d conflictDelegate) NotifyConflict(existing, other *memberlist.Node) {
	d.a.log.Error("gossip: two nodes claim the same name", "member", existing.Name,
		"existing_addr", existing.Address(), "other_addr", other.Address())
}

// coordinatePayloadFormat is the first byte of the ack payload.
const coordinatePayloadFormat = 1

// maxCoordinatePayload bounds what NotifyPingComplete decodes.
const maxCoordinatePayload = 256

// pingDelegate carries Vivaldi coordinates in probe acks and feeds measured
// RTTs to the coordinate client and the view.
type pingDelegate struct{ a *Agent }

var _ memberlist.PingDelegate = pingDelegate{}

// AckPayload returns our coordinate, sent back with every ack we give.
func (p pingDelegate) AckPayload() []byte {
	b, err := encodeCoordinate(p.a.coord.GetCoordinate())
	if err != nil {
		p.a.log.Error("gossip: cannot encode our coordinate", "err", err)
		return nil
	}
	return b
}

// NotifyPingComplete is called after a direct probe of other succeeded;
// payload is other's AckPayload.
func (p pingDelegate) NotifyPingComplete(other *memberlist.Node, rtt time.Duration, payload []byte) {
	c, err := decodeCoordinate(payload)
	if err != nil {
		p.a.log.Debug("gossip: ack without a usable coordinate", "member", other.Name, "err", err)
		p.a.view.pingComplete(other.Name, rtt, nil)
		return
	}
	if _, err := p.a.coord.Update(other.Name, c, rtt); err != nil {
		p.a.log.Debug("gossip: coordinate update rejected", "member", other.Name, "rtt", rtt, "err", err)
	}
	p.a.view.pingComplete(other.Name, rtt, c)
}

func encodeCoordinate(c *coordinate.Coordinate) ([]byte, error) {
	w, err := toWireCoordinate(c)
	if err != nil {
		return nil, err
	}
	b, err := marshal(w)
	if err != nil {
		return nil, err
	}
	return append([]byte{coordinatePayloadFormat}, b...), nil
}

func decodeCoordinate(b []byte) (*coordinate.Coordinate, error) {
	switch {
	case len(b) == 0:
		return nil, fmt.Errorf("empty coordinate payload: %w", ErrMalformed)
	case len(b) > maxCoordinatePayload:
		return nil, fmt.Errorf("coordinate payload of %d bytes, over %d: %w", len(b), maxCoordinatePayload, ErrTooLarge)
	case b[0] != coordinatePayloadFormat:
		return nil, fmt.Errorf("coordinate payload format %d: %w", b[0], ErrMalformed)
	}
	var w wireCoordinate
	if err := unmarshalExact(b[1:], &w); err != nil {
		return nil, fmt.Errorf("coordinate payload: %w", err)
	}
	c := w.coordinate()
	if err := validateCoordinate(c); err != nil {
		return nil, fmt.Errorf("coordinate payload: %w", err)
	}
	return c, nil
}
