package gossip

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/meridian-mesh/meridian/placement"
)

func TestConfigDefaultsAndErrors(t *testing.T) {
	c, err := Config{Name: "n", Region: "r"}.withDefaults()
	if err != nil {
		t.Fatalf("withDefaults(minimal) = %v", err)
	}
	if c.Profile != ProfileWAN || c.Role != RoleWorker || c.ReconnectInterval != DefaultReconnectInterval ||
		c.ReconnectTimeout != DefaultReconnectTimeout || c.MaxReconnect != DefaultMaxReconnect || c.Clock == nil || c.Rand == nil || c.Logger == nil {
		t.Fatalf("withDefaults(minimal) = %+v; want WAN, worker and the documented defaults", c)
	}
	kr, _ := memberlist.NewKeyring(nil, testKey)
	for _, tc := range []struct {
		field string
		cfg   Config
	}{
		{"name", Config{Region: "r"}},
		{"profile", Config{Name: "n", Region: "r", Profile: "moon"}},
		{"reconnect_interval", Config{Name: "n", Region: "r", ReconnectInterval: -time.Second}},
		{"reconnect_backoff_max", Config{Name: "n", Region: "r", ReconnectInterval: time.Hour, ReconnectBackoffMax: time.Minute}},
		{"max_reconnect", Config{Name: "n", Region: "r", MaxReconnect: -1}},
		{"bind_port", Config{Name: "n", Region: "r", BindPort: 70000}},
		{"secret_key", Config{Name: "n", Region: "r", SecretKey: []byte("short")}},
		{"disable_encryption", Config{Name: "n", Region: "r", DisableEncryption: true, Keyring: kr}},
	} {
		_, err := tc.cfg.withDefaults()
		var fe *placement.FieldError
		if !errors.As(err, &fe) || fe.Field != tc.field {
			t.Errorf("withDefaults(bad %s) = %v; want an error naming %q", tc.field, err, tc.field)
		}
	}
	if _, err := Start(Config{Region: "r"}); err == nil || !strings.Contains(err.Error(), `"name"`) {
		t.Errorf("Start without a name = %v; want an error naming the field", err)
	}
	if _, err := Start(Config{Name: "n", Region: "r", Role: "captain"}); err == nil || !strings.Contains(err.Error(), `"role"`) {
		t.Errorf("Start with a bad role = %v; want an error naming the field", err)
	}
}

func TestSuspicionMaxTimeout(t *testing.T) {
	conf := memberlist.DefaultWANConfig() // SuspicionMult 6, max mult 6, probe 5s
	for _, tc := range []struct {
		n    int
		want time.Duration
	}{
		{1, 6 * 6 * 5 * time.Second},  // scale floors at 1
		{10, 6 * 6 * 5 * time.Second}, // log10(10) = 1
		{100, 2 * 6 * 6 * 5 * time.Second},
	} {
		if got := suspicionMaxTimeout(conf, tc.n); got != tc.want {
			t.Errorf("suspicionMaxTimeout(WAN, %d) = %v; want %v", tc.n, got, tc.want)
		}
		if got := suspicionMinTimeout(conf, tc.n); got != tc.want/6 {
			t.Errorf("suspicionMinTimeout(WAN, %d) = %v; want %v", tc.n, got, tc.want/6)
		}
	}
}

func TestMemberlistLogLevels(t *testing.T) {
	var buf bytes.Buffer
	l := newMemberlistLogger(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug - 4})))
	l.Printf("[ERR] memberlist: Failed to send gossip to 1.2.3.4:7946")
	l.Printf("[WARN] memberlist: Refuting a suspect message")
	l.Printf("[INFO] memberlist: Marking x as failed")
	l.Printf("[DEBUG] memberlist: Stream connection")
	l.Printf("no level")
	out := buf.String()
	for _, want := range []string{
		`level=WARN msg="memberlist: Failed to send gossip`,
		`level=INFO msg="memberlist: Refuting`,
		`level=DEBUG msg="memberlist: Marking`,
		`level=DEBUG-4 msg="memberlist: Stream`,
		`level=DEBUG-4 msg="no level"`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("memberlist log output lacks %q:\n%s", want, out)
		}
	}
}

func TestKeys(t *testing.T) {
	k, err := GenerateKey()
	if err != nil || len(k) != KeySize {
		t.Fatalf("GenerateKey = %d bytes, %v", len(k), err)
	}
	back, err := ParseKey(" " + EncodeKey(k) + "\n")
	if err != nil || !bytes.Equal(back, k) {
		t.Fatalf("ParseKey(EncodeKey(k)) = %x, %v; want k", back, err)
	}
	if _, err := ParseKey("not base64!"); err == nil {
		t.Error("ParseKey(garbage) = nil error")
	}
	if _, err := ParseKey(EncodeKey([]byte("short"))); err == nil {
		t.Error("ParseKey(5-byte key) = nil error; want the length checked")
	}
}
