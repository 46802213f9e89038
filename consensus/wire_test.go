package consensus

import (
	"bytes"
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/placement"
	"github.com/vmihailenco/msgpack/v5"
)

// fastKinds are the kinds with hand-written codecs (wire.go).
var fastKinds = []Kind{KindPlaceJob, KindSubmitJob, KindSetJobState, KindStopAllocation, KindRenewAllocation, KindExpire}

// wireGen makes command field values that reach every encoding form:
// strings at the fixstr/str8/str16/str32 boundaries, integers of every
// width and sign, special floats, and times in the 4, 8 and 12-byte forms.
type wireGen struct{ r *rand.Rand }

func (g wireGen) str() string {
	lens := []int{0, 1, 5, 31, 32, 255, 256, 1000, 65535, 65536}
	n := lens[g.r.IntN(len(lens))]
	if n > 1000 && g.r.IntN(4) != 0 {
		n = g.r.IntN(40)
	}
	return strings.Repeat(string(rune('a'+g.r.IntN(26))), n)
}

func (g wireGen) i64() int64 {
	switch g.r.IntN(6) {
	case 0:
		return 0
	case 1:
		return int64(g.r.IntN(256)) - 128
	case 2:
		return int64(g.r.IntN(1<<17)) - 1<<16
	case 3:
		return int64(g.r.Uint32()) - 1<<31
	case 4:
		return int64(g.r.Uint64())
	}
	return []int64{math.MinInt64, math.MaxInt64, -33, -32, 127, 128, 255, 256, 65535, 65536}[g.r.IntN(10)]
}

func (g wireGen) u64() uint64 {
	if g.r.IntN(3) == 0 {
		return g.r.Uint64()
	}
	return uint64(g.i64())
}

func (g wireGen) f64() float64 {
	switch g.r.IntN(5) {
	case 0:
		return 0
	case 1:
		return []float64{math.Copysign(0, -1), math.Inf(1), math.Inf(-1), math.MaxFloat64, math.SmallestNonzeroFloat64}[g.r.IntN(5)]
	case 2:
		return float64(g.r.IntN(1000))
	}
	return g.r.NormFloat64() * 1e6
}

func (g wireGen) time() time.Time {
	switch g.r.IntN(6) {
	case 0:
		return time.Time{}
	case 1:
		return time.Unix(int64(g.r.Uint32()), 0) // 4 bytes
	case 2:
		return time.Unix(int64(g.r.Uint64N(1<<34)), int64(g.r.IntN(1e9))).UTC() // 8 bytes
	case 3:
		return time.Unix(-int64(g.r.Uint32()), int64(g.r.IntN(1e9))) // 12 bytes
	case 4:
		return time.Unix(1<<34+int64(g.r.Uint32()), int64(g.r.IntN(1e9))) // 12 bytes
	}
	return t0.Add(time.Duration(g.r.Int64N(int64(time.Hour))))
}

func (g wireGen) res() placement.Resources {
	return placement.Resources{ComputePerHour: g.f64(), StorageGB: g.f64(), BandwidthGBps: g.f64(), GPUs: int(g.i64())}
}

func (g wireGen) command(k Kind) Command {
	switch k {
	case KindPlaceJob:
		return PlaceJob{JobID: g.str(), NodeID: g.str(), Resources: g.res(), Epoch: g.u64(), LeaseExpiry: g.time()}
	case KindSubmitJob:
		return SubmitJob{Job: placement.Job{
			ID: g.str(), OriginRegion: g.str(), Demand: g.res(), LatencySLO: time.Duration(g.i64()),
			MaxPricePerHour: g.f64(), Priority: int(g.i64()), Duration: time.Duration(g.i64()), GPUType: g.str(),
		}, Submission: g.str()}
	case KindSetJobState:
		return SetJobState{JobID: g.str(), State: JobState(g.u64()), Reason: g.str()}
	case KindStopAllocation:
		return StopAllocation{AllocID: g.str(), Reason: StopReason(g.u64()), Message: g.str()}
	case KindRenewAllocation:
		return RenewAllocation{AllocID: g.str(), LeaseExpiry: g.time()}
	case KindExpire:
		return Expire{}
	}
	panic(fmt.Sprintf("no generator for %s", k))
}

// reflectiveDecode decodes a body with msgpack's reflective decoder, as
// DecodeCommand does when the fast path does not handle the body.
func reflectiveDecode(k Kind, body []byte) (Command, error) {
	p, ok := newBody(k)
	if !ok {
		return nil, fmt.Errorf("kind %d", k)
	}
	if err := unmarshal(body, p); err != nil {
		return nil, err
	}
	return deref(p), nil
}

