package consensus

import (
	"encoding/binary"
	"math"
	"time"
	"unique"

	"github.com/meridian-mesh/meridian/placement"
)

// Hand-written msgpack for the commit path.
//
// Every command is encoded and decoded once per replica, so on a busy
// region the reflective codec of vmihailenco/msgpack was the largest single
// cost of a placement after the ledger's own work. The commands proposed
// for every job (SubmitJob, PlaceJob, SetJobState, StopAllocation,
// RenewAllocation, Expire) have hand-written codecs here, and log entries
// are framed and unframed without a msgpack.Encoder or Decoder.
//
// The bytes do not change: the encoders write exactly what msgpack.Marshal
// writes (tests compare them byte for byte), and the decoders are a fast
// path only. A decoder accepts the common, canonical forms and reports
// "not handled" for anything else (an unknown or repeated key, a struct
// sent as an array, a nil, a bin where a string is expected, an unusual
// time encoding, or any error), and the caller then uses the reflective
// decoder. So what the fast path decodes, it decodes to the value
// msgpack.Unmarshal gives (a differential fuzz test checks it), and a
// replica of any version reads any entry the same way.

// appendStr writes a string as msgpack's EncodeString does.
func appendStr(b []byte, s string) []byte {
	switch n := len(s); {
	case n < 32:
		b = append(b, 0xa0|byte(n))
	case n < 256:
		b = append(b, 0xd9, byte(n))
	case n <= math.MaxUint16:
		b = append(b, 0xda, byte(n>>8), byte(n))
	default:
		b = append(b, 0xdb)
		b = binary.BigEndian.AppendUint32(b, uint32(n))
	}
	return append(b, s...)
}

// appendBin writes a byte slice as msgpack's EncodeBytes does (for a
// non-nil slice).
func appendBin(b []byte, p []byte) []byte {
	switch n := len(p); {
	case n < 256:
		b = append(b, 0xc4, byte(n))
	case n <= math.MaxUint16:
		b = append(b, 0xc5, byte(n>>8), byte(n))
	default:
		b = append(b, 0xc6)
		b = binary.BigEndian.AppendUint32(b, uint32(n))
	}
	return append(b, p...)
}

// appendMapLen and appendArrayLen write a map or array header.
func appendMapLen(b []byte, n int) []byte {
	switch {
	case n < 16:
		return append(b, 0x80|byte(n))
	case n <= math.MaxUint16:
		return append(b, 0xde, byte(n>>8), byte(n))
	}
	b = append(b, 0xdf)
	return binary.BigEndian.AppendUint32(b, uint32(n))
}

func appendArrayLen(b []byte, n int) []byte {
	switch {
	case n < 16:
		return append(b, 0x90|byte(n))
	case n <= math.MaxUint16:
		return append(b, 0xdc, byte(n>>8), byte(n))
	}
	b = append(b, 0xdd)
	return binary.BigEndian.AppendUint32(b, uint32(n))
}

// appendUint writes an unsigned integer in the smallest form, as msgpack's
// EncodeUint does (and so as it encodes a uint struct field).
func appendUint(b []byte, n uint64) []byte {
	switch {
	case n <= math.MaxInt8:
		return append(b, byte(n))
	case n <= math.MaxUint8:
		return append(b, 0xcc, byte(n))
	case n <= math.MaxUint16:
		return append(b, 0xcd, byte(n>>8), byte(n))
	case n <= math.MaxUint32:
		b = append(b, 0xce)
		return binary.BigEndian.AppendUint32(b, uint32(n))
	}
	b = append(b, 0xcf)
	return binary.BigEndian.AppendUint64(b, n)
}

// appendInt writes a signed integer in the smallest form, as msgpack's
// EncodeInt does (and so as it encodes an int struct field).
func appendInt(b []byte, n int64) []byte {
	switch {
	case n >= 0:
		return appendUint(b, uint64(n))
	case n >= -32:
		return append(b, byte(n))
	case n >= math.MinInt8:
		return append(b, 0xd0, byte(n))
	case n >= math.MinInt16:
		return append(b, 0xd1, byte(n>>8), byte(n))
	case n >= math.MinInt32:
		b = append(b, 0xd2)
		return binary.BigEndian.AppendUint32(b, uint32(n))
	}
	b = append(b, 0xd3)
	return binary.BigEndian.AppendUint64(b, uint64(n))
}

