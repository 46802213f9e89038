package gossip

import (
	"math"
	"slices"
	"sync"
)

// recordQueue holds the record broadcasts waiting to be piggybacked on
// memberlist's gossip and probe packets: at most one per node (a newer
// record of a node replaces its queued one), each sent until it has gone
// out retransmitLimit times.
//
// It replaces memberlist.TransmitLimitedQueue, which loses broadcasts
// (hashicorp/memberlist#263, #322, unmerged as of v0.6.0): it numbers items
// from 1 again whenever it empties, keeps them in a B-tree ordered by
// (transmits, length, number), and an insert equal on all three replaces
// the item already there without a word. Records of one shape have one
// length — every server's leadership claim without an ask was 137 bytes —
// so a claim queued during start-up, when a packet had room for one record,
// was overwritten by another node's record and never sent: the claimant's
// region was refused by every other region until a push/pull brought the
// claim, 30 s or more later. Here items are ordered by a sequence number
// that never repeats, so no item can stand for another.
type recordQueue struct {
	// retransmitMult and numNodes give the transmit limit, as memberlist
	// computes it: retransmitMult × ⌈log10(n+1)⌉ for n live members.
	retransmitMult int
	numNodes       func() int

	mu     sync.Mutex
	seq    uint64
	byNode map[string]*queuedRecord
	order  []*queuedRecord // scratch for GetBroadcasts, reused
}

type queuedRecord struct {
	node      string
	msg       []byte
	transmits int
	seq       uint64 // later queued, larger; unique
}

func newRecordQueue(retransmitMult int, numNodes func() int) *recordQueue {
	return &recordQueue{retransmitMult: retransmitMult, numNodes: numNodes, byNode: make(map[string]*queuedRecord)}
}

// retransmitLimit is how many times a broadcast is sent before it is
// dropped: enough for gossip to reach every one of n nodes with high
// probability (memberlist's formula, so records spread as memberlist's own
// broadcasts do).
func retransmitLimit(mult, n int) int {
	return max(1, mult*int(math.Ceil(math.Log10(float64(max(n, 0)+1)))))
}

// queue queues msg, the record message of node, in place of any queued
// one of the same node (which it supersedes).
func (q *recordQueue) queue(node string, msg []byte) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.seq++
	q.byNode[node] = &queuedRecord{node: node, msg: msg, seq: q.seq}
}

// len returns the number of queued broadcasts.
func (q *recordQueue) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.byNode)
}

// GetBroadcasts returns queued messages that fit limit bytes, each costing
// overhead bytes more than its length: those sent least often first, and
// among them the newest (fresh news spreads first). Each one returned
// counts as one transmission.
func (q *recordQueue) GetBroadcasts(overhead, limit int) [][]byte {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.byNode) == 0 || limit <= overhead {
		return nil
	}
	order := q.order[:0]
	for _, r := range q.byNode {
		order = append(order, r)
	}
	slices.SortFunc(order, func(a, b *queuedRecord) int {
		if a.transmits != b.transmits {
			return a.transmits - b.transmits
		}
		switch {
		case a.seq > b.seq:
			return -1
		case a.seq < b.seq:
			return 1
		}
		return 0
	})
	transmitLimit := retransmitLimit(q.retransmitMult, q.numNodes())
	var out [][]byte
	free := limit
	for _, r := range order {
		if free-overhead < len(r.msg) {
			continue // a smaller one may still fit
		}
		free -= overhead + len(r.msg)
		out = append(out, r.msg)
		r.transmits++
		if r.transmits >= transmitLimit {
			delete(q.byNode, r.node)
		}
		if free <= overhead {
			break
		}
	}
	clear(order) // drop the pointers, keep the capacity
	q.order = order[:0]
	return out
}
