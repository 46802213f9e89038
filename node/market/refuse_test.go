package market

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/meridian-mesh/meridian/gossip"
	"github.com/meridian-mesh/meridian/placement"
	"github.com/meridian-mesh/meridian/placement/auction"
)

// fakeView is a gossip view built by hand, for the directory's and the
// authority's rules.
type fakeView struct {
	members   []gossip.Member
	records   []gossip.Record
	refreshed []string // members Refresh was asked for, in order
}

func (v *fakeView) Refresh(name string) bool {
	v.refreshed = append(v.refreshed, name)
	return true
}

func (v *fakeView) Members() []gossip.Member { return v.members }
func (v *fakeView) Records() []gossip.Record { return v.records }

func (v *fakeView) RegionRecords(region string) []gossip.Record {
	var out []gossip.Record
	for _, r := range v.records {
		if r.Region == region {
			out = append(out, r)
		}
	}
	return out
}
func (v *fakeView) RegionRTT(from, to string) (time.Duration, bool) {
	if from == to {
		return 0, true
	}
	return 80 * time.Millisecond, true
}

func testPeer(t *testing.T, seed uint64) peer.ID {
	t.Helper()
	r := rand.New(rand.NewPCG(seed, seed))
	var b [32]byte
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	priv, _, err := crypto.GenerateEd25519Key(strings.NewReader(string(b[:])))
	if err != nil {
		t.Fatal(err)
	}
	id, err := peer.IDFromPrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// add puts a member with a record in the view; leaderTerm > 0 makes its
// record claim the leadership of its region.
func (v *fakeView) add(name, region string, role gossip.Role, id peer.ID, state gossip.MemberState, free float64, leaderTerm uint64, ask []byte) {
	v.members = append(v.members, gossip.Member{Name: name, State: state, Meta: gossip.Meta{
		Region: region, Role: role, P2PPeerID: id.String(), P2PAddr: "/ip4/198.18.0.1/tcp/4001"}})
	rec := gossip.Record{Node: name, Region: region, Version: 1, UpdatedAt: time.Date(2026, 11, 29, 3, 0, 1, 5e8, time.UTC), Capacity: gossip.Capacity{
		Total: placement.Resources{ComputePerHour: 500}, Free: placement.Resources{ComputePerHour: free}}}
	if role == gossip.RoleServer {
		rec.Market = &gossip.MarketInfo{}
		if leaderTerm > 0 {
			rec.Market = &gossip.MarketInfo{Leader: true, Term: leaderTerm, Ask: ask}
		}
	}
	v.records = append(v.records, rec)
}

func TestAuthority(t *testing.T) {
	ids := make([]peer.ID, 8)
	for i := range ids {
		ids[i] = testPeer(t, uint64(i+1))
	}
	v := &fakeView{}
	v.add("far-0", "far", gossip.RoleServer, ids[0], gossip.StateAlive, 100, 5, nil)
	v.add("far-1", "far", gossip.RoleServer, ids[1], gossip.StateAlive, 100, 0, nil)
	v.add("far-2", "far", gossip.RoleWorker, ids[2], gossip.StateAlive, 100, 0, nil)
	v.add("home-0", "home", gossip.RoleServer, ids[3], gossip.StateAlive, 10, 3, nil)
	v.add("alt-0", "alt", gossip.RoleServer, ids[4], gossip.StateFailed, 10, 9, nil)
	// A deposed leader whose record still says so, and its successor.
	v.add("dep-0", "dep", gossip.RoleServer, ids[5], gossip.StateAlive, 10, 4, nil)
	v.add("dep-1", "dep", gossip.RoleServer, ids[6], gossip.StateAlive, 10, 6, nil)
	// A server whose record has not arrived yet.
	v.members = append(v.members, gossip.Member{Name: "far-3", State: gossip.StateAlive, Meta: gossip.Meta{
		Region: "far", Role: gossip.RoleServer, P2PPeerID: ids[7].String(), P2PAddr: "/ip4/198.18.0.1/tcp/4001"}})
	d := &directory{g: v, region: "home"}
	for _, tc := range []struct {
		name   string
		p      peer.ID
		region string
		term   uint64
		want   string // empty: authorized
		// refresh is the member whose records the refusal asks gossip to
		// fetch at once: a claim it may have missed.
		refresh string
	}{
		{"the leader under its term", ids[0], "far", 5, "", ""},
		{"an old term (a replay)", ids[0], "far", 4, "term 5", ""},
		{"a later term than gossip knows", ids[0], "far", 6, "term 5", "far-0"},
		{"a follower", ids[1], "far", 5, "does not lead region \"far\" according to gossip: its record issued 2026-11-29T03:00:01.5Z claims no leadership", "far-1"},
		{"a server with no record yet", ids[7], "far", 5, "does not lead region \"far\" according to gossip: no record of it", "far-3"},
		{"a worker", ids[2], "far", 5, "not a server", ""},
		{"a peer of another region", ids[3], "far", 3, `region "home", not "far"`, ""},
		{"a stranger", testPeer(t, 99), "far", 5, "not a member", ""},
		{"a failed member", ids[4], "alt", 9, "failed", ""},
		{"a deposed leader", ids[5], "dep", 4, "deposed", ""},
		{"its successor", ids[6], "dep", 6, "", ""},
	} {
		v.refreshed = nil
		err := d.Authorize(tc.p, tc.region, tc.term)
		var wantRefresh []string
		if tc.refresh != "" {
			wantRefresh = []string{tc.refresh}
		}
		if !slices.Equal(v.refreshed, wantRefresh) {
			t.Errorf("%s: asked gossip to refresh %v; want %v", tc.name, v.refreshed, wantRefresh)
		}
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: Authorize = %v; want nil", tc.name, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: Authorize = %v; want an error mentioning %q", tc.name, err, tc.want)
		}
	}
	if ai, ok := d.Leader("dep"); !ok || ai.ID != ids[6] || len(ai.Addrs) != 1 {
		t.Errorf("Leader(dep) = %v, %v; want the later term's %s", ai, ok, ids[6])
	}
	if _, ok := d.Leader("alt"); ok {
		t.Error("a failed member is a leader")
	}
}

