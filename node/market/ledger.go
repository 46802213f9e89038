package market

import (
	"context"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/meridian-mesh/meridian/consensus"
	"github.com/meridian-mesh/meridian/placement"
	"github.com/meridian-mesh/meridian/placement/auction"
)

// proposer is what the ledger adapter needs of a region's Raft server: a
// consensus.Server has it.
type proposer interface {
	Propose(ctx context.Context, cmds ...consensus.Command) ([]consensus.Result, error)
	Ledger() *consensus.Ledger
	ConsistentLedger(ctx context.Context) (*consensus.Ledger, error)
}

var _ proposer = (*consensus.Server)(nil)

// maxCommandsPerProposal keeps one market batch well inside the server's
// entry limits (512 commands by default).
const maxCommandsPerProposal = 256

// regionLedger implements auction.Ledger on the region's Raft group: each
// LedgerOp becomes consensus commands (see docs/market.md for the table),
// committed in order, and each result is translated back into the
// auction's sentinel errors and trade statuses.
//
// Reads that must see every earlier op (LookupTrade, the epoch check of
// CancelTrade) are linearizable: they go through ConsistentLedger after the
// ops before them in the batch are committed.
type regionLedger struct {
	srv    proposer
	region string
	// preempted, if set, is called after a hold stopped the region's
	// running work to make room for a buyer (seller-side preemption), with
	// the allocations stopped.
	preempted func(allocIDs []string)
}

var (
	_ auction.Ledger      = (*regionLedger)(nil)
	_ auction.RunningWork = (*regionLedger)(nil)
)

// step is one op's translation: the commands to commit, and how to turn
// their results (and the ledger afterwards, for ops that read) into the
// op's result.
type step struct {
	cmds []consensus.Command
	// read makes the step wait for a linearizable read after its commands.
	read   bool
	finish func(res []consensus.Result, l *consensus.Ledger) auction.OpResult
}

// Propose implements auction.Ledger.
func (rl *regionLedger) Propose(ctx context.Context, ops []auction.LedgerOp) ([]auction.OpResult, error) {
	out := make([]auction.OpResult, len(ops))
	var (
		batch  []consensus.Command
		queued []int // ops whose commands are in batch, in order
		steps  = make([]step, len(ops))
	)
	flush := func() error {
		if len(batch) == 0 {
			for _, i := range queued {
				out[i] = steps[i].finish(nil, nil)
			}
			queued = queued[:0]
			return nil
		}
		res, err := rl.propose(ctx, batch)
		if err != nil {
			return err
		}
		off := 0
		for _, i := range queued {
			n := len(steps[i].cmds)
			out[i] = steps[i].finish(res[off:off+n], nil)
			off += n
		}
		batch, queued = batch[:0], queued[:0]
		return nil
	}
	for i, op := range ops {
		if op.Kind == auction.OpCancelTrade {
			// The cancel depends on the allocation's epoch: read it after
			// everything before it.
			if err := flush(); err != nil {
				return nil, err
			}
			l, err := rl.srv.ConsistentLedger(ctx)
			if err != nil {
				return nil, fmt.Errorf("read before %s %s: %w", op.Kind, op.Trade, err)
			}
			steps[i] = rl.cancelStep(op, l)
		} else {
			steps[i] = rl.translate(op)
		}
		st := steps[i]
		if st.read {
			if err := flush(); err != nil {
				return nil, err
			}
			var res []consensus.Result
			if len(st.cmds) > 0 {
				r, err := rl.propose(ctx, st.cmds)
				if err != nil {
					return nil, err
				}
				res = r
			}
			l, err := rl.srv.ConsistentLedger(ctx)
			if err != nil {
				return nil, fmt.Errorf("read for %s %s: %w", op.Kind, op.Trade, err)
			}
			out[i] = st.finish(res, l)
			continue
		}
		if len(batch)+len(st.cmds) > maxCommandsPerProposal {
			if err := flush(); err != nil {
				return nil, err
			}
		}
		batch = append(batch, st.cmds...)
		queued = append(queued, i)
	}
	if err := flush(); err != nil {
		return nil, err
	}
	return out, nil
}

