package dataplane

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"golang.org/x/sys/unix"
)

// The bridge bypass's tc program and its maps (doc.go, "The bridge
// bypass"). One program serves every bypassed device of the host; what
// differs per device is in hash maps the program looks up, so a
// container's start or stop writes a few map entries and attaches the
// program to one veth, whatever the number of containers.
//
//   - ports, keyed by the ifindex a frame arrives on: a container's
//     host-side veth (its own MAC and IPv4, its network's subnet, bridge MAC
//     and gateway, the device naming the network in dests, and where frames
//     for other hosts go), a vxlan device (its subnet) or the WireGuard
//     device.
//   - dests, keyed by the ifindex naming a network (its vxlan device, or a
//     wireguard network's bridge) and a MAC: the host-side veth of the
//     local container with that MAC on that network, or that the container
//     is kept on the bridge.
//   - addrs, keyed by IPv4 address: the local containers of wireguard
//     networks, which WireGuard hands over by address, not by MAC (their
//     veth, MAC, gateway MAC and subnet).
//
// Map values are laid out here and read by the program at these offsets.
// Addresses, masks and MACs are stored as the frame carries them, so the
// program compares loaded words without converting byte order.

// bypassKind says what a ports entry's device is.
type bypassKind uint32

const (
	bypassKindVeth      bypassKind = 1 // a container's veth on a vxlan network
	bypassKindVXLAN     bypassKind = 2 // a vxlan network's vxlan device
	bypassKindVethWG    bypassKind = 3 // a container's veth on a wireguard network
	bypassKindWireGuard bypassKind = 4 // the WireGuard device

	// kind, net, subnet, mask, addr, mac(6)+2, gateway mac(6)+2, out,
	// gateway, pad
	portValueSize = 48
	destKeySize   = 12 // net ifindex, mac(6)+2
	destValueSize = 8  // veth ifindex, flags
	destBridged   = 1  // flags: the container is kept on the bridge
	// veth ifindex, flags, mac(6)+2, gateway mac(6)+2, subnet, mask
	addrValueSize = 32

	bypassMaxEntries = 1 << 16

	// counters: frames sent to another host (to a vxlan or the WireGuard
	// device), frames handed into a container (for tests and meshctl; a
	// per-CPU array, so counting costs no lock).
	bypassCountToHost      = 0
	bypassCountToContainer = 1
)

// bypassPort is one ports entry, by device name; bypassDest one dests
// entry; bypassAddr one addrs entry.
type bypassPort struct {
	Kind bypassKind
	Dev  string
	// Net is the device whose ifindex names the network in dests (its
	// vxlan device, or a wireguard network's bridge); Out the one frames
	// for other hosts go to (the vxlan device, or the WireGuard device).
	Net, Out   string
	Subnet     netip.Prefix
	Addr       netip.Addr       // a veth's container address
	MAC        net.HardwareAddr // a veth's container MAC
	GatewayMAC net.HardwareAddr // the bridge's, for a veth
	Gateway    netip.Addr       // the bridge's address, for a veth on a wireguard network
}

type bypassDest struct {
	Net     string // as bypassPort.Net
	MAC     net.HardwareAddr
	Dev     string // the container's host-side veth
	Bridged bool
}

type bypassAddr struct {
	Addr       netip.Addr
	Dev        string // the container's host-side veth
	MAC        net.HardwareAddr
	GatewayMAC net.HardwareAddr
	Subnet     netip.Prefix
	Bridged    bool
}

func (p bypassPort) veth() bool { return p.Kind == bypassKindVeth || p.Kind == bypassKindVethWG }

// ifindexes resolves device names; "" is 0.
func ifindexes(ifindex func(string) (int, error), names ...string) ([]int, error) {
	out := make([]int, len(names))
	for i, n := range names {
		if n == "" {
			continue
		}
		idx, err := ifindex(n)
		if err != nil {
			return nil, err
		}
		out[i] = idx
	}
	return out, nil
}

// putPrefix writes a subnet's address and mask, as the frame carries them.
func putPrefix(b []byte, p netip.Prefix) {
	s := p.Masked().Addr().As4()
	copy(b[0:4], s[:])
	binary.BigEndian.PutUint32(b[4:8], ^uint32(0)<<(32-p.Bits()))
}

