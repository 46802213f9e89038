package consensus

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// The forwarding queue packs the proposals a follower forwards into shared
// RPCs, as the leader's proposal queue packs proposals into shared log
// entries, and for the same reason: on a busy region most proposals reach
// the leader through a follower, and one RPC per proposal cost more CPU in
// frames, syscalls and wake-ups (and, beyond the idle-connection pool, in
// new connections) than the commands themselves.
//
// One goroutine (run) takes the first waiting proposal, waits until fewer
// than maxForwardsInflight RPCs are in flight, then takes every other
// proposal waiting by then for the same leader, up to the entry caps, and
// sends them as one opPropose: the leader sees one proposal and puts it in
// one entry, which is what its own queue might have done with them anyway.
// Each proposal gets its own slice of the results. Under light load every
// proposal goes at once, alone; the busier the follower, the more
// proposals share an RPC.

// maxForwardsInflight bounds the forwarding RPCs a follower has in flight.
const maxForwardsInflight = 4

type forwardProposal struct {
	addr     string
	envs     []Envelope
	size     int
	deadline time.Time // zero: the caller set none
	state    atomic.Int32
	done     chan forwardResult // buffered: the sender never blocks
}

type forwardResult struct {
	results []Result
	err     error
}

type forwarder struct {
	s        *Server
	maxCmds  int
	maxBytes int

	in    chan *forwardProposal
	slots chan struct{} // one token per RPC in flight
	done  chan struct{}
	wg    sync.WaitGroup

	rpcs atomic.Uint64
}

func newForwarder(s *Server, maxCmds, maxBytes int) *forwarder {
	f := &forwarder{
		s:        s,
		maxCmds:  maxCmds,
		maxBytes: maxBytes,
		in:       make(chan *forwardProposal, 1024),
		slots:    make(chan struct{}, maxForwardsInflight),
		done:     make(chan struct{}),
	}
	f.wg.Add(1)
	go f.run()
	return f
}

// close stops the queue: queued proposals fail as unsent, and the RPCs in
// flight end (the server's context, which they run under, is cancelled
// first).
func (f *forwarder) close() {
	close(f.done)
	f.wg.Wait()
}

var errForwardShutdown = fmt.Errorf("%w: %w", errUnsent, ErrShutdown)

// forward sends envelopes to the leader at addr, sharing an RPC with other
// proposals waiting to go there, and waits for their results. An error
// wrapping errUnsent means they were not sent.
func (f *forwarder) forward(ctx context.Context, addr string, envs []Envelope) ([]Result, error) {
	p := &forwardProposal{addr: addr, envs: envs, size: envelopesSize(envs), done: make(chan forwardResult, 1)}
	p.deadline, _ = ctx.Deadline()
	select {
	case f.in <- p:
	case <-ctx.Done():
		return nil, fmt.Errorf("forward to leader %s: %w: %w", addr, errUnsent, ctx.Err())
	case <-f.done:
		return nil, errForwardShutdown
	}
	select {
	case r := <-p.done:
		return r.results, r.err
	case <-ctx.Done():
		if p.state.CompareAndSwap(propQueued, propAbandoned) {
			return nil, fmt.Errorf("forward to leader %s: %w: %w", addr, errUnsent, ctx.Err())
		}
		return nil, fmt.Errorf("%w: forward to leader %s: %w", ErrOutcomeUnknown, addr, ctx.Err())
	case <-f.done:
		if p.state.CompareAndSwap(propQueued, propAbandoned) {
			return nil, errForwardShutdown
		}
		// Taken: its RPC answers (it fails at once, the server's context
		// being cancelled).
		r := <-p.done
		return r.results, r.err
	}
}

func (f *forwarder) run() {
	defer f.wg.Done()
	var carry *forwardProposal
	for {
		first := carry
		carry = nil
		if first == nil {
			select {
			case first = <-f.in:
			case <-f.done:
				f.drain()
				return
			}
		}
		// Wait for an RPC slot; proposals gather meanwhile.
		select {
		case f.slots <- struct{}{}:
		case <-f.done:
			if first.state.CompareAndSwap(propQueued, propTaken) {
				first.done <- forwardResult{err: errForwardShutdown}
			}
			f.drain()
			return
		}
		var (
			batch       []*forwardProposal
			cmds, bytes int
		)
		take := func(p *forwardProposal) bool {
			if len(batch) > 0 && (p.addr != batch[0].addr || cmds+len(p.envs) > f.maxCmds || bytes+p.size > f.maxBytes) {
				return false
			}
			if p.state.CompareAndSwap(propQueued, propTaken) {
				batch = append(batch, p)
				cmds += len(p.envs)
				bytes += p.size
			}
			return true
		}
		take(first)
	fill:
		for cmds < f.maxCmds {
			select {
			case p := <-f.in:
				if !take(p) {
					carry = p
					break fill
				}
			default:
				break fill
			}
		}
		if len(batch) == 0 {
			<-f.slots
			continue
		}
		f.wg.Add(1)
		go f.send(batch, cmds)
	}
}

// send makes one RPC for the batch and hands each proposal its results.
func (f *forwarder) send(batch []*forwardProposal, cmds int) {
	defer f.wg.Done()
	defer func() { <-f.slots }()
	addr := batch[0].addr
	envs := batch[0].envs
	if len(batch) > 1 {
		envs = make([]Envelope, 0, cmds)
		for _, p := range batch {
			envs = append(envs, p.envs...)
		}
	}
	ctx, cancel := f.batchContext(batch)
	defer cancel()
	f.rpcs.Add(1)
	res, err := f.s.forwardRPC(ctx, addr, envs)
	if err != nil && len(batch) > 1 && errors.Is(err, ErrTooLarge) {
		// The leader's entry caps are below this server's: the proposals
		// fit alone (each was checked against the same caps here).
		for _, p := range batch {
			pctx, cancel := f.batchContext([]*forwardProposal{p})
			f.rpcs.Add(1)
			r, err := f.s.forwardRPC(pctx, addr, p.envs)
			cancel()
			p.done <- forwardResult{results: r, err: err}
		}
		return
	}
	if err != nil {
		for _, p := range batch {
			p.done <- forwardResult{err: err}
		}
		return
	}
	off := 0
	for _, p := range batch {
		n := len(p.envs)
		p.done <- forwardResult{results: res[off : off+n : off+n]}
		off += n
	}
}

// batchContext is the context of a batch's RPC: the server's, with the
// latest deadline of its callers (none if one of them set none), since a
// caller that gives up earlier stops waiting without cutting the RPC short
// for the others.
func (f *forwarder) batchContext(batch []*forwardProposal) (context.Context, context.CancelFunc) {
	var latest time.Time
	for _, p := range batch {
		if p.deadline.IsZero() {
			return context.WithCancel(f.s.ctx)
		}
		if p.deadline.After(latest) {
			latest = p.deadline
		}
	}
	return context.WithDeadline(f.s.ctx, latest)
}

// drain fails the proposals still queued at shutdown.
func (f *forwarder) drain() {
	for {
		select {
		case p := <-f.in:
			if p.state.CompareAndSwap(propQueued, propTaken) {
				p.done <- forwardResult{err: errForwardShutdown}
			}
		default:
			return
		}
	}
}