// propose commits cmds (at most maxCommandsPerProposal) and checks the
// answer's shape.
func (rl *regionLedger) propose(ctx context.Context, cmds []consensus.Command) ([]consensus.Result, error) {
	res, err := rl.srv.Propose(ctx, cmds...)
	if err != nil {
		return nil, fmt.Errorf("commit %d market commands: %w", len(cmds), err)
	}
	if len(res) != len(cmds) {
		return nil, fmt.Errorf("commit %d market commands: %d results", len(cmds), len(res))
	}
	return res, nil
}

func fixed(r auction.OpResult) func([]consensus.Result, *consensus.Ledger) auction.OpResult {
	return func([]consensus.Result, *consensus.Ledger) auction.OpResult { return r }
}

func itemKind(k auction.ItemKind) consensus.ItemKind {
	if k == auction.ItemLease {
		return consensus.ItemLease
	}
	return consensus.ItemJob
}

func auctionKind(k consensus.ItemKind) auction.ItemKind {
	if k == consensus.ItemLease {
		return auction.ItemLease
	}
	return auction.ItemJob
}

// translate maps one op onto consensus commands.
func (rl *regionLedger) translate(op auction.LedgerOp) step {
	ref := op.Trade
	bad := func(format string, args ...any) step {
		return step{finish: fixed(auction.OpResult{Err: fmt.Errorf("%s %s: %s", op.Kind, ref, fmt.Sprintf(format, args...))})}
	}
	switch op.Kind {
	case auction.OpHoldEscrow:
		e := op.Escrow
		if e == nil || e.Trade != ref {
			return bad("escrow record missing or for another trade")
		}
		cmd := consensus.HoldEscrow{
			NodeID: e.Node, Resources: e.Resources, BuyerRegion: ref.Buyer, AuctionID: ref.Auction, ItemID: ref.Item,
			Expiry: e.Expiry, ItemKind: itemKind(e.Kind), JobID: e.JobID, Duration: e.Duration, PricePerHour: e.Price,
			Priority: e.Priority, Origin: e.Origin, LatencySLO: e.LatencySLO, MaxPricePerHour: e.MaxPrice,
			Preempt: op.Preempt,
		}
		return step{cmds: []consensus.Command{cmd}, finish: func(res []consensus.Result, _ *consensus.Ledger) auction.OpResult {
			err := res[0].Err
			switch {
			case err == nil:
				if len(op.Preempt) > 0 && !res[0].Existing && rl.preempted != nil {
					rl.preempted(op.Preempt)
				}
				return auction.OpResult{Status: auction.StatusHeld}
			case errors.Is(err, consensus.ErrOvercommit), errors.Is(err, consensus.ErrNodeNotReady), errors.Is(err, consensus.ErrNotFound),
				len(op.Preempt) > 0 && (errors.Is(err, consensus.ErrInvalidTransition) || errors.Is(err, consensus.ErrInvalid)):
				// (With victims named, the room is gone when one of them
				// stopped or no longer yields since the seller looked.)
				return auction.OpResult{Err: fmt.Errorf("hold %s on %s: %w: %w", ref, e.Node, auction.ErrInsufficientCapacity, err)}
			case errors.Is(err, consensus.ErrInvalid):
				// Chiefly an expiry that is no longer after the commit time.
				return auction.OpResult{Err: fmt.Errorf("hold %s: %w: %w", ref, auction.ErrEscrowGone, err)}
			case errors.Is(err, consensus.ErrConflict):
				// A hold for a trade the ledger already converted succeeds
				// without change (the committed entry is applied here).
				if a, ok := rl.srv.Ledger().ItemAllocation(ref.Auction, ref.Item); ok && a.JobRegion == ref.Buyer {
					return auction.OpResult{Status: auction.StatusAllocated, Epoch: a.Epoch}
				}
			}
			return auction.OpResult{Err: fmt.Errorf("hold %s: %w", ref, err)}
		}}

	case auction.OpConvertEscrow:
		cmd := consensus.ConvertEscrow{AuctionID: ref.Auction, ItemID: ref.Item, JobRegion: ref.Buyer, Epoch: op.Epoch, PricePerHour: op.Price}
		return step{cmds: []consensus.Command{cmd}, finish: func(res []consensus.Result, _ *consensus.Ledger) auction.OpResult {
			return allocResult("convert", ref, res[0])
		}}

	case auction.OpReleaseEscrow:
		cmd := consensus.ReleaseEscrow{AuctionID: ref.Auction, ItemID: ref.Item, Reason: truncate(op.Reason)}
		return step{cmds: []consensus.Command{cmd}, finish: func(res []consensus.Result, _ *consensus.Ledger) auction.OpResult {
			if err := res[0].Err; err != nil {
				return auction.OpResult{Err: fmt.Errorf("release %s: %w", ref, err)}
			}
			return auction.OpResult{Status: auction.StatusReleased}
		}}

	case auction.OpDrawLease:
		if op.Lease == nil || op.Job == nil {
			return bad("lease or job missing")
		}
		if op.Lease.Buyer != ref.Buyer {
			return step{finish: fixed(auction.OpResult{Status: auction.StatusUnknown,
				Err: fmt.Errorf("draw %s on lease %s: lease of another buyer: %w", ref, *op.Lease, auction.ErrEscrowGone)})}
		}
		cmd := consensus.DrawLease{
			AuctionID: ref.Auction, ItemID: ref.Item, LeaseAuctionID: op.Lease.Auction, LeaseItemID: op.Lease.Item,
			JobRegion: ref.Buyer, JobID: op.Job.ID, Resources: op.Job.Demand, Epoch: op.Epoch, PricePerHour: op.Price,
			Duration: op.Job.Duration,
		}
		return step{cmds: []consensus.Command{cmd}, finish: func(res []consensus.Result, _ *consensus.Ledger) auction.OpResult {
			err := res[0].Err
			switch {
			case err == nil:
				return auction.OpResult{Status: auction.StatusAllocated, Epoch: res[0].Epoch}
			case errors.Is(err, consensus.ErrOvercommit):
				return auction.OpResult{Status: auction.StatusUnknown, Err: fmt.Errorf("draw %s: %w: %w", ref, auction.ErrInsufficientCapacity, err)}
			case errors.Is(err, consensus.ErrInvalidTransition):
				return auction.OpResult{Status: auction.StatusCancelled, Err: fmt.Errorf("draw %s: %w: %w", ref, auction.ErrEscrowGone, err)}
			case errors.Is(err, consensus.ErrNotFound), errors.Is(err, consensus.ErrNodeNotReady):
				return auction.OpResult{Status: auction.StatusUnknown, Err: fmt.Errorf("draw %s: %w: %w", ref, auction.ErrEscrowGone, err)}
			}
			return auction.OpResult{Status: auction.StatusReleased, Err: fmt.Errorf("draw %s: %w", ref, err)}
		}}

	case auction.OpLookupTrade:
		return step{read: true, finish: func(_ []consensus.Result, l *consensus.Ledger) auction.OpResult {
			st, epoch := lookup(l, ref, op.Now)
			return auction.OpResult{Status: st, Epoch: epoch}
		}}

	case auction.OpRecordAward:
		aw := op.Award
		if aw == nil || aw.Trade != ref || ref.Buyer != rl.region {
			return bad("award missing, for another trade or another buyer")
		}
		cmd := consensus.RecordAward{
			AuctionID: ref.Auction, ItemID: ref.Item, JobID: aw.JobID, SellerRegion: aw.Seller, Resources: aw.Resources,
			PricePerHour: aw.Price, Score: aw.Score, Epoch: aw.Epoch, ItemKind: itemKind(aw.Kind), NodeID: aw.Node, GPUType: aw.GPUType,
			Duration: aw.Duration, AwardedAt: aw.AwardedAt,
		}
		if aw.Lease != nil {
			cmd.LeaseAuctionID, cmd.LeaseItemID = aw.Lease.Auction, aw.Lease.Item
		}
		draw := aw.Lease != nil
		return step{cmds: []consensus.Command{cmd}, finish: func(res []consensus.Result, _ *consensus.Ledger) auction.OpResult {
			err := res[0].Err
			switch {
			case err == nil:
				return auction.OpResult{Epoch: res[0].Epoch}
			case draw && (errors.Is(err, consensus.ErrOvercommit) || errors.Is(err, consensus.ErrExpired) ||
				(errors.Is(err, consensus.ErrNotFound) && isSubject(err, aw.Lease.Item))):
				return auction.OpResult{Err: fmt.Errorf("record draw %s: %w: %w", ref, auction.ErrInsufficientCapacity, err)}
			case errors.Is(err, consensus.ErrStaleEpoch), errors.Is(err, consensus.ErrDoubleAllocation),
				errors.Is(err, consensus.ErrInvalidTransition), errors.Is(err, consensus.ErrNotFound):
				// The job moved on (placed, re-placed, ended or gone).
				return auction.OpResult{Epoch: res[0].Epoch, Err: fmt.Errorf("record award %s: %w: %w", ref, auction.ErrStaleEpoch, err)}
			}
			return auction.OpResult{Err: fmt.Errorf("record award %s: %w", ref, err)}
		}}

	case auction.OpSetTradeState:
		var state consensus.TradeState
		switch op.State {
		case auction.TradeConfirmed:
			state = consensus.TradeAcked
		case auction.TradeFailed:
			state = consensus.TradeFailed
		case auction.TradeAbandoned:
			state = consensus.TradeAbandoned
		case auction.TradeSettled:
			state = consensus.TradeSettled
		default:
			return bad("cannot set a trade to %s", op.State)
		}
		cmd := consensus.SetTradeState{AuctionID: ref.Auction, ItemID: ref.Item, State: state, Reason: truncate(op.Reason)}
		return step{cmds: []consensus.Command{cmd}, finish: func(res []consensus.Result, _ *consensus.Ledger) auction.OpResult {
			err := res[0].Err
			switch {
			case err == nil:
				return auction.OpResult{Epoch: res[0].Epoch}
			case errors.Is(err, consensus.ErrStaleEpoch):
				return auction.OpResult{Epoch: res[0].Epoch, Err: fmt.Errorf("set %s to %s: %w: %w", ref, op.State, auction.ErrStaleEpoch, err)}
			case errors.Is(err, consensus.ErrNotFound), errors.Is(err, consensus.ErrInvalidTransition):
				// Nothing open to move: the ledger already settled the
				// trade another way (the seller reported its end).
				return auction.OpResult{Err: fmt.Errorf("set %s to %s: %w: %w", ref, op.State, auction.ErrUnknownTrade, err)}
			}
			return auction.OpResult{Err: fmt.Errorf("set %s to %s: %w", ref, op.State, err)}
		}}
	}
	return bad("unknown operation kind %d", uint8(op.Kind))
}

