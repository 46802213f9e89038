package consensus

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"time"

	"github.com/vmihailenco/msgpack/v5"
)

// The log format.
//
// A Raft log entry written by this package is a msgpack array
// [entryFormat, [envelope, ...]], and an envelope is the array
// [version, kind, now, body] where body is the command's msgpack encoding.
// Decoding is done by hand, element by element, so that a length prefix in
// corrupt or hostile bytes can never make the decoder allocate more than the
// input's own size.

// CommandVersion is the version of the command bodies this build writes.
// A replica rejects (with ErrUnsupported, identically everywhere) a command
// whose version it does not know; bump it only with a migration plan.
const CommandVersion uint8 = 1

// entryFormat is the version of the entry framing.
const entryFormat = 1

// Envelope is a command as it travels in the log and over the forwarding
// RPC: its kind, the version of its body's encoding, the time the leader
// stamped it with, and the msgpack body.
type Envelope struct {
	Version uint8
	Kind    Kind
	// Now is stamped by the leader's proposal queue; zero until then.
	Now  time.Time
	Body []byte
}

// EncodeCommand encodes a command's body into an envelope (Now is left
// zero for the leader to stamp).
func EncodeCommand(c Command) (Envelope, error) {
	env, _, err := encodeInto(make([]byte, 0, 128), c)
	return env, err
}

// encodeCommands encodes commands into envelopes whose bodies share one
// buffer: a scheduler's plan is many small commands, and one allocation
// for all of their bodies is cheaper than one each.
func encodeCommands(cmds []Command) ([]Envelope, error) {
	envs := make([]Envelope, len(cmds))
	buf := make([]byte, 0, 64*len(cmds))
	for i, c := range cmds {
		env, b, err := encodeInto(buf, c)
		if err != nil {
			return nil, fmt.Errorf("command %d: %w", i, err)
		}
		envs[i], buf = env, b
	}
	return envs, nil
}

// encodeInto encodes c into an envelope whose body is appended to buf (and
// capped there, so that appending to buf again cannot write into it), and
// returns buf with the body.
func encodeInto(buf []byte, c Command) (Envelope, []byte, error) {
	if c == nil {
		return Envelope{}, buf, invalid("command", "must not be nil")
	}
	k := c.Kind()
	if k < 1 || k > maxKind {
		return Envelope{}, buf, cmdErr(CodeUnsupported, "", "command kind %d (%T)", uint8(k), c)
	}
	if b, ok := appendCommandBody(buf, c); ok {
		return Envelope{Version: CommandVersion, Kind: k, Body: b[len(buf):len(b):len(b)]}, b, nil
	}
	body, err := msgpack.Marshal(c)
	if err != nil {
		return Envelope{}, buf, fmt.Errorf("encode %s command: %w", k, err)
	}
	return Envelope{Version: CommandVersion, Kind: k, Body: body}, buf, nil
}

// DecodeCommand decodes an envelope's body into its typed command. An
// unknown version or kind fails with ErrUnsupported, a body that does not
// decode with ErrMalformed; both are *CommandError values.
func DecodeCommand(env Envelope) (Command, error) {
	if env.Version != CommandVersion {
		return nil, cmdErr(CodeUnsupported, env.Kind.String(), "command version %d (this build reads version %d)", env.Version, CommandVersion)
	}
	// The hand-written decoders (wire.go) take the usual forms; anything
	// else goes through the checked reflective decoder, which gives the
	// same value for what both accept.
	if c, ok := decodeCommandFast(env.Kind, env.Body); ok {
		return c, nil
	}
	p, ok := newBody(env.Kind)
	if !ok {
		return nil, cmdErr(CodeUnsupported, "", "unknown command kind %d", uint8(env.Kind))
	}
	if err := unmarshal(env.Body, p); err != nil {
		return nil, cmdErr(CodeMalformed, env.Kind.String(), "decode %s body: %v", env.Kind, err)
	}
	return deref(p), nil
}

