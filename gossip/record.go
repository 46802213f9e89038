package gossip

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"time"
	"unicode/utf8"

	"github.com/hashicorp/serf/coordinate"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/meridian-mesh/meridian/placement"
)

// Size limits of what this package puts on the wire. memberlist sends
// broadcasts in UDP-sized packets of UDPBufferSize (1,400) bytes, from which
// it takes the compound header, the encryption overhead (up to 45 bytes) and
// an optional label; MaxMessageSize leaves room for all of them.
const (
	// MaxRecordSize is the largest encoded capacity record accepted.
	MaxRecordSize = 1024
	// MaxMessageSize is the largest broadcast message (type byte included).
	MaxMessageSize = 1200
	// MaxRecords is the largest number of records a push/pull state may carry.
	MaxRecords = 10000
	// MaxStateSize is the largest push/pull state accepted, in bytes.
	MaxStateSize = 8 << 20
	// MaxNameLength bounds node names, region names and GPU type names.
	MaxNameLength = 128
)

// Errors that decoding wraps, so callers and tests can tell the cases apart.
var (
	// ErrTooLarge is wrapped when encoded bytes exceed a size limit.
	ErrTooLarge = errors.New("too large")
	// ErrMalformed is wrapped when bytes cannot be decoded.
	ErrMalformed = errors.New("malformed")
)

// Forecast is a node's forecast of the demand it will see.
type Forecast struct {
	// Horizon is how far ahead the forecast looks.
	Horizon time.Duration
	// DemandPerHour is the forecast demand rate, in tasks per hour.
	DemandPerHour float64
	// Low and High bound the forecast (for example its 10th and 90th
	// percentiles), in tasks per hour.
	Low, High float64
}

// Capacity is what a node announces about itself. The node (its ledger view)
// computes it; the gossip layer stamps it with a version and disseminates it.
type Capacity struct {
	// Total is the node's whole capacity.
	Total placement.Resources
	// Free is what is neither allocated nor held in escrow.
	Free placement.Resources
	// PricePerHour is what the whole node costs, in US dollars per hour.
	PricePerHour float64
	// GPUType names the accelerator model, empty when the node has none.
	GPUType string
	// Utilization is the fraction of compute in use, in [0, 1].
	Utilization float64
	// QueueLength is the number of tasks waiting to run on the node.
	QueueLength int
	// DemandPerHour is the recent rate of demand the node admitted, in tasks
	// per hour.
	DemandPerHour float64
	// Forecast is the node's demand forecast; nil when it has none.
	Forecast *Forecast
	// Market is what a region server announces for the cross-region market
	// (its Raft leadership and the region's ask); nil on workers and on
	// servers that do not trade.
	Market *MarketInfo
}

// MaxAskSize bounds MarketInfo.Ask, so that a record with an ask still fits
// MaxRecordSize.
const MaxAskSize = 256

// MarketInfo is what a region server announces to the market: whether it
// leads its region's Raft group, under which term, and the region's ask.
// Other regions read it to find a region's leader and to check that a peer
// speaking for a region is its leader (node/market).
type MarketInfo struct {
	// Leader reports that the node is its region's Raft leader and acts for
	// the region in the market.
	Leader bool
	// Term is the Raft term of that leadership; zero when not leader.
	Term uint64
	// Ask is the region's ask, opaque to gossip (encoded by
	// placement/auction.EncodeAsk); empty for none. At most MaxAskSize
	// bytes.
	Ask []byte
}

// Validate checks the market announcement. Errors wrap placement.ErrInvalid
// and name the field.
func (m *MarketInfo) Validate() error {
	if m == nil {
		return nil
	}
	if m.Leader && m.Term == 0 {
		return fieldErr("market.term", "must be positive for a leader")
	}
	if !m.Leader && m.Term != 0 {
		return fieldErr("market.term", fmt.Sprintf("must be zero when not leader, got %d", m.Term))
	}
	if len(m.Ask) > MaxAskSize {
		return fieldErr("market.ask", fmt.Sprintf("is %d bytes, longer than %d", len(m.Ask), MaxAskSize))
	}
	if len(m.Ask) > 0 && !m.Leader {
		return fieldErr("market.ask", "only a leader publishes its region's ask")
	}
	return nil
}

func (m *MarketInfo) equal(o *MarketInfo) bool {
	if m == nil || o == nil {
		return m == o
	}
	return m.Leader == o.Leader && m.Term == o.Term && bytes.Equal(m.Ask, o.Ask)
}

func (m *MarketInfo) clone() *MarketInfo {
	if m == nil {
		return nil
	}
	c := *m
	c.Ask = bytes.Clone(m.Ask)
	return &c
}

