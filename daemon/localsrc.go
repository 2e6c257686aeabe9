package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netlink"
)

// Which DNS queries come from this host's containers, the only clients
// whose outside names meshnet forwards. With the engine's "dns" pointed at
// meshnet, every container of the host asks it: those on meshnet networks,
// on Docker's default bridge (directly) and on user-defined bridges
// (through Docker's resolver, from the container's namespace), and every
// `docker build` step. They all reach the DNS address through a bridge of
// this host: docker0, br-<id>, mnbr<vni>.
//
// A UDP query is judged by the interface it arrived on (dns
// Config.RecursionInterface): it must be one of those bridges. The source
// address alone would not do: a host on the underlay can write a
// container's address into a UDP packet sent to the DNS address (routed
// to this host, which accepts it on its underlay interface), and have this
// host query its upstreams for it (reflection, upstream abuse). A packet
// cannot choose the interface it arrives on. Both UDP and TCP queries must
// also come from an address of those bridges' subnets (AllowRecursion);
// for TCP, whose source the handshake proves, that is the whole check.
//
// The set is refreshed from the host's links whenever a link or address
// changes (netlink notifications) and every 30 s, never per query: the
// query path reads one atomic pointer (dns/doc.go: it takes no lock).

// localSet is one immutable snapshot of the container bridges.
type localSet struct {
	ifindex  map[int]bool   // container bridges
	prefixes []netip.Prefix // their subnets, and this host's meshnet subnets
}

// localSources keeps the current localSet.
type localSources struct {
	set      atomic.Pointer[localSet]
	underlay netip.Addr
	// extra adds prefixes known otherwise: this host's meshnet subnets,
	// allowed even before their bridge holds its gateway address.
	extra func() []netip.Prefix
	log   *slog.Logger
}

func (l *localSources) interfaceOK(ifindex int) bool {
	s := l.set.Load()
	return s != nil && s.ifindex[ifindex]
}

func (l *localSources) sourceOK(src netip.Addr) bool {
	s := l.set.Load()
	if s == nil {
		return false
	}
	for _, p := range s.prefixes {
		if p.Contains(src) {
			return true
		}
	}
	return false
}

// linkInfo is what the classification needs of one link.
type linkInfo struct {
	index, master int
	name, kind    string
	addrs         []netip.Prefix
}

// containerBridges picks the links containers reach this host through: a
// bridge that does not hold the underlay address and whose ports are all
// veths (containers' host ends), or also VXLAN devices on meshnet's own
// bridges (mnbr*, whose VXLAN port carries only mesh members' traffic).
// A bridge with any other port (a physical NIC, a tap) is a LAN, not a
// container bridge; matching by structure rather than Docker's names also
// covers bridges named with com.docker.network.bridge.name.
func containerBridges(links []linkInfo, underlay netip.Addr) *localSet {
	bridges := map[int]linkInfo{}
	for _, l := range links {
		if l.kind == "bridge" {
			bridges[l.index] = l
		}
	}
	for _, l := range links {
		br, ok := bridges[l.master]
		if !ok {
			continue
		}
		switch {
		case l.kind == "veth":
		case l.kind == "vxlan" && strings.HasPrefix(br.name, "mnbr"):
		default:
			delete(bridges, l.master)
		}
	}
	s := &localSet{ifindex: map[int]bool{}}
	for idx, br := range bridges {
		if slices.ContainsFunc(br.addrs, func(p netip.Prefix) bool { return p.Addr() == underlay }) {
			continue
		}
		s.ifindex[idx] = true
		for _, p := range br.addrs {
			// Every link has an fe80::/64: it says nothing of containers.
			if !p.Addr().IsLinkLocalUnicast() {
				s.prefixes = append(s.prefixes, p.Masked())
			}
		}
	}
	return s
}

