package auction

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
)

// StreamTransportConfig tunes a StreamTransport.
type StreamTransportConfig struct {
	// RequestTimeout bounds a Request whose context has no deadline
	// (default 10s).
	RequestTimeout time.Duration
	// HandlerTimeout bounds how long an inbound stream may stay open, for
	// reading the request and waiting for the Handler (default 30s: a
	// CallForBids waits for the seller's escrow commit).
	HandlerTimeout time.Duration
	// Logger receives malformed or failed inbound streams; nil discards.
	Logger *slog.Logger
}

// StreamTransport carries Envelopes over libp2p streams of ProtocolID on any
// host.Host (a real one from NewHost, or a mocknet one in tests). Each
// exchange is one stream: the request, length-prefixed, then for kinds that
// expect one the reply on the same stream. Every stream has a deadline,
// enforced by resetting the stream, since some transports (mocknet) ignore
// SetDeadline. It is safe for concurrent use.
type StreamTransport struct {
	host host.Host
	cfg  StreamTransportConfig
	log  *slog.Logger

	mu      sync.Mutex
	handler Handler
	closed  bool
	streams sync.WaitGroup
}

var _ Transport = (*StreamTransport)(nil)

// NewStreamTransport returns a transport over h. Call Serve to answer
// requests.
func NewStreamTransport(h host.Host, cfg StreamTransportConfig) *StreamTransport {
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = 10 * time.Second
	}
	if cfg.HandlerTimeout <= 0 {
		cfg.HandlerTimeout = 30 * time.Second
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return &StreamTransport{host: h, cfg: cfg, log: log.With("peer", h.ID())}
}

// Serve answers inbound market streams with handler.
func (t *StreamTransport) Serve(handler Handler) {
	t.mu.Lock()
	t.handler = handler
	t.mu.Unlock()
	t.host.SetStreamHandler(ProtocolID, t.serveStream)
}

// Close stops serving and waits for the inbound streams being served to
// finish (each is bounded by HandlerTimeout). It does not close the host.
func (t *StreamTransport) Close() error {
	t.host.RemoveStreamHandler(ProtocolID)
	t.mu.Lock()
	t.closed = true
	t.mu.Unlock()
	t.streams.Wait()
	return nil
}

// Request implements Transport.
func (t *StreamTransport) Request(ctx context.Context, to peer.AddrInfo, env *Envelope) (*Envelope, error) {
	b, err := Encode(env)
	if err != nil {
		return nil, err
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, t.cfg.RequestTimeout)
		defer cancel()
	}
	deadline, _ := ctx.Deadline()
	if len(to.Addrs) > 0 {
		t.host.Peerstore().AddAddrs(to.ID, to.Addrs, peerstore.RecentlyConnectedAddrTTL)
	}
	s, err := t.host.NewStream(ctx, to.ID, ProtocolID)
	if err != nil {
		return nil, fmt.Errorf("market %s to %s: open stream: %w", env.Kind, to.ID, err)
	}
	stop := context.AfterFunc(ctx, func() { _ = s.Reset() })
	defer stop()
	_ = s.SetDeadline(deadline)
	if err := WriteFrame(s, b); err != nil {
		_ = s.Reset()
		return nil, fmt.Errorf("market %s to %s: %w", env.Kind, to.ID, ctxErr(ctx, err))
	}
	// The requester closes the stream, after the reply (or, for a one-way
	// message, after the receiver closed its side, which confirms receipt).
	// Closing the write side right after the request would let mocknet
	// deliver it without the link's latency.
	if !env.Kind.ExpectsReply() {
		err := awaitEOF(s)
		_ = s.Close()
		if err != nil {
			return nil, fmt.Errorf("market %s to %s: %w", env.Kind, to.ID, ctxErr(ctx, err))
		}
		return nil, nil
	}
	rb, err := ReadFrame(s)
	if err != nil {
		_ = s.Reset()
		if errors.Is(err, io.EOF) {
			err = errNoReply
		}
		return nil, fmt.Errorf("market %s to %s: reply: %w", env.Kind, to.ID, ctxErr(ctx, err))
	}
	_ = s.Close()
	reply, err := Decode(rb)
	if err != nil {
		return nil, fmt.Errorf("market %s to %s: reply: %w", env.Kind, to.ID, err)
	}
	return reply, nil
}

// errNoReply is returned when the peer closed the stream without a reply:
// it refused the request, or lost the leadership meanwhile.
var errNoReply = errors.New("closed without a reply")

// awaitEOF reads until the peer closes its side; any data is a protocol
// error.
func awaitEOF(s io.Reader) error {
	var b [1]byte
	n, err := io.ReadFull(s, b[:])
	switch {
	case n > 0:
		return fmt.Errorf("%w: unexpected data after the exchange", ErrMalformed)
	case errors.Is(err, io.EOF):
		return nil
	}
	return err
}

// ctxErr prefers the context's error (a deadline) to the stream error its
// reset caused.
func ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("%w (%v)", ctx.Err(), err)
	}
	return err
}

func (t *StreamTransport) serveStream(s network.Stream) {
	t.mu.Lock()
	handler, closed := t.handler, t.closed
	if !closed {
		t.streams.Add(1)
	}
	t.mu.Unlock()
	if closed || handler == nil {
		_ = s.Reset()
		return
	}
	defer t.streams.Done()
	ctx, cancel := context.WithTimeout(context.Background(), t.cfg.HandlerTimeout)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { _ = s.Reset() })
	defer stop()
	deadline, _ := ctx.Deadline()
	_ = s.SetDeadline(deadline)
	from := s.Conn().RemotePeer()

	b, err := ReadFrame(s)
	if err != nil {
		t.log.Debug("market stream: no request", "from", from, "err", err)
		_ = s.Reset()
		return
	}
	env, err := Decode(b)
	if err != nil {
		t.log.Warn("market stream: malformed request refused", "from", from, "err", err)
		_ = s.Reset()
		return
	}
	if env.Kind.IsReply() || env.Kind == KindAsk {
		t.log.Warn("market stream: not a request", "from", from, "kind", env.Kind)
		_ = s.Reset()
		return
	}
	reply := handler(ctx, from, env)
	if !env.Kind.ExpectsReply() || reply == nil {
		_ = s.Close()
		return
	}
	rb, err := Encode(reply)
	if err == nil {
		err = WriteFrame(s, rb)
	}
	if err == nil {
		// Let the requester close first (see Request), so the reply is not
		// hurried along by our close.
		err = awaitEOF(s)
	}
	if err != nil {
		t.log.Debug("market stream: reply not delivered", "to", from, "kind", reply.Kind, "err", err)
		_ = s.Reset()
		return
	}
	_ = s.Close()
}