// encode lays the entry out as the program reads it; ifindex resolves
// device names.
func (p bypassPort) encode(ifindex func(string) (int, error)) (key, value []byte, err error) {
	idx, err := ifindexes(ifindex, p.Dev, p.Net, p.Out)
	if err != nil {
		return nil, nil, err
	}
	key = binary.NativeEndian.AppendUint32(nil, uint32(idx[0]))
	value = make([]byte, portValueSize)
	binary.NativeEndian.PutUint32(value[0:4], uint32(p.Kind))
	binary.NativeEndian.PutUint32(value[4:8], uint32(idx[1]))
	if p.Subnet.IsValid() {
		putPrefix(value[8:16], p.Subnet)
	}
	if p.veth() {
		a := p.Addr.As4()
		copy(value[16:20], a[:])
		copy(value[20:26], p.MAC)
		copy(value[28:34], p.GatewayMAC)
	}
	binary.NativeEndian.PutUint32(value[36:40], uint32(idx[2]))
	if p.Gateway.Is4() {
		g := p.Gateway.As4()
		copy(value[40:44], g[:])
	}
	return key, value, nil
}

func (d bypassDest) encode(ifindex func(string) (int, error)) (key, value []byte, err error) {
	idx, err := ifindexes(ifindex, d.Dev, d.Net)
	if err != nil {
		return nil, nil, err
	}
	key = make([]byte, destKeySize)
	binary.NativeEndian.PutUint32(key[0:4], uint32(idx[1]))
	copy(key[4:10], d.MAC)
	value = make([]byte, destValueSize)
	binary.NativeEndian.PutUint32(value[0:4], uint32(idx[0]))
	if d.Bridged {
		binary.NativeEndian.PutUint32(value[4:8], destBridged)
	}
	return key, value, nil
}

func (a bypassAddr) encode(ifindex func(string) (int, error)) (key, value []byte, err error) {
	idx, err := ifindexes(ifindex, a.Dev)
	if err != nil {
		return nil, nil, err
	}
	ip := a.Addr.As4()
	key = ip[:]
	value = make([]byte, addrValueSize)
	binary.NativeEndian.PutUint32(value[0:4], uint32(idx[0]))
	if a.Bridged {
		binary.NativeEndian.PutUint32(value[4:8], destBridged)
	}
	copy(value[8:14], a.MAC)
	copy(value[16:22], a.GatewayMAC)
	putPrefix(value[24:32], a.Subnet)
	return key, value, nil
}

// bypassProgram is the loaded program and its maps. The kernel keeps them
// while a tc filter holds the program, so frames keep their way past the
// bridge while meshnetd restarts; a new run loads its own and swaps it in
// on each device (a filter replaced in place), its maps written whole
// first.
type bypassProgram struct {
	prog                          *ebpf.Program
	ports, dests, addrs, counters *ebpf.Map
	id                            int
	// written are the map entries as last written (key → value), by map.
	written map[*ebpf.Map]map[string]string
}

// errBypassUnavailable marks a kernel that refuses the program (no BPF,
// no bpf_redirect_peer before Linux 5.10, or no CAP_BPF/CAP_SYS_ADMIN).
var errBypassUnavailable = errors.New("the kernel refused the bridge bypass's BPF program")

