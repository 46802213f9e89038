package consensus

import (
	"bytes"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"
)

// fillRandom sets every field of the struct v points to, recursively, to a
// random non-zero value, so that a field the record forgets cannot go
// unnoticed.
func fillRandom(t *testing.T, rng *rand.Rand, v reflect.Value) {
	t.Helper()
	if v.Type() == reflect.TypeFor[time.Time]() {
		v.Set(reflect.ValueOf(time.Unix(rng.Int64N(1<<33), rng.Int64N(1e9)).UTC()))
		return
	}
	switch v.Kind() {
	case reflect.String:
		v.SetString(string(rune('a' + rng.IntN(26))))
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Int, reflect.Int64:
		v.SetInt(1 + rng.Int64N(1000))
	case reflect.Uint8, reflect.Uint64:
		v.SetUint(1 + rng.Uint64N(7))
	case reflect.Float64:
		v.SetFloat(1 + rng.Float64())
	case reflect.Struct:
		for i := range v.NumField() {
			fillRandom(t, rng, v.Field(i))
		}
	case reflect.Pointer:
		v.Set(reflect.New(v.Type().Elem()))
		fillRandom(t, rng, v.Elem())
	case reflect.Slice:
		v.Set(reflect.MakeSlice(v.Type(), 1, 1))
		fillRandom(t, rng, v.Index(0))
	case reflect.Map:
		v.Set(reflect.MakeMap(v.Type()))
		k, e := reflect.New(v.Type().Key()).Elem(), reflect.New(v.Type().Elem()).Elem()
		fillRandom(t, rng, k)
		fillRandom(t, rng, e)
		v.SetMapIndex(k, e)
	default:
		t.Fatalf("fillRandom: no case for %s", v.Type())
	}
}

func TestAllocRecordRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for range 200 {
		var a Allocation
		fillRandom(t, rng, reflect.ValueOf(&a).Elem())
		if got := packAlloc(&a).alloc(); !reflect.DeepEqual(got, a) {
			t.Fatalf("round trip changed the allocation:\n got %+v\nwant %+v", got, a)
		}
	}
	var zero Allocation
	if got := packAlloc(&zero).alloc(); !reflect.DeepEqual(got, zero) {
		t.Fatalf("round trip of the zero allocation gave %+v", got)
	}
}

func TestAllocRecordOfLocalAllocationHasNoTerms(t *testing.T) {
	r := newRun(t)
	r.ok(gpuNode("n1"))
	r.ok(SubmitJob{Job: job("j1", 1, 0)})
	id := r.ok(PlaceJob{JobID: "j1", NodeID: "n1"}).ID
	rec, ok := r.l.t.allocs.get(id)
	if !ok {
		t.Fatalf("allocation %s not stored", id)
	}
	if rec.terms != nil {
		t.Fatalf("a local allocation stores market terms %+v; it should store none", *rec.terms)
	}
	r.ok(StopAllocation{AllocID: id, Reason: StopCompleted})
	a, _ := r.l.Allocation(id)
	if a.State != AllocStopped || a.Stopped != t0 || !a.Start.Equal(t0) {
		t.Fatalf("stopped allocation reads back as %+v", a)
	}
}

func TestStampOrder(t *testing.T) {
	base := time.Date(2026, 11, 29, 9, 0, 0, 500, time.UTC)
	cases := []struct{ a, b time.Time }{
		{base, base.Add(time.Nanosecond)},
		{base, base.Add(time.Second)},
		{base.Add(-time.Second + 1), base},
		{time.Time{}, base},
		{time.Unix(-1, 999_999_999), time.Unix(0, 0)},
	}
	for _, c := range cases {
		if !stampOf(c.a).before(stampOf(c.b)) || stampOf(c.b).before(stampOf(c.a)) || stampOf(c.a).before(stampOf(c.a)) {
			t.Errorf("stamps of %v and %v do not order as the times do", c.a, c.b)
		}
	}
}

// TestLiveIndexSameJobIDInTwoRegions: the live index keys the region's own
// jobs by the job ID alone and other regions' by ID and region; a job ID
// used both here and by a buyer region must give two live allocations
// that neither hides nor stops the other.
func TestLiveIndexSameJobIDInTwoRegions(t *testing.T) {
	r := newRun(t)
	r.ok(gpuNode("n1"))
	r.ok(SubmitJob{Job: job("j1", 10, 0)})
	own := r.ok(PlaceJob{JobID: "j1", NodeID: "n1"}).ID
	r.ok(HoldEscrow{NodeID: "n1", Resources: res(10, 0, 0, 0), BuyerRegion: "us-east-1",
		AuctionID: "auc1", ItemID: "it1", Expiry: t0.Add(time.Minute)})
	sold := r.ok(ConvertEscrow{AuctionID: "auc1", ItemID: "it1", JobID: "j1", JobRegion: "us-east-1", Epoch: 1}).ID
	if a, ok := r.l.JobAllocation(r.l.Region(), "j1"); !ok || a.ID != own {
		t.Fatalf("own job's allocation = %s, %v; want %s", a.ID, ok, own)
	}
	if a, ok := r.l.JobAllocation("us-east-1", "j1"); !ok || a.ID != sold {
		t.Fatalf("buyer's job's allocation = %s, %v; want %s", a.ID, ok, sold)
	}
	live := r.l.LiveAllocations()
	if len(live) != 2 || live[0].ID != own || live[1].ID != sold {
		t.Fatalf("live allocations = %+v; want %s (own) then %s", live, own, sold)
	}
	r.ok(StopAllocation{AllocID: own, Reason: StopCompleted})
	if _, ok := r.l.JobAllocation(r.l.Region(), "j1"); ok {
		t.Fatal("own job still has a live allocation after it stopped")
	}
	if a, ok := r.l.JobAllocation("us-east-1", "j1"); !ok || a.ID != sold {
		t.Fatalf("stopping the own allocation hid the buyer's: %s, %v", a.ID, ok)
	}
	// The restored ledger rebuilds the same index.
	var buf bytes.Buffer
	if err := WriteSnapshot(&buf, r.l); err != nil {
		t.Fatal(err)
	}
	back, err := ReadSnapshot(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if a, ok := back.JobAllocation("us-east-1", "j1"); !ok || a.ID != sold {
		t.Fatalf("after restore, the buyer's job's allocation = %s, %v", a.ID, ok)
	}
}
