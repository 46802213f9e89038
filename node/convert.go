package node

import (
	"cmp"
	"slices"
	"time"

	"github.com/meridian-mesh/meridian/consensus"
	"github.com/meridian-mesh/meridian/node/api"
)

// jobState maps the ledger's job state to the API's.
func jobState(s consensus.JobState) api.JobState {
	switch s {
	case consensus.JobPlaced:
		return api.JobPlaced
	case consensus.JobTraded:
		return api.JobTraded
	case consensus.JobRunning:
		return api.JobRunning
	case consensus.JobCompleted:
		return api.JobCompleted
	case consensus.JobFailed:
		return api.JobFailed
	case consensus.JobCancelled:
		return api.JobCancelled
	}
	return api.JobPending
}

// specOf rebuilds the client's spec from the ledger's job.
func specOf(l *consensus.Ledger, j consensus.Job) *api.JobSpec {
	s := &api.JobSpec{
		ID:              j.ID,
		OriginRegion:    j.Spec.OriginRegion,
		HomeRegion:      l.Region(),
		Demand:          j.Spec.Demand,
		LatencySLOMs:    j.Spec.LatencySLO.Milliseconds(),
		MaxPricePerHour: j.Spec.MaxPricePerHour,
		Priority:        j.Spec.Priority,
		DurationS:       int64(j.Spec.Duration / time.Second),
		GPUType:         j.Spec.GPUType,
		Driver:          api.DriverSim,
	}
	if j.Task != nil {
		s.Driver = cmp.Or(j.Task.Driver, api.DriverSim)
		s.Command = slices.Clone(j.Task.Command)
		if len(j.Task.Env) > 0 {
			s.Env = make(map[string]string, len(j.Task.Env))
			for k, v := range j.Task.Env {
				s.Env[k] = v
			}
		}
	}
	return s
}

// jobStatus is the API's view of a job in its home ledger l.
func (a *Agent) jobStatus(l *consensus.Ledger, j consensus.Job) api.JobStatus {
	st := api.JobStatus{
		ID:           j.ID,
		State:        jobState(j.State),
		Reason:       j.Reason,
		OriginRegion: j.Spec.OriginRegion,
		HomeRegion:   l.Region(),
		Epoch:        j.Epoch,
		Attempts:     j.Attempts,
		SubmittedAt:  j.Submitted,
		UpdatedAt:    j.Updated,
		Spec:         specOf(l, j),
	}
	if j.State == consensus.JobPending {
		if r := a.pendingReason(j.ID); r != "" {
			st.Reason = r
		}
	}
	if al, ok := l.Allocation(j.AllocID); ok && j.AllocID != "" {
		st.Node, st.Region, st.AllocationID = al.NodeID, l.Region(), al.ID
		if n, ok := l.Node(al.NodeID); ok {
			st.CostPerHour = n.Placement().CostPerHour(al.Resources)
		}
	} else if j.Remote != nil {
		st.Region = j.Remote.Region
		if tr, ok := l.Trade(j.Remote.AuctionID, j.Remote.ItemID); ok {
			st.Node, st.AllocationID = tr.NodeID, tr.SellerAllocID
			st.CostPerHour = a.tradeCost(tr)
		}
	}
	if j.State.Terminal() {
		// The last allocation's stop message carries the exit code.
		var last consensus.Allocation
		for _, al := range l.Allocations() {
			if al.JobID == j.ID && al.JobRegion == l.Region() && !al.Stopped.Before(last.Stopped) {
				last = al
			}
		}
		if last.ID != "" {
			st.ExitCode = exitCodeOf(last.StopMessage)
			if st.Node == "" {
				st.Node, st.Region, st.AllocationID = last.NodeID, l.Region(), last.ID
				// What the job cost while it ran, on its last node.
				if n, ok := l.Node(last.NodeID); ok {
					st.CostPerHour = n.Placement().CostPerHour(last.Resources)
				}
			}
		}
	}
	return st
}

// tradeCost is what a traded placement costs per hour: the trade's price
// is per node-hour of the seller's node, and the job pays the share of the
// node its demand takes (the node's size comes from gossip; unknown, the
// whole node-hour is counted).
func (a *Agent) tradeCost(tr consensus.Trade) float64 {
	if r, ok := a.gossip.Record(tr.NodeID); ok && r.Total.ComputePerHour > 0 {
		return tr.PricePerHour * tr.Resources.ComputePerHour / r.Total.ComputePerHour
	}
	return tr.PricePerHour
}