// appendUint8, appendUint64 and appendInt64 write an integer in its
// fixed-width form, as msgpack encodes struct fields of those widths
// (uint8, uint64, int64 and time.Duration) by default.
func appendUint8(b []byte, n uint8) []byte { return append(b, 0xcc, n) }

func appendUint64(b []byte, n uint64) []byte {
	b = append(b, 0xcf)
	return binary.BigEndian.AppendUint64(b, n)
}

func appendInt64(b []byte, n int64) []byte {
	b = append(b, 0xd3)
	return binary.BigEndian.AppendUint64(b, uint64(n))
}

// appendFloat writes a float64 as msgpack does by default (always 8 bytes).
func appendFloat(b []byte, f float64) []byte {
	b = append(b, 0xcb)
	return binary.BigEndian.AppendUint64(b, math.Float64bits(f))
}

// appendTime writes a time as msgpack's EncodeTime does: the timestamp
// extension (type -1) in its 4, 8 or 12-byte form.
func appendTime(b []byte, t time.Time) []byte {
	secs := uint64(t.Unix())
	if secs>>34 == 0 {
		data := uint64(t.Nanosecond())<<34 | secs
		if data&0xffffffff00000000 == 0 {
			b = append(b, 0xd6, 0xff)
			return binary.BigEndian.AppendUint32(b, uint32(data))
		}
		b = append(b, 0xd7, 0xff)
		return binary.BigEndian.AppendUint64(b, data)
	}
	b = append(b, 0xc7, 12, 0xff)
	b = binary.BigEndian.AppendUint32(b, uint32(t.Nanosecond()))
	return binary.BigEndian.AppendUint64(b, secs)
}

// fields counts the fields a struct encodes: present reports, in order,
// whether each omitempty field is written.
func fields(always int, present ...bool) int {
	for _, p := range present {
		if p {
			always++
		}
	}
	return always
}

func appendResources(b []byte, r placement.Resources) []byte {
	b = appendMapLen(b, fields(3, r.GPUs != 0))
	b = appendStr(b, "c")
	b = appendFloat(b, r.ComputePerHour)
	b = appendStr(b, "s")
	b = appendFloat(b, r.StorageGB)
	b = appendStr(b, "b")
	b = appendFloat(b, r.BandwidthGBps)
	if r.GPUs != 0 {
		b = appendStr(b, "g")
		b = appendInt(b, int64(r.GPUs))
	}
	return b
}

func appendJob(b []byte, j placement.Job) []byte {
	b = appendMapLen(b, fields(3, j.LatencySLO != 0, j.MaxPricePerHour != 0, j.Priority != 0, j.Duration != 0, j.GPUType != ""))
	b = appendStr(b, "id")
	b = appendStr(b, j.ID)
	b = appendStr(b, "o")
	b = appendStr(b, j.OriginRegion)
	b = appendStr(b, "d")
	b = appendResources(b, j.Demand)
	if j.LatencySLO != 0 {
		b = appendStr(b, "l")
		b = appendInt64(b, int64(j.LatencySLO))
	}
	if j.MaxPricePerHour != 0 {
		b = appendStr(b, "m")
		b = appendFloat(b, j.MaxPricePerHour)
	}
	if j.Priority != 0 {
		b = appendStr(b, "pr")
		b = appendInt(b, int64(j.Priority))
	}
	if j.Duration != 0 {
		b = appendStr(b, "du")
		b = appendInt64(b, int64(j.Duration))
	}
	if j.GPUType != "" {
		b = appendStr(b, "gt")
		b = appendStr(b, j.GPUType)
	}
	return b
}

