package gossip

import (
	"bufio"
	"net"
	"os"
	"strings"
)

// AdvertiseIP is the address a node bound to every interface (0.0.0.0)
// advertises when no advertise address is given. Gossip, Raft, libp2p and
// the node-to-node API all take it from here, so that a node is reached at
// one address whatever the channel.
//
// It prefers, as Consul and Nomad do with go-sockaddr's GetPrivateIP, a
// private address of an interface that is up, one on the interface of the
// default route first; but only IPv4: memberlist left to itself may pick a
// private IPv6 address (a ULA on the default route), which a peer whose
// socket is bound to an IPv4 address cannot send to ("non-IPv4 address"),
// while Raft and libp2p listen on IPv4. Without a private IPv4 address it
// takes any other global IPv4 address of an interface that is up (default
// route first), and without any, the loopback address: a one-machine
// cluster.
func AdvertiseIP() net.IP {
	return pickAdvertiseIP(interfaceAddrs(), defaultRouteInterfaces())
}

// ifaceAddr is one address of a network interface.
type ifaceAddr struct {
	iface string
	flags net.Flags
	ip    net.IP
}

// cgnat is RFC 6598's shared address space, private like RFC 1918's (and
// counted so by go-sockaddr) though net.IP.IsPrivate leaves it out.
var cgnat = &net.IPNet{IP: net.IPv4(100, 64, 0, 0).To4(), Mask: net.CIDRMask(10, 32)}

// pickAdvertiseIP ranks addrs as AdvertiseIP describes; defaults names the
// interfaces that carry an IPv4 default route. Among equals the first wins,
// so the choice is stable across restarts.
func pickAdvertiseIP(addrs []ifaceAddr, defaults map[string]bool) net.IP {
	var best net.IP
	bestRank := 4
	for _, a := range addrs {
		ip := a.ip.To4()
		if ip == nil || a.flags&net.FlagUp == 0 || a.flags&net.FlagLoopback != 0 ||
			ip.IsLoopback() || ip.IsUnspecified() || ip.IsLinkLocalUnicast() || ip.IsMulticast() {
			continue
		}
		rank := 0
		if !ip.IsPrivate() && !cgnat.Contains(ip) {
			rank += 2
		}
		if !defaults[a.iface] {
			rank++
		}
		if rank < bestRank {
			best, bestRank = ip, rank
		}
	}
	if best == nil {
		return net.IPv4(127, 0, 0, 1).To4()
	}
	return best
}

// interfaceAddrs lists the addresses of the machine's interfaces.
func interfaceAddrs() []ifaceAddr {
	ifaces, err := net.Interfaces()
	if err != nil {
		return nil
	}
	var out []ifaceAddr
	for _, ifc := range ifaces {
		addrs, err := ifc.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok {
				out = append(out, ifaceAddr{iface: ifc.Name, flags: ifc.Flags, ip: ipn.IP})
			}
		}
	}
	return out
}

// defaultRouteInterfaces names the interfaces of the IPv4 default routes,
// from Linux's routing table. Elsewhere (or if the table cannot be read) it
// is empty, and the choice then goes by address alone.
func defaultRouteInterfaces() map[string]bool {
	f, err := os.Open("/proc/net/route")
	if err != nil {
		return nil
	}
	defer f.Close()
	return parseDefaultRoutes(bufio.NewScanner(f))
}

// parseDefaultRoutes reads /proc/net/route: a header, then one route a line
// (interface, destination, gateway, flags, ..., mask, ...) with addresses in
// hex. A default route has destination and mask 0.
func parseDefaultRoutes(sc *bufio.Scanner) map[string]bool {
	out := map[string]bool{}
	header := true
	for sc.Scan() {
		if header {
			header = false
			continue
		}
		f := strings.Fields(sc.Text())
		if len(f) >= 8 && f[1] == "00000000" && f[7] == "00000000" {
			out[f[0]] = true
		}
	}
	return out
}
