package consensus

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// TestForwardedProposalsShareRPCs sends many concurrent proposals through
// one follower: they share forwarding RPCs, and each still gets the results
// of its own commands, failures included.
func TestForwardedProposalsShareRPCs(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newCluster(t, 3, nil)
		defer c.close()
		c.startAll()
		f := c.followers()[0]
		mustPropose(t, f, RegisterNode{ID: "n1", Total: res(1e9, 1e9, 1e9, 0), PricePerHour: 1})
		const n = 64
		var (
			wg   sync.WaitGroup
			outs [n][]Result
			errs [n]error
		)
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ctx, cancel := ctxTimeout(30 * time.Second)
				defer cancel()
				node := "n1"
				if i%8 == 0 {
					node = "missing"
				}
				id := fmt.Sprintf("j%d", i)
				outs[i], errs[i] = f.Propose(ctx, SubmitJob{Job: job(id, 1, 0)}, PlaceJob{JobID: id, NodeID: node})
			}()
		}
		wg.Wait()
		ctx, cancel := ctxTimeout(10 * time.Second)
		defer cancel()
		l, err := f.ConsistentLedger(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for i := range n {
			id := fmt.Sprintf("j%d", i)
			if errs[i] != nil || len(outs[i]) != 2 {
				t.Fatalf("proposal %d: %v %+v", i, errs[i], outs[i])
			}
			if r := outs[i][0]; r.Err != nil || r.ID != id {
				t.Fatalf("proposal %d: SubmitJob result %+v", i, r)
			}
			r := outs[i][1]
			if i%8 == 0 {
				if !errors.Is(r.Err, ErrNotFound) {
					t.Fatalf("proposal %d: PlaceJob on a missing node: %+v", i, r)
				}
				continue
			}
			if a, ok := l.JobAllocation(testRegion, id); r.Err != nil || !ok || a.ID != r.ID {
				t.Fatalf("proposal %d: PlaceJob result %+v, the ledger's allocation of %s %+v %v", i, r, id, a, ok)
			}
		}
		st := f.Stats()
		if st.ForwardedProposals < n+1 || st.ForwardRPCs*2 > st.ForwardedProposals {
			t.Fatalf("%d proposals forwarded in %d RPCs: concurrent proposals did not share RPCs", st.ForwardedProposals, st.ForwardRPCs)
		}
	})
}

// TestForwardAbandonedWhileQueued gives up on a proposal that waits for a
// forwarding slot: the caller gets its context's error (not an unknown
// outcome), the proposal is never sent, and the queue goes on.
func TestForwardAbandonedWhileQueued(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newCluster(t, 3, func(cfg *Config) {
			// The slowed link must not look like a failed leader.
			cfg.HeartbeatTimeout, cfg.ElectionTimeout, cfg.LeaderLeaseTimeout = 20*time.Second, 20*time.Second, 10*time.Second
		})
		defer c.close()
		leader := c.startAll()
		f := c.followers()[0]
		mustPropose(t, f, RegisterNode{ID: "n1", Total: res(1e9, 1e9, 1e9, 0), PricePerHour: 1})
		// Every forwarding slot busy with a slow RPC.
		c.net.SetLatencyFactor(f.ID(), leader.ID(), 2000)
		var wg sync.WaitGroup
		for i := range maxForwardsInflight {
			wg.Add(1)
			go func() {
				defer wg.Done()
				mustPropose(t, f, SubmitJob{Job: job(fmt.Sprintf("slow%d", i), 1, 0)})
			}()
			synctest.Wait()
		}
		if got := f.fwd.rpcs.Load(); got != maxForwardsInflight+1 {
			t.Fatalf("%d forwarding RPCs, want %d", got, maxForwardsInflight+1)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		_, err := f.Propose(ctx, SubmitJob{Job: job("abandoned", 1, 0)})
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, ErrOutcomeUnknown) {
			t.Fatalf("abandoned while queued: %v", err)
		}
		wg.Wait()
		c.net.ClearLink(f.ID(), leader.ID())
		mustPropose(t, f, SubmitJob{Job: job("after", 1, 0)})
		l, err := f.ConsistentLedger(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := l.Job("abandoned"); ok {
			t.Fatal("a proposal abandoned while queued was committed")
		}
		if _, ok := l.Job("after"); !ok {
			t.Fatal("the queue is stuck after an abandoned proposal")
		}
	})
}

// TestIdleConnAliveSeesPeerClose checks the idle-connection check on real
// loopback TCP: an open connection passes, one the peer closed does not
// (a request sent on it would end as an unknown outcome).
func TestIdleConnAliveSeesPeerClose(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			accepted <- c
		}
		close(accepted)
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	peer, ok := <-accepted
	if !ok {
		t.Fatal("accept failed")
	}
	// A deadline left in the past by an earlier call must not matter.
	c.SetDeadline(time.Unix(1, 0))
	if !idleConnAlive(c) {
		t.Fatal("an open idle connection was taken for closed")
	}
	peer.Close()
	deadline := time.Now().Add(10 * time.Second)
	for idleConnAlive(c) {
		if time.Now().After(deadline) {
			t.Fatal("a connection closed by the peer still looks alive")
		}
		time.Sleep(time.Millisecond)
	}
}
