package dataplane

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/google/nftables"
)

// When Docker turns IP forwarding on itself, it also sets the FORWARD policy
// of iptables' filter table to DROP: forwarding would otherwise route
// anything that reaches the host between all of its interfaces. When
// forwarding is already on, Docker leaves the policy alone. meshnetd starts
// before the engine (deploy/systemd, a reboot), and turns forwarding on for
// its networks: Docker then found it on and left the host forwarding
// everything. So meshnet does what Docker does, when it is the one that turns
// forwarding on (Options.GuardForwarding): the policy becomes DROP, in the
// family whose forwarding it turns on, before it does.

// forwardingSysctl is the switch each iptables family's FORWARD guards.
var forwardingSysctl = map[nftables.TableFamily]string{
	nftables.TableFamilyIPv4: "net/ipv4/ip_forward",
	nftables.TableFamilyIPv6: "net/ipv6/conf/all/forwarding",
}

// enableForwarding turns forwarding of fam on. With guard, and forwarding
// off so far, it first sets the family's FORWARD policy to DROP.
func (d *Kernel) enableForwarding(fam nftables.TableFamily, guard bool) error {
	path := forwardingSysctl[fam]
	if guard {
		on, err := d.sysctlIs(path, "1")
		if err != nil {
			return err
		}
		if !on {
			if err := d.closeForwardPolicy(fam); err != nil {
				return fmt.Errorf("turning forwarding on: %w; left off", err)
			}
		}
	}
	return d.writeSysctls([]sysctl{{path, "1"}})
}

// sysctlIs reports whether a /proc/sys setting of the dataplane's namespace
// holds value. A setting that does not exist (IPv6 off) holds nothing.
func (d *Kernel) sysctlIs(path, value string) (bool, error) {
	var is bool
	err := d.inNetNS(func() error {
		b, err := os.ReadFile(filepath.Join("/proc/sys", path))
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read sysctl %s: %w", path, err)
		}
		is = string(bytes.TrimSpace(b)) == value
		return nil
	})
	return is, err
}

// closeForwardPolicy sets the policy of chain FORWARD in fam's table filter
// to DROP, creating both as iptables-nft does when they are missing (the
// engine's own iptables calls then find them).
func (d *Kernel) closeForwardPolicy(fam nftables.TableFamily) error {
	chains, err := d.nft.ListChainsOfTableFamily(fam)
	if err != nil {
		return fmt.Errorf("list nftables chains: %w", err)
	}
	drop := nftables.ChainPolicyDrop
	t := &nftables.Table{Name: iptFilterTable, Family: fam}
	fwd := &nftables.Chain{Name: iptForward, Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter}
	found := false
	for _, c := range chains {
		if c.Table.Name == iptFilterTable && c.Name == iptForward {
			if c.Policy != nil && *c.Policy == drop {
				return nil
			}
			fwd.Type, fwd.Hooknum, fwd.Priority = c.Type, c.Hooknum, c.Priority
			found = true
		}
	}
	if !found {
		d.nft.AddTable(t)
	}
	fwd.Policy = &drop
	d.nft.AddChain(fwd)
	if err := d.nft.Flush(); err != nil {
		return fmt.Errorf("set the FORWARD policy of table %s filter to DROP: %w", familyName(fam), err)
	}
	d.changed(fmt.Sprintf("set the FORWARD policy of table %s filter to DROP (forwarding was off; Docker does the same when it turns it on)", familyName(fam)))
	return nil
}

// familyName is a table family as nft(8) writes it.
func familyName(fam nftables.TableFamily) string {
	switch fam {
	case nftables.TableFamilyIPv6:
		return "ip6"
	case nftables.TableFamilyINet:
		return "inet"
	case nftables.TableFamilyBridge:
		return "bridge"
	case nftables.TableFamilyNetdev:
		return "netdev"
	case nftables.TableFamilyARP:
		return "arp"
	}
	return "ip"
}