// cancelStep cancels the trade's allocation if it was made for op.Epoch (the
// epoch never changes once made, so the read need not be in the same entry
// as the stop), releases its escrow if it was not converted, and reports
// what the seller holds afterwards.
func (rl *regionLedger) cancelStep(op auction.LedgerOp, before *consensus.Ledger) step {
	ref := op.Trade
	cmds := []consensus.Command{consensus.ReleaseEscrow{AuctionID: ref.Auction, ItemID: ref.Item, Reason: truncate("cancelled by the buyer: " + op.Reason)}}
	if a, ok := before.ItemAllocation(ref.Auction, ref.Item); ok && a.JobRegion == ref.Buyer && a.Live() && a.Epoch == op.Epoch {
		cmds = append(cmds, consensus.StopAllocation{AllocID: a.ID, Reason: consensus.StopCancelled,
			Message: truncate(fmt.Sprintf("cancelled by %s: %s", ref.Buyer, op.Reason))})
	}
	return step{cmds: cmds, read: true, finish: func(res []consensus.Result, l *consensus.Ledger) auction.OpResult {
		for _, r := range res {
			if r.Err != nil {
				return auction.OpResult{Status: auction.StatusHeld, Err: fmt.Errorf("cancel %s: %w", ref, r.Err)}
			}
		}
		st, epoch := lookup(l, ref, op.Now)
		if st == auction.StatusAllocated {
			if a, ok := l.ItemAllocation(ref.Auction, ref.Item); ok && !a.Live() {
				// It ran and ended: nothing is held any more.
				st = auction.StatusCancelled
			}
		}
		return auction.OpResult{Status: st, Epoch: epoch}
	}}
}