// readLinks lists the links of the daemon's network namespace with their
// addresses.
func readLinks() ([]linkInfo, error) {
	links, err := netlink.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("list addresses: %w", err)
	}
	byLink := map[int][]netip.Prefix{}
	for _, a := range addrs {
		if a.IPNet == nil {
			continue
		}
		ip, ok := netip.AddrFromSlice(a.IPNet.IP)
		if !ok {
			continue
		}
		ones, _ := a.IPNet.Mask.Size()
		byLink[a.LinkIndex] = append(byLink[a.LinkIndex], netip.PrefixFrom(ip.Unmap(), ones))
	}
	out := make([]linkInfo, 0, len(links))
	for _, l := range links {
		at := l.Attrs()
		out = append(out, linkInfo{index: at.Index, master: at.MasterIndex, name: at.Name, kind: l.Type(), addrs: byLink[at.Index]})
	}
	return out, nil
}

func (l *localSources) refresh() error {
	links, err := readLinks()
	if err != nil {
		return err
	}
	s := containerBridges(links, l.underlay)
	if l.extra != nil {
		s.prefixes = append(s.prefixes, l.extra()...)
	}
	l.set.Store(s)
	return nil
}

// localRefresh is the re-read without notifications; localSettle lets a
// burst of notifications (a container start changes several links) end
// before the links are read again.
const (
	localRefresh = 30 * time.Second
	localSettle  = 100 * time.Millisecond
)

// run keeps the set current until ctx is done.
func (l *localSources) run(ctx context.Context) error {
	l.refreshLogged()
	t := time.NewTicker(localRefresh)
	defer t.Stop()
	var (
		settle <-chan time.Time
		sub    *linkSubscription
	)
	defer func() { sub.close() }()
	for {
		if sub == nil {
			// Again at every tick until it works: without it a new bridge
			// waits for the next tick.
			sub = l.subscribe()
		}
		select {
		case <-ctx.Done():
			return nil
		case _, ok := <-sub.links():
			if !ok {
				sub.close()
				sub = nil
			}
			if settle == nil {
				settle = time.After(localSettle)
			}
		case _, ok := <-sub.addrs():
			if !ok {
				sub.close()
				sub = nil
			}
			if settle == nil {
				settle = time.After(localSettle)
			}
		case <-settle:
			settle = nil
			l.refreshLogged()
		case <-t.C:
			l.refreshLogged()
		}
	}
}

// linkSubscription is netlink's link and address notifications; nil
// (no subscription) blocks forever on both channels.
type linkSubscription struct {
	done   chan struct{}
	linkCh chan netlink.LinkUpdate
	addrCh chan netlink.AddrUpdate
}

func (l *localSources) subscribe() *linkSubscription {
	s := &linkSubscription{done: make(chan struct{}), linkCh: make(chan netlink.LinkUpdate, 64), addrCh: make(chan netlink.AddrUpdate, 64)}
	onErr := func(err error) { l.log.Debug("netlink notifications for DNS recursion", "err", err) }
	err := netlink.LinkSubscribeWithOptions(s.linkCh, s.done, netlink.LinkSubscribeOptions{ErrorCallback: onErr})
	if err == nil {
		err = netlink.AddrSubscribeWithOptions(s.addrCh, s.done, netlink.AddrSubscribeOptions{ErrorCallback: onErr})
	}
	if err != nil {
		close(s.done)
		l.log.Warn("no link notifications: container bridges for DNS recursion are re-read every "+localRefresh.String(), "err", err)
		return nil
	}
	return s
}

func (s *linkSubscription) links() <-chan netlink.LinkUpdate {
	if s == nil {
		return nil
	}
	return s.linkCh
}

func (s *linkSubscription) addrs() <-chan netlink.AddrUpdate {
	if s == nil {
		return nil
	}
	return s.addrCh
}

func (s *linkSubscription) close() {
	if s != nil {
		close(s.done)
	}
}

func (l *localSources) refreshLogged() {
	if err := l.refresh(); err != nil {
		l.log.Warn("reading this host's container bridges (DNS recursion)", "err", err)
	}
}