func TestDirectoryRegions(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	ask, err := auction.EncodeAsk("far", 5, auction.Ask{Surplus: placement.Resources{ComputePerHour: 150}, LargestNode: placement.Resources{ComputePerHour: 100},
		MinPrice: 7, Expires: now.Add(time.Minute)}, now)
	if err != nil {
		t.Fatal(err)
	}
	stale, err := auction.EncodeAsk("far", 4, auction.Ask{MinPrice: 1, Expires: now.Add(time.Minute)}, now)
	if err != nil {
		t.Fatal(err)
	}
	v := &fakeView{}
	v.add("far-0", "far", gossip.RoleServer, testPeer(t, 1), gossip.StateAlive, 100, 5, ask)
	v.add("far-1", "far", gossip.RoleWorker, testPeer(t, 2), gossip.StateAlive, 50, 0, nil)
	v.add("far-2", "far", gossip.RoleWorker, testPeer(t, 3), gossip.StateFailed, 500, 0, nil)
	v.add("home-0", "home", gossip.RoleServer, testPeer(t, 4), gossip.StateAlive, 10, 0, nil)
	v.add("old-0", "old", gossip.RoleServer, testPeer(t, 5), gossip.StateAlive, 10, 5, stale)
	d := &directory{g: v, region: "home"}
	got := map[string]auction.RegionInfo{}
	for _, ri := range d.Regions() {
		got[ri.Region] = ri
	}
	far := got["far"]
	if far.Surplus.ComputePerHour != 150 || far.LargestNode.ComputePerHour != 100 || !far.Reachable || far.Ask == nil || far.Ask.MinPrice != 7 {
		t.Errorf("far = %+v; want surplus 150 (the failed worker does not count), largest 100, reachable, its ask", far)
	}
	if home := got["home"]; home.Reachable {
		t.Errorf("home = %+v; no server claims to lead it", home)
	}
	if old := got["old"]; old.Ask != nil {
		t.Errorf("old = %+v; an ask of another region or term is ignored", old)
	}
}

// TestReportCodec round-trips report messages and refuses what is not one.
func TestReportCodec(t *testing.T) {
	ok := &reportMsg{reportHeader: reportHeader{Version: reportVersion, Kind: reportKindReport, From: "far", To: "home", Term: 3, Sent: 1},
		Items: []reportItem{{Auction: "home/1/1", Item: "job-1", Epoch: 2, Outcome: 1, Message: "exit 0"}}}
	b, err := encodeReport(ok)
	if err != nil {
		t.Fatal(err)
	}
	back, err := decodeReport(b)
	if err != nil || back.From != "far" || len(back.Items) != 1 || back.Items[0] != ok.Items[0] {
		t.Fatalf("round trip = %+v, %v", back, err)
	}
	for _, tc := range []struct {
		name string
		edit func(*reportMsg)
	}{
		{"no items", func(r *reportMsg) { r.Items = nil }},
		{"cancelled is not reported", func(r *reportMsg) { r.Items[0].Outcome = 3 }},
		{"unknown outcome", func(r *reportMsg) { r.Items[0].Outcome = 42 }},
		{"no term", func(r *reportMsg) { r.Term = 0 }},
		{"empty region", func(r *reportMsg) { r.From = "" }},
		{"version", func(r *reportMsg) { r.Version = 9 }},
	} {
		r := *ok
		r.Items = append([]reportItem(nil), ok.Items...)
		tc.edit(&r)
		if _, err := encodeReport(&r); err == nil {
			t.Errorf("%s: encoded", tc.name)
		}
	}
	huge := make([]byte, 10)
	binary.BigEndian.PutUint32(huge, 0xffffffff)
	for _, bad := range [][]byte{nil, {0x92}, {0x92, 0x80, 0xdd, 0xff, 0xff, 0xff, 0xff}, huge, append(b, 0)} {
		if _, err := decodeReport(bad); !errors.Is(err, auction.ErrMalformed) && !errors.Is(err, auction.ErrTooLarge) {
			t.Errorf("decodeReport(%x) = %v; want a malformed-message error", bad, err)
		}
	}
}