// appendCommandBody appends the msgpack body of c, byte for byte what
// msgpack.Marshal writes, and reports false for a command it has no
// hand-written encoder for.
func appendCommandBody(b []byte, c Command) ([]byte, bool) {
	switch c := c.(type) {
	case PlaceJob:
		if len(c.Preempt) > 0 {
			// Rare; the reflective encoder writes it.
			return b, false
		}
		b = appendMapLen(b, fields(2, !c.Resources.IsZero(), c.Epoch != 0, !c.LeaseExpiry.IsZero()))
		b = appendStr(b, "j")
		b = appendStr(b, c.JobID)
		b = appendStr(b, "n")
		b = appendStr(b, c.NodeID)
		if !c.Resources.IsZero() {
			b = appendStr(b, "res")
			b = appendResources(b, c.Resources)
		}
		if c.Epoch != 0 {
			b = appendStr(b, "e")
			b = appendUint64(b, c.Epoch)
		}
		if !c.LeaseExpiry.IsZero() {
			b = appendStr(b, "le")
			b = appendTime(b, c.LeaseExpiry)
		}
		return b, true
	case SubmitJob:
		if c.Task != nil {
			return b, false
		}
		b = appendMapLen(b, fields(1, c.Submission != ""))
		b = appendStr(b, "job")
		b = appendJob(b, c.Job)
		if c.Submission != "" {
			b = appendStr(b, "sb")
			b = appendStr(b, c.Submission)
		}
		return b, true
	case SetJobState:
		b = appendMapLen(b, fields(2, c.Reason != ""))
		b = appendStr(b, "j")
		b = appendStr(b, c.JobID)
		b = appendStr(b, "s")
		b = appendUint8(b, uint8(c.State))
		if c.Reason != "" {
			b = appendStr(b, "re")
			b = appendStr(b, c.Reason)
		}
		return b, true
	case StopAllocation:
		b = appendMapLen(b, fields(2, c.Message != ""))
		b = appendStr(b, "a")
		b = appendStr(b, c.AllocID)
		b = appendStr(b, "r")
		b = appendUint8(b, uint8(c.Reason))
		if c.Message != "" {
			b = appendStr(b, "m")
			b = appendStr(b, c.Message)
		}
		return b, true
	case RenewAllocation:
		b = appendMapLen(b, fields(1, !c.LeaseExpiry.IsZero()))
		b = appendStr(b, "a")
		b = appendStr(b, c.AllocID)
		if !c.LeaseExpiry.IsZero() {
			b = appendStr(b, "le")
			b = appendTime(b, c.LeaseExpiry)
		}
		return b, true
	case Expire:
		return appendMapLen(b, 0), true
	}
	return b, false
}

// wireReader reads msgpack from a byte slice for the fast decoders. Its
// methods return ok false for anything outside the forms they handle, and
// never read past the slice.
type wireReader struct {
	b   []byte
	off int
}

func (r *wireReader) done() bool { return r.off == len(r.b) }

func (r *wireReader) code() (byte, bool) {
	if r.off >= len(r.b) {
		return 0, false
	}
	c := r.b[r.off]
	r.off++
	return c, true
}

func (r *wireReader) next(n int) ([]byte, bool) {
	if n < 0 || n > len(r.b)-r.off {
		return nil, false
	}
	p := r.b[r.off : r.off+n : r.off+n]
	r.off += n
	return p, true
}

// be reads an n-byte big-endian unsigned number.
func (r *wireReader) be(n int) (uint64, bool) {
	p, ok := r.next(n)
	if !ok {
		return 0, false
	}
	var v uint64
	for _, x := range p {
		v = v<<8 | uint64(x)
	}
	return v, true
}

// mapLen reads a map header (not nil).
func (r *wireReader) mapLen() (int, bool) {
	c, ok := r.code()
	switch {
	case !ok:
		return 0, false
	case c >= 0x80 && c <= 0x8f:
		return int(c & 0x0f), true
	case c == 0xde:
		n, ok := r.be(2)
		return int(n), ok
	case c == 0xdf:
		n, ok := r.be(4)
		return int(n), ok
	}
	return 0, false
}

