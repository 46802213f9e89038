package node

import (
	"context"
	"math"
	"time"

	"github.com/meridian-mesh/meridian/consensus"
	"github.com/meridian-mesh/meridian/node/loop"
	"github.com/meridian-mesh/meridian/node/market"
	"github.com/meridian-mesh/meridian/placement/auction"
	"github.com/meridian-mesh/meridian/placement/forecast"
)

// newDesk builds the region's market on this server: it trades through the
// server's ledger, reads other regions from gossip and talks to them over
// the node's libp2p host.
func newDesk(a *Agent) (tradingDesk, error) {
	m, err := market.New(market.Config{
		Region:   a.cfg.Region,
		NodeName: a.cfg.Name,
		Server:   a.server,
		Gossip:   a.gossip,
		Host:     a.host,
		Logger:   a.log,
		Protocol: auction.Config{LeaseRoom: a.leaseRoom, NoPreempt: a.cfg.Tuning.NoPreempt},
		// The region's own jobs stopped to make room for a buyer are
		// pending again: place them now rather than at the next pass.
		OnPreempt: func() { poke(a.placePoke) },
	})
	if err != nil {
		return nil, err
	}
	return &desk{Market: m, leaseReach: a.cfg.Tuning.LeaseReach}, nil
}

// leaseRoom is what this region may still sell as leases at now (the
// market's auction.Config.LeaseRoom), from its ledger and its demand loop's
// forecast. Before the loop has a forecast it sets no limit.
func (a *Agent) leaseRoom(now time.Time) float64 {
	c := a.demand.Load()
	if c == nil {
		return math.Inf(1)
	}
	peak, ok := c.ForecastPeak()
	if !ok {
		return math.Inf(1)
	}
	l := a.server.Ledger()
	return leaseRoom(l.Nodes(), l.Leases(), peak, now)
}

// leaseRoom is the compute (tasks/hour) a region may still sell as leases:
// its ready nodes' capacity less the leases it has sold that are in force
// or to come, less the peak of its own forecast demand. A lease is capacity
// held for another region whether used or not; selling what the region's
// own peak needs turns its own jobs away (the world benchmark measured it,
// docs/market.md).
func leaseRoom(nodes []consensus.Node, leases []consensus.Lease, peak float64, now time.Time) float64 {
	var room float64
	for _, n := range nodes {
		if n.State == consensus.NodeReady {
			room += n.Total.ComputePerHour
		}
	}
	for _, l := range leases {
		if l.Direction == consensus.LeaseSold && now.Before(l.End) {
			room -= l.Resources.ComputePerHour
		}
	}
	return room - peak
}

// desk is the market as the agent uses it: the auction for jobs, the
// advertisement in gossip, and the leases the demand loop orders.
type desk struct {
	*market.Market
	// leaseReach bounds how far a lease bought ahead may be
	// (Tuning.LeaseReach).
	leaseReach time.Duration
}

// leaseSLO is the latency bound of a lease order: the plan's own, within
// the reach.
func (d *desk) leaseSLO(planned time.Duration) time.Duration {
	if planned > 0 && planned < d.leaseReach {
		return planned
	}
	return d.leaseReach
}

// Plan carries out the demand loop's decision: a lease bought ahead of a
// forecast deficit. (A forecast surplus needs nothing here: the market
// advertises the region's ask from its utilization with every gossip
// update.)
func (d *desk) Plan(ctx context.Context, dec loop.Decision) error {
	if dec.Action != forecast.ActionBuy || dec.Buy == nil {
		return nil
	}
	b := dec.Buy
	_, err := d.BuyLease(ctx, market.LeaseOrder{
		ID: b.ID, Resources: b.Resources, Duration: b.Duration(time.Now()),
		MaxPricePerHour: b.MaxPricePerHour, LatencySLO: d.leaseSLO(b.LatencySLO),
	})
	return err
}