// sameCommand compares decoded commands exactly: the same values, times
// with the same location; NaNs (which DeepEqual never finds equal) are
// compared by their encoding.
func sameCommand(a, b Command) bool {
	if reflect.DeepEqual(a, b) {
		return true
	}
	ea, err1 := msgpack.Marshal(a)
	eb, err2 := msgpack.Marshal(b)
	return err1 == nil && err2 == nil && bytes.Equal(ea, eb) && fmt.Sprintf("%#v", a) == fmt.Sprintf("%#v", b)
}

// TestWireCodecMatchesMsgpack checks the hand-written codecs against
// msgpack's reflective one: the same bytes out, the same values back.
func TestWireCodecMatchesMsgpack(t *testing.T) {
	g := wireGen{rand.New(rand.NewPCG(1, 2))}
	for _, k := range fastKinds {
		for i := range 2000 {
			c := g.command(k)
			want, err := msgpack.Marshal(c)
			if err != nil {
				t.Fatal(err)
			}
			got, ok := appendCommandBody(nil, c)
			if !ok {
				t.Fatalf("%s: no hand-written encoder", k)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("%s #%d %+v:\nhand-written %x\nmsgpack      %x", k, i, c, got, want)
			}
			fast, ok := decodeCommandFast(k, want)
			if !ok {
				t.Fatalf("%s #%d: fast decoder did not handle msgpack's own encoding %x", k, i, want)
			}
			slow, err := reflectiveDecode(k, want)
			if err != nil {
				t.Fatalf("%s #%d: reflective decode: %v", k, i, err)
			}
			if !sameCommand(fast, slow) {
				t.Fatalf("%s #%d: fast decoded %#v, msgpack %#v", k, i, fast, slow)
			}
		}
	}
	// A task spec is left to msgpack both ways.
	sj := SubmitJob{Job: job("j", 1, 0), Task: &TaskSpec{Driver: "exec", Command: []string{"true"}}}
	if _, ok := appendCommandBody(nil, sj); ok {
		t.Fatal("hand-written encoder took a SubmitJob with a task spec")
	}
	body, _ := msgpack.Marshal(sj)
	if _, ok := decodeCommandFast(KindSubmitJob, body); ok {
		t.Fatal("fast decoder took a SubmitJob with a task spec")
	}
	env, err := EncodeCommand(sj)
	if err != nil {
		t.Fatal(err)
	}
	back, err := DecodeCommand(env)
	if err != nil || !reflect.DeepEqual(back, sj) {
		t.Fatalf("SubmitJob with a task spec round trip: %#v %v", back, err)
	}
}