func loadBypassProgram() (*bypassProgram, error) {
	p := &bypassProgram{}
	var err error
	mk := func(name string, typ ebpf.MapType, k, v, n uint32, flags uint32) *ebpf.Map {
		if err != nil {
			return nil
		}
		var m *ebpf.Map
		m, err = ebpf.NewMap(&ebpf.MapSpec{Name: name, Type: typ, KeySize: k, ValueSize: v, MaxEntries: n, Flags: flags})
		if err != nil {
			err = fmt.Errorf("create map %s: %w", name, err)
		}
		return m
	}
	// Not preallocated: a host holds a handful of entries, not 65,536.
	p.ports = mk("mn_bp_ports", ebpf.Hash, 4, portValueSize, bypassMaxEntries, unix.BPF_F_NO_PREALLOC)
	p.dests = mk("mn_bp_dests", ebpf.Hash, destKeySize, destValueSize, bypassMaxEntries, unix.BPF_F_NO_PREALLOC)
	p.addrs = mk("mn_bp_addrs", ebpf.Hash, 4, addrValueSize, bypassMaxEntries, unix.BPF_F_NO_PREALLOC)
	p.counters = mk("mn_bp_counts", ebpf.PerCPUArray, 4, 8, 2, 0)
	if err == nil {
		p.written = map[*ebpf.Map]map[string]string{p.ports: {}, p.dests: {}, p.addrs: {}}
		p.prog, err = ebpf.NewProgram(&ebpf.ProgramSpec{Name: "mn_bypass", Type: ebpf.SchedCLS, License: "GPL",
			Instructions: bypassInstructions(p.ports.FD(), p.dests.FD(), p.addrs.FD(), p.counters.FD())})
		if err != nil {
			err = fmt.Errorf("load the program: %w", err)
		}
	}
	if err == nil {
		var info *ebpf.ProgramInfo
		if info, err = p.prog.Info(); err == nil {
			id, _ := info.ID()
			p.id = int(id)
		}
	}
	if err != nil {
		p.close()
		return nil, fmt.Errorf("%w: %w", errBypassUnavailable, err)
	}
	return p, nil
}

// close gives up this process's handles; the kernel keeps what a tc
// filter still holds.
func (p *bypassProgram) close() {
	if p.prog != nil {
		_ = p.prog.Close()
	}
	for _, m := range []*ebpf.Map{p.ports, p.dests, p.addrs, p.counters} {
		if m != nil {
			_ = m.Close()
		}
	}
}

// counts sums the per-CPU counters: frames sent to other hosts, frames
// handed into containers.
func (p *bypassProgram) counts() (toHosts, toContainers uint64, err error) {
	for i, dst := range []*uint64{&toHosts, &toContainers} {
		var per []uint64
		if err := p.counters.Lookup(uint32(i), &per); err != nil {
			return 0, 0, fmt.Errorf("read the bypass counters: %w", err)
		}
		for _, v := range per {
			*dst += v
		}
	}
	return toHosts, toContainers, nil
}

// Constants the program compares with or adds to values it loads from the
// frame, which are in network order: their values as this machine loads
// those bytes.
var (
	etherTypeIPv4 = int64(binary.NativeEndian.Uint16([]byte{0x08, 0x00}))
	// ttlOne is one unit of the TTL in the IPv4 header's (TTL, protocol)
	// word: what a decrement adds to its checksum (ip_decrease_ttl).
	ttlOne = int64(binary.NativeEndian.Uint16([]byte{0x01, 0x00}))
)

