package consensus

import (
	"strings"
	"sync"

	"github.com/google/btree"

	"github.com/meridian-mesh/meridian/placement"
)

// table is one ordered table of the ledger: a copy-on-write B-tree keyed by
// string. clone is O(1); the original and the clone may then be used
// concurrently (one writer, any readers on the other), each copying the
// nodes it changes. Values are never modified in place: a changed record is
// a new value.
type table[V any] struct {
	t *btree.BTreeG[entry[V]]
}

// entry is a key and its value. head holds the key's first 8 bytes (zero
// padded, big-endian), so that most comparisons in a search are decided
// without following the key's pointer to its bytes, which in a large table
// is a cache miss for nearly every comparison.
type entry[V any] struct {
	head uint64
	k    string
	v    V
}

func keyEntry[V any](k string) entry[V] { return entry[V]{head: keyHead(k), k: k} }

// keyHead packs the first 8 bytes of k. Comparing heads orders keys as
// comparing their first 8 bytes does, a shorter key counting as padded
// with zero bytes; keys whose heads are equal are compared whole.
func keyHead(k string) uint64 {
	var h uint64
	n := min(len(k), 8)
	for i := range n {
		h |= uint64(k[i]) << (56 - 8*i)
	}
	return h
}

func entryLess[V any](a, b entry[V]) bool {
	if a.head != b.head {
		return a.head < b.head
	}
	return a.k < b.k
}

// btreeDegree keeps nodes small, so that copy-on-write after a clone
// copies little.
const btreeDegree = 16

func newTable[V any]() table[V] {
	return table[V]{t: btree.NewG(btreeDegree, entryLess[V])}
}

func (t table[V]) get(k string) (V, bool) {
	e, ok := t.t.Get(keyEntry[V](k))
	return e.v, ok
}

func (t table[V]) has(k string) bool { return t.t.Has(keyEntry[V](k)) }

func (t table[V]) set(k string, v V) (old V, existed bool) {
	e := keyEntry[V](k)
	e.v = v
	prev, existed := t.t.ReplaceOrInsert(e)
	return prev.v, existed
}

func (t table[V]) del(k string) (old V, existed bool) {
	e, existed := t.t.Delete(keyEntry[V](k))
	return e.v, existed
}

func (t table[V]) len() int { return t.t.Len() }

func (t table[V]) clone() table[V] { return table[V]{t: t.t.Clone()} }

// each calls fn in key order until it returns false.
func (t table[V]) each(fn func(k string, v V) bool) {
	t.t.Ascend(func(e entry[V]) bool { return fn(e.k, e.v) })
}

// prefix calls fn, in key order, for the keys with the prefix, until fn
// returns false.
func (t table[V]) prefix(p string, fn func(k string, v V) bool) {
	t.t.AscendGreaterOrEqual(keyEntry[V](p), func(e entry[V]) bool {
		if !strings.HasPrefix(e.k, p) {
			return false
		}
		return fn(e.k, e.v)
	})
}

// first returns the smallest key.
func (t table[V]) first() (string, V, bool) {
	e, ok := t.t.Min()
	return e.k, e.v, ok
}

// tables is the whole ledger: the records and the indexes over them.
type tables struct {
	// cloneMu serializes clones: btree's Clone rewrites the source tree's
	// header (never anything a reader touches), so two goroutines applying
	// commands to the same published version must not clone at once.
	cloneMu sync.Mutex

	nodes   table[*Node]               // Used is kept in used, not here
	used    table[placement.Resources] // node ID → what its allocations and escrows hold; absent when nothing
	allocs  table[*allocRecord]
	jobs    table[*Job]
	escrows table[*Escrow]
	leases  table[*Lease]
	trades  table[*Trade]   // auction \0 item
	live    table[string]   // job ID \0 job region → live allocation ID, for other regions' jobs (see ownLive)
	items   table[itemRef]  // auction \0 item → escrow or converted allocation (seller side)
	onNode  table[struct{}] // node ID \0 allocation or escrow ID: what holds capacity on a node
	expiry  table[struct{}] // 8-byte time \0 ID: live escrows and leased allocations by expiry
	pending table[struct{}] // job ID: the jobs waiting for a placement

	// ownLive counts the region's own jobs that have a live allocation.
	// Their allocation is the job record's AllocID, which the live index
	// does not repeat: an own job's placement then writes three tables
	// instead of four, and the ledger holds one index entry fewer per
	// placed job for the collector to mark.
	ownLive int
}

func newTables() *tables {
	return &tables{
		nodes: newTable[*Node](), used: newTable[placement.Resources](), allocs: newTable[*allocRecord](), jobs: newTable[*Job](),
		escrows: newTable[*Escrow](), leases: newTable[*Lease](), trades: newTable[*Trade](),
		live: newTable[string](), items: newTable[itemRef](), onNode: newTable[struct{}](),
		expiry: newTable[struct{}](), pending: newTable[struct{}](),
	}
}

func (ts *tables) clone() *tables {
	ts.cloneMu.Lock()
	defer ts.cloneMu.Unlock()
	return &tables{
		nodes: ts.nodes.clone(), used: ts.used.clone(), allocs: ts.allocs.clone(), jobs: ts.jobs.clone(),
		escrows: ts.escrows.clone(), leases: ts.leases.clone(), trades: ts.trades.clone(),
		live: ts.live.clone(), items: ts.items.clone(), onNode: ts.onNode.clone(),
		expiry: ts.expiry.clone(), pending: ts.pending.clone(), ownLive: ts.ownLive,
	}
}