// allocResult translates the result of a conversion.
func allocResult(what string, ref auction.TradeRef, r consensus.Result) auction.OpResult {
	err := r.Err
	switch {
	case err == nil:
		return auction.OpResult{Status: auction.StatusAllocated, Epoch: r.Epoch}
	case errors.Is(err, consensus.ErrNotFound):
		return auction.OpResult{Status: auction.StatusReleased, Err: fmt.Errorf("%s %s: %w: %w", what, ref, auction.ErrEscrowGone, err)}
	case errors.Is(err, consensus.ErrInvalidTransition):
		return auction.OpResult{Status: auction.StatusCancelled, Err: fmt.Errorf("%s %s: %w: %w", what, ref, auction.ErrEscrowGone, err)}
	}
	// A double allocation, a conflict or a node gone down: the escrow may
	// still be held (it expires by itself), but the award cannot be
	// honoured, so the buyer is told nothing is allocated.
	return auction.OpResult{Status: auction.StatusReleased, Err: fmt.Errorf("%s %s: %w", what, ref, err)}
}

func isSubject(err error, subject string) bool {
	var ce *consensus.CommandError
	return errors.As(err, &ce) && ce.Subject == subject
}

// lookup reads the seller-side state of a trade from a ledger version. An
// allocation that ran under the trade and ended (completed, failed, lost)
// still reads as allocated under its epoch: the trade happened, and its end
// reaches the buyer as a report of its own.
func lookup(l *consensus.Ledger, ref auction.TradeRef, now time.Time) (auction.TradeStatus, uint64) {
	if a, ok := l.ItemAllocation(ref.Auction, ref.Item); ok && a.JobRegion == ref.Buyer {
		if !a.Live() && a.StopReason == consensus.StopCancelled {
			return auction.StatusCancelled, a.Epoch
		}
		return auction.StatusAllocated, a.Epoch
	}
	if e, ok := l.EscrowForItem(ref.Auction, ref.Item); ok && e.BuyerRegion == ref.Buyer {
		if e.Expiry.After(now) {
			return auction.StatusHeld, 0
		}
		return auction.StatusReleased, 0
	}
	return auction.StatusUnknown, 0
}

