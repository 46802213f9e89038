package gossip

import (
	"bytes"
	"testing"
)

// The fuzz targets check that decoding arbitrary bytes never panics, that
// whatever decodes is valid and within the size limits, and that it
// survives a round trip. Seed corpora live in testdata/fuzz.

func fuzzSeeds(f *testing.F) [][]byte {
	r := testRecord("node-1", 12)
	r.Forecast = &Forecast{Horizon: 3600e9, DemandPerHour: 40, Low: 30, High: 60}
	raw, err := EncodeRecord(r)
	if err != nil {
		f.Fatal(err)
	}
	plain, _ := EncodeRecord(Record{Node: "n", Region: "r", Version: 1, UpdatedAt: t0})
	return [][]byte{raw, plain, raw[:len(raw)/2], {0xc0}, {0x80}, nil}
}

func FuzzDecodeRecord(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		peekRecord(b) // must not panic on any input
		r, err := DecodeRecord(b)
		if err != nil {
			return
		}
		if len(b) > MaxRecordSize {
			t.Fatalf("decoded a %d-byte record; limit %d", len(b), MaxRecordSize)
		}
		if err := r.Validate(); err != nil {
			t.Fatalf("decoded an invalid record: %v", err)
		}
		again, err := EncodeRecord(r)
		if err != nil {
			t.Fatalf("re-encoding a decoded record: %v", err)
		}
		r2, err := DecodeRecord(again)
		if err != nil {
			t.Fatalf("decoding a re-encoded record: %v", err)
		}
		if node, version, ok := peekRecord(again); !ok || node != r.Node || version != r.Version {
			t.Fatalf("peekRecord = %q, %d, %v; want %q, %d", node, version, ok, r.Node, r.Version)
		}
		if again2, _ := EncodeRecord(r2); !bytes.Equal(again, again2) {
			t.Fatal("record encoding is not stable across a round trip")
		}
	})
}

func FuzzDecodeMessage(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(append([]byte{byte(MessageRecord)}, s...))
	}
	f.Add([]byte{0})
	f.Add([]byte{200, 1, 2})
	f.Fuzz(func(t *testing.T, b []byte) {
		typ, r, err := DecodeMessage(b)
		if err != nil {
			return
		}
		if typ != MessageRecord || len(b) > MaxMessageSize {
			t.Fatalf("decoded a message of type %v and %d bytes", typ, len(b))
		}
		if err := r.Validate(); err != nil {
			t.Fatalf("decoded an invalid record: %v", err)
		}
	})
}

func FuzzDecodeState(f *testing.F) {
	var raws [][]byte
	for _, s := range fuzzSeeds(f)[:2] {
		raws = append(raws, s)
	}
	state, err := encodeState(raws)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(state)
	f.Add([]byte{stateFormat, 0x90})
	f.Fuzz(func(t *testing.T, b []byte) {
		good, _, _ := decodeState(b, nil)
		for _, e := range good {
			if err := e.rec.Validate(); err != nil {
				t.Fatalf("decoded an invalid record: %v", err)
			}
		}
	})
}

func FuzzDecodeMeta(f *testing.F) {
	m, _ := EncodeMeta(Meta{Region: "us-east-1", Role: RoleServer, HTTPAddr: "10.0.0.1:8080", Version: "v1"})
	f.Add(m)
	f.Add([]byte{0x80})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := DecodeMeta(b)
		if err != nil {
			return
		}
		if err := m.Validate(); err != nil {
			t.Fatalf("decoded invalid metadata: %v", err)
		}
		if _, err := EncodeMeta(m); err != nil {
			t.Fatalf("re-encoding decoded metadata: %v", err)
		}
	})
}