// TestWireDecodeFallsBack feeds the fast decoders forms that only the
// reflective decoder handles; DecodeCommand must still read them as
// msgpack does.
func TestWireDecodeFallsBack(t *testing.T) {
	enc := func(v any) []byte {
		b, err := msgpack.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	arrayEnc := func(v any) []byte {
		var buf bytes.Buffer
		e := msgpack.NewEncoder(&buf)
		e.UseArrayEncodedStructs(true)
		if err := e.Encode(v); err != nil {
			t.Fatal(err)
		}
		return buf.Bytes()
	}
	for _, tc := range []struct {
		name string
		kind Kind
		body []byte
	}{
		{"unknown key", KindPlaceJob, enc(map[string]any{"j": "j1", "n": "n1", "zz": 1})},
		{"repeated key", KindPlaceJob, []byte{0x83, 0xa1, 'j', 0xa1, 'a', 0xa1, 'n', 0xa1, 'n', 0xa1, 'j', 0xa1, 'b'}},
		{"struct as array", KindPlaceJob, arrayEnc(PlaceJob{JobID: "j1", NodeID: "n1", LeaseExpiry: t0})},
		{"bin for a string", KindStopAllocation, append([]byte{0x82, 0xa1, 'a', 0xc4, 3, 'a', '-', '1', 0xa1, 'r'}, 1)},
		{"float for a string", KindSetJobState, enc(map[string]any{"j": 1.5})},
		{"time as ext 13", KindRenewAllocation, []byte{0x82, 0xa1, 'a', 0xa1, 'x', 0xa2, 'l', 'e', 0xd6, 13, 0, 0, 0, 1}},
		{"trailing bytes", KindExpire, []byte{0x80, 0x80}},
		{"nil field", KindPlaceJob, []byte{0x81, 0xa1, 'j', 0xc0}},
		{"truncated", KindPlaceJob, enc(PlaceJob{JobID: "j1"})[:5]},
	} {
		if _, ok := decodeCommandFast(tc.kind, tc.body); ok {
			t.Errorf("%s: the fast decoder handled %x", tc.name, tc.body)
		}
		want, wantErr := reflectiveDecode(tc.kind, tc.body)
		got, gotErr := DecodeCommand(Envelope{Version: CommandVersion, Kind: tc.kind, Body: tc.body})
		if (wantErr == nil) != (gotErr == nil) || (wantErr == nil && !sameCommand(got, want)) {
			t.Errorf("%s: DecodeCommand = %#v, %v; msgpack = %#v, %v", tc.name, got, gotErr, want, wantErr)
		}
	}
}

// encodeEntryWithEncoder is the entry framing written with msgpack's
// Encoder, as earlier builds did; appendEntry must write the same bytes.
func encodeEntryWithEncoder(t testing.TB, envs []Envelope) []byte {
	var buf bytes.Buffer
	enc := msgpack.NewEncoder(&buf)
	must := func(err error) {
		if err != nil {
			t.Fatal(err)
		}
	}
	must(enc.EncodeArrayLen(2))
	must(enc.EncodeUint8(entryFormat))
	must(enc.EncodeArrayLen(len(envs)))
	for _, e := range envs {
		must(enc.EncodeArrayLen(4))
		must(enc.EncodeUint8(e.Version))
		must(enc.EncodeUint8(uint8(e.Kind)))
		must(enc.EncodeTime(e.Now))
		must(enc.EncodeBytes(e.Body))
	}
	return buf.Bytes()
}

func TestEntryFramingMatchesEncoder(t *testing.T) {
	g := wireGen{rand.New(rand.NewPCG(3, 4))}
	for i := range 300 {
		envs := make([]Envelope, g.r.IntN(40))
		for j := range envs {
			envs[j] = Envelope{Version: uint8(g.r.IntN(256)), Kind: Kind(g.r.IntN(256)), Now: g.time()}
			switch g.r.IntN(4) {
			case 0: // nil body
			case 1:
				envs[j].Body = []byte{}
			default:
				envs[j].Body = []byte(g.str())
			}
		}
		want := encodeEntryWithEncoder(t, envs)
		got, err := encodeEntry(envs)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("entry %d: appendEntry %x, Encoder %x (%v)", i, got, want, err)
		}
		slow, err := decodeEntryStream(want)
		if err != nil {
			t.Fatal(err)
		}
		fast, err := decodeEntry(want)
		if err != nil || !sameEnvelopes(fast, slow) {
			t.Fatalf("entry %d: decodeEntry %v (%v), stream decoder %v", i, fast, err, slow)
		}
	}
}

func sameEnvelopes(a, b []Envelope) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Version != b[i].Version || a[i].Kind != b[i].Kind || a[i].Now != b[i].Now ||
			!bytes.Equal(a[i].Body, b[i].Body) || (a[i].Body == nil) != (b[i].Body == nil) {
			return false
		}
	}
	return true
}

// FuzzWireDecode checks the fast decoders against msgpack on any bytes:
// whatever a fast decoder accepts, the checked reflective path accepts too
// and decodes to the same value.
func FuzzWireDecode(f *testing.F) {
	g := wireGen{rand.New(rand.NewPCG(5, 6))}
	for _, k := range fastKinds {
		body, _ := msgpack.Marshal(g.command(k))
		f.Add(append([]byte{byte(k)}, body...))
	}
	for _, s := range seedEntries(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if envs, ok := decodeEntryFast(data); ok {
			slow, err := decodeEntryStream(data)
			if err != nil || !sameEnvelopes(envs, slow) {
				t.Fatalf("fast entry decoder took %x as %v; stream decoder: %v, %v", data, envs, slow, err)
			}
		}
		if len(data) == 0 {
			return
		}
		body := data[1:]
		for _, k := range fastKinds {
			fast, ok := decodeCommandFast(k, body)
			if !ok {
				continue
			}
			if err := checkStructure(body); err != nil {
				t.Fatalf("%s: fast decoder took %x, which checkStructure rejects: %v", k, body, err)
			}
			slow, err := reflectiveDecode(k, body)
			if err != nil {
				t.Fatalf("%s: fast decoder took %x as %#v; msgpack: %v", k, body, fast, err)
			}
			if !sameCommand(fast, slow) {
				t.Fatalf("%s: %x: fast %#v, msgpack %#v", k, body, fast, slow)
			}
		}
	})
}