// encodeEntry encodes a log entry holding the envelopes.
func encodeEntry(envs []Envelope) ([]byte, error) {
	return appendEntry(make([]byte, 0, 16+envelopesSize(envs)), envs), nil
}

// appendEntry appends a log entry holding the envelopes: the bytes a
// msgpack.Encoder writes for [entryFormat, [[version, kind, now, body],
// ...]] with EncodeUint8, EncodeTime and EncodeBytes.
func appendEntry(b []byte, envs []Envelope) []byte {
	b = appendEntryHeader(b, len(envs))
	for _, e := range envs {
		b = appendEnvelope(b, e)
	}
	return b
}

// appendEntryHeader appends the start of an entry of n envelopes, which
// appendEnvelope then appends one by one.
func appendEntryHeader(b []byte, n int) []byte {
	b = append(b, 0x92, 0xcc, entryFormat)
	return appendArrayLen(b, n)
}

// appendEnvelope appends one envelope of an entry.
func appendEnvelope(b []byte, e Envelope) []byte {
	b = append(b, 0x94, 0xcc, e.Version, 0xcc, uint8(e.Kind))
	b = appendTime(b, e.Now)
	if e.Body == nil {
		return append(b, 0xc0)
	}
	return appendBin(b, e.Body)
}

// envelopeOverhead bounds the bytes an envelope adds around its body.
const envelopeOverhead = 24

func envelopesSize(envs []Envelope) int {
	n := 0
	for _, e := range envs {
		n += len(e.Body) + envelopeOverhead
	}
	return n
}

// decodeEntry decodes a log entry into its envelopes. The bodies of the
// envelopes may share data's memory.
func decodeEntry(data []byte) ([]Envelope, error) {
	if envs, ok := decodeEntryFast(data); ok {
		return envs, nil
	}
	return decodeEntryStream(data)
}

// decodeEntryFast decodes an entry in the form appendEntry writes, without
// copying the bodies; ok false means the entry is in another form (or
// malformed), for decodeEntryStream to read or reject.
func decodeEntryFast(data []byte) ([]Envelope, bool) {
	r := &wireReader{b: data}
	if n, ok := r.arrayLen(); !ok || n != 2 {
		return nil, false
	}
	if f, ok := r.int64(); !ok || f != entryFormat {
		return nil, false
	}
	count, ok := r.arrayLen()
	if !ok || count > (len(data)-r.off)/5 {
		return nil, false
	}
	envs := make([]Envelope, count)
	for i := range envs {
		if n, ok := r.arrayLen(); !ok || n != 4 {
			return nil, false
		}
		v, ok := r.int64()
		if !ok || v < 0 || v > math.MaxUint8 {
			return nil, false
		}
		k, ok := r.int64()
		if !ok || k < 0 || k > math.MaxUint8 {
			return nil, false
		}
		now, ok := r.time()
		if !ok {
			return nil, false
		}
		c, ok := r.code()
		var n uint64
		switch {
		case !ok:
			return nil, false
		case c == 0xc4:
			n, ok = r.be(1)
		case c == 0xc5:
			n, ok = r.be(2)
		case c == 0xc6:
			n, ok = r.be(4)
		default:
			return nil, false
		}
		if !ok || n > maxFrame {
			return nil, false
		}
		body, ok := r.next(int(n))
		if !ok {
			return nil, false
		}
		envs[i] = Envelope{Version: uint8(v), Kind: Kind(k), Now: canon(now), Body: body}
	}
	if !r.done() {
		return nil, false
	}
	return envs, true
}

