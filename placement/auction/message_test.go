package auction

import (
	"bytes"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/meridian-mesh/meridian/placement"
)

var sent = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// sampleEnvelopes returns one valid envelope of every kind.
func sampleEnvelopes() []*Envelope {
	hdr := func(k Kind) *Envelope {
		return &Envelope{Version: Version, Kind: k, Auction: "us-east-1/3/17", From: "us-east-1", To: "eu-west-1", Term: 3, Sent: sent}
	}
	job := placement.Job{ID: "job-1", OriginRegion: "us-east-1", Demand: placement.Resources{ComputePerHour: 100, StorageGB: 20, BandwidthGBps: 1, GPUs: 1},
		LatencySLO: 150 * time.Millisecond, MaxPricePerHour: 900, Duration: time.Hour, GPUType: "A100"}
	cfb := hdr(KindCallForBids)
	cfb.CallForBids = &CallForBids{Items: []Item{{ID: "job-1", Kind: ItemJob, Job: job, Epoch: 4},
		{ID: "lease-1", Kind: ItemLease, Job: placement.Job{ID: "lease-1", Demand: placement.Resources{ComputePerHour: 500}, Duration: time.Hour}}},
		Deadline: sent.Add(time.Second)}
	bid := hdr(KindBid)
	bid.From, bid.To = bid.To, bid.From
	bid.Bid = &Bid{Items: []BidItem{{Item: "job-1", Node: "euw1-a", Compute: 200, GPUType: "A100", Price: 812.5, Expiry: sent.Add(11 * time.Second),
		Escrow: "us-east-1/us-east-1/3/17/job-1"}},
		Declined: []Decline{{Item: "lease-1", Reason: "no node has the free capacity"}}}
	nobid := hdr(KindNoBid)
	nobid.From, nobid.To = nobid.To, nobid.From
	nobid.NoBid = &NoBid{Reason: "no item can be served", Declined: []Decline{{Item: "job-1", Reason: "full"}}}
	award := hdr(KindAward)
	award.Award = &Award{Items: []AwardItem{{Item: "job-1", Epoch: 4, Price: 850},
		{Item: "job-2", Epoch: 1, Price: 600, Lease: &LeaseRef{Auction: "us-east-1/2/9", Item: "lease-1"}, Job: &job}}}
	ack := hdr(KindAck)
	ack.From, ack.To = ack.To, ack.From
	ack.Ack = &Ack{Items: []ItemStatus{{Item: "job-1", Status: StatusAllocated, Epoch: 4}, {Item: "job-2", Status: StatusReleased, Reason: "escrow expired"}}}
	rel := hdr(KindRelease)
	rel.Release = &Release{Items: []string{"job-1"}}
	relAll := hdr(KindRelease)
	relAll.Release = &Release{}
	sq := hdr(KindStatusQuery)
	sq.StatusQuery = &StatusQuery{Items: []string{"job-1", "job-2"}}
	sr := hdr(KindStatusReply)
	sr.From, sr.To = sr.To, sr.From
	sr.StatusReply = &StatusReply{Items: []ItemStatus{{Item: "job-1", Status: StatusHeld}}}
	cx := hdr(KindCancel)
	cx.Cancel = &Cancel{Items: []CancelItem{{Item: "job-1", Epoch: 4}}}
	ask := &Envelope{Version: Version, Kind: KindAsk, From: "eu-west-1", Term: 2, Sent: sent,
		Ask: &Ask{Surplus: placement.Resources{ComputePerHour: 1200, StorageGB: 5000, BandwidthGBps: 40, GPUs: 8},
			LargestNode: placement.Resources{ComputePerHour: 400, StorageGB: 2000, BandwidthGBps: 10, GPUs: 8}, MinPrice: 32.77, Expires: sent.Add(30 * time.Second)}}
	round2 := hdr(KindCallForBids)
	round2.Auction += "#2"
	round2.CallForBids = &CallForBids{Items: cfb.CallForBids.Items[:1], Deadline: sent.Add(2 * time.Second),
		Supersedes: cfb.Auction, Release: []string{"lease-1"}}
	return []*Envelope{cfb, bid, nobid, award, ack, rel, relAll, sq, sr, cx, ask, round2}
}

