package dataplane

import (
	"errors"
	"fmt"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
)

// Service VIPs in a client container's own namespace ("Service VIPs" in
// doc.go): the sandbox package holds an nftables connection into every
// local container on a meshnet network and writes this table through it.
//
//	table ip meshnet-vip {
//		set vips { type ipv4_addr; elements = { every VIP of the container's networks } }
//		chain output { type nat hook output priority -110;
//			ip daddr VIP counter dnat to numgen inc mod N map { 0: R0, ... }   # per VIP with replicas
//		}
//		chain refuse { type filter hook output priority filter;           # only with such a VIP
//			ip daddr VIP counter reject                                        # per VIP without replicas
//		}
//	}
//
// The refuse chain exists only while a VIP has no replica: a filter chain
// at the output hook runs for every packet the container sends, where the
// nat chain runs once per connection, and it is the one per-packet cost of
// the table (a set lookup per packet, measured by perf in the benchmark's
// containers).
// The container's own conntrack then holds the choice and un-NATs the
// replica's reply, wherever the reply comes from: nothing on the client's
// host has to see the connection, which is what lets a network's bridge
// leave the host's netfilter (docs/netns-dataplane.md). The host's table
// (vip.go) stays for containers whose namespace meshnet has not reached.
// The nat chain runs at -110 like the host's, before the engine's DNAT of
// 127.0.0.11 (-100), which it never matches anyway.
const (
	clientVIPOut    = "output"
	clientVIPRefuse = "refuse"
)

// VIPsEqual reports whether two VIP lists ask for the same table.
func VIPsEqual(a, b []VIP) bool { return vipsEqual(a, b) }

// WriteClientVIPs makes table ip meshnet-vip in the namespace conn is
// bound to hold exactly vips (IPv4 only, as the host's table); an empty
// list removes the table. The table is replaced whole in one transaction
// (add, delete, add: the kernel applies it atomically, and a table that
// did not exist is no error), so no connection sees half of it, and an
// established connection keeps the replica its conntrack entry holds.
func WriteClientVIPs(conn *nftables.Conn, vips []VIP) error {
	vips = normalizedVIPs(vips)
	t := &nftables.Table{Family: nftables.TableFamilyIPv4, Name: vipTableName}
	conn.AddTable(t)
	conn.DelTable(t)
	if len(vips) == 0 {
		if err := conn.Flush(); err != nil {
			return fmt.Errorf("delete nftables table ip %s in the container: %w", vipTableName, err)
		}
		return nil
	}
	conn.AddTable(t)
	if err := addClientVIPs(conn, t, vips); err != nil {
		// What was queued goes out with a delete after it: the container
		// is left on the host's table rather than on half of its own.
		conn.DelTable(t)
		return errors.Join(err, conn.Flush())
	}
	if err := conn.Flush(); err != nil {
		return fmt.Errorf("write nftables table ip %s in the container (%d VIPs): %w", vipTableName, len(vips), err)
	}
	return nil
}

func addClientVIPs(conn *nftables.Conn, t *nftables.Table, vips []VIP) error {
	out := conn.AddChain(&nftables.Chain{Table: t, Name: clientVIPOut, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityRef(vipPrioDNAT)})
	// No conntrack mark: nothing in the container SNATs.
	if _, err := addVIPRules(conn, t, out, vips, false); err != nil {
		return fmt.Errorf("in the container: %w", err)
	}
	var refuse *nftables.Chain
	for _, v := range vips {
		if len(v.Backends) > 0 {
			continue
		}
		if refuse == nil {
			refuse = conn.AddChain(&nftables.Chain{Table: t, Name: clientVIPRefuse, Type: nftables.ChainTypeFilter,
				Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityFilter})
		}
		conn.AddRule(&nftables.Rule{Table: t, Chain: refuse, UserData: ruleUserData(vipCommentReject + " " + v.Addr.String()),
			Exprs: vipReject(&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: v.Addr.AsSlice()})})
	}
	return nil
}
