package sandbox

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// The redirect, inside one container's namespace:
//
//	table ip meshnet-dns {
//		set live { type ipv4_addr; flags timeout; elements = { 127.0.0.11 timeout 3s } }
//		chain output { type nat hook output priority -150;
//			meta mark 0x6d6e7364 accept
//			ip daddr 127.0.0.11 udp dport 53 ip daddr @live dnat to 127.0.0.11:<udp port>
//			ip daddr 127.0.0.11 tcp dport 53 ip daddr @live dnat to 127.0.0.11:<tcp port>
//		}
//	}
//
// Priority -150 runs before the engine's own DNAT of 127.0.0.11:53 to its
// resolver (iptables nat, -100): a connection is NATed once, by the first
// chain that maps it, so queries reach meshnet's sockets, and meshnet's own
// queries (marked) fall through to Docker's rule and its resolver.
//
// The live element expires unless the daemon renews it: a meshnetd that is
// killed and stays down hands the container back to Docker's resolver
// within a lease, instead of leaving it with no DNS at all.
const (
	tableName = "meshnet-dns"
	chainName = "output"
	setName   = "live"
	// natPriority runs before iptables' nat (NF_IP_PRI_NAT_DST, -100).
	natPriority = -150
)

// dockerResolver is the address of Docker's embedded resolver in every
// container on a user-defined network.
var dockerResolver = netip.MustParseAddr("127.0.0.11")

// redirect is the nftables connection into one container's namespace.
type redirect struct {
	conn  *nftables.Conn
	table *nftables.Table
	set   *nftables.Set
	lease time.Duration
}

func newRedirect(ns *os.File, lease time.Duration) (*redirect, error) {
	conn, err := nftables.New(nftables.WithNetNSFd(int(ns.Fd())), nftables.AsLasting())
	if err != nil {
		return nil, fmt.Errorf("nftables in the container's namespace: %w", err)
	}
	t := &nftables.Table{Family: nftables.TableFamilyIPv4, Name: tableName}
	return &redirect{
		conn:  conn,
		table: t,
		set:   &nftables.Set{Table: t, Name: setName, KeyType: nftables.TypeIPAddr, HasTimeout: true},
		lease: lease,
	}, nil
}

// install writes the whole table, replacing one an earlier meshnetd left.
func (r *redirect) install(udpPort, tcpPort uint16, mark uint32) error {
	r.conn.DelTable(r.table)
	_ = r.conn.Flush() // ENOENT when there is none: fine

	r.conn.AddTable(r.table)
	if err := r.conn.AddSet(r.set, []nftables.SetElement{r.element()}); err != nil {
		return fmt.Errorf("add set %s: %w", setName, err)
	}
	prio := nftables.ChainPriority(natPriority)
	ch := r.conn.AddChain(&nftables.Chain{
		Name: chainName, Table: r.table, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookOutput, Priority: &prio,
	})
	r.conn.AddRule(&nftables.Rule{Table: r.table, Chain: ch, Exprs: []expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(mark)},
		&expr.Verdict{Kind: expr.VerdictAccept},
	}})
	for _, p := range []struct {
		proto byte
		port  uint16
	}{{unix.IPPROTO_UDP, udpPort}, {unix.IPPROTO_TCP, tcpPort}} {
		r.conn.AddRule(&nftables.Rule{Table: r.table, Chain: ch, Exprs: dnatExprs(r.set, p.proto, p.port)})
	}
	if err := r.conn.Flush(); err != nil {
		return fmt.Errorf("install the DNS redirect: %w", err)
	}
	return nil
}

// dnatExprs: ip daddr 127.0.0.11 <proto> dport 53 ip daddr @live dnat to 127.0.0.11:port.
func dnatExprs(set *nftables.Set, proto byte, port uint16) []expr.Any {
	resolver := dockerResolver.AsSlice()
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: resolver},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(53)},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
		&expr.Lookup{SourceRegister: 1, SetName: set.Name, SetID: set.ID},
		&expr.Immediate{Register: 1, Data: resolver},
		&expr.Immediate{Register: 2, Data: binaryutil.BigEndian.PutUint16(port)},
		&expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1, RegProtoMin: 2, Specified: true},
	}
}

func (r *redirect) element() nftables.SetElement {
	return nftables.SetElement{Key: dockerResolver.AsSlice(), Timeout: r.lease}
}

// renew restarts the lease. An element cannot be re-added with a fresh
// timeout on every kernel, so it is deleted and added in one transaction;
// if it had already expired the delete fails the transaction, and it is
// added alone.
func (r *redirect) renew() error {
	e := []nftables.SetElement{r.element()}
	if err := r.conn.SetDeleteElements(r.set, e); err != nil {
		return err
	}
	if err := r.conn.SetAddElements(r.set, e); err != nil {
		return err
	}
	if err := r.conn.Flush(); err == nil {
		return nil
	}
	if err := r.conn.SetAddElements(r.set, e); err != nil {
		return err
	}
	if err := r.conn.Flush(); err != nil {
		return fmt.Errorf("renew the DNS redirect: %w", err)
	}
	return nil
}

// remove deletes the table: the container's queries go to Docker's
// resolver again at once. A namespace that is already gone is not an error.
func (r *redirect) remove() error {
	r.conn.DelTable(r.table)
	err := r.conn.Flush()
	if errors.Is(err, unix.ENOENT) {
		err = nil
	}
	return err
}

func (r *redirect) close() error { return r.conn.CloseLasting() }
