package market

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"time"
	"unicode/utf8"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/meridian-mesh/meridian/consensus"
	"github.com/meridian-mesh/meridian/placement/auction"
)

// ReportProtocolID is the libp2p protocol on which a seller's leader reports
// to a buyer's leader that allocations it ran for the buyer's jobs have
// ended (completed, failed, lost). The auction protocol ends with the
// allocation; this one closes the loop, so the buyer's ledger moves the job
// on. Each exchange is one stream: a report, then an acknowledgment naming
// the items the buyer committed.
const ReportProtocolID = "/meridian/market-report/1.0.0"

// reportVersion is the version of the report messages.
const reportVersion = 1

// Bounds of a report message: a report names at most maxReportItems items,
// and its encoding is at most maxReportSize bytes.
const (
	maxReportItems = 256
	maxReportSize  = 128 << 10
	maxMessageLen  = 512
)

// Report message kinds.
const (
	reportKindReport uint8 = 1
	reportKindAck    uint8 = 2
)

// reportHeader is what every report message starts with, as the auction's
// envelopes do: who speaks for which region, under which leader term.
type reportHeader struct {
	Version uint16 `msgpack:"v"`
	Kind    uint8  `msgpack:"k"`
	From    string `msgpack:"f"`
	To      string `msgpack:"t"`
	Term    uint64 `msgpack:"tm"`
	// Sent is the sender's clock, Unix nanoseconds.
	Sent int64 `msgpack:"s"`
}

// reportItem is one ended allocation: the buyer's trade, its epoch, and how
// it ended. In an acknowledgment only Auction and Item are set.
type reportItem struct {
	Auction string `msgpack:"a"`
	Item    string `msgpack:"i"`
	Epoch   uint64 `msgpack:"e,omitempty"`
	Outcome uint8  `msgpack:"o,omitempty"`
	Message string `msgpack:"m,omitempty"`
}

// reportMsg is a report or an acknowledgment. On the wire it is the array
// [header, [item, ...]], decoded element by element so that a hostile
// length never sizes an allocation.
type reportMsg struct {
	reportHeader
	Items []reportItem
}

func (r *reportMsg) validate() error {
	h := r.reportHeader
	switch {
	case h.Version != reportVersion:
		return fmt.Errorf("report: field \"version\": %d, this build speaks %d", h.Version, reportVersion)
	case h.Kind != reportKindReport && h.Kind != reportKindAck:
		return fmt.Errorf("report: field \"kind\": unknown kind %d", h.Kind)
	case h.Term == 0:
		return errors.New("report: field \"term\": must be positive")
	case len(r.Items) > maxReportItems:
		return fmt.Errorf("report: field \"items\": %d items, at most %d", len(r.Items), maxReportItems)
	case h.Kind == reportKindReport && len(r.Items) == 0:
		return errors.New("report: field \"items\": a report names at least one item")
	}
	for _, f := range []struct{ name, v string }{{"from", h.From}, {"to", h.To}} {
		if err := checkName("report."+f.name, f.v); err != nil {
			return err
		}
	}
	for i, it := range r.Items {
		p := fmt.Sprintf("report.items[%d].", i)
		if err := checkName(p+"auction", it.Auction); err != nil {
			return err
		}
		if err := checkName(p+"item", it.Item); err != nil {
			return err
		}
		if h.Kind == reportKindReport {
			o := consensus.StopReason(it.Outcome)
			if o < consensus.StopCompleted || o > consensus.StopPreempted || o == consensus.StopCancelled {
				return fmt.Errorf("report: field %q: %d is not an outcome to report", p+"outcome", it.Outcome)
			}
		}
		if len(it.Message) > maxMessageLen || !utf8.ValidString(it.Message) {
			return fmt.Errorf("report: field %q: must be valid UTF-8 of at most %d bytes", p+"message", maxMessageLen)
		}
	}
	return nil
}

func checkName(field, s string) error {
	switch {
	case s == "":
		return fmt.Errorf("field %q: must not be empty", field)
	case len(s) > auction.MaxIDLen:
		return fmt.Errorf("field %q: longer than %d bytes", field, auction.MaxIDLen)
	case !utf8.ValidString(s):
		return fmt.Errorf("field %q: not valid UTF-8", field)
	}
	return nil
}

func encodeReport(r *reportMsg) ([]byte, error) {
	if err := r.validate(); err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	enc := msgpack.NewEncoder(&buf)
	enc.UseCompactInts(true)
	if err := enc.EncodeArrayLen(2); err != nil {
		return nil, err
	}
	if err := enc.Encode(&r.reportHeader); err != nil {
		return nil, err
	}
	if err := enc.EncodeArrayLen(len(r.Items)); err != nil {
		return nil, err
	}
	for i := range r.Items {
		if err := enc.Encode(&r.Items[i]); err != nil {
			return nil, err
		}
	}
	if buf.Len() > maxReportSize {
		return nil, fmt.Errorf("report: %d bytes, at most %d: %w", buf.Len(), maxReportSize, auction.ErrTooLarge)
	}
	return buf.Bytes(), nil
}

