package gossip

import (
	"bytes"
	"context"
	"fmt"
	"log"
	"log/slog"
	"math"
	"math/rand/v2"
	"time"

	"github.com/hashicorp/memberlist"
)

// Profile selects memberlist's timings.
type Profile string

const (
	// ProfileWAN suits nodes spread across regions (memberlist's
	// DefaultWANConfig: probe every 5 s with a 3 s timeout, gossip every
	// 500 ms to 4 nodes, push/pull every 60 s). It is the default.
	ProfileWAN Profile = "wan"
	// ProfileLAN suits one data centre (DefaultLANConfig).
	ProfileLAN Profile = "lan"
	// ProfileLocal suits a single machine (DefaultLocalConfig).
	ProfileLocal Profile = "local"
)

// Clock tells the time. The zero Config uses the system clock; inside a
// testing/synctest bubble the system clock is the bubble's virtual clock.
type Clock interface {
	Now() time.Time
}

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

// Defaults of Config.
const (
	DefaultReconnectInterval   = 30 * time.Second
	DefaultReconnectBackoffMax = 5 * time.Minute
	DefaultReconnectTimeout    = 24 * time.Hour
	DefaultTombstoneTimeout    = 24 * time.Hour
	DefaultMaxReconnect        = 1024
	// DefaultBindPort is memberlist's well-known port.
	DefaultBindPort = 7946
)

// Config configures an Agent. Name and Region are required; everything else
// has a default.
type Config struct {
	// Name is the node's unique name in the mesh.
	Name string
	// Region is the region the node runs in.
	Region string
	// Role is server (votes in the region's Raft group) or worker; default
	// worker.
	Role Role
	// HTTPAddr, RaftAddr, P2PAddr and P2PPeerID are announced to every
	// member in the node's metadata, with Version (the build version).
	HTTPAddr, RaftAddr, P2PAddr, P2PPeerID, Version string

	// BindAddr and BindPort are where memberlist listens (UDP and TCP) when
	// Transport is nil; BindAddr defaults to 0.0.0.0 and BindPort 0 picks a
	// free port (command-line front ends default it to DefaultBindPort).
	BindAddr string
	BindPort int
	// AdvertiseAddr and AdvertisePort are what peers use to reach this node;
	// default: the bind address, or AdvertiseIP when bound to every
	// interface (0.0.0.0 or ::).
	AdvertiseAddr string
	AdvertisePort int
	// Transport replaces memberlist's UDP/TCP transport (netsim provides
	// one). memberlist shuts it down on Shutdown.
	Transport memberlist.NodeAwareTransport

	// Profile selects memberlist's timings: "wan" (default), "lan", "local".
	Profile Profile

	// SecretKey (16, 24 or 32 bytes) or Keyring encrypts gossip. With
	// neither, Start generates a key (Agent.Keyring returns it) unless
	// DisableEncryption is set.
	SecretKey []byte
	Keyring   *memberlist.Keyring
	// DisableEncryption turns encryption off; every member must agree.
	DisableEncryption bool
	// DisableCompression turns off memberlist's LZW compression of gossip
	// messages. Compression saves WAN bandwidth at a CPU cost; a simulated
	// mesh, where CPU decides how fast virtual time runs and bandwidth is
	// plentiful, turns it off. Members with and without it interoperate:
	// memberlist marks each compressed message.
	DisableCompression bool

	// Logger receives the agent's logs; memberlist's own logs go to it at
	// debug level (one level lower than memberlist's own). Default: discard.
	Logger *slog.Logger

	// ReconnectInterval is the first delay before retrying a failed member;
	// retries back off exponentially (with jitter) up to ReconnectBackoffMax.
	ReconnectInterval   time.Duration
	ReconnectBackoffMax time.Duration
	// ReconnectTimeout is how long a failed member is retried, and kept in
	// the view, before it is forgotten (default 24 h).
	ReconnectTimeout time.Duration
	// TombstoneTimeout is how long a member that left stays in the view, and
	// how long removed records stay dead (default 24 h).
	TombstoneTimeout time.Duration
	// MaxReconnect bounds the number of failed members remembered (default
	// 1024); the oldest failures are forgotten first.
	MaxReconnect int

	// Clock stamps record versions and schedules; default the system clock.
	Clock Clock
	// Rand jitters reconnect schedules; default seeded from crypto/rand.
	// The agent owns it after Start.
	Rand *rand.Rand
}

