package consensus

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/vmihailenco/msgpack/v5"
)

// The forwarding RPC: a follower sends a proposal, a read-index request or
// a membership request to the leader over the same network layer as Raft
// (see mux.go). Each message is a frame: a 4-byte big-endian length and a
// msgpack body. A connection carries one request at a time; clients keep a
// small pool of idle connections per server.

const (
	opPropose      uint8 = 1 // payload: an entry of envelopes (Now unset); response payload: results
	opReadIndex    uint8 = 2 // response Index: the leader's ledger index after VerifyLeader
	opStatus       uint8 = 3 // response payload: ServerStatus
	opRemoveServer uint8 = 4 // payload: the ID of the server to remove from the group
)

// maxFrame bounds a message; proposals are capped well below it.
const maxFrame = 16 << 20

// maxIdleConns is how many idle connections a client keeps per server.
const maxIdleConns = 8

type rpcRequest struct {
	Op      uint8
	Region  string
	From    string
	Timeout time.Duration
	Payload []byte
}

type rpcResponse struct {
	Code    Code
	Message string
	Index   uint64
	Payload []byte
}

func (r rpcResponse) err() error {
	if r.Code == CodeOK {
		return nil
	}
	return &CommandError{Code: r.Code, Message: r.Message}
}

func errResponse(err error) rpcResponse {
	ce := asCommandError(err)
	return rpcResponse{Code: ce.Code, Message: ce.Message}
}

func writeFrame(w io.Writer, body []byte) error {
	if len(body) > maxFrame {
		return fmt.Errorf("message of %d bytes exceeds the %d-byte frame limit: %w", len(body), maxFrame, ErrTooLarge)
	}
	buf := make([]byte, 4+len(body))
	binary.BigEndian.PutUint32(buf, uint32(len(body)))
	copy(buf[4:], body)
	_, err := w.Write(buf)
	return err
}

func readFrame(r io.Reader) ([]byte, error) {
	var h [4]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(h[:])
	if n > maxFrame {
		return nil, fmt.Errorf("frame of %d bytes exceeds the %d-byte limit", n, maxFrame)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return nil, err
	}
	return body, nil
}

func encodeRequest(r rpcRequest) ([]byte, error) {
	var buf bytes.Buffer
	enc := msgpack.NewEncoder(&buf)
	for _, f := range []func() error{
		func() error { return enc.EncodeArrayLen(5) },
		func() error { return enc.EncodeUint8(r.Op) },
		func() error { return enc.EncodeString(r.Region) },
		func() error { return enc.EncodeString(r.From) },
		func() error { return enc.EncodeInt64(int64(r.Timeout)) },
		func() error { return enc.EncodeBytes(r.Payload) },
	} {
		if err := f(); err != nil {
			return nil, err
		}
	}
	return buf.Bytes(), nil
}

func decodeRequest(b []byte) (rpcRequest, error) {
	var r rpcRequest
	rd := bytes.NewReader(b)
	dec := msgpack.NewDecoder(rd)
	n, err := dec.DecodeArrayLen()
	if err != nil || n != 5 {
		return r, fmt.Errorf("request: not a 5-element array: %v", errOr(err, "%d elements", n))
	}
	if r.Op, err = decodeSmallUint(dec, "request op"); err != nil {
		return r, err
	}
	if r.Region, err = dec.DecodeString(); err != nil {
		return r, fmt.Errorf("request region: %w", err)
	}
	if r.From, err = dec.DecodeString(); err != nil {
		return r, fmt.Errorf("request from: %w", err)
	}
	t, err := dec.DecodeInt64()
	if err != nil {
		return r, fmt.Errorf("request timeout: %w", err)
	}
	r.Timeout = time.Duration(t)
	if r.Payload, err = decodeBin(dec, rd, maxFrame); err != nil {
		return r, fmt.Errorf("request payload: %w", err)
	}
	return r, nil
}

func encodeResponse(r rpcResponse) ([]byte, error) {
	var buf bytes.Buffer
	enc := msgpack.NewEncoder(&buf)
	for _, f := range []func() error{
		func() error { return enc.EncodeArrayLen(4) },
		func() error { return enc.EncodeUint16(uint16(r.Code)) },
		func() error { return enc.EncodeString(r.Message) },
		func() error { return enc.EncodeUint64(r.Index) },
		func() error { return enc.EncodeBytes(r.Payload) },
	} {
		if err := f(); err != nil {
			return nil, err
		}
	}
	return buf.Bytes(), nil
}