// decodeReport decodes and validates a report message. It never panics:
// the header and items hold only strings and integers (no time values,
// which msgpack cannot decode from nil), and the item count is checked
// against the bytes present before anything is allocated for it.
func decodeReport(b []byte) (*reportMsg, error) {
	if len(b) > maxReportSize {
		return nil, fmt.Errorf("report: %d bytes: %w", len(b), auction.ErrTooLarge)
	}
	rd := bytes.NewReader(b)
	dec := msgpack.NewDecoder(rd)
	if n, err := dec.DecodeArrayLen(); err != nil || n != 2 {
		return nil, fmt.Errorf("report: %w: not a [header, items] pair", auction.ErrMalformed)
	}
	var r reportMsg
	if err := dec.Decode(&r.reportHeader); err != nil {
		return nil, fmt.Errorf("report header: %w: %w", auction.ErrMalformed, err)
	}
	n, err := dec.DecodeArrayLen()
	if err != nil || n < 0 || n > maxReportItems || n > rd.Len() {
		return nil, fmt.Errorf("report items: %w: bad count %d (%v)", auction.ErrMalformed, n, err)
	}
	r.Items = make([]reportItem, n)
	for i := range r.Items {
		if err := dec.Decode(&r.Items[i]); err != nil {
			return nil, fmt.Errorf("report item %d: %w: %w", i, auction.ErrMalformed, err)
		}
	}
	if rd.Len() != 0 {
		return nil, fmt.Errorf("report: %w: %d trailing bytes", auction.ErrMalformed, rd.Len())
	}
	if err := r.validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", auction.ErrMalformed, err)
	}
	return &r, nil
}

// reportTo sends one report to the buyer's leader and returns the items it
// acknowledged. The reply is authenticated like any market reply.
func (m *Market) reportTo(ctx context.Context, to peer.AddrInfo, buyer string, term uint64, items []reportItem) ([]reportItem, error) {
	b, err := encodeReport(&reportMsg{reportHeader: reportHeader{Version: reportVersion, Kind: reportKindReport,
		From: m.cfg.Region, To: buyer, Term: term, Sent: m.now().UnixNano()}, Items: items})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, m.cfg.RequestTimeout)
	defer cancel()
	if len(to.Addrs) > 0 {
		m.cfg.Host.Peerstore().AddAddrs(to.ID, to.Addrs, peerstore.RecentlyConnectedAddrTTL)
	}
	s, err := m.cfg.Host.NewStream(ctx, to.ID, ReportProtocolID)
	if err != nil {
		return nil, fmt.Errorf("report to %s: open stream: %w", buyer, err)
	}
	stop := context.AfterFunc(ctx, func() { _ = s.Reset() })
	defer stop()
	if d, ok := ctx.Deadline(); ok {
		_ = s.SetDeadline(d)
	}
	if err := auction.WriteFrame(s, b); err != nil {
		_ = s.Reset()
		return nil, fmt.Errorf("report to %s: %w", buyer, err)
	}
	rb, err := auction.ReadFrame(s)
	if err != nil {
		_ = s.Reset()
		return nil, fmt.Errorf("report to %s: reply: %w", buyer, err)
	}
	_ = s.Close()
	ack, err := decodeReport(rb)
	if err != nil {
		return nil, fmt.Errorf("report to %s: reply: %w", buyer, err)
	}
	switch {
	case ack.Kind != reportKindAck:
		return nil, fmt.Errorf("report to %s: reply is not an acknowledgment", buyer)
	case ack.From != buyer || ack.To != m.cfg.Region:
		return nil, fmt.Errorf("report to %s: reply from %q to %q: %w", buyer, ack.From, ack.To, auction.ErrRefused)
	}
	if err := m.dir.Authorize(to.ID, ack.From, ack.Term); err != nil {
		return nil, fmt.Errorf("report to %s: reply not from its leader: %w: %w", buyer, auction.ErrRefused, err)
	}
	return ack.Items, nil
}

// serveReport answers a report from a seller's leader: it authenticates the
// sender, commits EndTrade for each item, and acknowledges the items whose
// outcome the ledger decided (done, or nothing to do). A request it will
// not act on gets no reply.
func (m *Market) serveReport(s network.Stream) {
	if !m.streams.TryGo(func() { m.handleReport(s) }) {
		_ = s.Reset()
	}
}

