package node

import (
	"context"
	"time"

	"github.com/meridian-mesh/meridian/node/loop"
	"github.com/meridian-mesh/meridian/node/market"
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
	})
	if err != nil {
		return nil, err
	}
	return &desk{Market: m}, nil
}

// desk is the market as the agent uses it: the auction for jobs, the
// advertisement in gossip, and the leases the demand loop orders.
type desk struct{ *market.Market }

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
		MaxPricePerHour: b.MaxPricePerHour, LatencySLO: b.LatencySLO,
	})
	return err
}