// Inventory implements auction.Ledger: the region's ready nodes from the
// local replica, with escrows that expired by now counted as free again
// (the ledger releases them with its next command).
func (rl *regionLedger) Inventory(now time.Time) ([]placement.Node, error) {
	l := rl.srv.Ledger()
	nodes := l.PlacementNodes()
	for i := range nodes {
		var back placement.Resources
		for _, e := range l.NodeEscrows(nodes[i].ID) {
			if !e.Expiry.After(now) {
				back = back.Add(e.Resources)
			}
		}
		if !back.IsZero() {
			free := nodes[i].Free.Add(back)
			if free.FitsIn(nodes[i].Total) {
				nodes[i].Free = free
			} else {
				nodes[i].Free = nodes[i].Total
			}
		}
	}
	return nodes, nil
}

// Preemptible implements auction.RunningWork: the live allocations on
// ready nodes of jobs of priority below below, the region's own and those
// it sold, with their jobs' terms (consensus.Ledger.RunningJob), from the
// local replica.
func (rl *regionLedger) Preemptible(below int) ([]auction.Movable, error) {
	l := rl.srv.Ledger()
	var out []auction.Movable
	for _, n := range l.Nodes() {
		if n.State != consensus.NodeReady {
			continue
		}
		for _, al := range l.NodeAllocations(n.ID) {
			j, ok := l.RunningJob(al)
			if !ok || j.Spec.Priority >= below {
				continue
			}
			spec := j.Spec
			spec.Demand = al.Resources
			if spec.OriginRegion == "" {
				spec.OriginRegion = rl.region
			}
			out = append(out, auction.Movable{AllocID: al.ID, NodeID: al.NodeID, Job: spec})
		}
	}
	return out, nil
}