func TestEncodeDecodeEveryKind(t *testing.T) {
	for _, env := range sampleEnvelopes() {
		t.Run(env.Kind.String(), func(t *testing.T) {
			b, err := Encode(env)
			if err != nil {
				t.Fatalf("Encode: %v", err)
			}
			got, err := Decode(b)
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if !reflect.DeepEqual(normalize(got), normalize(env)) {
				t.Errorf("round trip:\n got %+v\nwant %+v", got, env)
			}
		})
	}
}

// normalize re-encodes times in UTC so DeepEqual ignores locations.
func normalize(e *Envelope) *Envelope {
	b, _ := msgpack.Marshal(e)
	var out Envelope
	_ = msgpack.Unmarshal(b, &out)
	return &out
}

func TestAskFitsInGossip(t *testing.T) {
	a := sampleEnvelopes()[10].Ask
	b, err := EncodeAsk("ap-southeast-2", 12345, *a, sent)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) > 200 {
		t.Errorf("an ask encodes in %d bytes, want ≤ 200 (memberlist metadata is 512)", len(b))
	}
	region, term, got, err := DecodeAsk(b)
	if err != nil || region != "ap-southeast-2" || term != 12345 || got.MinPrice != a.MinPrice || got.Surplus != a.Surplus {
		t.Errorf("DecodeAsk = %q %d %+v %v", region, term, got, err)
	}
	if _, _, _, err := DecodeAsk(mustEncode(t, sampleEnvelopes()[0])); !errors.Is(err, ErrMalformed) {
		t.Errorf("DecodeAsk of a CallForBids = %v, want ErrMalformed", err)
	}
}

func mustEncode(t *testing.T, env *Envelope) []byte {
	t.Helper()
	b, err := Encode(env)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestValidateNamesTheField(t *testing.T) {
	envs := sampleEnvelopes()
	clone := func(i int) *Envelope {
		c := normalize(envs[i])
		return c
	}
	for _, tc := range []struct {
		name  string
		env   *Envelope
		field string
		want  error
	}{
		{"version", func() *Envelope { e := clone(0); e.Version = 1; return e }(), "version", ErrVersion},
		{"kind", func() *Envelope { e := clone(0); e.Kind = 42; return e }(), "kind", ErrUnknownKind},
		{"from", func() *Envelope { e := clone(0); e.From = ""; return e }(), "from", ErrMalformed},
		{"to self", func() *Envelope { e := clone(0); e.To = e.From; return e }(), "to", ErrMalformed},
		{"term", func() *Envelope { e := clone(0); e.Term = 0; return e }(), "term", ErrMalformed},
		{"sent", func() *Envelope { e := clone(0); e.Sent = time.Time{}; return e }(), "sent", ErrMalformed},
		{"body missing", func() *Envelope { e := clone(0); e.CallForBids = nil; return e }(), "call_for_bids", ErrMalformed},
		{"two bodies", func() *Envelope { e := clone(0); e.Ack = &Ack{}; return e }(), "call_for_bids", ErrMalformed},
		{"item demand", func() *Envelope { e := clone(0); e.CallForBids.Items[0].Job.Demand.ComputePerHour = -1; return e }(), "call_for_bids.items[0].job", ErrMalformed},
		{"duplicate item", func() *Envelope {
			e := clone(0)
			e.CallForBids.Items[1].ID = e.CallForBids.Items[0].ID
			return e
		}(), "call_for_bids.items[1].id", ErrMalformed},
		{"lease without duration", func() *Envelope { e := clone(0); e.CallForBids.Items[1].Job.Duration = 0; return e }(), "call_for_bids.items[1].job.duration", ErrMalformed},
		{"bid price", func() *Envelope { e := clone(1); e.Bid.Items[0].Price = 0; return e }(), "bid.items[0].price", ErrMalformed},
		{"bid expiry", func() *Envelope { e := clone(1); e.Bid.Items[0].Expiry = time.Time{}; return e }(), "bid.items[0].expiry", ErrMalformed},
		{"bid without escrow", func() *Envelope { e := clone(1); e.Bid.Items[0].Escrow = ""; return e }(), "bid.items[0].escrow", ErrMalformed},
		{"bid escrow too long", func() *Envelope {
			e := clone(1)
			e.Bid.Items[0].Escrow = strings.Repeat("x", MaxEscrowIDLen+1)
			return e
		}(), "bid.items[0].escrow", ErrMalformed},
		{"award lease without job", func() *Envelope { e := clone(3); e.Award.Items[1].Job = nil; return e }(), "award.items[1].lease", ErrMalformed},
		{"ack status", func() *Envelope { e := clone(4); e.Ack.Items[0].Status = 99; return e }(), "ack.items[0].status", ErrMalformed},
		{"status query empty", func() *Envelope { e := clone(7); e.StatusQuery.Items = nil; return e }(), "status_query.items", ErrMalformed},
		{"ask price", func() *Envelope { e := clone(10); e.Ask.MinPrice = -3; return e }(), "ask.min_price", ErrMalformed},
		{"release without supersedes", func() *Envelope { e := clone(11); e.CallForBids.Supersedes = ""; return e }(), "call_for_bids.supersedes", ErrMalformed},
		{"long id", func() *Envelope { e := clone(5); e.Release.Items = []string{strings.Repeat("x", MaxIDLen+1)}; return e }(), "release.items[0]", ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.env.Validate()
			if !errors.Is(err, tc.want) {
				t.Fatalf("Validate = %v, want %v", err, tc.want)
			}
			if !strings.Contains(err.Error(), `"`+tc.field+`"`) {
				t.Errorf("Validate = %v, want it to name field %q", err, tc.field)
			}
			if _, err := Encode(tc.env); err == nil {
				t.Errorf("Encode accepted an invalid envelope")
			}
		})
	}
}

