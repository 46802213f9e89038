package auction

import (
	"context"
	"encoding/binary"
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	mocknet "github.com/libp2p/go-libp2p/p2p/net/mock"
)

func statusQuery(from, to string, term uint64, now time.Time) *Envelope {
	return &Envelope{Version: Version, Kind: KindStatusQuery, Auction: "A1", From: from, To: to, Term: term, Sent: now,
		StatusQuery: &StatusQuery{Items: []string{"job-1"}}}
}

func TestMocknetRoundTripTakesTwoOneWayLatencies(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mn := mocknet.New()
		defer mn.Close()
		a, _ := mn.GenPeer()
		b, _ := mn.GenPeer()
		l, err := mn.LinkPeers(a.ID(), b.ID())
		if err != nil {
			t.Fatal(err)
		}
		l.SetOptions(mocknet.LinkOptions{Latency: 50 * time.Millisecond})
		ta, tb := NewStreamTransport(a, StreamTransportConfig{}), NewStreamTransport(b, StreamTransportConfig{})
		defer ta.Close()
		defer tb.Close()
		var gotFrom peer.ID
		tb.Serve(func(ctx context.Context, from peer.ID, env *Envelope) *Envelope {
			gotFrom = from
			r := statusQuery("eu", "us", 1, time.Now())
			r.Kind, r.StatusQuery = KindStatusReply, nil
			r.StatusReply = &StatusReply{Items: []ItemStatus{{Item: "job-1", Status: StatusAllocated, Epoch: 3}}}
			return r
		})
		if _, err := mn.ConnectPeers(a.ID(), b.ID()); err != nil {
			t.Fatal(err)
		}
		waitIdentified(t, a, b)

		start := time.Now()
		reply, err := ta.Request(context.Background(), peer.AddrInfo{ID: b.ID()}, statusQuery("us", "eu", 1, start))
		if err != nil {
			t.Fatalf("Request: %v", err)
		}
		if rt := time.Since(start); rt != 100*time.Millisecond {
			t.Errorf("round trip over a 50 ms link = %v, want 100ms", rt)
		}
		if gotFrom != a.ID() {
			t.Errorf("handler saw peer %s, want %s", gotFrom, a.ID())
		}
		if reply.Kind != KindStatusReply || reply.StatusReply.Items[0].Epoch != 3 {
			t.Errorf("reply = %+v", reply)
		}
		// A request whose deadline passes before the reply fails at the
		// deadline, although mocknet streams ignore SetDeadline.
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Millisecond)
		defer cancel()
		start = time.Now()
		if _, err := ta.Request(ctx, peer.AddrInfo{ID: b.ID()}, statusQuery("us", "eu", 1, start)); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Request past its deadline = %v, want DeadlineExceeded", err)
		}
		if d := time.Since(start); d != 60*time.Millisecond {
			t.Errorf("failed after %v, want at the 60ms deadline", d)
		}
	})
}

