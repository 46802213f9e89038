package gossip

import (
	"bytes"
	"reflect"
	"testing"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/meridian-mesh/meridian/placement"
)

// The reflective twins of the wire types: the same fields and tags, without
// the hand-written decoders, so msgpack decodes them by reflection.
type (
	reflectRecord struct {
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
		Forecast    *reflectForecast    `msgpack:"fc,omitempty"`
		Market      *reflectMarket      `msgpack:"mk,omitempty"`
		UpdatedAt   int64               `msgpack:"at"`
		Coordinate  *reflectCoordinate  `msgpack:"c,omitempty"`
		Leaving     bool                `msgpack:"lv,omitempty"`
	}
	reflectCoordinate struct {
		Vec        [coordDims]float64 `msgpack:"v"`
		Error      float64            `msgpack:"e"`
		Adjustment float64            `msgpack:"a"`
		Height     float64            `msgpack:"h"`
	}
	reflectMarket struct {
		Leader bool   `msgpack:"l,omitempty"`
		Term   uint64 `msgpack:"t,omitempty"`
		Ask    []byte `msgpack:"a,omitempty"`
	}
	reflectForecast struct {
		Horizon int64   `msgpack:"h"`
		Demand  float64 `msgpack:"d"`
		Low     float64 `msgpack:"l"`
		High    float64 `msgpack:"u"`
	}
)

// TestWireTwinsMatch keeps the twins above in step with the wire types.
func TestWireTwinsMatch(t *testing.T) {
	pairs := [][2]any{{wireRecord{}, reflectRecord{}}, {wireCoordinate{}, reflectCoordinate{}},
		{wireMarket{}, reflectMarket{}}, {wireForecast{}, reflectForecast{}}}
	for _, p := range pairs {
		a, b := reflect.TypeOf(p[0]), reflect.TypeOf(p[1])
		if a.NumField() != b.NumField() {
			t.Fatalf("%v has %d fields, its twin %v %d", a, a.NumField(), b, b.NumField())
		}
		for i := range a.NumField() {
			fa, fb := a.Field(i), b.Field(i)
			if fa.Name != fb.Name || fa.Tag != fb.Tag {
				t.Errorf("%v.%s `%s` and twin %v.%s `%s` differ", a, fa.Name, fa.Tag, b, fb.Name, fb.Tag)
			}
		}
	}
}

// FuzzWireMatchesReflection holds the hand-written record decoder to the
// reflective one: whatever it accepts, reflection accepts and decodes to
// the same fields. (It may refuse more: the array form of a struct.)
func FuzzWireMatchesReflection(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s)
	}
	r := testRecord("node-2", 3)
	r.Market = &MarketInfo{Leader: true, Term: 4, Ask: []byte{1, 2, 3}}
	raw, err := EncodeRecord(r)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(raw)
	// Nil fields, duplicate keys, an unknown key, a short vector.
	f.Add(encodeWireForFuzz(f, map[string]any{"n": "a", "t": nil, "fc": nil, "mk": map[string]any{"a": nil}, "zz": []int{1}}))
	f.Add(encodeWireForFuzz(f, map[string]any{"n": "a", "c": map[string]any{"v": []float64{1, 2}, "e": 1}}))
	f.Add(encodeWireForFuzz(f, map[string]any{"c": map[string]any{"v": nil}, "q": -3, "p": 7}))
	f.Fuzz(func(t *testing.T, b []byte) {
		var hand wireRecord
		herr := msgpack.NewDecoder(bytes.NewReader(b)).Decode(&hand)
		var refl reflectRecord
		rerr := msgpack.NewDecoder(bytes.NewReader(b)).Decode(&refl)
		if herr != nil {
			return
		}
		if rerr != nil {
			t.Fatalf("the hand-written decoder accepted what reflection refuses (%v): %+v", rerr, hand)
		}
		// Compare through the encoding of each: the twins encode alike.
		he, err1 := msgpack.Marshal(&hand)
		re, err2 := msgpack.Marshal(&refl)
		if err1 != nil || err2 != nil {
			t.Fatalf("re-encoding: %v, %v", err1, err2)
		}
		if !bytes.Equal(he, re) {
			t.Fatalf("decoders differ:\nhand %+v\nrefl %+v", hand, refl)
		}
	})
}

func encodeWireForFuzz(f *testing.F, m map[string]any) []byte {
	b, err := msgpack.Marshal(m)
	if err != nil {
		f.Fatal(err)
	}
	return b
}

// BenchmarkDecodeRecord compares the hand-written decoder with msgpack's
// reflection on a leader's record (market ask, forecast, coordinate).
func BenchmarkDecodeRecord(b *testing.B) {
	r := testRecord("us-east-1-0", 41)
	r.Market = &MarketInfo{Leader: true, Term: 3, Ask: bytes.Repeat([]byte{7}, 90)}
	r.Forecast = &Forecast{Horizon: 3600e9, DemandPerHour: 40, Low: 30, High: 60}
	raw, err := EncodeRecord(r)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("hand", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var w wireRecord
			if err := unmarshalExact(raw, &w); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("reflect", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var w reflectRecord
			if err := unmarshalExact(raw, &w); err != nil {
				b.Fatal(err)
			}
		}
	})
}