// Record is a node's capacity as gossiped: its Capacity plus who, where,
// which version and the node's network coordinate at that version.
type Record struct {
	// Node is the name of the node the record describes (its owner).
	Node string
	// Region is the owner's region.
	Region string
	// Version orders the owner's records: a higher version replaces a lower
	// one. Owners draw it from their clock (nanoseconds), never reusing or
	// lowering it, so it survives restarts.
	Version uint64
	Capacity
	// UpdatedAt is when the owner issued this version, by the owner's clock.
	UpdatedAt time.Time
	// Coordinate is the owner's network coordinate when it issued this
	// version; nil if it had none.
	Coordinate *coordinate.Coordinate
	// Leaving is set on the last record a node issues, when it leaves the
	// mesh gracefully. memberlist reports a departed member the same way as
	// a failed one; this flag is how peers tell the two apart (serf
	// broadcasts a leave intent for the same reason).
	Leaving bool
}

// PlacementNode returns the record in placement's resource model.
func (r Record) PlacementNode() placement.Node {
	return placement.Node{
		ID:           r.Node,
		Region:       r.Region,
		Total:        r.Total,
		Free:         r.Free,
		PricePerHour: r.PricePerHour,
		GPUType:      r.GPUType,
	}
}

// coordDims is the dimensionality of the Vivaldi coordinates (serf's default).
// The wire format carries a fixed-size vector, which also keeps a malicious
// length prefix from making the decoder allocate.
const coordDims = 8

// wireCoordinate is a coordinate on the wire.
type wireCoordinate struct {
	Vec        [coordDims]float64 `msgpack:"v"`
	Error      float64            `msgpack:"e"`
	Adjustment float64            `msgpack:"a"`
	Height     float64            `msgpack:"h"`
}

type wireMarket struct {
	Leader bool   `msgpack:"l,omitempty"`
	Term   uint64 `msgpack:"t,omitempty"`
	Ask    []byte `msgpack:"a,omitempty"`
}

type wireForecast struct {
	Horizon int64   `msgpack:"h"`
	Demand  float64 `msgpack:"d"`
	Low     float64 `msgpack:"l"`
	High    float64 `msgpack:"u"`
}

// wireRecord is a Record on the wire: a msgpack map with short keys, so that
// fields can be added later without breaking older decoders.
type wireRecord struct {
	Node        string              `msgpack:"n"`
	Region      string              `msgpack:"r"`
	Version     uint64              `msgpack:"v"`
	Total       placement.Resources `msgpack:"t"`
	Free        placement.Resources `msgpack:"f"`
	Price       float64             `msgpack:"p"`
	GPUType     string              `msgpack:"g,omitempty"`
	Utilization float64             `msgpack:"ut"`
	Queue       int64               `msgpack:"q"`
	Demand      float64             `msgpack:"d"`
	Forecast    *wireForecast       `msgpack:"fc,omitempty"`
	Market      *wireMarket         `msgpack:"mk,omitempty"`
	UpdatedAt   int64               `msgpack:"at"`
	Coordinate  *wireCoordinate     `msgpack:"c,omitempty"`
	Leaving     bool                `msgpack:"lv,omitempty"`
}

func toWireCoordinate(c *coordinate.Coordinate) (*wireCoordinate, error) {
	if c == nil {
		return nil, nil
	}
	if len(c.Vec) != coordDims {
		return nil, fieldErr("coordinate", fmt.Sprintf("has %d dimensions, want %d", len(c.Vec), coordDims))
	}
	w := &wireCoordinate{Error: c.Error, Adjustment: c.Adjustment, Height: c.Height}
	copy(w.Vec[:], c.Vec)
	return w, nil
}

func (w *wireCoordinate) coordinate() *coordinate.Coordinate {
	if w == nil {
		return nil
	}
	return &coordinate.Coordinate{
		Vec:        append([]float64(nil), w.Vec[:]...),
		Error:      w.Error,
		Adjustment: w.Adjustment,
		Height:     w.Height,
	}
}

func fieldErr(field, reason string) error {
	return &placement.FieldError{Field: field, Reason: reason}
}

func checkFinite(field string, v float64) error {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return fieldErr(field, fmt.Sprintf("must be a finite number, got %v", v))
	}
	return nil
}

func checkNonNegative(field string, v float64) error {
	if err := checkFinite(field, v); err != nil {
		return err
	}
	if v < 0 {
		return fieldErr(field, fmt.Sprintf("must not be negative, got %v", v))
	}
	return nil
}

func checkName(field, v string, required bool) error {
	return checkText(field, v, required, MaxNameLength)
}

func checkText(field, v string, required bool, max int) error {
	switch {
	case v == "" && required:
		return fieldErr(field, "must not be empty")
	case len(v) > max:
		return fieldErr(field, fmt.Sprintf("is %d bytes, longer than %d", len(v), max))
	case !utf8.ValidString(v):
		return fieldErr(field, "is not valid UTF-8")
	}
	return nil
}