func TestSizeLimits(t *testing.T) {
	var hdr [4]byte
	binary.BigEndian.PutUint32(hdr[:], MaxMessageSize+1)
	if _, err := ReadFrame(bytes.NewReader(hdr[:])); !errors.Is(err, ErrTooLarge) {
		t.Errorf("ReadFrame of an oversize frame = %v, want ErrTooLarge", err)
	}
	if _, err := Decode(make([]byte, MaxMessageSize+1)); !errors.Is(err, ErrTooLarge) {
		t.Errorf("Decode of oversize input = %v, want ErrTooLarge", err)
	}
	// MaxItems items fit in a message; one more does not validate.
	env := normalize(sampleEnvelopes()[7])
	env.StatusQuery.Items = nil
	for i := range MaxItems {
		env.StatusQuery.Items = append(env.StatusQuery.Items, fmt.Sprintf("job-%04d", i))
	}
	b, err := Encode(env)
	if err != nil {
		t.Fatalf("Encode of %d items: %v", MaxItems, err)
	}
	if _, err := Decode(b); err != nil {
		t.Fatalf("Decode of %d items: %v", MaxItems, err)
	}
	env.StatusQuery.Items = append(env.StatusQuery.Items, "one-too-many")
	if _, err := Encode(env); !errors.Is(err, ErrMalformed) {
		t.Errorf("Encode of %d items = %v, want ErrMalformed", MaxItems+1, err)
	}
	// The largest legal call for bids still fits in a frame.
	cfb := normalize(sampleEnvelopes()[0])
	it := cfb.CallForBids.Items[0]
	cfb.CallForBids.Items = nil
	for i := range MaxItems {
		it.ID = fmt.Sprintf("%s-%0200d", "job", i)
		it.Job.ID, it.Job.OriginRegion, it.Job.GPUType = it.ID, strings.Repeat("r", 64), strings.Repeat("g", 32)
		cfb.CallForBids.Items = append(cfb.CallForBids.Items, it)
	}
	if b, err := Encode(cfb); err != nil && !errors.Is(err, ErrTooLarge) {
		t.Errorf("Encode of a huge call = %v", err)
	} else if err == nil && len(b) > MaxMessageSize {
		t.Errorf("encoded %d bytes past the limit", len(b))
	}
}