// allocState maps a ledger allocation to the API's state. A live
// allocation is running once its node reported the task started (the job
// is running on it) or this node runs it.
func (a *Agent) allocState(l *consensus.Ledger, al consensus.Allocation) api.AllocState {
	if al.Live() {
		if j, ok := l.Job(al.JobID); ok && al.JobRegion == l.Region() && j.AllocID == al.ID && j.State == consensus.JobRunning {
			return api.AllocRunning
		}
		if a.runner != nil {
			for _, id := range a.runner.Running() {
				if id == al.ID {
					return api.AllocRunning
				}
			}
		}
		return api.AllocPending
	}
	switch al.StopReason {
	case consensus.StopCompleted:
		return api.AllocCompleted
	case consensus.StopFailed:
		return api.AllocFailed
	case consensus.StopLost:
		return api.AllocLost
	case consensus.StopPreempted:
		return api.AllocPreempted
	}
	return api.AllocCancelled
}

// allocation is the API's view of an allocation in ledger l.
func (a *Agent) allocation(l *consensus.Ledger, al consensus.Allocation) api.Allocation {
	v := api.Allocation{
		ID:         al.ID,
		JobID:      al.JobID,
		Node:       al.NodeID,
		Region:     l.Region(),
		HomeRegion: al.JobRegion,
		Epoch:      al.Epoch,
		State:      a.allocState(l, al),
		Resources:  al.Resources,
		Driver:     api.DriverSim,
		CreatedAt:  al.Start,
		UpdatedAt:  al.Start,
		ExitCode:   exitCodeOf(al.StopMessage),
	}
	if !al.Stopped.IsZero() {
		v.UpdatedAt = al.Stopped
	}
	if al.AuctionID != "" {
		v.TradeID = al.AuctionID + "/" + al.ItemID
	}
	if n, ok := l.Node(al.NodeID); ok {
		v.CostPerHour = n.Placement().CostPerHour(al.Resources)
	}
	task := al.Task
	if al.JobRegion == l.Region() {
		if j, ok := l.Job(al.JobID); ok {
			task = j.Task
		}
	}
	if task != nil && task.Driver != "" {
		v.Driver = task.Driver
	}
	return v
}

// trades is the API's view of the trades in ledger l, newest first.
func (a *Agent) trades(l *consensus.Ledger) []api.Trade {
	var out []api.Trade
	for _, tr := range l.Trades() {
		v := api.Trade{
			ID:           tr.AuctionID + "/" + tr.ItemID,
			JobID:        tr.JobID,
			BuyerRegion:  l.Region(),
			SellerRegion: tr.SellerRegion,
			Node:         tr.NodeID,
			State:        tradeState(tr.State),
			Resources:    tr.Resources,
			PricePerHour: tr.PricePerHour,
			CostPerHour:  a.tradeCost(tr),
			Score:        tr.Score,
			CreatedAt:    tr.Created,
			UpdatedAt:    tr.Updated,
		}
		out = append(out, v)
	}
	for _, e := range l.Escrows() {
		exp := e.Expiry
		out = append(out, api.Trade{
			ID:           e.AuctionID + "/" + e.ItemID,
			BuyerRegion:  e.BuyerRegion,
			SellerRegion: l.Region(),
			Node:         e.NodeID,
			State:        api.TradeEscrowed,
			Resources:    e.Resources,
			CreatedAt:    e.Created,
			UpdatedAt:    e.Created,
			ExpiresAt:    &exp,
		})
	}
	for _, al := range l.Allocations() {
		if al.AuctionID == "" {
			continue
		}
		st := api.TradeCommitted
		if !al.Live() {
			st = api.TradeState(a.allocState(l, al))
			if st != api.TradeState(api.AllocCompleted) {
				st = api.TradeAborted
			} else {
				st = api.TradeCommitted
			}
		}
		v := api.Trade{
			ID:           al.AuctionID + "/" + al.ItemID,
			JobID:        al.JobID,
			BuyerRegion:  al.JobRegion,
			SellerRegion: l.Region(),
			Node:         al.NodeID,
			State:        st,
			Resources:    al.Resources,
			CreatedAt:    al.Start,
			UpdatedAt:    al.Start,
		}
		// The price the buyer pays per node-hour, as the buyer's view
		// shows it; what the job's share of the node costs is CostPerHour.
		v.PricePerHour = al.PricePerHour
		if n, ok := l.Node(al.NodeID); ok && n.Total.ComputePerHour > 0 {
			v.CostPerHour = al.PricePerHour * al.Resources.ComputePerHour / n.Total.ComputePerHour
		}
		out = append(out, v)
	}
	slices.SortFunc(out, func(x, y api.Trade) int {
		return cmp.Or(y.CreatedAt.Compare(x.CreatedAt), cmp.Compare(x.ID, y.ID))
	})
	return out
}

func tradeState(s consensus.TradeState) api.TradeState {
	switch s {
	case consensus.TradeAwarded, consensus.TradeInDoubt:
		return api.TradeAwarded
	case consensus.TradeAcked, consensus.TradeEnded:
		return api.TradeCommitted
	case consensus.TradeCancelled, consensus.TradeFailed, consensus.TradeAbandoned, consensus.TradeSettled:
		return api.TradeAborted
	}
	return api.TradeOpen
}
