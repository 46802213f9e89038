package gossip

import (
	"errors"
	"strings"
	"testing"

	"github.com/hashicorp/memberlist"

	"github.com/meridian-mesh/meridian/placement"
)

func TestMetaRoundTrip(t *testing.T) {
	m := Meta{Region: "us-east-1", Role: RoleServer, HTTPAddr: "10.0.0.1:8080", RaftAddr: "10.0.0.1:7000",
		P2PAddr: "/ip4/10.0.0.1/tcp/4001", P2PPeerID: "12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo", Version: "v0.1.0"}
	b, err := EncodeMeta(m)
	if err != nil {
		t.Fatalf("EncodeMeta: %v", err)
	}
	got, err := DecodeMeta(b)
	if err != nil || got != m {
		t.Fatalf("DecodeMeta(EncodeMeta(m)) = %+v, %v; want %+v", got, err, m)
	}
}

func TestEncodeMetaLimit(t *testing.T) {
	long := strings.Repeat("a", MaxAddrLength)
	m := Meta{Region: "r", Role: RoleWorker, HTTPAddr: long, P2PAddr: long[:250], Version: "v1"}
	_, err := EncodeMeta(m)
	if !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), "http_addr") {
		t.Fatalf("EncodeMeta(%d bytes of addresses) = %v; want ErrTooLarge naming http_addr", len(long)+250, err)
	}
	// Start refuses such a configuration before memberlist starts.
	_, err = Start(Config{Name: "n", Region: "r", HTTPAddr: long, P2PAddr: long[:200], RaftAddr: long[:100], DisableEncryption: true})
	if !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), "http_addr") {
		t.Fatalf("Start with oversized metadata = %v; want ErrTooLarge naming http_addr", err)
	}
	// Every field at its own limit but one fits.
	ok := Meta{Region: strings.Repeat("r", MaxNameLength), Role: RoleWorker, HTTPAddr: long}
	if b, err := EncodeMeta(ok); err != nil || len(b) > memberlist.MetaMaxSize {
		t.Fatalf("EncodeMeta(one long address) = %d bytes, %v; want it to fit %d", len(b), err, memberlist.MetaMaxSize)
	}
}

func TestMetaValidate(t *testing.T) {
	for _, tc := range []struct {
		field string
		m     Meta
	}{
		{"region", Meta{Role: RoleWorker}},
		{"role", Meta{Region: "r", Role: "boss"}},
		{"raft_addr", Meta{Region: "r", Role: RoleServer, RaftAddr: strings.Repeat("x", MaxAddrLength+1)}},
		{"version", Meta{Region: "r", Role: RoleServer, Version: "\xff"}},
	} {
		err := tc.m.Validate()
		var fe *placement.FieldError
		if !errors.As(err, &fe) || fe.Field != tc.field {
			t.Errorf("Validate(%+v) = %v; want an error naming %q", tc.m, err, tc.field)
		}
	}
	if _, err := DecodeMeta([]byte{0x80}); err == nil {
		t.Error("DecodeMeta(empty map) = nil error; want missing region rejected")
	}
	if _, err := DecodeMeta([]byte{0xff, 0x00}); !errors.Is(err, ErrMalformed) {
		t.Errorf("DecodeMeta(garbage) = %v; want ErrMalformed", err)
	}
}