// Validate checks the capacity for values no real node can have. Errors wrap
// placement.ErrInvalid and name the field.
func (c Capacity) Validate() error {
	if err := c.Total.Validate("total."); err != nil {
		return err
	}
	if err := c.Free.Validate("free."); err != nil {
		return err
	}
	if !c.Free.FitsIn(c.Total) {
		return fieldErr("free", "exceeds total")
	}
	if err := checkNonNegative("price_per_hour", c.PricePerHour); err != nil {
		return err
	}
	if err := checkName("gpu_type", c.GPUType, false); err != nil {
		return err
	}
	if err := checkNonNegative("utilization", c.Utilization); err != nil {
		return err
	}
	if c.Utilization > 1 {
		return fieldErr("utilization", fmt.Sprintf("must be at most 1, got %v", c.Utilization))
	}
	if c.QueueLength < 0 {
		return fieldErr("queue_length", fmt.Sprintf("must not be negative, got %d", c.QueueLength))
	}
	if err := checkNonNegative("demand_per_hour", c.DemandPerHour); err != nil {
		return err
	}
	if f := c.Forecast; f != nil {
		if f.Horizon <= 0 {
			return fieldErr("forecast.horizon", fmt.Sprintf("must be positive, got %v", f.Horizon))
		}
		for _, v := range []struct {
			name string
			v    float64
		}{{"forecast.demand_per_hour", f.DemandPerHour}, {"forecast.low", f.Low}, {"forecast.high", f.High}} {
			if err := checkNonNegative(v.name, v.v); err != nil {
				return err
			}
		}
		if f.Low > f.High {
			return fieldErr("forecast.low", fmt.Sprintf("%v is above forecast.high %v", f.Low, f.High))
		}
	}
	return c.Market.Validate()
}

func validateCoordinate(c *coordinate.Coordinate) error {
	if c == nil {
		return nil
	}
	if len(c.Vec) != coordDims {
		return fieldErr("coordinate", fmt.Sprintf("has %d dimensions, want %d", len(c.Vec), coordDims))
	}
	for i, v := range c.Vec {
		if err := checkFinite(fmt.Sprintf("coordinate.vec[%d]", i), v); err != nil {
			return err
		}
	}
	if err := checkNonNegative("coordinate.error", c.Error); err != nil {
		return err
	}
	if err := checkFinite("coordinate.adjustment", c.Adjustment); err != nil {
		return err
	}
	return checkNonNegative("coordinate.height", c.Height)
}

// Validate checks the record: its identity, its version and its capacity.
// Errors wrap placement.ErrInvalid and name the field.
func (r Record) Validate() error {
	if err := checkName("node", r.Node, true); err != nil {
		return err
	}
	if err := checkName("region", r.Region, true); err != nil {
		return err
	}
	if r.Version == 0 {
		return fieldErr("version", "must be positive")
	}
	if err := r.Capacity.Validate(); err != nil {
		return err
	}
	if r.UpdatedAt.IsZero() || r.UpdatedAt.UnixNano() <= 0 {
		return fieldErr("updated_at", "must be set")
	}
	return validateCoordinate(r.Coordinate)
}

// EncodeRecord validates r and encodes it with msgpack. It fails if the
// encoding exceeds MaxRecordSize.
func EncodeRecord(r Record) ([]byte, error) {
	if err := r.Validate(); err != nil {
		return nil, fmt.Errorf("encode record of %q: %w", r.Node, err)
	}
	w := wireRecord{
		Node:        r.Node,
		Region:      r.Region,
		Version:     r.Version,
		Total:       r.Total,
		Free:        r.Free,
		Price:       r.PricePerHour,
		GPUType:     r.GPUType,
		Utilization: r.Utilization,
		Queue:       int64(r.QueueLength),
		Demand:      r.DemandPerHour,
		UpdatedAt:   r.UpdatedAt.UnixNano(),
		Leaving:     r.Leaving,
	}
	if f := r.Forecast; f != nil {
		w.Forecast = &wireForecast{Horizon: int64(f.Horizon), Demand: f.DemandPerHour, Low: f.Low, High: f.High}
	}
	if m := r.Market; m != nil {
		w.Market = &wireMarket{Leader: m.Leader, Term: m.Term, Ask: m.Ask}
	}
	wc, err := toWireCoordinate(r.Coordinate)
	if err != nil {
		return nil, fmt.Errorf("encode record of %q: %w", r.Node, err)
	}
	w.Coordinate = wc
	b, err := marshal(&w)
	if err != nil {
		return nil, fmt.Errorf("encode record of %q: %w", r.Node, err)
	}
	if len(b) > MaxRecordSize {
		return nil, fmt.Errorf("encode record of %q: %d bytes, over the %d-byte limit: %w", r.Node, len(b), MaxRecordSize, ErrTooLarge)
	}
	return b, nil
}

