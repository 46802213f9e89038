package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/meridian-mesh/meridian/node/api"
)

// newNodesCmd builds `meridian nodes`.
func newNodesCmd() *cobra.Command {
	var (
		cf     clientFlags
		region string
	)
	cmd := &cobra.Command{
		Use:   "nodes",
		Short: "List the mesh's nodes as the agent sees them through gossip",
		Example: `  meridian nodes
  meridian nodes --region eu-west-1
  meridian nodes --json`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := cf.connect(cmd)
			if err != nil {
				return err
			}
			if s.jsonOut {
				if region != "" {
					return usageErrorf("--region cannot be combined with --json: filter the JSON instead")
				}
				return s.raw(cmd, http.MethodGet, "/v1/nodes", nil, nil)
			}
			var nodes []api.NodeStatus
			err = s.call(cmd, func(ctx context.Context, c *api.Client) (err error) {
				nodes, err = c.Nodes(ctx)
				return err
			})
			if err != nil {
				return err
			}
			if region != "" {
				nodes = slices.DeleteFunc(nodes, func(n api.NodeStatus) bool { return n.Region != region })
			}
			return writeNodes(cmd.OutOrStdout(), nodes)
		},
	}
	cf.register(cmd.Flags())
	cmd.Flags().StringVar(&region, "region", "", "only nodes of this `region`")
	return cmd
}

// freeOfTotal shows free/total of one resource.
func freeOfTotal(free, total float64) string { return qty(free) + "/" + qty(total) }

func writeNodes(w io.Writer, nodes []api.NodeStatus) error {
	if len(nodes) == 0 {
		_, err := fmt.Fprintln(w, "No nodes.")
		return err
	}
	tw := newTable(w)
	writeRow(tw, "NAME", "REGION", "STATE", "LEADER", "COMPUTE/H (FREE/TOTAL)", "STORAGE GB", "BANDWIDTH GB/S", "GPUS", "PRICE/H", "ALLOCS", "RTT MS")
	for _, n := range nodes {
		leader := ""
		if n.Leader {
			leader = "yes"
		}
		gpus := strconv.Itoa(n.Free.GPUs) + "/" + strconv.Itoa(n.Total.GPUs)
		if n.GPUType != "" {
			gpus += " " + n.GPUType
		}
		rtt := "-"
		if n.RTTMs != nil {
			rtt = strconv.FormatFloat(*n.RTTMs, 'f', 1, 64)
		}
		writeRow(tw, n.Name, n.Region, string(n.State), orDash(leader),
			freeOfTotal(n.Free.ComputePerHour, n.Total.ComputePerHour),
			freeOfTotal(n.Free.StorageGB, n.Total.StorageGB),
			freeOfTotal(n.Free.BandwidthGBps, n.Total.BandwidthGBps),
			gpus, usd(n.PricePerHour), strconv.Itoa(n.Allocations), rtt)
	}
	return tw.Flush()
}

