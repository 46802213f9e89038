package gossip

import (
	"bytes"
	"fmt"
	"io"

	"github.com/vmihailenco/msgpack/v5"
)

// MessageType is the first byte of every broadcast message this package
// sends through memberlist, so that new kinds can be added later and old
// agents reject what they do not know instead of misreading it.
type MessageType uint8

const (
	// MessageRecord carries one capacity record.
	MessageRecord MessageType = 1
)

// String names the message type for logs.
func (t MessageType) String() string {
	switch t {
	case MessageRecord:
		return "record"
	}
	return fmt.Sprintf("unknown(%d)", uint8(t))
}

// stateFormat is the first byte of the push/pull state.
const stateFormat = 1

// EncodeRecordMessage encodes r as a broadcast message and checks that it
// fits MaxMessageSize.
func EncodeRecordMessage(r Record) ([]byte, error) {
	raw, err := EncodeRecord(r)
	if err != nil {
		return nil, err
	}
	return recordMessage(raw)
}

func recordMessage(raw []byte) ([]byte, error) {
	if 1+len(raw) > MaxMessageSize {
		return nil, fmt.Errorf("encode record message: %d bytes, over the %d-byte broadcast limit: %w", 1+len(raw), MaxMessageSize, ErrTooLarge)
	}
	msg := make([]byte, 0, 1+len(raw))
	msg = append(msg, byte(MessageRecord))
	return append(msg, raw...), nil
}

// DecodeMessage decodes one broadcast message. Today the only kind is a
// record; the record's encoding is returned with it. Oversized, malformed,
// unknown and invalid messages return an error, never a panic.
func DecodeMessage(b []byte) (MessageType, Record, error) {
	if len(b) == 0 {
		return 0, Record{}, fmt.Errorf("decode message: empty: %w", ErrMalformed)
	}
	if len(b) > MaxMessageSize {
		return 0, Record{}, fmt.Errorf("decode message: %d bytes, over the %d-byte limit: %w", len(b), MaxMessageSize, ErrTooLarge)
	}
	t := MessageType(b[0])
	switch t {
	case MessageRecord:
		r, err := DecodeRecord(b[1:])
		if err != nil {
			return t, Record{}, fmt.Errorf("decode %s message: %w", t, err)
		}
		return t, r, nil
	}
	return t, Record{}, fmt.Errorf("decode message: unknown type %d: %w", uint8(t), ErrMalformed)
}

// encodeState encodes the push/pull state: a format byte, then a msgpack
// array of encoded records.
func encodeState(raws [][]byte) ([]byte, error) {
	if len(raws) > MaxRecords {
		raws = raws[:MaxRecords]
	}
	var buf bytes.Buffer
	buf.WriteByte(stateFormat)
	enc := msgpack.NewEncoder(&buf)
	if err := enc.EncodeArrayLen(len(raws)); err != nil {
		return nil, fmt.Errorf("encode state: %w", err)
	}
	for _, raw := range raws {
		if err := enc.EncodeBytes(raw); err != nil {
			return nil, fmt.Errorf("encode state: %w", err)
		}
	}
	if buf.Len() > MaxStateSize {
		return nil, fmt.Errorf("encode state: %d bytes, over the %d-byte limit: %w", buf.Len(), MaxStateSize, ErrTooLarge)
	}
	return buf.Bytes(), nil
}

// decodeState decodes a push/pull state. A malformed envelope fails as a
// whole; a record that does not decode is skipped and reported in rejected,
// so one bad record does not hide the others. Records for which held
// reports true (the receiver has those exact bytes) are skipped undecoded.
func decodeState(b []byte, held func(raw []byte) bool) (good []entry, rejected []error, err error) {
	if len(b) == 0 {
		return nil, nil, nil // a peer with nothing to say
	}
	if len(b) > MaxStateSize {
		return nil, nil, fmt.Errorf("decode state: %d bytes, over the %d-byte limit: %w", len(b), MaxStateSize, ErrTooLarge)
	}
	if b[0] != stateFormat {
		return nil, nil, fmt.Errorf("decode state: unknown format %d: %w", b[0], ErrMalformed)
	}
	r := bytes.NewReader(b[1:])
	dec := msgpack.NewDecoder(r)
	n, err := dec.DecodeArrayLen()
	if err != nil {
		return nil, nil, fmt.Errorf("decode state: %w: %w", ErrMalformed, err)
	}
	// Each element takes at least one byte, which bounds n before anything
	// is allocated from it.
	if n < 0 || n > MaxRecords || n > r.Len() {
		return nil, nil, fmt.Errorf("decode state: %d records announced in %d bytes (limit %d): %w", n, r.Len(), MaxRecords, ErrMalformed)
	}
	good = make([]entry, 0, n)
	for i := 0; i < n; i++ {
		size, err := dec.DecodeBytesLen()
		if err != nil {
			return good, rejected, fmt.Errorf("decode state: record %d: %w: %w", i, ErrMalformed, err)
		}
		if size < 0 || size > r.Len() {
			return good, rejected, fmt.Errorf("decode state: record %d: length %d exceeds the %d bytes left: %w", i, size, r.Len(), ErrMalformed)
		}
		at := len(b) - r.Len()
		if _, err := r.Seek(int64(size), io.SeekCurrent); err != nil {
			return good, rejected, fmt.Errorf("decode state: record %d: %w: %w", i, ErrMalformed, err)
		}
		if held != nil && held(b[at:at+size]) {
			continue // a periodic push/pull mostly repeats what we hold
		}
		raw := bytes.Clone(b[at : at+size])
		rec, err := DecodeRecord(raw)
		if err != nil {
			rejected = append(rejected, fmt.Errorf("record %d: %w", i, err))
			continue
		}
		good = append(good, entry{rec: rec, raw: raw})
	}
	if r.Len() != 0 {
		return good, rejected, fmt.Errorf("decode state: %d trailing bytes: %w", r.Len(), ErrMalformed)
	}
	return good, rejected, nil
}