// arrayLen reads an array header (not nil).
func (r *wireReader) arrayLen() (int, bool) {
	c, ok := r.code()
	switch {
	case !ok:
		return 0, false
	case c >= 0x90 && c <= 0x9f:
		return int(c & 0x0f), true
	case c == 0xdc:
		n, ok := r.be(2)
		return int(n), ok
	case c == 0xdd:
		n, ok := r.be(4)
		return int(n), ok
	}
	return 0, false
}

// strBytes reads a str value (not bin, not nil) without copying it.
func (r *wireReader) strBytes() ([]byte, bool) {
	c, ok := r.code()
	var n uint64
	switch {
	case !ok:
		return nil, false
	case c >= 0xa0 && c <= 0xbf:
		n = uint64(c & 0x1f)
	case c == 0xd9:
		n, ok = r.be(1)
	case c == 0xda:
		n, ok = r.be(2)
	case c == 0xdb:
		n, ok = r.be(4)
	default:
		return nil, false
	}
	if !ok {
		return nil, false
	}
	return r.next(int(n))
}

func (r *wireReader) str() (string, bool) {
	p, ok := r.strBytes()
	return string(p), ok
}

// int64 reads any integer as msgpack's DecodeInt64 does (a uint64 above
// MaxInt64 wraps, as there).
func (r *wireReader) int64() (int64, bool) {
	c, ok := r.code()
	if !ok {
		return 0, false
	}
	return r.intOf(c)
}

func (r *wireReader) intOf(c byte) (int64, bool) {
	switch {
	case c <= 0x7f || c >= 0xe0:
		return int64(int8(c)), true
	case c == 0xcc:
		n, ok := r.be(1)
		return int64(n), ok
	case c == 0xd0:
		n, ok := r.be(1)
		return int64(int8(n)), ok
	case c == 0xcd:
		n, ok := r.be(2)
		return int64(n), ok
	case c == 0xd1:
		n, ok := r.be(2)
		return int64(int16(n)), ok
	case c == 0xce:
		n, ok := r.be(4)
		return int64(n), ok
	case c == 0xd2:
		n, ok := r.be(4)
		return int64(int32(n)), ok
	case c == 0xcf || c == 0xd3:
		n, ok := r.be(8)
		return int64(n), ok
	}
	return 0, false
}

// uint64 reads any integer as msgpack's DecodeUint64 does (a negative one
// wraps, as there).
func (r *wireReader) uint64() (uint64, bool) {
	n, ok := r.int64()
	return uint64(n), ok
}

// float64 reads a float or an integer as msgpack's DecodeFloat64 does.
func (r *wireReader) float64() (float64, bool) {
	c, ok := r.code()
	switch {
	case !ok:
		return 0, false
	case c == 0xca:
		n, ok := r.be(4)
		return float64(math.Float32frombits(uint32(n))), ok
	case c == 0xcb:
		n, ok := r.be(8)
		return math.Float64frombits(n), ok
	}
	n, ok := r.intOf(c)
	return float64(n), ok
}

// time reads a timestamp extension (type -1) of 4, 8 or 12 bytes into the
// value msgpack's decoder gives a time.Time field.
func (r *wireReader) time() (time.Time, bool) {
	c, ok := r.code()
	if !ok {
		return time.Time{}, false
	}
	var n int
	switch c {
	case 0xd6:
		n = 4
	case 0xd7:
		n = 8
	case 0xc7:
		l, ok := r.be(1)
		if !ok || l != 12 {
			return time.Time{}, false
		}
		n = 12
	default:
		return time.Time{}, false
	}
	if id, ok := r.code(); !ok || id != 0xff {
		return time.Time{}, false
	}
	p, ok := r.next(n)
	if !ok {
		return time.Time{}, false
	}
	var t time.Time
	switch n {
	case 4:
		t = time.Unix(int64(binary.BigEndian.Uint32(p)), 0)
	case 8:
		v := binary.BigEndian.Uint64(p)
		t = time.Unix(int64(v&0x00000003ffffffff), int64(v>>34))
	case 12:
		t = time.Unix(int64(binary.BigEndian.Uint64(p[4:])), int64(binary.BigEndian.Uint32(p)))
	}
	if t.IsZero() {
		t = t.UTC()
	}
	return t, true
}