// newRegionsCmd builds `meridian regions`.
func newRegionsCmd() *cobra.Command {
	var (
		cf  clientFlags
		rtt bool
	)
	cmd := &cobra.Command{
		Use:   "regions",
		Short: "Summarize each region: members, capacity, prices, leader, forecast",
		Long: `Regions prints one line per region the agent knows of: its members by gossip
state, free and total capacity, the cheapest node with free capacity, the
leader of its Raft group and its latest demand forecast. --rtt adds the
matrix of estimated round-trip times between regions, in milliseconds.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := cf.connect(cmd)
			if err != nil {
				return err
			}
			if s.jsonOut {
				return s.raw(cmd, http.MethodGet, "/v1/regions", nil, nil)
			}
			var v api.RegionsView
			err = s.call(cmd, func(ctx context.Context, c *api.Client) (err error) {
				v, err = c.Regions(ctx)
				return err
			})
			if err != nil {
				return err
			}
			return writeRegions(cmd.OutOrStdout(), v, rtt)
		},
	}
	cf.register(cmd.Flags())
	cmd.Flags().BoolVar(&rtt, "rtt", false, "also print the estimated RTT matrix between regions")
	return cmd
}

func writeRegions(w io.Writer, v api.RegionsView, withRTT bool) error {
	if len(v.Regions) == 0 {
		_, err := fmt.Fprintln(w, "No regions.")
		return err
	}
	tw := newTable(w)
	writeRow(tw, "REGION", "ALIVE", "SUSPECT", "DEAD", "COMPUTE/H (FREE/TOTAL)", "GPUS", "CHEAPEST/H", "LEADER", "FORECAST/H", "PRICE X")
	for _, r := range v.Regions {
		cheapest := "-"
		if r.CheapestPricePerHour > 0 {
			cheapest = usd(r.CheapestPricePerHour)
		}
		forecast, mult := "-", "-"
		if r.Forecast != nil {
			forecast = qty(r.Forecast.ComputePerHour)
		}
		if r.Adjustments != nil && r.Adjustments.PriceMultiplier > 0 {
			mult = strconv.FormatFloat(r.Adjustments.PriceMultiplier, 'f', 2, 64)
		}
		writeRow(tw, r.Region, strconv.Itoa(r.Members.Alive), strconv.Itoa(r.Members.Suspect), strconv.Itoa(r.Members.Dead),
			freeOfTotal(r.Free.ComputePerHour, r.Total.ComputePerHour),
			strconv.Itoa(r.Free.GPUs)+"/"+strconv.Itoa(r.Total.GPUs),
			cheapest, orDash(r.Leader), forecast, mult)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if !withRTT {
		return nil
	}
	fmt.Fprintln(w, "\nEstimated RTT (ms), from row to column")
	names := make([]string, len(v.Regions))
	for i, r := range v.Regions {
		names[i] = r.Region
	}
	tw = newTable(w)
	writeRow(tw, append([]string{""}, names...)...)
	for _, from := range names {
		cols := []string{from}
		for _, to := range names {
			if ms, ok := v.RTTMs[from][to]; ok {
				cols = append(cols, strconv.FormatFloat(ms, 'f', 0, 64))
			} else {
				cols = append(cols, "-")
			}
		}
		writeRow(tw, cols...)
	}
	return tw.Flush()
}

// newTradesCmd builds `meridian trades`.
func newTradesCmd() *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:   "trades",
		Short: "List the cross-region capacity trades of the agent's region",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := cf.connect(cmd)
			if err != nil {
				return err
			}
			if s.jsonOut {
				return s.raw(cmd, http.MethodGet, "/v1/trades", nil, nil)
			}
			var trades []api.Trade
			err = s.call(cmd, func(ctx context.Context, c *api.Client) (err error) {
				trades, err = c.Trades(ctx)
				return err
			})
			if err != nil {
				return err
			}
			return writeTrades(cmd.OutOrStdout(), trades)
		},
	}
	cf.register(cmd.Flags())
	return cmd
}

func writeTrades(w io.Writer, trades []api.Trade) error {
	if len(trades) == 0 {
		_, err := fmt.Fprintln(w, "No trades.")
		return err
	}
	tw := newTable(w)
	// PRICE/H is per hour of the seller's whole node, COST/H what the
	// traded work pays; SCORE is known to the buyer only.
	writeRow(tw, "ID", "JOB", "BUYER", "SELLER", "NODE", "STATE", "COMPUTE/H", "PRICE/H", "COST/H", "SCORE", "UPDATED")
	for _, t := range trades {
		score := "-"
		if t.Score != 0 {
			score = strconv.FormatFloat(t.Score, 'g', 4, 64)
		}
		writeRow(tw, t.ID, t.JobID, t.BuyerRegion, t.SellerRegion, orDash(t.Node), string(t.State),
			qty(t.Resources.ComputePerHour), usd(t.PricePerHour), usd(t.CostPerHour), score, when(t.UpdatedAt))
	}
	return tw.Flush()
}