func (m *Market) handleReport(s network.Stream) {
	ctx, cancel := context.WithTimeout(m.runCtx, m.cfg.RequestTimeout)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { _ = s.Reset() })
	defer stop()
	if d, ok := ctx.Deadline(); ok {
		_ = s.SetDeadline(d)
	}
	from := s.Conn().RemotePeer()
	b, err := auction.ReadFrame(s)
	if err != nil {
		_ = s.Reset()
		return
	}
	r, err := decodeReport(b)
	if err == nil && r.Kind != reportKindReport {
		err = errors.New("not a report")
	}
	if err != nil {
		m.log.Warn("malformed market report refused", "from_peer", from, "err", err)
		_ = s.Reset()
		return
	}
	term, leader := m.leadership()
	switch {
	case !leader:
		err = auction.ErrNotLeader
	case r.To != m.cfg.Region:
		err = fmt.Errorf("%w: addressed to region %q", auction.ErrRefused, r.To)
	default:
		if aerr := m.dir.Authorize(from, r.From, r.Term); aerr != nil {
			err = fmt.Errorf("%w: %w", auction.ErrRefused, aerr)
		}
	}
	if err != nil {
		m.log.Warn("market report refused", "from_peer", from, "from_region", r.From, "term", r.Term, "err", err)
		_ = s.Reset()
		return
	}
	acked := m.endTrades(ctx, r.From, r.Items)
	reply, err := encodeReport(&reportMsg{reportHeader: reportHeader{Version: reportVersion, Kind: reportKindAck,
		From: m.cfg.Region, To: r.From, Term: term, Sent: m.now().UnixNano()}, Items: acked})
	if err == nil {
		err = auction.WriteFrame(s, reply)
	}
	if err == nil {
		// Let the requester close first, so the reply is not hurried along.
		var one [1]byte
		if _, rerr := io.ReadFull(s, one[:]); !errors.Is(rerr, io.EOF) {
			err = fmt.Errorf("after the reply: %v", rerr)
		}
	}
	if err != nil {
		m.log.Debug("market report acknowledgment not delivered", "to", r.From, "err", err)
		_ = s.Reset()
		return
	}
	_ = s.Close()
}

// endTrades commits EndTrade for reported items in the buyer's ledger and
// returns those the ledger decided.
func (m *Market) endTrades(ctx context.Context, seller string, items []reportItem) []reportItem {
	l := m.cfg.Server.Ledger()
	var cmds []consensus.Command
	var asked []reportItem
	for _, it := range items {
		if t, ok := l.Trade(it.Auction, it.Item); ok && t.SellerRegion != seller {
			// Only the region that sold a trade may end it.
			m.log.Warn("report about a trade of another seller ignored", "from", seller, "auction", it.Auction, "item", it.Item, "seller", t.SellerRegion)
			continue
		}
		cmds = append(cmds, consensus.EndTrade{AuctionID: it.Auction, ItemID: it.Item, Epoch: it.Epoch,
			Outcome: consensus.StopReason(it.Outcome), Message: truncate(it.Message)})
		asked = append(asked, reportItem{Auction: it.Auction, Item: it.Item})
	}
	if len(cmds) == 0 {
		return nil
	}
	res, err := m.cfg.Server.Propose(ctx, cmds...)
	if err != nil {
		m.log.Warn("reported trade ends not committed", "from", seller, "items", len(cmds), "err", err)
		return nil
	}
	var acked []reportItem
	for i, r := range res {
		switch {
		case r.Err == nil:
			acked = append(acked, asked[i])
			if !r.Existing {
				m.count(func(s *Stats) { s.RemoteEnded++ })
			}
		case errors.Is(r.Err, consensus.ErrNotFound):
			// No such trade (pruned, or never ours): nothing to wait for.
			acked = append(acked, asked[i])
		default:
			m.log.Warn("reported trade end refused", "from", seller, "auction", asked[i].Auction, "item", asked[i].Item, "err", r.Err)
		}
	}
	if len(acked) > 0 {
		m.wakeDuty()
	}
	return acked
}