func decodeResponse(b []byte) (rpcResponse, error) {
	var r rpcResponse
	rd := bytes.NewReader(b)
	dec := msgpack.NewDecoder(rd)
	n, err := dec.DecodeArrayLen()
	if err != nil || n != 4 {
		return r, fmt.Errorf("response: not a 4-element array: %v", errOr(err, "%d elements", n))
	}
	code, err := dec.DecodeUint16()
	if err != nil {
		return r, fmt.Errorf("response code: %w", err)
	}
	r.Code = Code(code)
	if r.Message, err = dec.DecodeString(); err != nil {
		return r, fmt.Errorf("response message: %w", err)
	}
	if r.Index, err = dec.DecodeUint64(); err != nil {
		return r, fmt.Errorf("response index: %w", err)
	}
	if r.Payload, err = decodeBin(dec, rd, maxFrame); err != nil {
		return r, fmt.Errorf("response payload: %w", err)
	}
	return r, nil
}

// encodeResults writes results as an array of 9-element arrays: [index,
// id, epoch, existing, [expired...], pruned, code, subject, message], with
// the integer widths msgpack's EncodeUint64, EncodeInt64 and EncodeUint16
// write.
func encodeResults(results []Result) ([]byte, error) {
	n := 8
	for _, r := range results {
		n += 48 + len(r.ID)
		for _, id := range r.Expired {
			n += 5 + len(id)
		}
		if r.Err != nil {
			n += 64
		}
	}
	b := appendArrayLen(make([]byte, 0, n), len(results))
	for _, r := range results {
		ce := asCommandError(r.Err)
		if ce == nil {
			ce = &CommandError{}
		}
		b = append(b, 0x99)
		b = appendUint64(b, r.Index)
		b = appendStr(b, r.ID)
		b = appendUint64(b, r.Epoch)
		if r.Existing {
			b = append(b, 0xc3)
		} else {
			b = append(b, 0xc2)
		}
		b = appendArrayLen(b, len(r.Expired))
		for _, id := range r.Expired {
			b = appendStr(b, id)
		}
		b = appendInt64(b, int64(r.Pruned))
		b = append(b, 0xcd, byte(ce.Code>>8), byte(ce.Code))
		b = appendStr(b, ce.Subject)
		b = appendStr(b, ce.Message)
	}
	return b, nil
}

// decodeResults reads what encodeResults wrote; every count is checked
// against the bytes left before it sizes an allocation.
func decodeResults(b []byte) ([]Result, error) {
	rd := bytes.NewReader(b)
	dec := msgpack.NewDecoder(rd)
	n, err := dec.DecodeArrayLen()
	if err != nil {
		return nil, fmt.Errorf("results: %w", err)
	}
	if n < 0 || n > rd.Len() {
		return nil, fmt.Errorf("results: %d claimed in %d bytes", n, rd.Len())
	}
	out := make([]Result, n)
	for i := range out {
		if m, err := dec.DecodeArrayLen(); err != nil || m != 9 {
			return nil, fmt.Errorf("result %d: not a 9-element array: %v", i, errOr(err, "%d elements", m))
		}
		r := &out[i]
		if r.Index, err = dec.DecodeUint64(); err != nil {
			return nil, fmt.Errorf("result %d index: %w", i, err)
		}
		if r.ID, err = dec.DecodeString(); err != nil {
			return nil, fmt.Errorf("result %d id: %w", i, err)
		}
		if r.Epoch, err = dec.DecodeUint64(); err != nil {
			return nil, fmt.Errorf("result %d epoch: %w", i, err)
		}
		if r.Existing, err = dec.DecodeBool(); err != nil {
			return nil, fmt.Errorf("result %d existing: %w", i, err)
		}
		ne, err := dec.DecodeArrayLen()
		if err != nil || ne > rd.Len() {
			return nil, fmt.Errorf("result %d expired: %v", i, errOr(err, "%d claimed in %d bytes", ne, rd.Len()))
		}
		if ne > 0 {
			r.Expired = make([]string, ne)
			for j := range r.Expired {
				if r.Expired[j], err = dec.DecodeString(); err != nil {
					return nil, fmt.Errorf("result %d expired %d: %w", i, j, err)
				}
			}
		}
		pruned, err := dec.DecodeInt64()
		if err != nil {
			return nil, fmt.Errorf("result %d pruned: %w", i, err)
		}
		r.Pruned = int(pruned)
		code, err := dec.DecodeUint16()
		if err != nil {
			return nil, fmt.Errorf("result %d code: %w", i, err)
		}
		subject, err := dec.DecodeString()
		if err != nil {
			return nil, fmt.Errorf("result %d subject: %w", i, err)
		}
		msg, err := dec.DecodeString()
		if err != nil {
			return nil, fmt.Errorf("result %d message: %w", i, err)
		}
		if code != uint16(CodeOK) {
			r.Err = &CommandError{Code: Code(code), Subject: subject, Message: msg}
		}
	}
	return out, nil
}