func FuzzDecodeReport(f *testing.F) {
	b, err := encodeReport(&reportMsg{reportHeader: reportHeader{Version: reportVersion, Kind: reportKindReport, From: "far", To: "home", Term: 3, Sent: 1},
		Items: []reportItem{{Auction: "a", Item: "i", Epoch: 2, Outcome: 1}}})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Add([]byte{0x92, 0x80, 0x90})
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := decodeReport(data)
		if err != nil {
			return
		}
		// Whatever decodes re-encodes, and validates.
		if _, err := encodeReport(r); err != nil {
			t.Fatalf("decoded %+v does not re-encode: %v", r, err)
		}
	})
}

// TestForgedMessagesAreRefused sends market messages that claim to speak
// for a region's leader from peers that do not: a follower of the region,
// the leader under an old term, the leader claiming another region, and
// bytes that are not a message at all. The seller answers none of them
// and escrows nothing; it keeps serving the real leader.
func TestForgedMessagesAreRefused(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := newWorld(t, twoRegions, nil)
		defer w.close()
		w.addRegion("home", 3, nodeSpec{compute: 10, price: 5})
		w.addRegion("far", 1, nodeSpec{compute: 200, price: 8})
		w.ready()
		leader, seller := w.leader("home"), w.leader("far")
		var follower *server
		for _, n := range w.regions["home"] {
			if s := w.server(n); s != leader {
				follower = s
				break
			}
		}
		term, _ := leader.m.leadership()
		to, ok := leader.m.dir.Leader("far")
		if !ok {
			t.Fatal("no seller leader in gossip")
		}
		item := auction.Item{ID: "x", Kind: auction.ItemJob, Job: demandJob("x", 50), Epoch: 1}
		cfb := func(from, region string, term uint64, sent time.Time) (*auction.Envelope, error) {
			env := &auction.Envelope{Version: auction.Version, Kind: auction.KindCallForBids, Auction: region + "/forged/1", From: region,
				To: "far", Term: term, Sent: sent, CallForBids: &auction.CallForBids{Items: []auction.Item{item}, Deadline: time.Now().Add(time.Second)}}
			tr := auction.NewStreamTransport(w.server(from).h, auction.StreamTransportConfig{})
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			return tr.Request(ctx, to, env)
		}
		for _, tc := range []struct {
			name, from, region string
			term               uint64
			sent               time.Time
		}{
			{"a follower", follower.name, "home", term, time.Now()},
			{"an old term", leader.name, "home", term - 1, time.Now()},
			{"another region", leader.name, "alt", term, time.Now()},
			{"a replay from long ago", leader.name, "home", term, time.Now().Add(-time.Hour)},
		} {
			if reply, err := cfb(tc.from, tc.region, tc.term, tc.sent); err == nil {
				t.Errorf("%s: got a reply %+v; want none", tc.name, reply)
			}
		}
		// Not a message: garbage, and a frame claiming 4 GiB.
		for _, raw := range [][]byte{[]byte("\x00\x00\x00\x05hello"), {0xff, 0xff, 0xff, 0xff}} {
			for _, proto := range []string{auction.ProtocolID, ReportProtocolID} {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				s, err := leader.h.NewStream(ctx, to.ID, protocol.ID(proto))
				if err != nil {
					cancel()
					t.Fatalf("open %s: %v", proto, err)
				}
				_, _ = s.Write(raw)
				_ = s.CloseWrite()
				if b, err := io.ReadAll(s); err == nil && len(b) > 0 {
					t.Errorf("%s answered %x to garbage", proto, b)
				}
				_ = s.Reset()
				cancel()
			}
		}
		// A report from a follower is refused too.
		ctx := context.Background()
		if _, err := follower.m.reportTo(ctx, to, "far", term, []reportItem{{Auction: "a", Item: "i", Epoch: 1, Outcome: 1}}); err == nil {
			t.Error("a follower's report was acknowledged")
		}
		if e := seller.srv.Ledger().Escrows(); len(e) != 0 {
			t.Fatalf("the seller escrowed for a forged call: %+v", e)
		}
		// The control: the same call from the leader under its term is
		// answered with a bid.
		if reply, err := cfb(leader.name, "home", term, time.Now()); err != nil || reply.Kind != auction.KindBid {
			t.Fatalf("the leader's own call: %+v, %v; want a bid", reply, err)
		}
		// The real leader is still served.
		if err := leader.m.Trade(ctx, w.submit("home", demandJob("job-1", 100))); err != nil {
			t.Fatal(err)
		}
		if !w.tradeUntilPlaced("home", "job-1", time.Minute) {
			t.Fatalf("job not traded after the forgeries: %+v", w.job("home", "job-1"))
		}
		w.checkSettled("home", "job-1")
	})
}