func TestTransportRefusesMalformedAndOversize(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mn := mocknet.New()
		defer mn.Close()
		a, _ := mn.GenPeer()
		b, _ := mn.GenPeer()
		if _, err := mn.LinkPeers(a.ID(), b.ID()); err != nil {
			t.Fatal(err)
		}
		tb := NewStreamTransport(b, StreamTransportConfig{})
		defer tb.Close()
		calls := 0
		tb.Serve(func(ctx context.Context, from peer.ID, env *Envelope) *Envelope { calls++; return nil })
		if _, err := mn.ConnectPeers(a.ID(), b.ID()); err != nil {
			t.Fatal(err)
		}
		waitIdentified(t, a, b)
		valid, err := Encode(statusQuery("us", "eu", 1, time.Now()))
		if err != nil {
			t.Fatal(err)
		}
		oversize := make([]byte, 4)
		binary.BigEndian.PutUint32(oversize, MaxMessageSize+1)
		for _, tc := range []struct {
			name  string
			frame []byte
		}{
			{"garbage", append([]byte{0, 0, 0, 3}, 0xc1, 0xc1, 0xc1)},
			{"truncated", append([]byte{0, 0, 0, 200}, valid[:10]...)},
			{"oversize length", oversize},
			{"huge array header", append([]byte{0, 0, 0, 5}, 0xdd, 0xff, 0xff, 0xff, 0xff)},
			{"a reply kind", mustFrame(t, func() *Envelope {
				e := statusQuery("us", "eu", 1, time.Now())
				e.Kind, e.StatusQuery, e.StatusReply = KindStatusReply, nil, &StatusReply{}
				return e
			}())},
		} {
			s, err := a.NewStream(context.Background(), b.ID(), ProtocolID)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := s.Write(tc.frame); err != nil {
				t.Fatal(err)
			}
			_ = s.CloseWrite()
			if _, err := ReadFrame(s); err == nil {
				t.Errorf("%s: got a reply", tc.name)
			}
			_ = s.Close()
		}
		if calls != 0 {
			t.Errorf("handler called %d times for bad frames", calls)
		}
	})
}

func mustFrame(t *testing.T, env *Envelope) []byte {
	t.Helper()
	b, err := Encode(env)
	if err != nil {
		t.Fatal(err)
	}
	f := make([]byte, 4+len(b))
	binary.BigEndian.PutUint32(f, uint32(len(b)))
	copy(f[4:], b)
	return f
}

func TestDriversTradeOverMocknet(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newSimMesh(t)
		defer s.close()
		const commit = 5 * time.Millisecond
		buyer := s.addRegion("us-east-1", DriverConfig{}, commit)
		seller := s.addRegion("eu-west-1", DriverConfig{}, commit, testNode("euw1-a", 200, 900))
		s.link("us-east-1", "eu-west-1", 70*time.Millisecond)
		buyer.ledger.addJob("job-1", 1)
		item := Item{ID: "job-1", Kind: ItemJob, Epoch: 1, Job: jobSpec("job-1", "us-east-1", 100)}

		start := time.Now()
		id, err := buyer.drv.Buy(context.Background(), []Item{item})
		if err != nil {
			t.Fatalf("Buy: %v", err)
		}
		alloc := buyer.waitEvent(t, EventAllocated, 1, 10*time.Second)[0]
		// Two round trips plus three commits, exactly: the protocol's
		// lower bound, in virtual time.
		if got, want := alloc.At.Sub(start), 2*70*time.Millisecond+3*commit; got != want {
			t.Errorf("CallForBids → allocation took %v, want %v", got, want)
		}
		buyer.waitEvent(t, EventConfirmed, 1, time.Second)
		if alloc.Seller != "eu-west-1" || alloc.Trade.Auction != id {
			t.Errorf("allocated = %+v", alloc)
		}
		if live := seller.ledger.liveAllocations("us-east-1", "job-1"); len(live) != 1 {
			t.Errorf("seller allocations = %v, want 1", live)
		}
		if tr, ok := buyer.ledger.confirmedTrade("job-1"); !ok || tr.Seller != "eu-west-1" {
			t.Errorf("buyer ledger names %+v", tr)
		}
	})
}

