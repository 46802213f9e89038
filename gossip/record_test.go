package gossip

import (
	"bytes"
	"errors"
	"log/slog"
	"maps"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/serf/coordinate"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/meridian-mesh/meridian/placement"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func testCoordinate(x float64) *coordinate.Coordinate {
	c := coordinate.NewCoordinate(coordinate.DefaultConfig())
	c.Vec[0] = x
	c.Vec[3] = -x / 2
	c.Error = 0.4
	c.Adjustment = 0.0001
	c.Height = 0.002
	return c
}

func sameCoordinate(a, b *coordinate.Coordinate) bool {
	return slices.Equal(a.Vec, b.Vec) && a.Error == b.Error && a.Adjustment == b.Adjustment && a.Height == b.Height
}

func testRecord(node string, version uint64) Record {
	return Record{
		Node:       node,
		Region:     "eu-west-1",
		Version:    version,
		Capacity:   testCapacity(int(version % 7)),
		UpdatedAt:  t0.Add(time.Duration(version) * time.Second),
		Coordinate: testCoordinate(0.01 * float64(version%5)),
	}
}

func TestRecordRoundTrip(t *testing.T) {
	r := testRecord("node-1", 42)
	r.Forecast = &Forecast{Horizon: time.Hour, DemandPerHour: 120, Low: 90, High: 150}
	b, err := EncodeRecord(r)
	if err != nil {
		t.Fatalf("EncodeRecord: %v", err)
	}
	got, err := DecodeRecord(b)
	if err != nil {
		t.Fatalf("DecodeRecord: %v", err)
	}
	if got.Node != r.Node || got.Region != r.Region || got.Version != r.Version || !capacityEqual(got.Capacity, r.Capacity) ||
		!got.UpdatedAt.Equal(r.UpdatedAt) || !sameCoordinate(got.Coordinate, r.Coordinate) || *got.Forecast != *r.Forecast {
		t.Fatalf("DecodeRecord(EncodeRecord(r)) = %+v; want %+v", got, r)
	}
	if len(b) > 400 {
		t.Errorf("a typical record encodes to %d bytes; want it well under the %d-byte broadcast limit", len(b), MaxMessageSize)
	}
	n := got.PlacementNode()
	if n.ID != r.Node || n.Free != r.Free || n.Total != r.Total || n.PricePerHour != r.PricePerHour || n.GPUType != r.GPUType {
		t.Fatalf("PlacementNode() = %+v; want the record's identity and resources", n)
	}
}

func TestRecordValidate(t *testing.T) {
	for _, tc := range []struct {
		field  string
		mutate func(*Record)
	}{
		{"node", func(r *Record) { r.Node = "" }},
		{"node", func(r *Record) { r.Node = strings.Repeat("n", MaxNameLength+1) }},
		{"region", func(r *Record) { r.Region = "" }},
		{"node", func(r *Record) { r.Node = "bad\xff" }},
		{"version", func(r *Record) { r.Version = 0 }},
		{"total.compute", func(r *Record) { r.Total.ComputePerHour = math.NaN() }},
		{"free.storage_gb", func(r *Record) { r.Free.StorageGB = -1 }},
		{"free", func(r *Record) { r.Free.ComputePerHour = r.Total.ComputePerHour + 1 }},
		{"price_per_hour", func(r *Record) { r.PricePerHour = math.Inf(1) }},
		{"gpu_type", func(r *Record) { r.GPUType = strings.Repeat("g", MaxNameLength+1) }},
		{"utilization", func(r *Record) { r.Utilization = 1.5 }},
		{"queue_length", func(r *Record) { r.QueueLength = -1 }},
		{"demand_per_hour", func(r *Record) { r.DemandPerHour = -3 }},
		{"forecast.horizon", func(r *Record) { r.Forecast = &Forecast{} }},
		{"forecast.low", func(r *Record) { r.Forecast = &Forecast{Horizon: time.Hour, Low: 5, High: 1} }},
		{"forecast.high", func(r *Record) { r.Forecast = &Forecast{Horizon: time.Hour, High: math.NaN()} }},
		{"updated_at", func(r *Record) { r.UpdatedAt = time.Time{} }},
		{"coordinate", func(r *Record) { r.Coordinate.Vec = r.Coordinate.Vec[:3] }},
		{"coordinate.vec[2]", func(r *Record) { r.Coordinate.Vec[2] = math.Inf(-1) }},
		{"coordinate.height", func(r *Record) { r.Coordinate.Height = -1 }},
	} {
		r := testRecord("n1", 3)
		tc.mutate(&r)
		err := r.Validate()
		var fe *placement.FieldError
		if !errors.As(err, &fe) || fe.Field != tc.field || !errors.Is(err, placement.ErrInvalid) {
			t.Errorf("Validate() with bad %s = %v; want a placement.FieldError naming %q", tc.field, err, tc.field)
		}
		if _, err := EncodeRecord(r); err == nil || !strings.Contains(err.Error(), tc.field) {
			t.Errorf("EncodeRecord() with bad %s = %v; want an error naming it", tc.field, err)
		}
	}
}

// encodeWire encodes a wire record as is, without validation, as a buggy or
// hostile peer might.
func encodeWire(t *testing.T, w any) []byte {
	t.Helper()
	b, err := msgpack.Marshal(w)
	if err != nil {
		t.Fatalf("msgpack.Marshal: %v", err)
	}
	return b
}

func TestDecodeRecordRejects(t *testing.T) {
	good, err := EncodeRecord(testRecord("n1", 9))
	if err != nil {
		t.Fatal(err)
	}
	type padded struct {
		wireRecord `msgpack:",inline"`
		Pad        string `msgpack:"zz"`
	}
	var w wireRecord
	if err := msgpack.Unmarshal(good, &w); err != nil {
		t.Fatal(err)
	}
	oversize := encodeWire(t, padded{wireRecord: w, Pad: strings.Repeat("x", MaxRecordSize)})
	future := encodeWire(t, padded{wireRecord: w, Pad: "a field from a newer version"})
	badGPU := w
	badGPU.GPUType = strings.Repeat("g", 200)
	hugeQueue := w
	hugeQueue.Queue = math.MaxInt64

	if _, err := DecodeRecord(future); err != nil {
		t.Errorf("DecodeRecord(record with an unknown field) = %v; want it accepted (forward compatibility)", err)
	}
	for _, tc := range []struct {
		name string
		b    []byte
		want error
	}{
		{"oversize", oversize, ErrTooLarge},
		{"empty", nil, ErrMalformed},
		{"truncated", good[:len(good)/2], ErrMalformed},
		{"trailing bytes", append(bytes.Clone(good), 0xc0), ErrMalformed},
		{"not a map", []byte{0x93, 1, 2, 3}, ErrMalformed},
		{"wrong type for version", encodeWire(t, map[string]any{"n": "x", "v": "seven"}), ErrMalformed},
		{"coordinate with 9 dimensions", encodeWire(t, map[string]any{"n": "x", "c": map[string]any{"v": make([]float64, 9)}}), ErrMalformed},
		{"GPU type too long", encodeWire(t, badGPU), placement.ErrInvalid},
		{"queue length out of range", encodeWire(t, hugeQueue), placement.ErrInvalid},
		{"missing fields", encodeWire(t, map[string]any{"n": "x"}), placement.ErrInvalid},
	} {
		_, err := DecodeRecord(tc.b)
		if !errors.Is(err, tc.want) {
			t.Errorf("DecodeRecord(%s) = %v; want an error wrapping %v", tc.name, err, tc.want)
		}
	}
}

func newTestView(self string, now *time.Time) *view {
	recon := newReconnector(8, 30*time.Second, 5*time.Minute, time.Hour, rand.New(rand.NewPCG(1, 2)))
	return newView(self, func() time.Time { return *now }, slog.New(slog.DiscardHandler), recon, time.Hour,
		func(int) time.Duration { return time.Minute })
}

func mustEntry(t testing.TB, r Record) entry {
	t.Helper()
	raw, err := EncodeRecord(r)
	if err != nil {
		t.Fatal(err)
	}
	return entry{rec: r, raw: raw}
}

func table(v *view) map[string]string {
	out := map[string]string{}
	for name, e := range v.records {
		out[name] = string(e.raw)
	}
	return out
}

// randomEntries makes records of a few nodes with colliding versions,
// including equal versions with different contents (which an honest owner
// never issues, but the merge must still be order-independent).
func randomEntries(t testing.TB, rnd *rand.Rand, n int) []entry {
	var es []entry
	for i := 0; i < n; i++ {
		r := testRecord([]string{"a", "b", "c", "d"}[rnd.IntN(4)], uint64(1+rnd.IntN(4)))
		r.Free.ComputePerHour = float64(rnd.IntN(3))
		es = append(es, mustEntry(t, r))
	}
	return es
}

// TestMergeIsAJoin checks that merging records is idempotent, commutative
// and associative: any replicas that saw the same records, in any order,
// any number of times, in any grouping, hold the same table.
func TestMergeIsAJoin(t *testing.T) {
	now := t0
	rnd := rand.New(rand.NewPCG(7, 7))
	for round := 0; round < 300; round++ {
		es := randomEntries(t, rnd, 1+rnd.IntN(12))

		ref := newTestView("self", &now)
		ref.mergeAll(es)
		want := table(ref)

		// Commutative (any order) and idempotent (duplicates, replays).
		shuffled := newTestView("self", &now)
		order := append(append([]entry(nil), es...), es[:rnd.IntN(len(es))+1]...)
		rnd.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
		for _, e := range order {
			shuffled.merge(e)
		}
		if got := table(shuffled); !maps.Equal(got, want) {
			t.Fatalf("round %d: merging in another order gave a different table", round)
		}
		ref.mergeAll(es)
		if got := table(ref); !maps.Equal(got, want) {
			t.Fatalf("round %d: merging twice changed the table", round)
		}

		// Associative: (A ∪ B) ∪ C = A ∪ (B ∪ C), merging replicas' states.
		i, j := rnd.IntN(len(es)+1), rnd.IntN(len(es)+1)
		i, j = min(i, j), max(i, j)
		part := func(es []entry) *view { v := newTestView("self", &now); v.mergeAll(es); return v }
		state := func(v *view) []entry {
			var out []entry
			for _, e := range v.records {
				out = append(out, e)
			}
			return out
		}
		ab := part(es[:j])
		ab.mergeAll(state(part(es[j:])))
		bc := part(es[i:])
		left := part(es[:i])
		left.mergeAll(state(bc))
		if !maps.Equal(table(ab), want) || !maps.Equal(table(left), want) {
			t.Fatalf("round %d: merging grouped states gave a different table", round)
		}
	}
}

func TestMergeKeepsHigherVersion(t *testing.T) {
	now := t0
	v := newTestView("self", &now)
	older, newer := mustEntry(t, testRecord("a", 5)), mustEntry(t, testRecord("a", 6))
	if !v.merge(newer) {
		t.Fatal("merge(first record of a) = false; want true")
	}
	if v.merge(older) {
		t.Fatal("merge(older version) = true; want it ignored")
	}
	if got := v.records["a"].rec.Version; got != 6 {
		t.Fatalf("after merging versions 6 then 5, the view holds version %d; want 6", got)
	}
	// A newer version with the same capacity is kept but is no news.
	same := testRecord("a", 13) // 13 % 7 == 6 % 7: same testCapacity
	same.Coordinate = testCoordinate(0.3)
	if v.merge(mustEntry(t, same)) {
		t.Fatal("merge(newer version, same capacity) = true; want false (nothing to re-broadcast)")
	}
	if got := v.records["a"].rec.Version; got != 13 {
		t.Fatalf("view holds version %d; want 13", got)
	}
}
