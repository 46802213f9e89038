package gossip

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"testing"
)

// recordMsg is a fake record message of node, n bytes long; its first
// bytes name the node and a version, so sends can be told apart.
func recordMsg(node string, version, n int) []byte {
	b := make([]byte, n)
	copy(b, fmt.Sprintf("%s/%d;", node, version))
	return b
}

func fixedNodes(n int) func() int { return func() int { return n } }

// TestRecordQueueKeepsEqualLengthRecords replays the start-up sequence that
// lost leadership claims in memberlist.TransmitLimitedQueue: a record is
// sent alone (the queue empties and reuses its numbers), a second record of
// the same length is queued, and each packet has room for one record. The
// second one's reinsertion replaced the first there, which was sent once
// instead of 8 times. Here both go out the full count.
func TestRecordQueueKeepsEqualLengthRecords(t *testing.T) {
	q := newRecordQueue(4, fixedNodes(30)) // limit 4 × ⌈log10 31⌉ = 8
	a, b := recordMsg("a", 1, 137), recordMsg("b", 1, 137)
	sent := map[string]int{}
	get := func() {
		for _, m := range q.GetBroadcasts(2, 150) { // room for one record
			sent[string(m[:4])]++
		}
	}
	q.queue("a", a)
	get()
	q.queue("b", b)
	for i := 0; i < 100 && q.len() > 0; i++ {
		get()
	}
	if sent["a/1;"] != 8 || sent["b/1;"] != 8 {
		t.Fatalf("sent %v, want each record 8 times", sent)
	}
}

func TestRecordQueueNewerRecordReplacesQueued(t *testing.T) {
	q := newRecordQueue(1, fixedNodes(1)) // limit 1
	q.queue("a", recordMsg("a", 1, 50))
	q.queue("a", recordMsg("a", 2, 60))
	got := q.GetBroadcasts(0, 1000)
	if len(got) != 1 || !bytes.HasPrefix(got[0], []byte("a/2;")) {
		t.Fatalf("got %q, want only a's version 2", got)
	}
	if q.len() != 0 {
		t.Fatalf("%d queued after the last transmission, want 0", q.len())
	}
}

// TestRecordQueueOrder: the least sent first, the newest among equals; a
// record too large for the room left is skipped for smaller ones.
func TestRecordQueueOrder(t *testing.T) {
	q := newRecordQueue(3, fixedNodes(9)) // limit 3
	q.queue("old", recordMsg("old", 1, 100))
	if got := q.GetBroadcasts(0, 100); len(got) != 1 {
		t.Fatalf("first call sent %d records, want 1", len(got))
	}
	q.queue("mid", recordMsg("mid", 1, 100))
	q.queue("big", recordMsg("big", 1, 300))
	q.queue("new", recordMsg("new", 1, 100))
	// 250 bytes with 10 of overhead each: big does not fit; new and mid
	// (never sent, new first) take 220, old (sent once) would need 110.
	got := q.GetBroadcasts(10, 250)
	var names []string
	for _, m := range got {
		names = append(names, string(bytes.SplitN(m, []byte("/"), 2)[0]))
	}
	if fmt.Sprint(names) != "[new mid]" {
		t.Fatalf("sent %v, want [new mid]", names)
	}
	if got := q.GetBroadcasts(10, 1000); len(got) != 4 || !bytes.HasPrefix(got[0], []byte("big/")) {
		t.Fatalf("second call sent %d records (%q), want 4 starting with big", len(got), got)
	}
}

func TestRetransmitLimit(t *testing.T) {
	for _, c := range []struct{ mult, n, want int }{
		{4, 0, 1}, {4, 1, 4}, {4, 9, 4}, {4, 10, 8}, {4, 30, 8}, {4, 99, 8}, {4, 100, 12}, {3, 1000, 12}, {4, -1, 1},
	} {
		if got := retransmitLimit(c.mult, c.n); got != c.want {
			t.Errorf("retransmitLimit(%d, %d) = %d, want %d", c.mult, c.n, got, c.want)
		}
	}
}

// TestRecordQueueProperty runs random sequences of queue and get calls
// against a model: no call returns more than its limit, and every record
// that no newer record of its node replaced is sent exactly the transmit
// limit times. (memberlist.TransmitLimitedQueue fails it within a few
// seeds.)
func TestRecordQueueProperty(t *testing.T) {
	for seed := uint64(1); seed <= 200; seed++ {
		rng := rand.New(rand.NewPCG(seed, 7))
		nodes := 1 + rng.IntN(20)
		limit := retransmitLimit(2, nodes)
		q := newRecordQueue(2, fixedNodes(nodes))
		version := map[string]int{}   // node → its latest queued version
		replaced := map[string]bool{} // "node/version;" of replaced records
		sent := map[string]int{}
		get := func(overhead, room int) {
			used := 0
			for _, m := range q.GetBroadcasts(overhead, room) {
				used += overhead + len(m)
				key := string(m[:bytes.IndexByte(m, ';')+1])
				sent[key]++
				if sent[key] > limit {
					t.Fatalf("seed %d: %s sent %d times, limit %d", seed, key, sent[key], limit)
				}
			}
			if used > room {
				t.Fatalf("seed %d: %d bytes returned for a limit of %d", seed, used, room)
			}
		}
		for op := 0; op < 300; op++ {
			if rng.IntN(3) == 0 {
				node := fmt.Sprint("n", rng.IntN(nodes))
				if v, ok := version[node]; ok && sent[fmt.Sprintf("%s/%d;", node, v)] < limit {
					replaced[fmt.Sprintf("%s/%d;", node, v)] = true
				}
				version[node]++
				// Few lengths, as records of one shape share one.
				q.queue(node, recordMsg(node, version[node], []int{60, 137, 137, 365}[rng.IntN(4)]))
				continue
			}
			get(rng.IntN(8), rng.IntN(700))
		}
		for i := 0; i < 10000 && q.len() > 0; i++ {
			get(3, 1400)
		}
		if q.len() != 0 {
			t.Fatalf("seed %d: %d records never drained", seed, q.len())
		}
		for node, v := range version {
			for ver := 1; ver <= v; ver++ {
				key := fmt.Sprintf("%s/%d;", node, ver)
				if !replaced[key] && sent[key] != limit {
					t.Fatalf("seed %d: %s sent %d times, want %d", seed, key, sent[key], limit)
				}
			}
		}
	}
}

// BenchmarkRecordQueueGetBroadcasts is the cost of filling one packet from
// a queue holding one record per node, at mesh sizes where every node
// changed at once (the queue's worst case: it sorts what it holds).
func BenchmarkRecordQueueGetBroadcasts(b *testing.B) {
	for _, n := range []int{30, 300, 3000} {
		b.Run(fmt.Sprint("queued=", n), func(b *testing.B) {
			q := newRecordQueue(4, fixedNodes(n))
			refill := func() {
				for i := range n {
					q.queue(fmt.Sprint("n", i), recordMsg(fmt.Sprint("n", i), 1, 230))
				}
			}
			refill()
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if q.len() < n/2 {
					b.StopTimer()
					refill()
					b.StartTimer()
				}
				q.GetBroadcasts(3, 1398)
			}
		})
	}
}
