package consensus

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	"github.com/vmihailenco/msgpack/v5"
)

// FSM is the region's ledger as a Raft state machine. Raft calls Apply,
// ApplyBatch, Snapshot and Restore from its one FSM goroutine; readers on
// any goroutine take an immutable *Ledger with Ledger.
//
// Commands are applied in place to a private working copy. An immutable
// version is cut from it (an O(1) copy-on-write clone) only when a reader
// asks for the ledger after it changed, so a busy leader that nobody reads
// pays nothing for versions.
type FSM struct {
	// mu guards w, dirty and changed. Apply holds it for one entry at a
	// time; a reader holds it to cut a version.
	mu    sync.Mutex
	w     *ledgerTx
	dirty atomic.Bool // w holds changes not in published; written under mu
	// changed is closed (and cleared) after every entry; it is made only
	// when someone waits, so entries allocate nothing for it otherwise.
	changed chan struct{}

	published atomic.Pointer[Ledger]
	applied   atomic.Uint64 // w's index
}

var _ raft.BatchingFSM = (*FSM)(nil)

// NewFSM returns the state machine of a region, with an empty ledger.
func NewFSM(region string) *FSM {
	f := &FSM{}
	l := NewLedger(region)
	f.w = l.begin()
	f.published.Store(l)
	return f
}

// Ledger returns the latest applied version of the ledger.
func (f *FSM) Ledger() *Ledger {
	if !f.dirty.Load() {
		return f.published.Load()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.cutLocked()
}

// cutLocked publishes the working copy if it changed since the last cut.
func (f *FSM) cutLocked() *Ledger {
	if f.dirty.Load() {
		f.published.Store(f.w.publish())
		f.dirty.Store(false)
	}
	return f.published.Load()
}

// AppliedIndex is the index of the last command entry applied.
func (f *FSM) AppliedIndex() uint64 { return f.applied.Load() }

// WaitIndex blocks until a ledger with at least the index has been
// applied, or ctx ends, and returns it.
func (f *FSM) WaitIndex(ctx context.Context, index uint64) (*Ledger, error) {
	for {
		f.mu.Lock()
		if f.w.index >= index {
			l := f.cutLocked()
			f.mu.Unlock()
			return l, nil
		}
		if f.changed == nil {
			f.changed = make(chan struct{})
		}
		ch := f.changed
		f.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, fmt.Errorf("wait for ledger index %d (applied %d): %w", index, f.applied.Load(), ctx.Err())
		}
	}
}

// EntryResult is what Apply returns for a log entry: one Result per
// command, in order, or Err when the entry itself could not be read (then
// no command in it was applied, on any replica).
type EntryResult struct {
	Results []Result
	Err     error
}

// Apply applies one committed log entry.
func (f *FSM) Apply(log *raft.Log) interface{} {
	if res := f.applyLog(log); res != nil {
		return res
	}
	return nil
}

// ApplyBatch applies consecutive committed entries.
func (f *FSM) ApplyBatch(logs []*raft.Log) []interface{} {
	out := make([]interface{}, len(logs))
	for i, log := range logs {
		if res := f.applyLog(log); res != nil {
			out[i] = res
		}
	}
	return out
}

func (f *FSM) applyLog(log *raft.Log) *EntryResult {
	if log == nil || log.Type != raft.LogCommand {
		return nil
	}
	f.mu.Lock()
	defer func() {
		f.applied.Store(log.Index)
		f.dirty.Store(true)
		if f.changed != nil {
			close(f.changed)
			f.changed = nil
		}
		f.mu.Unlock()
	}()
	f.w.index = log.Index
	envs, err := decodeEntry(log.Data)
	if err != nil {
		return &EntryResult{Err: cmdErr(CodeMalformed, "", "log entry %d: %v", log.Index, err)}
	}
	res := &EntryResult{Results: make([]Result, len(envs))}
	for i, env := range envs {
		res.Results[i] = f.w.applyEnvelope(env)
		res.Results[i].Index = log.Index
	}
	return res
}

// Snapshot captures the current version; Persist writes it out while
// Apply goes on.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	return &ledgerSnapshot{l: f.Ledger()}, nil
}

// Restore replaces the ledger wholly with the snapshot's.
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	l, err := ReadSnapshot(rc)
	if err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if want := f.w.region; l.Region() != want {
		return fmt.Errorf("restore snapshot: it is the ledger of region %q, this is region %q", l.Region(), want)
	}
	f.w = l.begin()
	f.dirty.Store(false)
	f.published.Store(l)
	f.applied.Store(l.Index())
	if f.changed != nil {
		close(f.changed)
		f.changed = nil
	}
	return nil
}

type ledgerSnapshot struct{ l *Ledger }

// Persist streams the version to the sink.
func (s *ledgerSnapshot) Persist(sink raft.SnapshotSink) error {
	if err := WriteSnapshot(sink, s.l); err != nil {
		sink.Cancel()
		return err
	}
	return sink.Close()
}

// Release does nothing: the version is garbage once unreferenced.
func (s *ledgerSnapshot) Release() {}

// The snapshot format: a header map, then one [tag, record] array per
// record, then the end tag. Records are streamed, so neither writing nor
// reading holds a second copy of the ledger.
const snapshotFormat = 1

const (
	tagEnd uint8 = iota
	tagNode
	tagJob
	tagAlloc
	tagEscrow
	tagLease
	tagTrade
)

type snapshotHeader struct {
	Format uint8     `msgpack:"format"`
	Region string    `msgpack:"region"`
	Index  uint64    `msgpack:"index"`
	Seq    uint64    `msgpack:"seq"`
	Now    time.Time `msgpack:"now"`
}