// withDefaults returns a copy of c with defaults filled in, or an error
// naming the first invalid field.
func (c Config) withDefaults() (Config, error) {
	if err := checkName("name", c.Name, true); err != nil {
		return c, err
	}
	if c.Role == "" {
		c.Role = RoleWorker
	}
	if c.Profile == "" {
		c.Profile = ProfileWAN
	}
	switch c.Profile {
	case ProfileWAN, ProfileLAN, ProfileLocal:
	default:
		return c, fieldErr("profile", fmt.Sprintf("must be %q, %q or %q, got %q", ProfileWAN, ProfileLAN, ProfileLocal, c.Profile))
	}
	if c.BindAddr == "" {
		c.BindAddr = "0.0.0.0"
	}
	for _, d := range []struct {
		name string
		v    *time.Duration
		def  time.Duration
	}{
		{"reconnect_interval", &c.ReconnectInterval, DefaultReconnectInterval},
		{"reconnect_backoff_max", &c.ReconnectBackoffMax, DefaultReconnectBackoffMax},
		{"reconnect_timeout", &c.ReconnectTimeout, DefaultReconnectTimeout},
		{"tombstone_timeout", &c.TombstoneTimeout, DefaultTombstoneTimeout},
	} {
		if *d.v < 0 {
			return c, fieldErr(d.name, fmt.Sprintf("must not be negative, got %v", *d.v))
		}
		if *d.v == 0 {
			*d.v = d.def
		}
	}
	if c.ReconnectBackoffMax < c.ReconnectInterval {
		return c, fieldErr("reconnect_backoff_max", fmt.Sprintf("%v is below reconnect_interval %v", c.ReconnectBackoffMax, c.ReconnectInterval))
	}
	if c.MaxReconnect < 0 {
		return c, fieldErr("max_reconnect", fmt.Sprintf("must not be negative, got %d", c.MaxReconnect))
	}
	if c.MaxReconnect == 0 {
		c.MaxReconnect = DefaultMaxReconnect
	}
	if c.BindPort < 0 || c.BindPort > math.MaxUint16 {
		return c, fieldErr("bind_port", fmt.Sprintf("out of range: %d", c.BindPort))
	}
	if c.AdvertisePort < 0 || c.AdvertisePort > math.MaxUint16 {
		return c, fieldErr("advertise_port", fmt.Sprintf("out of range: %d", c.AdvertisePort))
	}
	if c.DisableEncryption && (len(c.SecretKey) > 0 || c.Keyring != nil) {
		return c, fieldErr("disable_encryption", "set together with a secret key or keyring")
	}
	if len(c.SecretKey) > 0 {
		if err := memberlist.ValidateKey(c.SecretKey); err != nil {
			return c, fieldErr("secret_key", err.Error())
		}
	}
	if c.Keyring != nil && len(c.Keyring.GetKeys()) == 0 {
		return c, fieldErr("keyring", "has no keys")
	}
	if c.Clock == nil {
		c.Clock = systemClock{}
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Rand == nil {
		c.Rand = rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	}
	return c, nil
}

// baseMemberlistConfig returns memberlist's defaults for a profile.
func baseMemberlistConfig(p Profile) *memberlist.Config {
	switch p {
	case ProfileLAN:
		return memberlist.DefaultLANConfig()
	case ProfileLocal:
		return memberlist.DefaultLocalConfig()
	}
	return memberlist.DefaultWANConfig()
}

// suspicionMinTimeout is memberlist's shortest suspicion timeout for n
// members, reached when enough peers confirm the suspicion: SuspicionMult ×
// max(1, log10 n) × ProbeInterval.
func suspicionMinTimeout(conf *memberlist.Config, n int) time.Duration {
	scale := math.Max(1, math.Log10(math.Max(1, float64(n))))
	return time.Duration(float64(conf.SuspicionMult) * scale * float64(conf.ProbeInterval))
}

// suspicionMaxTimeout is memberlist's longest suspicion timeout for n
// members (no confirmations): SuspicionMaxTimeoutMult × the shortest.
func suspicionMaxTimeout(conf *memberlist.Config, n int) time.Duration {
	return time.Duration(conf.SuspicionMaxTimeoutMult) * suspicionMinTimeout(conf, n)
}

// memberlistLogWriter turns memberlist's "[LEVEL] memberlist: ..." lines into
// slog records one level lower than memberlist's own: memberlist logs every
// failed probe of a partitioned peer as an error, which is routine for a
// mesh and reported by the agent's own member-failed logs.
type memberlistLogWriter struct{ log *slog.Logger }

func (w memberlistLogWriter) Write(p []byte) (int, error) {
	line := string(bytes.TrimRight(p, "\n"))
	level := slog.LevelDebug - 4
	for prefix, l := range map[string]slog.Level{
		"[ERR]":   slog.LevelWarn,
		"[WARN]":  slog.LevelInfo,
		"[INFO]":  slog.LevelDebug,
		"[DEBUG]": slog.LevelDebug - 4,
	} {
		if bytes.HasPrefix(p, []byte(prefix)) {
			level = l
			line = string(bytes.TrimSpace([]byte(line[len(prefix):])))
			break
		}
	}
	w.log.Log(context.Background(), level, line)
	return len(p), nil
}

func newMemberlistLogger(l *slog.Logger) *log.Logger {
	return log.New(memberlistLogWriter{log: l}, "", 0)
}