func TestDecodeRefusesHostileHeaders(t *testing.T) {
	valid := mustEncode(t, sampleEnvelopes()[0])
	for _, tc := range []struct {
		name string
		b    []byte
	}{
		{"empty", nil},
		{"nil", []byte{0xc0}},
		{"array32 of 4 billion", []byte{0xdd, 0xff, 0xff, 0xff, 0xff}},
		{"map32 of 4 billion", []byte{0xdf, 0xff, 0xff, 0xff, 0xff}},
		{"str32 of 4 GiB", []byte{0xdb, 0xff, 0xff, 0xff, 0xff}},
		{"never-used code", []byte{0xc1}},
		{"deep nesting", bytes.Repeat([]byte{0x91}, 100)},
		{"trailing bytes", append(append([]byte{}, valid...), 0x00)},
		{"truncated", valid[:len(valid)/2]},
		{"items array claims 65535", func() []byte {
			i := bytes.Index(valid, []byte{0xa1, 'i', 0x92}) // "i": fixarray(2)
			if i < 0 {
				t.Fatal("sample layout changed")
			}
			b := append([]byte{}, valid[:i+2]...)
			b = append(b, 0xdc, 0xff, 0xff)
			return append(b, valid[i+3:]...)
		}()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Decode(tc.b)
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrVersion) {
				t.Errorf("Decode = %v, want ErrMalformed or ErrVersion", err)
			}
		})
	}
}

var writeCorpus = flag.Bool("write-corpus", false, "rewrite the committed FuzzDecode seed corpus")

// FuzzDecode feeds arbitrary bytes to Decode: it must never panic nor
// allocate beyond the input's bounds, and whatever it accepts must encode
// again and decode to the same message.
func FuzzDecode(f *testing.F) {
	for _, env := range sampleEnvelopes() {
		f.Add(mustEncodeF(f, env))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		env, err := Decode(b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrTooLarge) && !errors.Is(err, ErrVersion) && !errors.Is(err, ErrUnknownKind) {
				t.Fatalf("Decode error %v wraps no sentinel", err)
			}
			return
		}
		b2, err := Encode(env)
		if err != nil {
			t.Fatalf("Encode of a decoded message: %v", err)
		}
		env2, err := Decode(b2)
		if err != nil {
			t.Fatalf("Decode of a re-encoded message: %v", err)
		}
		b3, err := Encode(env2)
		if err != nil || !bytes.Equal(b2, b3) {
			t.Fatalf("encoding is not stable: %v", err)
		}
	})
}

func mustEncodeF(f *testing.F, env *Envelope) []byte {
	b, err := Encode(env)
	if err != nil {
		f.Fatal(err)
	}
	return b
}

// TestWriteFuzzCorpus writes testdata/fuzz/FuzzDecode from the samples and
// some hostile inputs when run with -write-corpus.
func TestWriteFuzzCorpus(t *testing.T) {
	if !*writeCorpus {
		t.Skip("run with -write-corpus to rewrite the seed corpus")
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzDecode")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	seeds := map[string][]byte{
		"hostile-array32": {0xdd, 0xff, 0xff, 0xff, 0xff},
		"hostile-map32":   {0xdf, 0xff, 0xff, 0xff, 0xff},
		"hostile-nesting": bytes.Repeat([]byte{0x91}, 40),
		"empty-map":       {0x80},
	}
	for _, env := range sampleEnvelopes() {
		name := "valid-" + strings.ToLower(env.Kind.String())
		if env.Kind == KindRelease && len(env.Release.Items) == 0 {
			name += "-all"
		}
		if env.Kind == KindCallForBids && env.CallForBids.Supersedes != "" {
			name += "-round2"
		}
		seeds[name] = mustEncode(t, env)
	}
	for name, b := range seeds {
		body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", b)
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