// once marks field i of a struct seen, and reports false if it already
// was: a repeated key is left to the reflective decoder.
func once(seen *uint32, i uint) bool {
	if *seen&(1<<i) != 0 {
		return false
	}
	*seen |= 1 << i
	return true
}

// Each struct decoder below reads a map of the struct's keys into v, which
// starts at its zero value; it reports false on an unknown or repeated key
// and on anything the reader does not handle.

func (r *wireReader) resources(v *placement.Resources) bool {
	n, ok := r.mapLen()
	var (
		seen uint32
		k    []byte
		g    int64
	)
	for i := 0; ok && i < n; i++ {
		if k, ok = r.strBytes(); !ok {
			break
		}
		switch string(k) {
		case "c":
			v.ComputePerHour, ok = r.float64If(once(&seen, 0))
		case "s":
			v.StorageGB, ok = r.float64If(once(&seen, 1))
		case "b":
			v.BandwidthGBps, ok = r.float64If(once(&seen, 2))
		case "g":
			g, ok = r.int64If(once(&seen, 3))
			v.GPUs = int(g)
		default:
			ok = false
		}
	}
	return ok
}

func (r *wireReader) job(v *placement.Job) bool {
	n, ok := r.mapLen()
	var (
		seen uint32
		k    []byte
		x    int64
	)
	for i := 0; ok && i < n; i++ {
		if k, ok = r.strBytes(); !ok {
			break
		}
		switch string(k) {
		case "id":
			v.ID, ok = r.strIf(once(&seen, 0))
		case "o":
			v.OriginRegion, ok = r.symIf(once(&seen, 1))
		case "d":
			ok = once(&seen, 2) && r.resources(&v.Demand)
		case "l":
			x, ok = r.int64If(once(&seen, 3))
			v.LatencySLO = time.Duration(x)
		case "m":
			v.MaxPricePerHour, ok = r.float64If(once(&seen, 4))
		case "pr":
			x, ok = r.int64If(once(&seen, 5))
			v.Priority = int(x)
		case "du":
			x, ok = r.int64If(once(&seen, 6))
			v.Duration = time.Duration(x)
		case "gt":
			v.GPUType, ok = r.symIf(once(&seen, 7))
		default:
			ok = false
		}
	}
	return ok
}

func (r *wireReader) placeJob(v *PlaceJob) bool {
	n, ok := r.mapLen()
	var (
		seen uint32
		k    []byte
	)
	for i := 0; ok && i < n; i++ {
		if k, ok = r.strBytes(); !ok {
			break
		}
		switch string(k) {
		case "j":
			v.JobID, ok = r.strIf(once(&seen, 0))
		case "n":
			v.NodeID, ok = r.strIf(once(&seen, 1))
		case "res":
			ok = once(&seen, 2) && r.resources(&v.Resources)
		case "e":
			v.Epoch, ok = r.uint64If(once(&seen, 3))
		case "le":
			v.LeaseExpiry, ok = r.timeIf(once(&seen, 4))
		default:
			ok = false
		}
	}
	return ok
}

func (r *wireReader) submitJob(v *SubmitJob) bool {
	n, ok := r.mapLen()
	var (
		seen uint32
		k    []byte
	)
	for i := 0; ok && i < n; i++ {
		if k, ok = r.strBytes(); !ok {
			break
		}
		switch string(k) {
		case "job":
			ok = once(&seen, 0) && r.job(&v.Job)
		case "sb":
			v.Submission, ok = r.strIf(once(&seen, 1))
		default:
			// "tk" (a task spec) too is left to the reflective decoder.
			ok = false
		}
	}
	return ok
}

func (r *wireReader) setJobState(v *SetJobState) bool {
	n, ok := r.mapLen()
	var (
		seen uint32
		k    []byte
		x    uint64
	)
	for i := 0; ok && i < n; i++ {
		if k, ok = r.strBytes(); !ok {
			break
		}
		switch string(k) {
		case "j":
			v.JobID, ok = r.strIf(once(&seen, 0))
		case "s":
			x, ok = r.uint64If(once(&seen, 1))
			v.State = JobState(x) // truncated to 8 bits, as msgpack does
		case "re":
			v.Reason, ok = r.strIf(once(&seen, 2))
		default:
			ok = false
		}
	}
	return ok
}