// decodeEntryStream decodes an entry in any form a msgpack encoder may
// have written, with msgpack's decoder.
func decodeEntryStream(data []byte) ([]Envelope, error) {
	r := bytes.NewReader(data)
	dec := msgpack.NewDecoder(r)
	n, err := dec.DecodeArrayLen()
	if err != nil {
		return nil, fmt.Errorf("entry header: %w", err)
	}
	if n != 2 {
		return nil, fmt.Errorf("entry header: array of %d elements, want 2", n)
	}
	format, err := decodeSmallUint(dec, "entry format")
	if err != nil {
		return nil, err
	}
	if format != entryFormat {
		return nil, fmt.Errorf("entry format %d (this build reads format %d)", format, entryFormat)
	}
	count, err := dec.DecodeArrayLen()
	if err != nil {
		return nil, fmt.Errorf("entry command count: %w", err)
	}
	// Every envelope takes at least 5 bytes, so a count above what is left
	// is a lie, and must not size an allocation.
	if count < 0 || count > r.Len()/5 {
		return nil, fmt.Errorf("entry claims %d commands in %d bytes", count, r.Len())
	}
	envs := make([]Envelope, count)
	for i := range envs {
		if envs[i], err = decodeEnvelope(dec, r); err != nil {
			return nil, fmt.Errorf("command %d of %d: %w", i, count, err)
		}
	}
	if r.Len() != 0 {
		return nil, fmt.Errorf("%d trailing bytes after the entry", r.Len())
	}
	return envs, nil
}

func decodeEnvelope(dec *msgpack.Decoder, r byteReader) (Envelope, error) {
	var env Envelope
	n, err := dec.DecodeArrayLen()
	if err != nil {
		return env, fmt.Errorf("envelope: %w", err)
	}
	if n != 4 {
		return env, fmt.Errorf("envelope: array of %d elements, want 4", n)
	}
	v, err := decodeSmallUint(dec, "envelope version")
	if err != nil {
		return env, err
	}
	k, err := decodeSmallUint(dec, "envelope kind")
	if err != nil {
		return env, err
	}
	now, err := dec.DecodeTime()
	if err != nil {
		return env, fmt.Errorf("envelope time: %w", err)
	}
	body, err := decodeBin(dec, r, maxFrame)
	if err != nil {
		return env, fmt.Errorf("envelope body: %w", err)
	}
	return Envelope{Version: v, Kind: Kind(k), Now: canon(now), Body: body}, nil
}

func decodeSmallUint(dec *msgpack.Decoder, what string) (uint8, error) {
	v, err := dec.DecodeInt64()
	if err != nil {
		return 0, fmt.Errorf("%s: %w", what, err)
	}
	if v < 0 || v > math.MaxUint8 {
		return 0, fmt.Errorf("%s: %d is out of range 0..255", what, v)
	}
	return uint8(v), nil
}

// canon returns t in the one form the ledger stores: UTC, without a
// monotonic clock reading, so that equal instants compare equal with ==
// and reflect.DeepEqual on every replica.
func canon(t time.Time) time.Time {
	if t.IsZero() {
		return time.Time{}
	}
	return t.Round(0).UTC()
}

// maxNesting bounds how deep arrays and maps may nest in a decoded
// message; the deepest real one is a few levels.
const maxNesting = 16

// checkStructure scans one msgpack value and rejects what the reflective
// decoder cannot be trusted with: a nil value (msgpack v5.4.1 panics
// decoding nil into a time.Time field), nesting deeper than maxNesting (its
// Skip recurses once per level), lengths beyond the input, and trailing
// bytes. Every byte slice that comes from the network, the log or a
// snapshot passes here before msgpack.Unmarshal. It reads the bytes
// directly, without a decoder, so it costs little next to the decoding.
func checkStructure(b []byte) error {
	n, err := scanValue(b, 0)
	if err != nil {
		return err
	}
	if n != len(b) {
		return fmt.Errorf("%d trailing bytes", len(b)-n)
	}
	return nil
}

var errTruncated = errors.New("truncated value")

