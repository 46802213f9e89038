package market

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/meridian-mesh/meridian/placement"
	"github.com/meridian-mesh/meridian/placement/auction"
)

// LeaseOrder is a lease the region's demand loop wants bought ahead of a
// forecast deficit (node/loop's LeaseRequest, in the market's terms).
type LeaseOrder struct {
	// ID names the lease; it becomes the auction item's ID.
	ID string
	// Resources is the capacity to lease.
	Resources placement.Resources
	// Duration is how long the lease lasts from its award.
	Duration time.Duration
	// MaxPricePerHour caps the price per node-hour (0: none).
	MaxPricePerHour float64
	// LatencySLO bounds the RTT from this region to the seller (0: none).
	LatencySLO time.Duration
}

// BuyLease auctions one capacity lease now, on the leader. Unlike the
// threshold trigger (Config.Lease), the caller decides when and how much:
// the forecast-driven loop buys before a peak instead of once utilization
// is already high. It returns the auction's ID once the call for bids is
// out; the lease lands in the ledger when the auction ends.
func (m *Market) BuyLease(ctx context.Context, o LeaseOrder) (string, error) {
	if _, leading := m.leadership(); !leading {
		return "", auction.ErrNotLeader
	}
	if o.ID == "" || o.Duration <= 0 || !(o.Resources.ComputePerHour > 0) {
		return "", errors.New("market: lease order needs an id, a positive duration and compute")
	}
	item := auction.Item{ID: o.ID, Kind: auction.ItemLease, Job: placement.Job{
		ID: o.ID, OriginRegion: m.cfg.Region, Demand: o.Resources, Duration: o.Duration,
		MaxPricePerHour: o.MaxPricePerHour, LatencySLO: o.LatencySLO,
	}}
	id, err := m.drv.Buy(ctx, []auction.Item{item})
	if err != nil {
		return "", fmt.Errorf("market: buy lease %s: %w", o.ID, err)
	}
	m.log.Info("buying a lease ahead of forecast demand", "lease", o.ID, "auction", id, "amount", o.Resources, "duration", o.Duration)
	return id, nil
}