func TestDriverAuthenticatesPeers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newSimMesh(t)
		defer s.close()
		seller := s.addRegion("eu-west-1", DriverConfig{}, 0, testNode("euw1-a", 200, 900))
		s.addRegion("us-east-1", DriverConfig{}, 0)
		s.link("us-east-1", "eu-west-1", 20*time.Millisecond)
		// A second server of us-east-1 (a follower) and a server of another
		// region, both on the mesh.
		follower, _ := s.mn.GenPeer()
		s.g.addServer("us-east-1", follower.ID())
		stranger, _ := s.mn.GenPeer()
		s.g.addServer("ap-south-1", stranger.ID())
		s.g.setLeader("ap-south-1", stranger.ID(), 1)
		for _, h := range []peer.ID{follower.ID(), stranger.ID()} {
			if _, err := s.mn.LinkPeers(h, seller.host.ID()); err != nil {
				t.Fatal(err)
			}
		}
		leaderID := s.regions["us-east-1"].host.ID()
		query := func(from peer.ID, region string, term uint64) error {
			h := s.mn.Host(from)
			if _, err := s.mn.ConnectPeers(from, seller.host.ID()); err != nil {
				return err
			}
			waitIdentified(t, h, seller.host)
			tr := NewStreamTransport(h, StreamTransportConfig{})
			_, err := tr.Request(context.Background(), peer.AddrInfo{ID: seller.host.ID()}, statusQuery(region, "eu-west-1", term, time.Now()))
			return err
		}
		if err := query(leaderID, "us-east-1", 1); err != nil {
			t.Fatalf("the leader's query failed: %v", err)
		}
		for _, tc := range []struct {
			name   string
			from   peer.ID
			region string
			term   uint64
		}{
			{"non-leader server of the region", follower.ID(), "us-east-1", 1},
			{"peer of another region", stranger.ID(), "us-east-1", 1},
			{"leader claiming a term it does not hold", leaderID, "us-east-1", 7},
		} {
			if err := query(tc.from, tc.region, tc.term); err == nil {
				t.Errorf("answered a query from a %s", tc.name)
			}
		}
		// A new leader at term 2; then the old term is a replay.
		s.g.setLeader("us-east-1", follower.ID(), 2)
		if err := query(follower.ID(), "us-east-1", 2); err != nil {
			t.Fatalf("the new leader's query failed: %v", err)
		}
		if err := query(leaderID, "us-east-1", 1); err == nil {
			t.Errorf("answered the deposed leader")
		}
		st, err := seller.drv.Stats(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if st.Inbound != 0 || st.Proposals != 0 {
			t.Errorf("seller stats after refusals = %+v", st)
		}
	})
}

func TestDriversPartitionBetweenAwardAndAck(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newSimMesh(t)
		defer s.close()
		cfg := DriverConfig{Market: Config{InDoubtTimeout: 2 * time.Minute, RequestTimeout: 2 * time.Second}}
		buyer := s.addRegion("us-east-1", cfg, 10*time.Millisecond)
		seller := s.addRegion("eu-west-1", cfg, 10*time.Millisecond, testNode("euw1-a", 200, 900))
		s.link("us-east-1", "eu-west-1", 70*time.Millisecond)
		buyer.ledger.addJob("job-1", 1)
		item := Item{ID: "job-1", Kind: ItemJob, Epoch: 1, Job: jobSpec("job-1", "us-east-1", 100)}
		if _, err := buyer.drv.Buy(context.Background(), []Item{item}); err != nil {
			t.Fatal(err)
		}
		// Cut the link while the seller commits the allocation: the Award
		// arrived, the Ack cannot leave.
		seller.waitEvent(t, EventEscrowHeld, 1, 10*time.Second)
		waitFor(t, "the seller's allocation", 10*time.Second, func() bool {
			return len(seller.ledger.liveAllocations("us-east-1", "job-1")) > 0
		})
		s.cut("us-east-1", "eu-west-1")
		time.Sleep(30 * time.Second)
		if n := len(buyer.eventsOf(EventConfirmed)); n != 0 {
			t.Fatalf("confirmed across a partition")
		}
		s.link("us-east-1", "eu-west-1", 70*time.Millisecond)
		buyer.waitEvent(t, EventConfirmed, 1, time.Minute)
		if n := len(buyer.eventsOf(EventAbandoned)); n != 0 {
			t.Errorf("abandoned %d trades", n)
		}
		if live := seller.ledger.liveAllocations("us-east-1", "job-1"); len(live) != 1 {
			t.Errorf("live allocations = %v", live)
		}
		if v := seller.ledger.violationsList(); len(v) > 0 {
			t.Error(v)
		}
	})
}