// scanValue returns the length of the msgpack value at the start of b.
func scanValue(b []byte, depth int) (int, error) {
	if len(b) == 0 {
		return 0, errTruncated
	}
	c := b[0]
	// be reads an n-byte big-endian length after the code.
	be := func(n int) (int, error) {
		if len(b) < 1+n {
			return 0, errTruncated
		}
		v := 0
		for _, x := range b[1 : 1+n] {
			v = v<<8 | int(x)
		}
		return v, nil
	}
	// fixed returns a value of n bytes in all; payload one with a length
	// header of h bytes, e extra bytes (an ext's type) and l payload bytes.
	fixed := func(n int) (int, error) {
		if len(b) < n {
			return 0, errTruncated
		}
		return n, nil
	}
	payload := func(h, e int) (int, error) {
		l, err := be(h)
		if err != nil {
			return 0, err
		}
		return fixed(1 + h + e + l)
	}
	switch {
	case c <= 0x7f || c >= 0xe0 || c == 0xc2 || c == 0xc3:
		return 1, nil
	case c >= 0xa0 && c <= 0xbf:
		return fixed(1 + int(c&0x1f))
	case c >= 0x80 && c <= 0x8f:
		return scanItems(b, 1, 2*int(c&0x0f), depth)
	case c >= 0x90 && c <= 0x9f:
		return scanItems(b, 1, int(c&0x0f), depth)
	}
	switch c {
	case 0xc0:
		return 0, errors.New("nil value")
	case 0xc4, 0xd9:
		return payload(1, 0)
	case 0xc5, 0xda:
		return payload(2, 0)
	case 0xc6, 0xdb:
		return payload(4, 0)
	case 0xc7:
		return payload(1, 1)
	case 0xc8:
		return payload(2, 1)
	case 0xc9:
		return payload(4, 1)
	case 0xcc, 0xd0:
		return fixed(2)
	case 0xcd, 0xd1:
		return fixed(3)
	case 0xca, 0xce, 0xd2:
		return fixed(5)
	case 0xcb, 0xcf, 0xd3:
		return fixed(9)
	case 0xd4:
		return fixed(3)
	case 0xd5:
		return fixed(4)
	case 0xd6:
		return fixed(6)
	case 0xd7:
		return fixed(10)
	case 0xd8:
		return fixed(18)
	case 0xdc, 0xde:
		n, err := be(2)
		if err != nil {
			return 0, err
		}
		if c == 0xde {
			n *= 2
		}
		return scanItems(b, 3, n, depth)
	case 0xdd, 0xdf:
		n, err := be(4)
		if err != nil {
			return 0, err
		}
		if c == 0xdf {
			n *= 2
		}
		return scanItems(b, 5, n, depth)
	}
	return 0, fmt.Errorf("invalid msgpack code 0x%02x", c)
}

// scanItems scans n values after an h-byte header.
func scanItems(b []byte, h, n, depth int) (int, error) {
	if depth >= maxNesting {
		return 0, fmt.Errorf("values nested deeper than %d levels", maxNesting)
	}
	if n > len(b)-h {
		return 0, errTruncated // every value takes at least a byte
	}
	off := h
	for range n {
		m, err := scanValue(b[off:], depth+1)
		if err != nil {
			return 0, err
		}
		off += m
	}
	return off, nil
}

// unmarshal decodes untrusted msgpack into v after checkStructure.
func unmarshal(b []byte, v any) error {
	if err := checkStructure(b); err != nil {
		return err
	}
	return msgpack.Unmarshal(b, v)
}

// byteReader is a reader msgpack.Decoder reads from directly, without a
// buffer of its own, so that the bytes after a length header can be read
// from it by the caller.
type byteReader interface {
	io.Reader
	io.ByteScanner
}

// decodeBin reads a bin (or str) value whose length header comes from
// untrusted bytes. msgpack's own DecodeBytes allocates whatever length the
// header claims (up to 4 GiB); here the length is capped at max and the
// buffer grows only with the bytes actually present.
func decodeBin(dec *msgpack.Decoder, r byteReader, max int) ([]byte, error) {
	n, err := dec.DecodeBytesLen()
	if err != nil {
		return nil, err
	}
	if n < 0 {
		return nil, nil
	}
	if n > max {
		return nil, fmt.Errorf("%d bytes, at most %d allowed", n, max)
	}
	buf := make([]byte, 0, min(n, 64<<10))
	for len(buf) < n {
		start := len(buf)
		buf = append(buf, make([]byte, min(n-start, 1<<20))...)
		if _, err := io.ReadFull(r, buf[start:]); err != nil {
			return nil, err
		}
	}
	return buf, nil
}