// reportEnded reports the ended allocations of the given buyers (nil: all)
// that the ledger has not marked reported, and marks those acknowledged.
func (m *Market) reportEnded(ctx context.Context, only map[string]bool) error {
	term, leader := m.leadership()
	if !leader {
		return auction.ErrNotLeader
	}
	byBuyer := make(map[string][]consensus.Allocation)
	for _, a := range m.cfg.Server.Ledger().UnreportedSold() {
		if only == nil || only[a.ID] {
			byBuyer[a.JobRegion] = append(byBuyer[a.JobRegion], a)
		}
	}
	var errs []error
	for _, buyer := range sortedKeys(byBuyer) {
		to, ok := m.dir.Leader(buyer)
		if !ok {
			errs = append(errs, fmt.Errorf("report to %s: no known leader", buyer))
			continue
		}
		allocs := byBuyer[buyer]
		for len(allocs) > 0 {
			n := min(len(allocs), maxReportItems)
			chunk := allocs[:n]
			allocs = allocs[n:]
			items := make([]reportItem, n)
			ids := make(map[[2]string]string, n)
			for i, a := range chunk {
				items[i] = reportItem{Auction: a.AuctionID, Item: a.ItemID, Epoch: a.Epoch, Outcome: uint8(a.StopReason),
					Message: truncateTo(a.StopMessage, maxMessageLen)}
				ids[[2]string{a.AuctionID, a.ItemID}] = a.ID
			}
			m.count(func(s *Stats) { s.ReportsSent++ })
			acked, err := m.reportTo(ctx, to, buyer, term, items)
			if err != nil {
				errs = append(errs, err)
				break
			}
			var marks []consensus.Command
			for _, it := range acked {
				if id, ok := ids[[2]string{it.Auction, it.Item}]; ok {
					marks = append(marks, consensus.MarkReported{AllocID: id})
				}
			}
			if len(marks) == 0 {
				continue
			}
			if _, err := m.cfg.Server.Propose(ctx, marks...); err != nil {
				errs = append(errs, fmt.Errorf("mark %d reports to %s acknowledged: %w", len(marks), buyer, err))
				break
			}
			m.count(func(s *Stats) { s.ReportsAcked += uint64(len(marks)) })
		}
	}
	return errors.Join(errs...)
}

// cancelOrphans asks sellers to cancel allocations of trades the ledger
// still holds as acknowledged although the job no longer runs under them:
// the client cancelled the job, or it ended or moved on another way. The
// request is the auction's own Cancel (cancel the trade's allocation if it
// is for this epoch); once the seller holds nothing, the trade is marked
// cancelled.
func (m *Market) cancelOrphans(ctx context.Context) error {
	term, leader := m.leadership()
	if !leader {
		return auction.ErrNotLeader
	}
	l := m.cfg.Server.Ledger()
	type key struct{ seller, auction string }
	orphans := make(map[key][]consensus.Trade)
	for _, t := range l.Trades() {
		if t.State != consensus.TradeAcked || t.Kind == consensus.ItemLease {
			continue
		}
		j, ok := l.Job(t.JobID)
		if ok && !j.State.Terminal() && j.Epoch == t.Epoch && j.Remote != nil &&
			j.Remote.AuctionID == t.AuctionID && j.Remote.ItemID == t.ItemID {
			continue
		}
		k := key{t.SellerRegion, t.AuctionID}
		orphans[k] = append(orphans[k], t)
	}
	var errs []error
	for k, ts := range orphans {
		to, ok := m.dir.Leader(k.seller)
		if !ok {
			continue
		}
		if len(ts) > auction.MaxItems {
			ts = ts[:auction.MaxItems]
		}
		items := make([]auction.CancelItem, len(ts))
		for i, t := range ts {
			items[i] = auction.CancelItem{Item: t.ItemID, Epoch: t.Epoch}
		}
		env := &auction.Envelope{Version: auction.Version, Kind: auction.KindCancel, Auction: k.auction, From: m.cfg.Region,
			To: k.seller, Term: term, Sent: m.now(), Cancel: &auction.Cancel{Items: items}}
		rctx, cancel := context.WithTimeout(ctx, m.cfg.RequestTimeout)
		reply, err := m.tr.Request(rctx, to, env)
		cancel()
		if err == nil && (reply == nil || reply.Kind != auction.KindStatusReply || reply.From != k.seller || reply.Auction != k.auction) {
			err = fmt.Errorf("%w: not a status reply from %s", auction.ErrRefused, k.seller)
		}
		if err == nil {
			err = m.dir.Authorize(to.ID, reply.From, reply.Term)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("cancel orphaned trades of auction %s at %s: %w", k.auction, k.seller, err))
			continue
		}
		var cmds []consensus.Command
		for _, st := range reply.StatusReply.Items {
			switch st.Status {
			case auction.StatusUnknown, auction.StatusReleased, auction.StatusCancelled:
				cmds = append(cmds, consensus.SetTradeState{AuctionID: k.auction, ItemID: st.Item, State: consensus.TradeCancelled,
					Reason: "the job no longer runs under this trade; the seller released it"})
			}
		}
		if len(cmds) == 0 {
			continue
		}
		res, err := m.cfg.Server.Propose(ctx, cmds...)
		if err != nil {
			errs = append(errs, fmt.Errorf("mark orphaned trades cancelled: %w", err))
			continue
		}
		for _, r := range res {
			if r.Err == nil && !r.Existing {
				m.count(func(s *Stats) { s.OrphansCancelled++ })
			}
		}
	}
	return errors.Join(errs...)
}

func truncateTo(s string, n int) string {
	if len(s) <= n {
		return s
	}
	s = s[:n]
	for !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s
}

// now is the market's clock.
func (m *Market) now() time.Time { return m.cfg.Clock() }
