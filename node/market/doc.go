// Package market wires the cross-region auction (placement/auction) into a
// Meridian region: its Raft ledger (consensus), its gossip view (gossip)
// and the node's libp2p host.
//
// A Market runs on every server of a region and acts only while its server
// leads the region's Raft group. It provides the auction Driver with:
//
//   - the region ledger (auction.Ledger): each market operation becomes
//     consensus commands — HoldEscrow, ConvertEscrow, ReleaseEscrow,
//     DrawLease, RecordAward, SetTradeState — and the seller-side reads
//     (trade status, the epoch check before a cancel) are linearizable
//     reads of the ledger. A new leader rebuilds the market's state (awards
//     in doubt, abandoned trades, held escrows, bought leases) from the
//     ledger, after it has applied the whole log;
//   - the directory (auction.Directory) and the leader check
//     (auction.Authority), both read from gossip: a region's leader is the
//     live server whose capacity record claims the leadership under the
//     highest term (gossip.MarketInfo, which the node publishes from
//     Advertisement), and a peer speaks for a region only if gossip lists
//     it as a live server of that region claiming the leadership under the
//     message's term, with no later claim from another server.
//
// Beyond the auction, the market closes the loop of a trade: when an
// allocation a region sold ends (completed, failed, lost), the seller's
// leader reports it to the buyer's leader over ReportProtocolID and the
// buyer's ledger ends the trade (EndTrade): the job completes, or goes
// back to pending under a new epoch. Reports are durable: the seller's
// ledger marks each acknowledged (MarkReported) and the leader retries the
// rest every DutyInterval, across leader changes and partitions. The buyer
// also cancels, with the auction's own Cancel message, allocations of jobs
// that no longer run under their trade (a client cancelled the job).
//
// The node agent builds a Market with New, runs Run in a goroutine, calls
// Trade for pending jobs it cannot place well at home, calls RemoteStopped
// after it commits the end of an allocation it runs for another region, and
// publishes Advertisement in its gossip capacity record. See docs/market.md.
package market