// errUnsent marks an RPC that failed before its request could have reached
// the server, so it is safe to retry.
var errUnsent = errors.New("request not sent")

// rpcClient calls other servers of the region.
type rpcClient struct {
	mux *mux

	mu     sync.Mutex
	idle   map[string][]net.Conn
	closed bool
}

func newRPCClient(m *mux) *rpcClient {
	return &rpcClient{mux: m, idle: make(map[string][]net.Conn)}
}

// get returns an idle connection to addr that the peer has not closed.
func (c *rpcClient) get(addr string) net.Conn {
	for {
		c.mu.Lock()
		conns := c.idle[addr]
		if len(conns) == 0 {
			c.mu.Unlock()
			return nil
		}
		conn := conns[len(conns)-1]
		c.idle[addr] = conns[:len(conns)-1]
		c.mu.Unlock()
		if idleConnAlive(conn) {
			return conn
		}
		conn.Close()
	}
}

// idleConnAlive reports whether an idle connection is still open: a peer
// that restarted or crashed has closed or reset it, and a request sent on
// it would be lost with no way to tell whether it arrived. A TCP
// connection is checked by peeking at its socket. (A read with an expired
// deadline, as before, cannot tell: net.Conn fails it at once, before
// looking at the socket.) A connection without a descriptor, such as a
// simulated one, is taken as open.
func idleConnAlive(conn net.Conn) bool {
	if tc, ok := conn.(*trackedConn); ok {
		conn = tc.Conn
	}
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return true
	}
	// A deadline left over from the last call would fail the peek.
	if err := conn.SetReadDeadline(time.Time{}); err != nil {
		return false
	}
	closed, known := peerClosed(sc)
	return !known || !closed
}

func (c *rpcClient) put(addr string, conn net.Conn) {
	c.mu.Lock()
	if !c.closed && len(c.idle[addr]) < maxIdleConns {
		c.idle[addr] = append(c.idle[addr], conn)
		conn = nil
	}
	c.mu.Unlock()
	if conn != nil {
		conn.Close()
	}
}

// call sends one request and waits for its response, within ctx. An error
// wrapping errUnsent means the request never left.
func (c *rpcClient) call(ctx context.Context, addr string, req rpcRequest) (rpcResponse, error) {
	body, err := encodeRequest(req)
	if err != nil {
		return rpcResponse{}, fmt.Errorf("encode request: %w: %w", errUnsent, err)
	}
	if err := ctx.Err(); err != nil {
		return rpcResponse{}, fmt.Errorf("call %s: %w: %w", addr, errUnsent, err)
	}
	conn := c.get(addr)
	if conn == nil {
		timeout := 5 * time.Second
		if d, ok := ctx.Deadline(); ok {
			timeout = min(timeout, time.Until(d))
		}
		if timeout <= 0 {
			return rpcResponse{}, fmt.Errorf("dial %s: %w: %w", addr, errUnsent, context.DeadlineExceeded)
		}
		if conn, err = c.mux.dial(addr, connRPC, timeout); err != nil {
			return rpcResponse{}, fmt.Errorf("dial %s: %w: %w", addr, errUnsent, err)
		}
	}
	if d, ok := ctx.Deadline(); ok {
		conn.SetDeadline(d)
	} else {
		conn.SetDeadline(time.Time{})
	}
	// A cancelled context unblocks the read at once.
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if err := writeFrame(conn, body); err != nil {
		// A frame is processed only once complete, and a failed write
		// did not complete it.
		conn.Close()
		return rpcResponse{}, fmt.Errorf("send to %s: %w: %w", addr, errUnsent, ctxErr(ctx, err))
	}
	frame, err := readFrame(conn)
	if err != nil {
		conn.Close()
		return rpcResponse{}, fmt.Errorf("read reply from %s: %w", addr, ctxErr(ctx, err))
	}
	resp, err := decodeResponse(frame)
	if err != nil {
		conn.Close()
		return rpcResponse{}, fmt.Errorf("reply from %s: %w", addr, err)
	}
	if stop() {
		c.put(addr, conn)
	} else {
		conn.Close()
	}
	return resp, nil
}

// ctxErr prefers the context's error to the deadline error it caused.
func ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("%w (%v)", ctx.Err(), err)
	}
	return err
}

func (c *rpcClient) close() {
	c.mu.Lock()
	c.closed = true
	idle := c.idle
	c.idle = nil
	c.mu.Unlock()
	for _, conns := range idle {
		for _, conn := range conns {
			conn.Close()
		}
	}
}
