package consensus

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// TestTableOrderIsStringOrder checks that the key heads keep a table in
// plain string order, with keys that share long prefixes, embed zero bytes
// and differ in length around the 8-byte head.
func TestTableOrderIsStringOrder(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 10))
	alphabet := []byte{0, 1, 'a', 'b', 0x7f, 0x80, 0xff}
	tb := newTable[int]()
	seen := map[string]bool{}
	var keys []string
	for range 5000 {
		var sb strings.Builder
		if r.IntN(2) == 0 {
			sb.WriteString("eu-west-1\x00")
		}
		for range r.IntN(14) {
			sb.WriteByte(alphabet[r.IntN(len(alphabet))])
		}
		k := sb.String()
		tb.set(k, len(k))
		if !seen[k] {
			seen[k] = true
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	var got []string
	tb.each(func(k string, v int) bool {
		if v != len(k) {
			t.Fatalf("key %q holds %d", k, v)
		}
		got = append(got, k)
		return true
	})
	if !slices.Equal(got, keys) {
		t.Fatalf("table order differs from string order (%d keys, %d in the table)", len(keys), len(got))
	}
	for _, k := range keys {
		if !tb.has(k) {
			t.Fatalf("key %q not found", k)
		}
	}
	// A prefix scan returns exactly the keys with the prefix, in order.
	for _, p := range []string{"", "a", "eu-west-1\x00", "eu-west-1\x00a", "\x00", "ab\x00"} {
		var want, scan []string
		for _, k := range keys {
			if strings.HasPrefix(k, p) {
				want = append(want, k)
			}
		}
		tb.prefix(p, func(k string, _ int) bool { scan = append(scan, k); return true })
		if !slices.Equal(scan, want) {
			t.Fatalf("prefix %q: %d keys, want %d", p, len(scan), len(want))
		}
	}
	// Deleting half leaves the other half, still in order.
	for i, k := range keys {
		if i%2 == 0 {
			if _, ok := tb.del(k); !ok {
				t.Fatalf("delete %q: not found", k)
			}
		}
	}
	got = got[:0]
	tb.each(func(k string, _ int) bool { got = append(got, k); return true })
	var odd []string
	for i, k := range keys {
		if i%2 == 1 {
			odd = append(odd, k)
		}
	}
	if !slices.Equal(got, odd) {
		t.Fatalf("after deletes: %d keys, want %d", len(got), len(odd))
	}
}

// BenchmarkTableInsert inserts keys shaped like the ledger's indexes (a
// node ID, a NUL, an allocation ID) into a table of 100k entries: new keys
// land all over the tree, as in the onNode index.
func BenchmarkTableInsert(b *testing.B) {
	keys := make([]string, 200_000)
	for i := range keys {
		keys[i] = key(fmt.Sprintf("n%d", i%64), fmt.Sprintf("a-%d", i))
	}
	tb := newTable[struct{}]()
	for _, k := range keys[:100_000] {
		tb.set(k, struct{}{})
	}
	b.ResetTimer()
	for i := range b.N {
		tb.set(keys[100_000+i%100_000], struct{}{})
		tb.has(keys[i%100_000])
	}
}
