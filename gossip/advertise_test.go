package gossip

import (
	"bufio"
	"net"
	"strings"
	"testing"
)

func TestPickAdvertiseIP(t *testing.T) {
	up := net.FlagUp | net.FlagBroadcast | net.FlagMulticast
	lo := ifaceAddr{iface: "lo", flags: net.FlagUp | net.FlagLoopback, ip: net.ParseIP("127.0.0.1")}
	addr := func(iface, ip string) ifaceAddr { return ifaceAddr{iface: iface, flags: up, ip: net.ParseIP(ip)} }
	eth0 := map[string]bool{"eth0": true}
	for _, tc := range []struct {
		name     string
		addrs    []ifaceAddr
		defaults map[string]bool
		want     string
	}{
		// The machine the bug was seen on: memberlist's GetPrivateIP took
		// the ULA, the only "forwardable" private address, and peers bound
		// to 127.0.0.1 could not send to it.
		{"IPv4 over a private IPv6 address on the default route",
			[]ifaceAddr{lo, addr("eth0", "192.0.2.2"), addr("eth0", "fd00::2"), addr("eth0", "fe80::fc:ff:fe00:1")}, eth0, "192.0.2.2"},
		{"private over public", []ifaceAddr{lo, addr("eth0", "203.0.113.7"), addr("eth1", "10.1.2.3")}, eth0, "10.1.2.3"},
		{"private on the default route over other private",
			[]ifaceAddr{lo, addr("docker0", "172.17.0.1"), addr("eth0", "192.168.1.20")}, eth0, "192.168.1.20"},
		{"shared address space counts as private", []ifaceAddr{addr("eth0", "198.51.100.1"), addr("tun0", "100.64.3.4")}, eth0, "100.64.3.4"},
		{"first of equals without routing information", []ifaceAddr{addr("eth0", "10.0.0.5"), addr("eth1", "10.0.1.5")}, nil, "10.0.0.5"},
		{"interfaces that are down do not count",
			[]ifaceAddr{{iface: "eth0", flags: net.FlagBroadcast, ip: net.ParseIP("10.0.0.5")}, addr("eth1", "203.0.113.9")}, eth0, "203.0.113.9"},
		{"link-local IPv4 does not count", []ifaceAddr{lo, addr("eth0", "169.254.10.10")}, eth0, "127.0.0.1"},
		{"loopback without IPv4", []ifaceAddr{lo, addr("eth0", "fd00::2")}, eth0, "127.0.0.1"},
		{"loopback with no interfaces", nil, nil, "127.0.0.1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := pickAdvertiseIP(tc.addrs, tc.defaults)
			if !got.Equal(net.ParseIP(tc.want)) || got.To4() == nil {
				t.Errorf("pickAdvertiseIP = %v, want %s", got, tc.want)
			}
		})
	}
}

func TestParseDefaultRoutes(t *testing.T) {
	table := `Iface	Destination	Gateway 	Flags	RefCnt	Use	Metric	Mask		MTU	Window	IRTT
eth0	00000000	010200C0	0003	0	0	0	00000000	0	0	0
eth0	000200C0	00000000	0001	0	0	0	00FFFFFF	0	0	0
docker0	000011AC	00000000	0001	0	0	0	0000FFFF	0	0	0
wg0	00000000	00000000	0001	0	0	50	00000080	0	0	0
`
	got := parseDefaultRoutes(bufio.NewScanner(strings.NewReader(table)))
	if len(got) != 1 || !got["eth0"] {
		t.Errorf("default route interfaces = %v, want eth0 only", got)
	}
}

// TestWildcardBindAdvertisesAdvertiseIP starts an agent on every interface
// with no advertise address: it must advertise AdvertiseIP, the address the
// node's other channels advertise, not memberlist's own pick.
func TestWildcardBindAdvertisesAdvertiseIP(t *testing.T) {
	if testing.Short() {
		t.Skip("uses real sockets")
	}
	a, err := Start(Config{Name: "a", Region: "local", Profile: ProfileLocal, BindAddr: "0.0.0.0", SecretKey: testKey, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Shutdown()
	h, _, err := net.SplitHostPort(a.LocalMember().Address())
	if err != nil {
		t.Fatal(err)
	}
	if want := AdvertiseIP(); !net.ParseIP(h).Equal(want) {
		t.Errorf("agent bound to 0.0.0.0 advertises %s, want %s", h, want)
	}
}
