// Package auction is Meridian's cross-region capacity market: how a region's
// Raft leader buys capacity from other regions when it cannot place a job
// well at home, and how it sells its own surplus.
//
// Every region's leader is both a buyer and a seller, and no coordinator
// exists: each trade is decided by the buyer region's replicated ledger and
// carried out by the seller region's, in the manner of two-phase commit over
// replicated groups. A trade runs
//
//	buyer                                   seller
//	CallForBids ─────────────────────────▶  HoldEscrow (seller ledger)
//	            ◀───────────────────────── Bid (price, node, escrow, expiry)
//	winner determination
//	RecordAward (buyer ledger)
//	Award ───────────────────────────────▶  ConvertEscrow (seller ledger)
//	      ◀─────────────────────────────── Ack
//	SetTradeState(confirmed) (buyer ledger)
//
// Escrow holds make bids firm (the same capacity is never promised twice) and
// expire by themselves. An award whose acknowledgment is lost is "in doubt":
// the buyer queries the seller's status until it answers, and after
// Config.InDoubtTimeout it may abandon the trade, bump the job's placement
// epoch and re-place the job; any allocation for an older epoch that surfaces
// later is cancelled.
//
// The package is layered like etcd's raft:
//
//   - Market is a pure protocol state machine. Its inputs are messages,
//     ledger-commit results and the current time; its output is a Ready batch
//     of messages to send, ledger proposals to commit and events. It starts no
//     goroutine, reads no clock and does no I/O.
//   - Winner determination, seller pricing, seller selection, lease triggers
//     and asks are pure functions beside it.
//   - Driver owns a Market in one goroutine and connects it to the region
//     ledger (Ledger), the peers (Transport), the gossip view (Directory) and
//     the leader check (Authority). node/ implements those interfaces.
//   - StreamTransport carries Envelopes over libp2p streams; NewHost builds
//     the slim TCP+Noise+yamux libp2p host it runs on.
package auction