func (r *wireReader) stopAllocation(v *StopAllocation) bool {
	n, ok := r.mapLen()
	var (
		seen uint32
		k    []byte
		x    uint64
	)
	for i := 0; ok && i < n; i++ {
		if k, ok = r.strBytes(); !ok {
			break
		}
		switch string(k) {
		case "a":
			v.AllocID, ok = r.strIf(once(&seen, 0))
		case "r":
			x, ok = r.uint64If(once(&seen, 1))
			v.Reason = StopReason(x) // truncated to 8 bits, as msgpack does
		case "m":
			v.Message, ok = r.strIf(once(&seen, 2))
		default:
			ok = false
		}
	}
	return ok
}

func (r *wireReader) renewAllocation(v *RenewAllocation) bool {
	n, ok := r.mapLen()
	var (
		seen uint32
		k    []byte
	)
	for i := 0; ok && i < n; i++ {
		if k, ok = r.strBytes(); !ok {
			break
		}
		switch string(k) {
		case "a":
			v.AllocID, ok = r.strIf(once(&seen, 0))
		case "le":
			v.LeaseExpiry, ok = r.timeIf(once(&seen, 1))
		default:
			ok = false
		}
	}
	return ok
}

// float64If, strIf, uint64If, int64If and timeIf read a value only if ok.
func (r *wireReader) float64If(ok bool) (float64, bool) {
	if !ok {
		return 0, false
	}
	return r.float64()
}

func (r *wireReader) strIf(ok bool) (string, bool) {
	if !ok {
		return "", false
	}
	return r.str()
}

// symIf reads a string drawn from a small set, such as a region or a GPU
// type, as its canonical copy: the ledger then holds one copy of
// "eu-west-1" rather than one per job, and the collector marks one object.
func (r *wireReader) symIf(ok bool) (string, bool) {
	if !ok {
		return "", false
	}
	p, ok := r.strBytes()
	if !ok {
		return "", false
	}
	return unique.Make(string(p)).Value(), true
}

func (r *wireReader) uint64If(ok bool) (uint64, bool) {
	if !ok {
		return 0, false
	}
	return r.uint64()
}

func (r *wireReader) int64If(ok bool) (int64, bool) {
	if !ok {
		return 0, false
	}
	return r.int64()
}

func (r *wireReader) timeIf(ok bool) (time.Time, bool) {
	if !ok {
		return time.Time{}, false
	}
	return r.time()
}

// decodePlaceJob is decodeCommandFast for a PlaceJob, returning the
// command as itself rather than in a Command, which would allocate.
func decodePlaceJob(body []byte) (PlaceJob, bool) {
	r := wireReader{b: body}
	var v PlaceJob
	ok := r.placeJob(&v) && r.done()
	return v, ok
}

// decodeCommandFast decodes the body of a command of kind k with a
// hand-written decoder, if k has one and the body is in a form it handles
// (see the comment at the top of this file); ok false means: use the
// reflective decoder. What it accepts, checkStructure accepts too, so the
// body need not be checked first.
func decodeCommandFast(k Kind, body []byte) (Command, bool) {
	r := wireReader{b: body}
	switch k {
	case KindPlaceJob:
		if v, ok := decodePlaceJob(body); ok {
			return v, true
		}
	case KindSubmitJob:
		var v SubmitJob
		if r.submitJob(&v) && r.done() {
			return v, true
		}
	case KindSetJobState:
		var v SetJobState
		if r.setJobState(&v) && r.done() {
			return v, true
		}
	case KindStopAllocation:
		var v StopAllocation
		if r.stopAllocation(&v) && r.done() {
			return v, true
		}
	case KindRenewAllocation:
		var v RenewAllocation
		if r.renewAllocation(&v) && r.done() {
			return v, true
		}
	case KindExpire:
		if n, ok := r.mapLen(); ok && n == 0 && r.done() {
			return Expire{}, true
		}
	}
	return nil, false
}
