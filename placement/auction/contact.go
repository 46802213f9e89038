package auction

import (
	"errors"
	"fmt"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/vmihailenco/msgpack/v5"
)

// MaxContactAddrs bounds the addresses in a contact, and MaxContactSize its
// encoding, so it fits in memberlist node metadata (512 bytes) beside the
// rest of a node's record.
const (
	MaxContactAddrs = 4
	MaxContactSize  = 256
)

// contactWire is the compact form: binary peer ID and binary multiaddrs.
type contactWire struct {
	_msgpack struct{} `msgpack:",as_array"`
	ID       []byte
	Addrs    [][]byte
}

// EncodeContact encodes a server's market contact — its libp2p peer ID and
// listen addresses — compactly, for gossip metadata.
func EncodeContact(ai peer.AddrInfo) ([]byte, error) {
	if ai.ID == "" {
		return nil, errors.New("encode contact: field \"id\": must not be empty")
	}
	if len(ai.Addrs) == 0 || len(ai.Addrs) > MaxContactAddrs {
		return nil, fmt.Errorf("encode contact: field \"addrs\": %d addresses, want 1..%d", len(ai.Addrs), MaxContactAddrs)
	}
	w := contactWire{ID: []byte(ai.ID)}
	for _, a := range ai.Addrs {
		w.Addrs = append(w.Addrs, a.Bytes())
	}
	b, err := msgpack.Marshal(&w)
	if err != nil {
		return nil, fmt.Errorf("encode contact: %w", err)
	}
	if len(b) > MaxContactSize {
		return nil, fmt.Errorf("encode contact: %d bytes, at most %d: %w", len(b), MaxContactSize, ErrTooLarge)
	}
	return b, nil
}

// DecodeContact decodes a contact published with EncodeContact. Errors wrap
// ErrMalformed or ErrTooLarge and name the field.
func DecodeContact(b []byte) (peer.AddrInfo, error) {
	if len(b) > MaxContactSize {
		return peer.AddrInfo{}, fmt.Errorf("decode contact: %d bytes: %w", len(b), ErrTooLarge)
	}
	if err := checkMsgpack(b); err != nil {
		return peer.AddrInfo{}, &MessageError{Field: "contact", Reason: "not well-formed msgpack", Err: err}
	}
	var w contactWire
	if err := msgpack.Unmarshal(b, &w); err != nil {
		return peer.AddrInfo{}, &MessageError{Field: "contact", Reason: "does not decode", Err: err}
	}
	id, err := peer.IDFromBytes(w.ID)
	if err != nil {
		return peer.AddrInfo{}, &MessageError{Field: "contact.id", Reason: "not a peer ID", Err: err}
	}
	if len(w.Addrs) == 0 || len(w.Addrs) > MaxContactAddrs {
		return peer.AddrInfo{}, fieldErr("contact.addrs", fmt.Sprintf("%d addresses, want 1..%d", len(w.Addrs), MaxContactAddrs))
	}
	ai := peer.AddrInfo{ID: id}
	for i, raw := range w.Addrs {
		a, err := ma.NewMultiaddrBytes(raw)
		if err != nil {
			return peer.AddrInfo{}, &MessageError{Field: fmt.Sprintf("contact.addrs[%d]", i), Reason: "not a multiaddr", Err: err}
		}
		ai.Addrs = append(ai.Addrs, a)
	}
	return ai, nil
}
