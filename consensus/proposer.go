package consensus

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
)

// The proposal queue packs concurrent proposals into one log entry, so that
// one disk sync on each server commits many commands.
//
// One goroutine (pack) owns the intake: it takes the first waiting
// proposal, waits until fewer than maxInflight entries are in flight, then
// takes every other proposal waiting by then, up to the entry caps, stamps
// them with the leader's time, and hands the entry to Raft. A second
// goroutine (complete) waits for the entries in log order and hands each
// proposal its slice of the results.
//
// The in-flight bound is what makes entries big. Without it, each proposal
// goes to Raft as it arrives, proposals trickle in as earlier ones commit,
// and every disk sync on the leader and the followers carries one or two
// of them. With it, proposals gather while entries are being synced and
// replicated: the busier the leader, the bigger the entries.

// proposal states, so that a caller giving up and the packer taking the
// proposal agree on which of them won.
const (
	propQueued int32 = iota
	propTaken
	propAbandoned
)

type proposal struct {
	envs   []Envelope
	size   int
	state  atomic.Int32
	done   chan proposalResult // buffered: the sender never blocks
	queued time.Time           // when propose queued it
	taken  time.Time           // when the packer put it in an entry
}

// proposalTiming is where one proposal spent its time on the leader, for
// the benchmark's per-stage figures.
type proposalTiming struct {
	// Queued is from propose to the packer putting the proposal in an
	// entry: the wait for a pipeline slot and for the packer.
	Queued time.Duration
	// Raft is from raft.Apply to the entry's future resolving: the
	// leader's disk write, replication and a follower's disk write, the
	// commit, and the leader's state machine applying the entry.
	Raft time.Duration
}

type proposalResult struct {
	results []Result
	err     error
}

type inflightEntry struct {
	future    raft.ApplyFuture
	props     []*proposal
	submitted time.Time // set only while observe is
}

// errNotLeaderRetry means Raft refused the entry because this server is not
// the leader: it was never appended, so the proposal can go to the leader.
var errNotLeaderRetry = errors.New("entry refused: not the leader")

type proposer struct {
	raft     *raft.Raft
	clock    func() time.Time
	maxCmds  int
	maxBytes int

	in       chan *proposal
	slots    chan struct{} // one token per entry in flight
	inflight chan *inflightEntry
	done     chan struct{}
	wg       sync.WaitGroup

	entries  atomic.Uint64
	commands atomic.Uint64

	// observe, when set, receives the timing of every proposal that got
	// a result from Raft (the benchmark sets it).
	observe atomic.Pointer[func(proposalTiming)]
}

func newProposer(r *raft.Raft, clock func() time.Time, maxCmds, maxBytes, maxInflight int) *proposer {
	p := &proposer{
		raft:     r,
		clock:    clock,
		maxCmds:  maxCmds,
		maxBytes: maxBytes,
		in:       make(chan *proposal, 1024),
		slots:    make(chan struct{}, maxInflight),
		inflight: make(chan *inflightEntry, maxInflight),
		done:     make(chan struct{}),
	}
	p.wg.Add(2)
	go p.pack()
	go p.complete()
	return p
}

// close stops the queue; pending proposals fail with ErrShutdown, and it
// returns once the entries in flight have their results. Raft must still be
// running: it does not resolve every future it holds when it shuts down
// (see Server.Close).
func (p *proposer) close() {
	close(p.done)
	p.wg.Wait()
}