// WriteSnapshot writes the ledger in the snapshot format.
func WriteSnapshot(w io.Writer, l *Ledger) error {
	bw := bufio.NewWriterSize(w, 64<<10)
	enc := msgpack.NewEncoder(bw)
	var err error
	// Each record is written as a bin blob, so that the reader can check
	// its structure before decoding it.
	blob := func(v interface{}) error {
		b, err := msgpack.Marshal(v)
		if err != nil {
			return err
		}
		return enc.EncodeBytes(b)
	}
	if err := blob(snapshotHeader{Format: snapshotFormat, Region: l.region, Index: l.index, Seq: l.seq, Now: l.now}); err != nil {
		return fmt.Errorf("write snapshot header: %w", err)
	}
	record := func(tag uint8, v interface{}) bool {
		if err = enc.EncodeArrayLen(2); err == nil {
			if err = enc.EncodeUint8(tag); err == nil {
				err = blob(v)
			}
		}
		return err == nil
	}
	t := l.t
	t.nodes.each(func(_ string, v *Node) bool { n := t.node(v); return record(tagNode, &n) })
	if err == nil {
		t.jobs.each(func(_ string, v *Job) bool { return record(tagJob, v) })
	}
	if err == nil {
		t.allocs.each(func(_ string, v *allocRecord) bool { a := v.alloc(); return record(tagAlloc, &a) })
	}
	if err == nil {
		t.escrows.each(func(_ string, v *Escrow) bool { return record(tagEscrow, v) })
	}
	if err == nil {
		t.leases.each(func(_ string, v *Lease) bool { return record(tagLease, v) })
	}
	if err == nil {
		t.trades.each(func(_ string, v *Trade) bool { return record(tagTrade, v) })
	}
	if err != nil {
		return fmt.Errorf("write snapshot record: %w", err)
	}
	if err := enc.EncodeArrayLen(2); err != nil {
		return fmt.Errorf("write snapshot end: %w", err)
	}
	if err := enc.EncodeUint8(tagEnd); err != nil {
		return fmt.Errorf("write snapshot end: %w", err)
	}
	if err := enc.EncodeNil(); err != nil {
		return fmt.Errorf("write snapshot end: %w", err)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("write snapshot: %w", err)
	}
	return nil
}

// ReadSnapshot reads a ledger written by WriteSnapshot, rebuilding its
// indexes and checking that its records agree.
func ReadSnapshot(r io.Reader) (*Ledger, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	dec := msgpack.NewDecoder(br)
	var h snapshotHeader
	if err := decodeRecord(dec, br, func(v snapshotHeader) error { h = v; return nil }); err != nil {
		return nil, fmt.Errorf("read snapshot header: %w", err)
	}
	if h.Format != snapshotFormat {
		return nil, fmt.Errorf("read snapshot: format %d, this build reads format %d", h.Format, snapshotFormat)
	}
	b := newLedgerBuilder(h.Region, h.Index, h.Seq, h.Now)
	for n := 0; ; n++ {
		if l, err := dec.DecodeArrayLen(); err != nil || l != 2 {
			return nil, fmt.Errorf("read snapshot record %d: not a [tag, record] pair: %v", n, errOr(err, "array of %d", l))
		}
		tag, err := dec.DecodeUint8()
		if err != nil {
			return nil, fmt.Errorf("read snapshot record %d tag: %w", n, err)
		}
		switch tag {
		case tagEnd:
			if err := dec.Skip(); err != nil {
				return nil, fmt.Errorf("read snapshot end: %w", err)
			}
			l, err := b.finish()
			if err != nil {
				return nil, fmt.Errorf("read snapshot: %w", err)
			}
			return l, nil
		case tagNode:
			err = decodeRecord(dec, br, func(nd Node) error {
				nd.Registered, nd.Updated = canon(nd.Registered), canon(nd.Updated)
				return b.addNode(nd)
			})
		case tagJob:
			err = decodeRecord(dec, br, func(j Job) error {
				j.Submitted, j.Updated = canon(j.Submitted), canon(j.Updated)
				return b.addJob(j)
			})
		case tagAlloc:
			err = decodeRecord(dec, br, func(a Allocation) error {
				a.Start, a.LeaseExpiry, a.Stopped = canon(a.Start), canon(a.LeaseExpiry), canon(a.Stopped)
				return b.addAlloc(a)
			})
		case tagEscrow:
			err = decodeRecord(dec, br, func(e Escrow) error {
				e.Created, e.Expiry = canon(e.Created), canon(e.Expiry)
				return b.addEscrow(e)
			})
		case tagLease:
			err = decodeRecord(dec, br, func(ls Lease) error {
				ls.Start, ls.End, ls.Added = canon(ls.Start), canon(ls.End), canon(ls.Added)
				return b.addLease(ls)
			})
		case tagTrade:
			err = decodeRecord(dec, br, func(t Trade) error {
				t.Created, t.Updated = canon(t.Created), canon(t.Updated)
				return b.addTrade(t)
			})
		default:
			err = fmt.Errorf("unknown record tag %d", tag)
		}
		if err != nil {
			return nil, fmt.Errorf("read snapshot record %d: %w", n, err)
		}
	}
}

// maxRecord bounds one snapshot record; real ones are a few hundred bytes.
const maxRecord = 1 << 20

func decodeRecord[T any](dec *msgpack.Decoder, r byteReader, add func(T) error) error {
	b, err := decodeBin(dec, r, maxRecord)
	if err != nil {
		return err
	}
	var v T
	if err := unmarshal(b, &v); err != nil {
		return err
	}
	return add(v)
}

func errOr(err error, format string, args ...any) error {
	if err != nil {
		return err
	}
	return fmt.Errorf(format, args...)
}