// DecodeRecord decodes and validates one record. Oversized, malformed and
// invalid input returns an error (wrapping ErrTooLarge, ErrMalformed or
// placement.ErrInvalid); it never panics.
func DecodeRecord(b []byte) (Record, error) {
	if len(b) > MaxRecordSize {
		return Record{}, fmt.Errorf("decode record: %d bytes, over the %d-byte limit: %w", len(b), MaxRecordSize, ErrTooLarge)
	}
	var w wireRecord
	if err := unmarshalExact(b, &w); err != nil {
		return Record{}, fmt.Errorf("decode record: %w", err)
	}
	if w.Queue < 0 || w.Queue > math.MaxInt32 {
		return Record{}, fmt.Errorf("decode record of %q: %w", w.Node, fieldErr("queue_length", fmt.Sprintf("out of range: %d", w.Queue)))
	}
	r := Record{
		Node:    w.Node,
		Region:  w.Region,
		Version: w.Version,
		Capacity: Capacity{
			Total:         w.Total,
			Free:          w.Free,
			PricePerHour:  w.Price,
			GPUType:       w.GPUType,
			Utilization:   w.Utilization,
			QueueLength:   int(w.Queue),
			DemandPerHour: w.Demand,
		},
		Coordinate: w.Coordinate.coordinate(),
		Leaving:    w.Leaving,
	}
	if w.UpdatedAt > 0 {
		r.UpdatedAt = time.Unix(0, w.UpdatedAt).UTC()
	}
	if f := w.Forecast; f != nil {
		r.Forecast = &Forecast{Horizon: time.Duration(f.Horizon), DemandPerHour: f.Demand, Low: f.Low, High: f.High}
	}
	if m := w.Market; m != nil {
		r.Market = &MarketInfo{Leader: m.Leader, Term: m.Term, Ask: m.Ask}
		if len(m.Ask) == 0 {
			r.Market.Ask = nil
		}
	}
	if err := r.Validate(); err != nil {
		return Record{}, fmt.Errorf("decode record of %q: %w", w.Node, err)
	}
	return r, nil
}

// peekRecord reads the node and version of an encoded record without
// decoding or validating the rest, so that a copy older than the one held
// can be dropped cheaply: most broadcasts a node receives are such copies.
// ok is false if they cannot be read; the caller then decodes in full.
func peekRecord(b []byte) (node string, version uint64, ok bool) {
	dec := msgpack.GetDecoder()
	defer msgpack.PutDecoder(dec)
	dec.Reset(bytes.NewReader(b))
	n, err := dec.DecodeMapLen()
	if err != nil {
		return "", 0, false
	}
	var haveNode, haveVersion bool
	for range n {
		k, err := dec.DecodeString()
		if err != nil {
			return "", 0, false
		}
		switch k {
		case "n":
			node, err = dec.DecodeString()
			haveNode = err == nil
		case "v":
			version, err = dec.DecodeUint64()
			haveVersion = err == nil
		default:
			err = dec.Skip()
		}
		if err != nil {
			return "", 0, false
		}
		if haveNode && haveVersion {
			return node, version, true
		}
	}
	return "", 0, false
}

// marshal encodes v compactly (floats that fit float32 exactly and small
// integers take fewer bytes).
func marshal(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := msgpack.NewEncoder(&buf)
	enc.UseCompactInts(true)
	enc.UseCompactFloats(true)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// unmarshalExact decodes b into v and rejects trailing bytes.
func unmarshalExact(b []byte, v any) error {
	if len(b) == 0 {
		return fmt.Errorf("empty input: %w", ErrMalformed)
	}
	r := bytes.NewReader(b)
	dec := msgpack.GetDecoder()
	defer msgpack.PutDecoder(dec)
	dec.Reset(r)
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if r.Len() != 0 {
		return fmt.Errorf("%d trailing bytes: %w", r.Len(), ErrMalformed)
	}
	return nil
}

// entry is a record as the view stores it, with its encoding: the encoding
// breaks ties between equal versions and is what push/pull and re-broadcast
// send, so a record is encoded once.
type entry struct {
	rec Record
	raw []byte
}

// newer reports whether in should replace cur in the view: a higher version
// wins; equal versions are ordered by their encodings, so that any two
// replicas that have seen the same records hold the same one whatever the
// order of arrival (the merge is a join on a total order: idempotent,
// commutative and associative).
func newer(in, cur entry) bool {
	if in.rec.Version != cur.rec.Version {
		return in.rec.Version > cur.rec.Version
	}
	return bytes.Compare(in.raw, cur.raw) > 0
}
