package gossip

import (
	"bytes"
	"errors"
	"math"
	"strings"
	"testing"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/meridian-mesh/meridian/placement"
)

func TestMessageRoundTrip(t *testing.T) {
	r := testRecord("n1", 77)
	msg, err := EncodeRecordMessage(r)
	if err != nil {
		t.Fatalf("EncodeRecordMessage: %v", err)
	}
	if msg[0] != byte(MessageRecord) || len(msg) > MaxMessageSize {
		t.Fatalf("message starts with %d and is %d bytes; want type %d and at most %d bytes", msg[0], len(msg), MessageRecord, MaxMessageSize)
	}
	typ, got, err := DecodeMessage(msg)
	if err != nil || typ != MessageRecord || got.Node != "n1" || got.Version != 77 {
		t.Fatalf("DecodeMessage = %v, %+v, %v; want the record back", typ, got, err)
	}
}

func TestEncodeRecordMessageRejectsOversize(t *testing.T) {
	raw := bytes.Repeat([]byte{0xc0}, MaxMessageSize)
	if _, err := recordMessage(raw); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("recordMessage(%d bytes) = %v; want ErrTooLarge", len(raw), err)
	}
	// The largest valid record still fits a broadcast.
	r := testRecord(strings.Repeat("n", MaxNameLength), 1<<62)
	r.Region = strings.Repeat("r", MaxNameLength)
	r.GPUType = strings.Repeat("g", MaxNameLength)
	r.Forecast = &Forecast{Horizon: 1 << 62, DemandPerHour: 1.1e300, Low: 1.2e300, High: 1.3e300}
	if _, err := EncodeRecordMessage(r); err != nil {
		t.Fatalf("EncodeRecordMessage(largest valid record) = %v; want it to fit", err)
	}
}

func TestDecodeMessageRejects(t *testing.T) {
	good, _ := EncodeRecordMessage(testRecord("n1", 2))
	for _, tc := range []struct {
		name string
		b    []byte
		want error
	}{
		{"empty", nil, ErrMalformed},
		{"unknown type", append([]byte{99}, good[1:]...), ErrMalformed},
		{"oversize", append(bytes.Clone(good), make([]byte, MaxMessageSize)...), ErrTooLarge},
		{"type byte only", []byte{byte(MessageRecord)}, ErrMalformed},
		{"garbage", []byte{byte(MessageRecord), 0xde, 0xad, 0xbe, 0xef}, ErrMalformed},
	} {
		if _, _, err := DecodeMessage(tc.b); !errors.Is(err, tc.want) {
			t.Errorf("DecodeMessage(%s) = %v; want an error wrapping %v", tc.name, err, tc.want)
		}
	}
}

func TestStateRoundTripSkipsBadRecords(t *testing.T) {
	var raws [][]byte
	for i, name := range []string{"a", "b", "c"} {
		raw, err := EncodeRecord(testRecord(name, uint64(i+1)))
		if err != nil {
			t.Fatal(err)
		}
		raws = append(raws, raw)
	}
	bad := encodeWire(t, map[string]any{"n": "bad", "v": 3}) // no region, no capacity
	state, err := encodeState([][]byte{raws[0], bad, raws[1], raws[2]})
	if err != nil {
		t.Fatalf("encodeState: %v", err)
	}
	good, rejected, err := decodeState(state, nil)
	if err != nil {
		t.Fatalf("decodeState: %v", err)
	}
	if len(good) != 3 || len(rejected) != 1 || !errors.Is(rejected[0], placement.ErrInvalid) {
		t.Fatalf("decodeState = %d good, rejected %v; want 3 good and the bad record rejected as invalid", len(good), rejected)
	}
	for i, e := range good {
		if !bytes.Equal(e.raw, raws[i]) {
			t.Fatalf("record %d came back with different bytes", i)
		}
	}
	// Records the receiver holds are skipped without being decoded; the
	// rest come back as before, with bytes of their own.
	held := func(raw []byte) bool { return bytes.Equal(raw, raws[1]) }
	good, rejected, err = decodeState(state, held)
	if err != nil || len(good) != 2 || len(rejected) != 1 {
		t.Fatalf("decodeState with raws[1] held = %d good, %v rejected, %v; want 2 good, 1 rejected", len(good), rejected, err)
	}
	if !bytes.Equal(good[0].raw, raws[0]) || !bytes.Equal(good[1].raw, raws[2]) {
		t.Fatal("decodeState with a held record returned the wrong records")
	}
	good[0].raw[0] ^= 0xff
	if !bytes.Contains(state, raws[0]) {
		t.Fatal("a decoded record shares its bytes with the state buffer")
	}
}

func TestDecodeStateRejects(t *testing.T) {
	raw, _ := EncodeRecord(testRecord("a", 1))
	state, _ := encodeState([][]byte{raw})
	hugeCount := []byte{stateFormat, 0xdd, 0x7f, 0xff, 0xff, 0xff} // array of 2^31-1 elements
	var lying bytes.Buffer
	lying.WriteByte(stateFormat)
	enc := msgpack.NewEncoder(&lying)
	_ = enc.EncodeArrayLen(1)
	_ = enc.EncodeBytesLen(1 << 20) // announces 1 MiB, carries 3 bytes
	lying.Write([]byte{1, 2, 3})
	for _, tc := range []struct {
		name string
		b    []byte
		want error
	}{
		{"unknown format", append([]byte{9}, state[1:]...), ErrMalformed},
		{"not an array", []byte{stateFormat, 0xc3}, ErrMalformed},
		{"huge count", hugeCount, ErrMalformed},
		{"lying length", lying.Bytes(), ErrMalformed},
		{"trailing bytes", append(bytes.Clone(state), 0), ErrMalformed},
		{"oversize", make([]byte, MaxStateSize+1), ErrTooLarge},
	} {
		if _, _, err := decodeState(tc.b, nil); !errors.Is(err, tc.want) {
			t.Errorf("decodeState(%s) = %v; want an error wrapping %v", tc.name, err, tc.want)
		}
	}
	if good, rejected, err := decodeState(nil, nil); err != nil || len(good)+len(rejected) != 0 {
		t.Errorf("decodeState(nil, nil) = %v, %v, %v; want nothing and no error", good, rejected, err)
	}
}

func TestCoordinatePayload(t *testing.T) {
	c := testCoordinate(0.05)
	b, err := encodeCoordinate(c)
	if err != nil {
		t.Fatal(err)
	}
	got, err := decodeCoordinate(b)
	if err != nil || !sameCoordinate(got, c) {
		t.Fatalf("decodeCoordinate(encodeCoordinate(c)) = %v, %v; want c", got, err)
	}
	for name, b := range map[string][]byte{
		"empty":      nil,
		"format":     append([]byte{7}, b[1:]...),
		"oversize":   make([]byte, maxCoordinatePayload+1),
		"truncated":  b[:len(b)-3],
		"not finite": append([]byte{coordinatePayloadFormat}, encodeWire(t, map[string]any{"h": math.NaN()})...),
	} {
		if _, err := decodeCoordinate(b); err == nil {
			t.Errorf("decodeCoordinate(%s) = nil error; want rejected", name)
		}
	}
}
