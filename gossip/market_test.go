package gossip

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/meridian-mesh/meridian/netsim"
	"github.com/meridian-mesh/meridian/placement"
)

// fullRecord is the largest record a market server publishes: a forecast, a
// coordinate, the longest names and an ask of MaxAskSize bytes.
func fullRecord() Record {
	r := testRecord(strings.Repeat("n", MaxNameLength), 1<<62)
	r.Region = strings.Repeat("r", MaxNameLength)
	r.UpdatedAt = t0
	r.GPUType = strings.Repeat("g", MaxNameLength)
	r.Forecast = &Forecast{Horizon: time.Hour, DemandPerHour: 120.123456789, Low: 90.5, High: 150.25}
	r.Market = &MarketInfo{Leader: true, Term: 1 << 60, Ask: bytes.Repeat([]byte{0xab}, MaxAskSize)}
	return r
}

func TestMarketInfoRoundTrip(t *testing.T) {
	for _, m := range []*MarketInfo{
		nil,
		{},
		{Leader: true, Term: 7},
		{Leader: true, Term: 7, Ask: []byte("ask bytes")},
	} {
		r := testRecord("node-1", 9)
		r.Market = m
		b, err := EncodeRecord(r)
		if err != nil {
			t.Fatalf("EncodeRecord(market %+v): %v", m, err)
		}
		got, err := DecodeRecord(b)
		if err != nil {
			t.Fatalf("DecodeRecord(market %+v): %v", m, err)
		}
		switch {
		case m == nil || (!m.Leader && len(m.Ask) == 0):
			// An empty announcement encodes as an empty map or none.
			if got.Market != nil && (got.Market.Leader || got.Market.Term != 0 || len(got.Market.Ask) != 0) {
				t.Errorf("market %+v decoded as %+v", m, got.Market)
			}
		case !m.equal(got.Market):
			t.Errorf("market %+v decoded as %+v", m, got.Market)
		}
	}
}

func TestMarketInfoFitsTheRecordLimit(t *testing.T) {
	b, err := EncodeRecord(fullRecord())
	if err != nil {
		t.Fatalf("the largest market record does not encode: %v", err)
	}
	if len(b) > MaxRecordSize {
		t.Fatalf("the largest market record is %d bytes, over %d", len(b), MaxRecordSize)
	}
	t.Logf("largest market record: %d bytes of %d", len(b), MaxRecordSize)
}

func TestMarketInfoValidate(t *testing.T) {
	for _, tc := range []struct {
		m     MarketInfo
		field string
	}{
		{MarketInfo{Leader: true}, "market.term"},
		{MarketInfo{Term: 3}, "market.term"},
		{MarketInfo{Leader: true, Term: 1, Ask: make([]byte, MaxAskSize+1)}, "market.ask"},
		{MarketInfo{Ask: []byte("x")}, "market.ask"},
	} {
		r := testRecord("node-1", 9)
		m := tc.m
		r.Market = &m
		_, err := EncodeRecord(r)
		var fe *placement.FieldError
		if !errors.As(err, &fe) || fe.Field != tc.field || !errors.Is(err, placement.ErrInvalid) {
			t.Errorf("EncodeRecord(market %+v) = %v; want an invalid-field error naming %q", tc.m, err, tc.field)
		}
	}
}

func TestMarketInfoCountsAsACapacityChange(t *testing.T) {
	a := testCapacity(1)
	b := testCapacity(1)
	a.Market = &MarketInfo{Leader: true, Term: 2, Ask: []byte{1, 2}}
	b.Market = &MarketInfo{Leader: true, Term: 2, Ask: []byte{1, 2}}
	if !capacityEqual(a, b) {
		t.Fatal("equal market announcements compare unequal")
	}
	for _, change := range []func(*MarketInfo){
		func(m *MarketInfo) { m.Term = 3 },
		func(m *MarketInfo) { m.Leader, m.Term, m.Ask = false, 0, nil },
		func(m *MarketInfo) { m.Ask = []byte{1, 3} },
	} {
		c := cloneCapacity(b)
		change(c.Market)
		if capacityEqual(a, c) {
			t.Errorf("market %+v compares equal to %+v", c.Market, a.Market)
		}
		if !capacityEqual(a, b) {
			t.Fatal("changing a clone changed the original")
		}
	}
	if capacityEqual(a, testCapacity(1)) {
		t.Error("a capacity with a market announcement equals one without")
	}
}

// TestMarketInfoPropagates runs two agents over netsim: a leadership change
// published with SetCapacity reaches the other agent as a new record.
func TestMarketInfoPropagates(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		topo, err := netsim.ParseTopology(strings.NewReader("from,to,rtt_ms\na,a,2\nb,b,2\na,b,120\n"), "test")
		if err != nil {
			t.Fatal(err)
		}
		c := newTestCluster(t, topo, 3)
		defer c.close()
		x := c.start("x", "a")
		y := c.start("y", "b")
		if _, err := y.Join([]string{x.LocalMember().Address()}); err != nil {
			t.Fatal(err)
		}
		capacity := testCapacity(2)
		capacity.Market = &MarketInfo{Leader: true, Term: 4, Ask: []byte("ask")}
		if _, err := x.SetCapacity(capacity); err != nil {
			t.Fatal(err)
		}
		if _, ok := waitFor(30*time.Second, 50*time.Millisecond, func() bool {
			r, ok := y.Record("x")
			return ok && r.Market.equal(capacity.Market)
		}); !ok {
			r, _ := y.Record("x")
			t.Fatalf("y holds x's market announcement %+v; want %+v", r.Market, capacity.Market)
		}
		// Stepping down is news too.
		capacity.Market = &MarketInfo{}
		if _, err := x.SetCapacity(capacity); err != nil {
			t.Fatal(err)
		}
		if _, ok := waitFor(30*time.Second, 50*time.Millisecond, func() bool {
			r, ok := y.Record("x")
			return ok && r.Market != nil && !r.Market.Leader
		}); !ok {
			r, _ := y.Record("x")
			t.Fatalf("y holds x's market announcement %+v after it stepped down", r.Market)
		}
	})
}
