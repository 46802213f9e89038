package auction

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// maxMsgpackDepth bounds the nesting of a message: the deepest envelope
// (envelope → award → items → item → job → demand) is six levels.
const maxMsgpackDepth = 16

// maxContainerLen bounds every msgpack array and map. The largest honest
// container is an item list (MaxItems); a struct encodes as a map of at most
// a few dozen fields.
const maxContainerLen = MaxItems

var errTruncated = errors.New("truncated")

// checkMsgpack walks b as exactly one msgpack object and reports whether it
// is well-formed within this package's bounds: every declared length fits in
// the bytes that remain, containers are at most maxContainerLen long, nesting
// is at most maxMsgpackDepth deep, and nothing trails the object. It
// allocates nothing, so it is safe to run on hostile input before the
// decoder, which trusts declared lengths.
func checkMsgpack(b []byte) error {
	w := walker{b: b}
	if err := w.object(0); err != nil {
		return fmt.Errorf("at byte %d: %w", w.off, err)
	}
	if w.off != len(b) {
		return fmt.Errorf("%d trailing bytes after the message", len(b)-w.off)
	}
	return nil
}

type walker struct {
	b   []byte
	off int
}

func (w *walker) skip(n uint64) error {
	if n > uint64(len(w.b)-w.off) {
		return errTruncated
	}
	w.off += int(n)
	return nil
}

func (w *walker) uint(size int) (uint64, error) {
	if size > len(w.b)-w.off {
		return 0, errTruncated
	}
	p := w.b[w.off : w.off+size]
	w.off += size
	switch size {
	case 1:
		return uint64(p[0]), nil
	case 2:
		return uint64(binary.BigEndian.Uint16(p)), nil
	default:
		return uint64(binary.BigEndian.Uint32(p)), nil
	}
}

func (w *walker) object(depth int) error {
	if depth > maxMsgpackDepth {
		return fmt.Errorf("nested deeper than %d", maxMsgpackDepth)
	}
	if w.off >= len(w.b) {
		return errTruncated
	}
	c := w.b[w.off]
	w.off++
	switch {
	case c <= 0x7f || c >= 0xe0: // positive and negative fixint
		return nil
	case c >= 0x80 && c <= 0x8f: // fixmap
		return w.container(uint64(c&0x0f), true, depth)
	case c >= 0x90 && c <= 0x9f: // fixarray
		return w.container(uint64(c&0x0f), false, depth)
	case c >= 0xa0 && c <= 0xbf: // fixstr
		return w.skip(uint64(c & 0x1f))
	}
	switch c {
	case 0xc0, 0xc2, 0xc3: // nil, false, true
		return nil
	case 0xc4, 0xd9: // bin8, str8
		return w.sized(1, 0)
	case 0xc5, 0xda: // bin16, str16
		return w.sized(2, 0)
	case 0xc6, 0xdb: // bin32, str32
		return w.sized(4, 0)
	case 0xc7: // ext8: length, type, data
		return w.sized(1, 1)
	case 0xc8:
		return w.sized(2, 1)
	case 0xc9:
		return w.sized(4, 1)
	case 0xca: // float32
		return w.skip(4)
	case 0xcb: // float64
		return w.skip(8)
	case 0xcc, 0xd0:
		return w.skip(1)
	case 0xcd, 0xd1:
		return w.skip(2)
	case 0xce, 0xd2:
		return w.skip(4)
	case 0xcf, 0xd3:
		return w.skip(8)
	case 0xd4, 0xd5, 0xd6, 0xd7, 0xd8: // fixext 1, 2, 4, 8, 16 (+ type byte)
		return w.skip(1 + 1<<(c-0xd4))
	case 0xdc:
		n, err := w.uint(2)
		if err != nil {
			return err
		}
		return w.container(n, false, depth)
	case 0xdd:
		n, err := w.uint(4)
		if err != nil {
			return err
		}
		return w.container(n, false, depth)
	case 0xde:
		n, err := w.uint(2)
		if err != nil {
			return err
		}
		return w.container(n, true, depth)
	case 0xdf:
		n, err := w.uint(4)
		if err != nil {
			return err
		}
		return w.container(n, true, depth)
	}
	return fmt.Errorf("invalid msgpack code 0x%02x", c)
}

// sized skips a length-prefixed payload whose length takes lenSize bytes,
// followed by extra header bytes (the ext type) before the payload.
func (w *walker) sized(lenSize int, extra uint64) error {
	n, err := w.uint(lenSize)
	if err != nil {
		return err
	}
	return w.skip(extra + n)
}

func (w *walker) container(n uint64, isMap bool, depth int) error {
	if n > maxContainerLen {
		return fmt.Errorf("container of %d entries, at most %d allowed", n, maxContainerLen)
	}
	elems := n
	if isMap {
		elems = 2 * n
	}
	// Every element takes at least one byte: refuse early what cannot fit.
	if elems > uint64(len(w.b)-w.off) {
		return errTruncated
	}
	for range elems {
		if err := w.object(depth + 1); err != nil {
			return err
		}
	}
	return nil
}
