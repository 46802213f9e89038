package gossip

import (
	"fmt"

	"github.com/vmihailenco/msgpack/v5"
	"github.com/vmihailenco/msgpack/v5/msgpcode"

	"github.com/meridian-mesh/meridian/placement"
)

// Records are decoded without reflection: every broadcast and push/pull
// brings some, and msgpack's reflective decoding of them was the largest
// part of gossip's own CPU (about 5 % of a world simulation). The decoders
// below use the msgpack.Decoder primitives the reflective decoder uses for
// each field's type, so a field decodes to the same value from the same
// bytes; they accept the map form only (the encoders never write the array
// form). FuzzWireMatchesReflection holds them to that.

var (
	_ msgpack.CustomDecoder = (*wireRecord)(nil)
	_ msgpack.CustomDecoder = (*wireCoordinate)(nil)
	_ msgpack.CustomDecoder = (*wireMarket)(nil)
	_ msgpack.CustomDecoder = (*wireForecast)(nil)
)

// decodeFields reads a msgpack map, calling field for each key; a nil
// map calls zero instead, as the reflective decoder zeroes a struct
// decoded from nil. field must skip the keys it does not know (dec.Skip).
func decodeFields(dec *msgpack.Decoder, what string, zero func(), field func(key string) error) error {
	// DecodeMapLen also skips an extension header before a map; the
	// reflective decoder does not, and neither do these.
	c, err := dec.PeekCode()
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if !msgpcode.IsFixedMap(c) && c != msgpcode.Map16 && c != msgpcode.Map32 && c != msgpcode.Nil {
		return fmt.Errorf("%s: msgpack code %#x, want a map: %w", what, c, ErrMalformed)
	}
	n, err := dec.DecodeMapLen()
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if n == -1 {
		zero()
		return nil
	}
	for range n {
		k, err := dec.DecodeString()
		if err != nil {
			return fmt.Errorf("%s: key: %w", what, err)
		}
		if err := field(k); err != nil {
			return fmt.Errorf("%s: field %q: %w", what, k, err)
		}
	}
	return nil
}

// isNil consumes a nil value, reporting whether there was one: a nil
// pointer field.
func isNil(dec *msgpack.Decoder) (bool, error) {
	c, err := dec.PeekCode()
	if err != nil {
		return false, err
	}
	if c != msgpcode.Nil {
		return false, nil
	}
	return true, dec.DecodeNil()
}

// DecodeMsgpack implements msgpack.CustomDecoder.
func (w *wireRecord) DecodeMsgpack(dec *msgpack.Decoder) error {
	return decodeFields(dec, "record", func() { *w = wireRecord{} }, func(k string) (err error) {
		switch k {
		case "n":
			w.Node, err = dec.DecodeString()
		case "r":
			w.Region, err = dec.DecodeString()
		case "v":
			w.Version, err = dec.DecodeUint64()
		case "t":
			err = decodeResources(dec, &w.Total)
		case "f":
			err = decodeResources(dec, &w.Free)
		case "p":
			w.Price, err = dec.DecodeFloat64()
		case "g":
			w.GPUType, err = dec.DecodeString()
		case "ut":
			w.Utilization, err = dec.DecodeFloat64()
		case "q":
			w.Queue, err = dec.DecodeInt64()
		case "d":
			w.Demand, err = dec.DecodeFloat64()
		case "fc":
			err = decodePtr(dec, &w.Forecast)
		case "mk":
			err = decodePtr(dec, &w.Market)
		case "at":
			w.UpdatedAt, err = dec.DecodeInt64()
		case "c":
			err = decodePtr(dec, &w.Coordinate)
		case "lv":
			w.Leaving, err = dec.DecodeBool()
		default:
			err = dec.Skip()
		}
		return err
	})
}

// decodePtr decodes a pointer field: nil for nil, else a value of its own
// (a new one, as the reflective decoder allocates when the field is nil).
func decodePtr[T any, P interface {
	*T
	msgpack.CustomDecoder
}](dec *msgpack.Decoder, p **T) error {
	null, err := isNil(dec)
	if err != nil || null {
		*p = nil
		return err
	}
	if *p == nil {
		*p = new(T)
	}
	return P(*p).DecodeMsgpack(dec)
}

// decodeResources decodes placement.Resources, whose msgpack keys are c, s,
// b and g.
func decodeResources(dec *msgpack.Decoder, r *placement.Resources) error {
	return decodeFields(dec, "resources", func() { *r = placement.Resources{} }, func(k string) (err error) {
		switch k {
		case "c":
			r.ComputePerHour, err = dec.DecodeFloat64()
		case "s":
			r.StorageGB, err = dec.DecodeFloat64()
		case "b":
			r.BandwidthGBps, err = dec.DecodeFloat64()
		case "g":
			r.GPUs, err = dec.DecodeInt()
		default:
			err = dec.Skip()
		}
		return err
	})
}

// DecodeMsgpack implements msgpack.CustomDecoder.
func (w *wireCoordinate) DecodeMsgpack(dec *msgpack.Decoder) error {
	return decodeFields(dec, "coordinate", func() { *w = wireCoordinate{} }, func(k string) (err error) {
		switch k {
		case "v":
			var n int
			if n, err = dec.DecodeArrayLen(); err != nil {
				return err
			}
			if n > coordDims {
				return fmt.Errorf("%d elements, want at most %d", n, coordDims)
			}
			for i := range n {
				if w.Vec[i], err = dec.DecodeFloat64(); err != nil {
					return err
				}
			}
		case "e":
			w.Error, err = dec.DecodeFloat64()
		case "a":
			w.Adjustment, err = dec.DecodeFloat64()
		case "h":
			w.Height, err = dec.DecodeFloat64()
		default:
			err = dec.Skip()
		}
		return err
	})
}

// DecodeMsgpack implements msgpack.CustomDecoder.
func (w *wireMarket) DecodeMsgpack(dec *msgpack.Decoder) error {
	return decodeFields(dec, "market", func() { *w = wireMarket{} }, func(k string) (err error) {
		switch k {
		case "l":
			w.Leader, err = dec.DecodeBool()
		case "t":
			w.Term, err = dec.DecodeUint64()
		case "a":
			w.Ask, err = dec.DecodeBytes()
		default:
			err = dec.Skip()
		}
		return err
	})
}

// DecodeMsgpack implements msgpack.CustomDecoder.
func (w *wireForecast) DecodeMsgpack(dec *msgpack.Decoder) error {
	return decodeFields(dec, "forecast", func() { *w = wireForecast{} }, func(k string) (err error) {
		switch k {
		case "h":
			w.Horizon, err = dec.DecodeInt64()
		case "d":
			w.Demand, err = dec.DecodeFloat64()
		case "l":
			w.Low, err = dec.DecodeFloat64()
		case "u":
			w.High, err = dec.DecodeFloat64()
		default:
			err = dec.Skip()
		}
		return err
	})
}