// bypassInstructions is the program, at tc ingress of every bypassed
// device, in direct-action mode; TC_ACT_OK (0) hands the frame on to the
// bridge (or, on the WireGuard device, to the host's routing) as if the
// program were not there. In C it would read:
//
//	port = ports[skb->ifindex]; if !port: ok
//	if port is the WireGuard device: goto wireguard
//	eth, ip = data; if data+34 > data_end: ok
//	if eth.type != IPv4 or eth.dst is multicast: ok
//	if port is a vxlan device:
//	    if ip.src not in port.subnet: ok                  // needs the host's conntrack
//	    d = dests[port.net, eth.dst]; if !d or d.bridged: ok
//	    count; return redirect_peer(d.veth)               // into the container
//	if eth.src != port.mac or ip.src != port.addr: ok    // forged: anti-spoofing judges
//	if ip.dst not in port.subnet: ok
//	if eth.dst == port.gateway_mac:                       // routed by the host
//	    if port is on a vxlan network: ok
//	    if ip.dst == port.gateway or addrs[ip.dst]: ok    // the host's, or a container here
//	    if ip.ttl <= 1: ok                                // the host says time exceeded
//	    ip.ttl--; count; return redirect(port.out, egress) // to WireGuard
//	d = dests[port.net, eth.dst]
//	if d: if d.bridged: ok; count; return redirect_peer(d.veth)
//	if port is on a wireguard network: ok
//	count; return redirect(port.out, egress)              // static FDB: unknown MACs dropped
//
//	wireguard:                                            // an IPv4 packet, no Ethernet header
//	    ip = data; if data+20 > data_end: ok
//	    a = addrs[ip.dst]; if !a or a.bridged: ok
//	    if ip.src not in a.subnet or ip.ttl <= 1: ok      // another network's: FORWARD judges
//	    push an Ethernet header: a.mac, a.gateway_mac, IPv4
//	    ip.ttl--; count; return redirect_peer(a.veth)
//
// redirect_peer hands the frame to the veth's peer in the container's
// namespace without a pass through the CPU's backlog queue; the frame's
// type is set to PACKET_HOST first, as the peer's own receive would set
// it (the destination MAC is the container's), or its IP stack drops it
// (WireGuard's packets are PACKET_HOST already). redirect to the WireGuard
// device, which has no link layer, strips the Ethernet header. The TTL is
// decremented and the header's checksum updated as the host's forwarding
// would (ip_decrease_ttl): WireGuard's hop is routed, not bridged.
func bypassInstructions(ports, dests, addrs, counters int) asm.Instructions {
	const (
		skbIfindex = 40 // offsetof(struct __sk_buff, ifindex)
		skbData    = 76
		skbDataEnd = 80
	)
	// Registers kept across helper calls: R6 ctx, R7 port value, R8 frame,
	// R9 subnet mask, then the target.
	//
	// lookup: R0 = map[the key already stored at R10+key].
	lookup := func(m int, key int16) asm.Instructions {
		return asm.Instructions{
			asm.LoadMapPtr(asm.R1, m),
			asm.Mov.Reg(asm.R2, asm.RFP),
			asm.Add.Imm(asm.R2, int32(key)),
			asm.FnMapLookupElem.Call(),
		}
	}
	lookupDest := func(label string) asm.Instructions {
		return append(asm.Instructions{
			asm.LoadMem(asm.R1, asm.R7, 4, asm.Word).WithSymbol(label),
			asm.StoreMem(asm.RFP, -16, asm.R1, asm.Word),
			asm.LoadMem(asm.R1, asm.R8, 0, asm.Word),
			asm.StoreMem(asm.RFP, -12, asm.R1, asm.Word),
			asm.LoadMem(asm.R1, asm.R8, 4, asm.Half),
			asm.StoreMem(asm.RFP, -8, asm.R1, asm.Half),
			asm.StoreImm(asm.RFP, -6, 0, asm.Half),
		}, lookup(dests, -16)...)
	}
	// lookupAddr: R0 = addrs[the IPv4 address at R8+off].
	lookupAddr := func(off int16) asm.Instructions {
		return append(asm.Instructions{
			asm.LoadMem(asm.R1, asm.R8, off, asm.Word),
			asm.StoreMem(asm.RFP, -24, asm.R1, asm.Word),
		}, lookup(addrs, -24)...)
	}
	count := func(label string, slot int32) asm.Instructions {
		// counters[slot]++ (R1-R5 are free; R0 is what the caller keeps
		// in R9 first).
		in := append(asm.Instructions{
			asm.StoreImm(asm.RFP, -20, int64(slot), asm.Word).WithSymbol(label),
		}, lookup(counters, -20)...)
		return append(in,
			asm.JEq.Imm(asm.R0, 0, label+"_done"),
			asm.LoadMem(asm.R1, asm.R0, 0, asm.DWord),
			asm.Add.Imm(asm.R1, 1),
			asm.StoreMem(asm.R0, 0, asm.R1, asm.DWord),
			asm.Mov.Imm(asm.R0, 0).WithSymbol(label+"_done"),
		)
	}
	// decTTL decrements the TTL of the IPv4 header at R8+ip and updates
	// its checksum, as ip_decrease_ttl does; the caller has checked the
	// TTL is above 1.
	decTTL := func(label string, ip int16) asm.Instructions {
		return asm.Instructions{
			asm.LoadMem(asm.R1, asm.R8, ip+8, asm.Byte),
			asm.Sub.Imm(asm.R1, 1),
			asm.StoreMem(asm.R8, ip+8, asm.R1, asm.Byte),
			asm.LoadMem(asm.R1, asm.R8, ip+10, asm.Half),
			asm.Add.Imm(asm.R1, int32(ttlOne)),
			asm.JLT.Imm(asm.R1, 0xffff, label),
			asm.Add.Imm(asm.R1, 1),
			asm.StoreMem(asm.R8, ip+10, asm.R1, asm.Half).WithSymbol(label),
		}
	}
	loadFrame := func(label string, n int32) asm.Instructions {
		// R8 = data, unless fewer than n bytes are in the linear part.
		return asm.Instructions{
			asm.LoadMem(asm.R8, asm.R6, skbData, asm.Word).WithSymbol(label),
			asm.LoadMem(asm.R2, asm.R6, skbDataEnd, asm.Word),
			asm.Mov.Reg(asm.R1, asm.R8),
			asm.Add.Imm(asm.R1, n),
			asm.JGT.Reg(asm.R1, asm.R2, "ok"),
		}
	}
	var in asm.Instructions
	add := func(is ...asm.Instruction) { in = append(in, is...) }
	add(
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.LoadMem(asm.R1, asm.R6, skbIfindex, asm.Word),
		asm.StoreMem(asm.RFP, -4, asm.R1, asm.Word),
	)
	add(lookup(ports, -4)...)
	add(
		asm.JEq.Imm(asm.R0, 0, "ok"),
		asm.Mov.Reg(asm.R7, asm.R0),
		asm.LoadMem(asm.R1, asm.R7, 0, asm.Word),
		asm.JEq.Imm(asm.R1, int32(bypassKindWireGuard), "wireguard"),
	)
	add(loadFrame("frame", 34)...)
	add(
		asm.LoadMem(asm.R1, asm.R8, 12, asm.Half),
		asm.JNE.Imm(asm.R1, int32(etherTypeIPv4), "ok"),
		asm.LoadMem(asm.R1, asm.R8, 0, asm.Byte),
		asm.And.Imm(asm.R1, 1),
		asm.JNE.Imm(asm.R1, 0, "ok"),
		asm.LoadMem(asm.R9, asm.R7, 12, asm.Word),
		asm.LoadMem(asm.R1, asm.R7, 0, asm.Word),
		asm.JNE.Imm(asm.R1, int32(bypassKindVXLAN), "veth"),
		// From the overlay.
		asm.LoadMem(asm.R1, asm.R8, 26, asm.Word),
		asm.And.Reg(asm.R1, asm.R9),
		asm.LoadMem(asm.R2, asm.R7, 8, asm.Word),
		asm.JNE.Reg(asm.R1, asm.R2, "ok"),
		asm.Ja.Label("dest"),
		// From a container.
		asm.LoadMem(asm.R1, asm.R8, 6, asm.Word).WithSymbol("veth"),
		asm.LoadMem(asm.R2, asm.R7, 20, asm.Word),
		asm.JNE.Reg(asm.R1, asm.R2, "ok"),
		asm.LoadMem(asm.R1, asm.R8, 10, asm.Half),
		asm.LoadMem(asm.R2, asm.R7, 24, asm.Half),
		asm.JNE.Reg(asm.R1, asm.R2, "ok"),
		asm.LoadMem(asm.R1, asm.R8, 26, asm.Word),
		asm.LoadMem(asm.R2, asm.R7, 16, asm.Word),
		asm.JNE.Reg(asm.R1, asm.R2, "ok"),
		asm.LoadMem(asm.R1, asm.R8, 30, asm.Word),
		asm.And.Reg(asm.R1, asm.R9),
		asm.LoadMem(asm.R2, asm.R7, 8, asm.Word),
		asm.JNE.Reg(asm.R1, asm.R2, "ok"),
		asm.LoadMem(asm.R1, asm.R8, 0, asm.Word),
		asm.LoadMem(asm.R2, asm.R7, 28, asm.Word),
		asm.JNE.Reg(asm.R1, asm.R2, "dest"),
		asm.LoadMem(asm.R1, asm.R8, 4, asm.Half),
		asm.LoadMem(asm.R2, asm.R7, 32, asm.Half),
		asm.JNE.Reg(asm.R1, asm.R2, "dest"),
		// To the gateway's MAC: routed. On a vxlan network the host
		// routes it; on a wireguard network, what is for another host's
		// container goes straight to the WireGuard device.
		asm.LoadMem(asm.R1, asm.R7, 0, asm.Word),
		asm.JNE.Imm(asm.R1, int32(bypassKindVethWG), "ok"),
		asm.LoadMem(asm.R1, asm.R8, 30, asm.Word),
		asm.LoadMem(asm.R2, asm.R7, 40, asm.Word),
		asm.JEq.Reg(asm.R1, asm.R2, "ok"),
	)
	add(lookupAddr(30)...)
	add(
		asm.JNE.Imm(asm.R0, 0, "ok"),
	)
	// The lookup left R8 as it was (no helper that changes the frame).
	add(
		asm.LoadMem(asm.R1, asm.R8, 22, asm.Byte),
		asm.JLE.Imm(asm.R1, 1, "ok"),
	)
	add(decTTL("ttl_out", 14)...)
	add(asm.Ja.Label("to_host"))
	add(lookupDest("dest")...)
	add(
		asm.JNE.Imm(asm.R0, 0, "local"),
		// Not a local container: from the overlay, the bridge decides
		// (the vxlan device's FDB may not know it either); from a
		// container of a vxlan network, the vxlan device; of a wireguard
		// network, the bridge (an unknown MAC).
		asm.LoadMem(asm.R1, asm.R7, 0, asm.Word),
		asm.JNE.Imm(asm.R1, int32(bypassKindVeth), "ok"),
	)
	add(count("to_host", bypassCountToHost)...)
	add(
		asm.LoadMem(asm.R1, asm.R7, 36, asm.Word),
		asm.Mov.Imm(asm.R2, 0),
		asm.FnRedirect.Call(),
		asm.Return(),
		// A local container: unless kept on the bridge, into its namespace.
		asm.LoadMem(asm.R1, asm.R0, 4, asm.Word).WithSymbol("local"),
		asm.JNE.Imm(asm.R1, 0, "ok"),
		asm.LoadMem(asm.R9, asm.R0, 0, asm.Word),
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.Mov.Imm(asm.R2, unix.PACKET_HOST),
		asm.FnSkbChangeType.Call(),
		asm.Ja.Label("to_container"),
	)
	// From the WireGuard device: an IPv4 packet without a link layer.
	add(loadFrame("wireguard", 20)...)
	add(lookupAddr(16)...)
	add(
		asm.JEq.Imm(asm.R0, 0, "ok"),
		asm.Mov.Reg(asm.R9, asm.R0),
		asm.LoadMem(asm.R1, asm.R9, 4, asm.Word),
		asm.JNE.Imm(asm.R1, 0, "ok"),
		asm.LoadMem(asm.R1, asm.R8, 12, asm.Word),
		asm.LoadMem(asm.R2, asm.R9, 28, asm.Word),
		asm.And.Reg(asm.R1, asm.R2),
		asm.LoadMem(asm.R2, asm.R9, 24, asm.Word),
		asm.JNE.Reg(asm.R1, asm.R2, "ok"),
		asm.LoadMem(asm.R1, asm.R8, 8, asm.Byte),
		asm.JLE.Imm(asm.R1, 1, "ok"),
		// Push the container's Ethernet header: from here on the frame
		// goes into the container, whatever the bounds check says.
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.Mov.Imm(asm.R2, 14),
		asm.Mov.Imm(asm.R3, 0),
		asm.FnSkbChangeHead.Call(),
		asm.JNE.Imm(asm.R0, 0, "ok"),
	)
	add(loadFrame("pushed", 34)...)
	add(
		asm.LoadMem(asm.R1, asm.R9, 8, asm.Word),
		asm.StoreMem(asm.R8, 0, asm.R1, asm.Word),
		asm.LoadMem(asm.R1, asm.R9, 12, asm.Half),
		asm.StoreMem(asm.R8, 4, asm.R1, asm.Half),
		asm.LoadMem(asm.R1, asm.R9, 16, asm.Word),
		asm.StoreMem(asm.R8, 6, asm.R1, asm.Word),
		asm.LoadMem(asm.R1, asm.R9, 20, asm.Half),
		asm.StoreMem(asm.R8, 10, asm.R1, asm.Half),
		asm.StoreImm(asm.R8, 12, etherTypeIPv4, asm.Half),
	)
	add(decTTL("ttl_in", 14)...)
	add(
		asm.LoadMem(asm.R9, asm.R9, 0, asm.Word),
	)
	add(count("to_container", bypassCountToContainer)...)
	add(
		asm.Mov.Reg(asm.R1, asm.R9),
		asm.Mov.Imm(asm.R2, 0),
		asm.FnRedirectPeer.Call(),
		asm.Return(),
		asm.Mov.Imm(asm.R0, 0).WithSymbol("ok"),
		asm.Return(),
	)
	return in
}