// propose queues envelopes and waits for their results.
func (p *proposer) propose(ctx context.Context, envs []Envelope) ([]Result, error) {
	prop := &proposal{envs: envs, size: envelopesSize(envs), done: make(chan proposalResult, 1)}
	if p.observe.Load() != nil {
		prop.queued = time.Now()
	}
	select {
	case p.in <- prop:
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-p.done:
		return nil, ErrShutdown
	}
	select {
	case r := <-prop.done:
		return r.results, r.err
	case <-ctx.Done():
		if prop.state.CompareAndSwap(propQueued, propAbandoned) {
			// The packer had not taken it: nothing was proposed.
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("%w: %w", ErrOutcomeUnknown, ctx.Err())
	case <-p.done:
		if prop.state.CompareAndSwap(propQueued, propAbandoned) {
			return nil, ErrShutdown
		}
		// The packer took it, so complete answers it once Raft resolves
		// its entry (close waits for that).
		r := <-prop.done
		return r.results, r.err
	}
}

func (p *proposer) pack() {
	defer p.wg.Done()
	defer close(p.inflight)
	var carry *proposal
	for {
		first := carry
		carry = nil
		if first == nil {
			select {
			case first = <-p.in:
			case <-p.done:
				p.drainIntake()
				return
			}
		}
		// Wait for room in the pipeline; proposals gather meanwhile.
		select {
		case p.slots <- struct{}{}:
		case <-p.done:
			if first.state.CompareAndSwap(propQueued, propTaken) {
				first.done <- proposalResult{err: ErrShutdown}
			}
			p.drainIntake()
			return
		}
		var (
			batch       []*proposal
			cmds, bytes int
		)
		take := func(pr *proposal) bool {
			if len(batch) > 0 && (cmds+len(pr.envs) > p.maxCmds || bytes+pr.size > p.maxBytes) {
				return false
			}
			if pr.state.CompareAndSwap(propQueued, propTaken) {
				if !pr.queued.IsZero() {
					pr.taken = time.Now()
				}
				batch = append(batch, pr)
				cmds += len(pr.envs)
				bytes += pr.size
			}
			return true
		}
		take(first)
	fill:
		for cmds < p.maxCmds {
			select {
			case pr := <-p.in:
				if !take(pr) {
					carry = pr
					break fill
				}
			default:
				break fill
			}
		}
		if len(batch) == 0 {
			<-p.slots
			continue
		}
		p.submit(batch, cmds)
	}
}

func (p *proposer) submit(batch []*proposal, cmds int) {
	now := p.clock()
	size := 16
	for _, pr := range batch {
		size += pr.size
	}
	// The entry is written straight from the proposals, stamped with the
	// leader's time.
	data := appendEntryHeader(make([]byte, 0, size), cmds)
	for _, pr := range batch {
		for _, e := range pr.envs {
			e.Now = now
			data = appendEnvelope(data, e)
		}
	}
	// No enqueue timeout: a follower's Raft answers ErrNotLeader at once,
	// and Shutdown answers everything.
	var submitted time.Time
	if p.observe.Load() != nil {
		submitted = time.Now()
	}
	f := p.raft.Apply(data, 0)
	p.entries.Add(1)
	p.commands.Add(uint64(cmds))
	e := &inflightEntry{future: f, props: batch, submitted: submitted}
	select {
	case p.inflight <- e:
	case <-p.done:
		// Raft is already shut down, so the future has its answer.
		p.finish(e)
	}
}

func (p *proposer) complete() {
	defer p.wg.Done()
	for e := range p.inflight {
		p.finish(e)
	}
}

// release frees the entry's pipeline slot.
func (p *proposer) release() { <-p.slots }

func (p *proposer) finish(e *inflightEntry) {
	err := e.future.Error()
	p.release()
	if obs := p.observe.Load(); obs != nil && err == nil && !e.submitted.IsZero() {
		now := time.Now()
		for _, pr := range e.props {
			if !pr.queued.IsZero() {
				(*obs)(proposalTiming{Queued: pr.taken.Sub(pr.queued), Raft: now.Sub(e.submitted)})
			}
		}
	}
	if err != nil {
		fail(e.props, raftApplyError(err))
		return
	}
	res, ok := e.future.Response().(*EntryResult)
	if !ok || res == nil {
		fail(e.props, fmt.Errorf("log entry %d: no result from the state machine", e.future.Index()))
		return
	}
	if res.Err != nil {
		fail(e.props, res.Err)
		return
	}
	off := 0
	for _, pr := range e.props {
		n := len(pr.envs)
		if off+n > len(res.Results) {
			pr.done <- proposalResult{err: fmt.Errorf("log entry %d: %d results for %d commands", e.future.Index(), len(res.Results), off+n)}
			continue
		}
		pr.done <- proposalResult{results: res.Results[off : off+n : off+n]}
		off += n
	}
}

// drainIntake fails the proposals still queued at shutdown.
func (p *proposer) drainIntake() {
	for {
		select {
		case pr := <-p.in:
			if pr.state.CompareAndSwap(propQueued, propTaken) {
				pr.done <- proposalResult{err: ErrShutdown}
			}
		default:
			return
		}
	}
}

func fail(props []*proposal, err error) {
	for _, pr := range props {
		pr.done <- proposalResult{err: err}
	}
}

// raftApplyError maps Raft's answer to what the caller can act on.
func raftApplyError(err error) error {
	switch {
	case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipTransferInProgress):
		// Refused before it was appended.
		return errNotLeaderRetry
	case errors.Is(err, raft.ErrLeadershipLost):
		return fmt.Errorf("%w: %w", ErrOutcomeUnknown, err)
	case errors.Is(err, raft.ErrRaftShutdown):
		return fmt.Errorf("%w: %w", ErrShutdown, ErrOutcomeUnknown)
	}
	return fmt.Errorf("%w: raft apply: %w", ErrOutcomeUnknown, err)
}
