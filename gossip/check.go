package gossip

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/netip"
)

// maxVNI is the largest 24-bit VXLAN network identifier.
const maxVNI = 1<<24 - 1

// checkValue rejects a peer's record whose value would make a consumer
// fail or misbehave: it runs where records enter the store (Merge), so
// that one bad record is dropped once here instead of reaching the
// dataplane, DNS or IPAM of every node at the same moment. It checks the
// kinds whose values this package defines; tombstones carry no value, and
// kinds owned elsewhere (ipam's) are checked by their owners.
func checkValue(r Record) error {
	if r.Deleted {
		return nil
	}
	var err error
	switch r.Kind {
	case KindNode:
		err = checkNode(r)
	case KindNetwork:
		err = checkNetwork(r)
	case KindEndpoint:
		err = checkEndpoint(r)
	case KindRemoval:
		err = checkRemoval(r)
	}
	if err != nil {
		return fmt.Errorf("%s record %s: %w", r.Kind, r.Key, err)
	}
	return nil
}

func checkNode(r Record) error {
	if r.ID != "" {
		return fmt.Errorf("node record with ID %q (a node has one record, ID \"\")", r.ID)
	}
	var n NodeInfo
	if err := r.Decode(&n); err != nil {
		return err
	}
	if _, err := netip.ParseAddr(n.Addr); err != nil {
		return fmt.Errorf("address: %w", err)
	}
	if err := checkPort(n.GossipPort); err != nil {
		return fmt.Errorf("gossip port: %w", err)
	}
	if err := checkPort(n.WireGuardPort); err != nil {
		return fmt.Errorf("WireGuard port: %w", err)
	}
	if n.WireGuardKey != "" {
		if b, err := base64.StdEncoding.DecodeString(n.WireGuardKey); err != nil || len(b) != 32 {
			return fmt.Errorf("WireGuard key %q is not a base64 32-byte key", n.WireGuardKey)
		}
	}
	if n.NodeKey != "" {
		if _, err := decodeNodeKey(n.NodeKey); err != nil {
			return err
		}
	}
	return nil
}

func checkPort(p int) error {
	if p < 0 || p > 65535 {
		return fmt.Errorf("%d is out of range", p)
	}
	return nil
}

func checkNetwork(r Record) error {
	var n NetworkInfo
	if err := r.Decode(&n); err != nil {
		return err
	}
	subnet, err := netip.ParsePrefix(n.Subnet)
	if err != nil {
		return fmt.Errorf("subnet: %w", err)
	}
	if subnet != subnet.Masked() {
		return fmt.Errorf("subnet %s has host bits set", subnet)
	}
	gw, err := netip.ParseAddr(n.Gateway)
	if err != nil {
		return fmt.Errorf("gateway: %w", err)
	}
	if !subnet.Contains(gw) {
		return fmt.Errorf("gateway %s is outside subnet %s", gw, subnet)
	}
	if n.VNI > maxVNI {
		return fmt.Errorf("VNI %d is over the 24-bit limit %d", n.VNI, maxVNI)
	}
	if n.MTU < 0 || n.MTU > 65535 {
		return fmt.Errorf("MTU %d is out of range", n.MTU)
	}
	return nil
}

func checkEndpoint(r Record) error {
	var e EndpointInfo
	if err := r.Decode(&e); err != nil {
		return err
	}
	subnet, err := netip.ParsePrefix(e.Subnet)
	if err != nil {
		return fmt.Errorf("subnet: %w", err)
	}
	// ipam also takes "10.42.0.5/16" (ipam/doc.go); the daemon writes
	// the bare address.
	addr, err := netip.ParseAddr(e.Addr)
	if p, perr := netip.ParsePrefix(e.Addr); err != nil && perr == nil {
		addr, err = p.Addr(), nil
	}
	if err != nil {
		return fmt.Errorf("address: %w", err)
	}
	if !subnet.Contains(addr) {
		return fmt.Errorf("address %s is outside subnet %s", addr, subnet)
	}
	// No MAC: nothing to forward to (the daemon skips it; ipam counts
	// the address). A MAC that is there must be an Ethernet one.
	if e.MAC != "" {
		mac, err := net.ParseMAC(e.MAC)
		if err != nil {
			return fmt.Errorf("MAC: %w", err)
		}
		if len(mac) != 6 {
			return fmt.Errorf("MAC %s is not an Ethernet address", e.MAC)
		}
	}
	return nil
}

func checkRemoval(r Record) error {
	if r.ID == "" {
		return errors.New("removal of no node (empty ID)")
	}
	var rm Removal
	if err := r.Decode(&rm); err != nil {
		return err
	}
	// A removal hides the removed node's records up to UpTo. Its writer
	// can only know of versions up to its own clock at the write, so an
	// UpTo above the record's own version hides writes yet to come.
	if rm.UpTo > r.Version {
		return fmt.Errorf("removal up to version %d, after the removal itself (%d)", rm.UpTo, r.Version)
	}
	return nil
}