// TestResultsEncodingMatchesEncoder checks encodeResults against the same
// message written with msgpack's Encoder, and decodeResults against both.
func TestResultsEncodingMatchesEncoder(t *testing.T) {
	g := wireGen{rand.New(rand.NewPCG(7, 8))}
	for i := range 300 {
		results := make([]Result, g.r.IntN(20))
		for j := range results {
			r := Result{Index: g.u64(), ID: g.str(), Epoch: g.u64(), Existing: g.r.IntN(2) == 0, Pruned: int(g.i64())}
			for range g.r.IntN(3) {
				r.Expired = append(r.Expired, g.str())
			}
			if g.r.IntN(2) == 0 {
				r.Err = &CommandError{Code: Code(g.r.IntN(1 << 16)), Subject: g.str(), Message: g.str()}
			}
			results[j] = r
		}
		var buf bytes.Buffer
		enc := msgpack.NewEncoder(&buf)
		must := func(err error) {
			if err != nil {
				t.Fatal(err)
			}
		}
		must(enc.EncodeArrayLen(len(results)))
		for _, r := range results {
			ce := asCommandError(r.Err)
			if ce == nil {
				ce = &CommandError{}
			}
			must(enc.EncodeArrayLen(9))
			must(enc.EncodeUint64(r.Index))
			must(enc.EncodeString(r.ID))
			must(enc.EncodeUint64(r.Epoch))
			must(enc.EncodeBool(r.Existing))
			must(enc.EncodeArrayLen(len(r.Expired)))
			for _, id := range r.Expired {
				must(enc.EncodeString(id))
			}
			must(enc.EncodeInt64(int64(r.Pruned)))
			must(enc.EncodeUint16(uint16(ce.Code)))
			must(enc.EncodeString(ce.Subject))
			must(enc.EncodeString(ce.Message))
		}
		got, err := encodeResults(results)
		if err != nil || !bytes.Equal(got, buf.Bytes()) {
			t.Fatalf("results %d:\nencodeResults %x\nEncoder       %x", i, got, buf.Bytes())
		}
		back, err := decodeResults(got)
		if err != nil || len(back) != len(results) {
			t.Fatalf("results %d: decode: %v", i, err)
		}
		for j := range back {
			w, b := results[j], back[j]
			var wantErr *CommandError
			if ce := asCommandError(w.Err); ce != nil && ce.Code != CodeOK {
				wantErr = ce
			}
			gotErr := asCommandError(b.Err)
			if b.Index != w.Index || b.ID != w.ID || b.Epoch != w.Epoch || b.Existing != w.Existing ||
				b.Pruned != w.Pruned || !slices.Equal(b.Expired, w.Expired) || (gotErr == nil) != (wantErr == nil) ||
				(wantErr != nil && (gotErr.Code != wantErr.Code || gotErr.Subject != wantErr.Subject || gotErr.Message != wantErr.Message)) {
				t.Fatalf("results %d.%d: %+v, want %+v", i, j, b, w)
			}
		}
	}
}

// TestEncodeCommandsSharesNoWritableBytes: the bodies of a batch share one
// buffer, each capped, so that appending to one cannot change another; and
// each is what EncodeCommand gives alone, whether the hand-written or the
// reflective encoder wrote it.
func TestEncodeCommandsSharesNoWritableBytes(t *testing.T) {
	cmds := []Command{
		PlaceJob{JobID: "j1", NodeID: "n1"},
		PlaceJob{JobID: "j2", NodeID: "n2", Preempt: []string{"a-1"}}, // the reflective encoder's
		SubmitJob{Job: job("j3", 1, 0)},
		PlaceJob{JobID: "j3", NodeID: "n1", Epoch: 2},
	}
	envs, err := encodeCommands(cmds)
	if err != nil {
		t.Fatal(err)
	}
	want := make([][]byte, len(cmds))
	for i, c := range cmds {
		env, err := EncodeCommand(c)
		if err != nil {
			t.Fatal(err)
		}
		if env.Kind != envs[i].Kind || env.Version != envs[i].Version || !bytes.Equal(env.Body, envs[i].Body) {
			t.Fatalf("command %d: batch encoding %+v, alone %+v", i, envs[i], env)
		}
		want[i] = env.Body
	}
	for i := range envs {
		_ = append(envs[i].Body, 0xff, 0xff, 0xff, 0xff)
	}
	for i := range envs {
		if !bytes.Equal(envs[i].Body, want[i]) {
			t.Fatalf("command %d: appending to another body changed it to %x (was %x)", i, envs[i].Body, want[i])
		}
	}
	if _, err := encodeCommands([]Command{PlaceJob{JobID: "j", NodeID: "n"}, nil}); err == nil || !strings.Contains(err.Error(), "command 1") {
		t.Fatalf("a nil command in a batch: %v, want an error naming command 1", err)
	}
}
