package dataplane

import (
	"cmp"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// A meshnet bridge's own forwarding table is static: Apply writes an entry
// for every MAC the bridge should know (bridge fdb replace MAC dev PORT
// master static) and nothing is learned. Each local container's MAC points
// at its veth, each remote container's MAC at the vxlan port (where the
// vxlan device's own entry, fdbEntry, sends it on to the right host). With
// learning off and unknown-unicast flooding off on veths, a frame reaches
// exactly the container it is addressed to, and a container sending with
// another's MAC moves nothing. See doc.go, "Each container receives only its
// own unicast".

// brFDBEntry is one entry of a bridge's forwarding table: frames to MAC leave
// by Port. A bridge holds one entry per MAC (no VLANs here), so the key is
// (Bridge, MAC) and a MAC that moves port is rewritten, never doubled.
type brFDBEntry struct {
	Bridge string
	MAC    string
	Port   string
	// Static is what Apply writes (NUD_NOARP: never aged, never moved by
	// learning). Observed entries that are not static were learned.
	Static bool
}

type brFDBKey struct{ Bridge, MAC string }

func (e brFDBEntry) key() brFDBKey { return brFDBKey{e.Bridge, e.MAC} }

// planBrFDB returns the bridge entries to set (replace) and to delete on
// wanted bridges. A learned entry, or one on the wrong port, is replaced;
// an entry for a MAC no endpoint has is deleted, learned or not.
func planBrFDB(want, have kernelModel) (set, del []brFDBEntry) {
	bridges := wantedDevs(want, kindBridge)
	haveSet := map[brFDBEntry]bool{}
	for _, e := range have.BrFDB {
		haveSet[e] = true
	}
	wantKeys := map[brFDBKey]bool{}
	for _, e := range want.BrFDB {
		wantKeys[e.key()] = true
		if !haveSet[e] {
			set = append(set, e)
		}
	}
	for _, e := range have.BrFDB {
		if bridges[e.Bridge] && !wantKeys[e.key()] {
			del = append(del, e)
		}
	}
	slices.SortFunc(del, func(a, b brFDBEntry) int {
		return cmp.Or(strings.Compare(a.Bridge, b.Bridge), strings.Compare(a.MAC, b.MAC))
	})
	return set, del
}

// observeBrFDB reads the entries of meshnet bridges' tables that point at
// meshnet ports, from one dump of the whole AF_BRIDGE table (the kernel
// filters a dump by device only for requests iproute2 shapes differently, so
// one dump is cheaper than one per port). The kernel's own entries for each
// port's address (local, NUD_PERMANENT) are not meshnet's and are skipped, as
// are the devices' own tables (NTF_SELF: the vxlan device's, see fdbEntry).
func observeBrFDB(entries []netlink.Neigh, byIndex map[int]link) []brFDBEntry {
	var out []brFDBEntry
	for _, n := range entries {
		port, ok := byIndex[n.LinkIndex]
		if !ok || port.Master == "" || !strings.HasPrefix(port.Master, BridgePrefix) ||
			n.Flags&netlink.NTF_SELF != 0 || n.State&netlink.NUD_PERMANENT != 0 || n.Vlan != 0 ||
			len(n.HardwareAddr) != 6 {
			continue
		}
		out = append(out, brFDBEntry{
			Bridge: port.Master, MAC: n.HardwareAddr.String(), Port: port.Name,
			Static: n.State&netlink.NUD_NOARP != 0,
		})
	}
	return out
}

// brFDBOp replaces (bridge fdb replace MAC dev PORT master static) or deletes
// one bridge entry. Static, not permanent: the bridge treats a permanent
// entry as its own address and delivers such frames to the host.
func (d *Kernel) brFDBOp(e brFDBEntry, del bool) error {
	index, bridgePort, err := d.entryLink(e.Port)
	if err != nil {
		return err
	}
	mac, err := net.ParseMAC(e.MAC)
	if err != nil {
		return fmt.Errorf("bridge FDB entry on %s: %w", e.Port, err)
	}
	n := &netlink.Neigh{
		LinkIndex:    index,
		Family:       unix.AF_BRIDGE,
		State:        netlink.NUD_NOARP,
		Flags:        netlink.NTF_MASTER,
		HardwareAddr: mac,
	}
	if del {
		if err := d.nl.NeighDel(n); err != nil && !isGone(err) {
			return fmt.Errorf("delete bridge FDB entry %s on %s from %s: %w", e.MAC, e.Port, e.Bridge, err)
		}
		d.changed(fmt.Sprintf("delete bridge FDB entry %s on %s from %s", e.MAC, e.Port, e.Bridge))
		return nil
	}
	if err := d.nl.NeighSet(n); err != nil {
		if errors.Is(err, unix.EINVAL) && !bridgePort {
			return fmt.Errorf("set bridge FDB entry %s on %s: %s is not a bridge port yet: %w", e.MAC, e.Port, e.Port, err)
		}
		return fmt.Errorf("set bridge FDB entry %s on %s in %s: %w", e.MAC, e.Port, e.Bridge, err)
	}
	d.changed(fmt.Sprintf("set bridge FDB entry %s on %s in %s", e.MAC, e.Port, e.Bridge))
	return nil
}