// MarketSnapshot implements auction.Ledger: the open trades, held escrows
// and bought leases of the local replica. node/market calls SetLeadership
// only after a linearizable read on the new leader, so the replica holds
// every committed entry.
func (rl *regionLedger) MarketSnapshot() (auction.MarketSnapshot, error) {
	return snapshotOf(rl.srv.Ledger(), rl.region), nil
}

func snapshotOf(l *consensus.Ledger, region string) auction.MarketSnapshot {
	var s auction.MarketSnapshot
	for _, t := range l.Trades() {
		var state auction.TradeState
		switch t.State {
		case consensus.TradeAwarded, consensus.TradeInDoubt:
			state = auction.TradeAwarded
		case consensus.TradeAbandoned:
			state = auction.TradeAbandoned
		default:
			continue
		}
		s.Trades = append(s.Trades, awardRecord(l, region, t, state))
	}
	for _, e := range l.Escrows() {
		jobID := e.JobID
		if jobID == "" {
			jobID = e.ItemID
		}
		s.Escrows = append(s.Escrows, auction.EscrowRecord{
			Trade: auction.TradeRef{Buyer: e.BuyerRegion, Auction: e.AuctionID, Item: e.ItemID},
			Kind:  auctionKind(e.Kind), JobID: jobID, Node: e.NodeID, Resources: e.Resources,
			Duration: e.Duration, Price: e.PricePerHour, Expiry: e.Expiry,
			Priority: e.Priority, Origin: e.Origin, LatencySLO: e.LatencySLO, MaxPrice: e.MaxPricePerHour,
		})
	}
	for _, ls := range l.Leases() {
		if ls.Direction != consensus.LeaseBought || ls.AuctionID == "" {
			continue
		}
		s.Leases = append(s.Leases, auction.LeaseRecord{
			Trade:  auction.TradeRef{Buyer: region, Auction: ls.AuctionID, Item: ls.ItemID},
			Seller: ls.PeerRegion, Node: ls.NodeID, GPUType: ls.GPUType, Resources: ls.Resources,
			Used: ls.Used, Price: ls.PricePerHour, End: ls.End,
		})
	}
	return s
}

// awardRecord rebuilds the market's award record of a trade.
func awardRecord(l *consensus.Ledger, region string, t consensus.Trade, state auction.TradeState) auction.AwardRecord {
	rec := auction.AwardRecord{
		Trade: auction.TradeRef{Buyer: region, Auction: t.AuctionID, Item: t.ItemID},
		Kind:  auctionKind(t.Kind), JobID: t.JobID, Epoch: t.Epoch, Seller: t.SellerRegion, Node: t.NodeID,
		GPUType: t.GPUType, Price: t.PricePerHour, Score: t.Score, Resources: t.Resources, Duration: t.Duration,
		AwardedAt: t.AwardedAt, State: state,
	}
	if rec.AwardedAt.IsZero() {
		rec.AwardedAt = t.Created
	}
	if t.Draw() {
		rec.Lease = &auction.TradeRef{Buyer: region, Auction: t.LeaseAuctionID, Item: t.LeaseItemID}
		job := placement.Job{ID: t.JobID, Demand: t.Resources, Duration: t.Duration}
		if j, ok := l.Job(t.JobID); ok {
			job = j.Spec
		}
		rec.Job = &job
	}
	return rec
}

// truncate bounds a reason to what ledger commands accept.
func truncate(s string) string {
	const max = 512
	if len(s) <= max {
		return s
	}
	s = s[:max-3]
	for !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s + "..."

}
