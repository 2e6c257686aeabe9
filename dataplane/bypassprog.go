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
// differs per device is in two hash maps the program looks up, so a
// container's start or stop writes a few map entries and attaches the
// program to one veth, whatever the number of containers.
//
//   - ports, keyed by the ifindex a frame arrives on: a container's
//     host-side veth (its own MAC and IPv4, its network's subnet, bridge MAC
//     and vxlan device) or a vxlan device (its subnet).
//   - dests, keyed by a vxlan device's ifindex and a MAC: the host-side veth
//     of the local container with that MAC on that network, or that the
//     container is kept on the bridge.
//
// Map values are laid out here and read by the program at these offsets.
// Addresses, masks and MACs are stored as the frame carries them, so the
// program compares loaded words without converting byte order.

const (
	bypassKindVeth  = 1
	bypassKindVXLAN = 2

	portValueSize = 40 // kind, vxlan, subnet, mask, addr, mac(6)+2, gateway mac(6)+6
	destKeySize   = 12 // vxlan ifindex, mac(6)+2
	destValueSize = 8  // veth ifindex, flags
	destBridged   = 1  // flags: the container is kept on the bridge

	bypassMaxEntries = 1 << 16

	// counters: frames sent to a vxlan device, frames handed into a
	// container (for tests and meshctl; a per-CPU array, so counting
	// costs no lock).
	bypassCountToVXLAN     = 0
	bypassCountToContainer = 1
)

// bypassPort is one ports entry, by device name; bypassDest one dests
// entry.
type bypassPort struct {
	Dev        string
	VXLAN      string // the network's vxlan device (Dev itself for one)
	Subnet     netip.Prefix
	Addr       netip.Addr       // a veth's container address; invalid for a vxlan device
	MAC        net.HardwareAddr // a veth's container MAC
	GatewayMAC net.HardwareAddr // the bridge's, for a veth
}

type bypassDest struct {
	VXLAN   string
	MAC     net.HardwareAddr
	Dev     string // the container's host-side veth
	Bridged bool
}

func (p bypassPort) veth() bool { return p.Dev != p.VXLAN }

// ifindexes resolves an entry's device and its network's vxlan device.
func ifindexes(ifindex func(string) (int, error), dev, vxlan string) (devIdx, vxIdx int, err error) {
	if devIdx, err = ifindex(dev); err == nil {
		vxIdx, err = ifindex(vxlan)
	}
	return devIdx, vxIdx, err
}

// encode lays the entry out as the program reads it; ifindex resolves
// device names.
func (p bypassPort) encode(ifindex func(string) (int, error)) (key, value []byte, err error) {
	dev, vx, err := ifindexes(ifindex, p.Dev, p.VXLAN)
	if err != nil {
		return nil, nil, err
	}
	key = binary.NativeEndian.AppendUint32(nil, uint32(dev))
	value = make([]byte, portValueSize)
	kind := uint32(bypassKindVXLAN)
	if p.veth() {
		kind = bypassKindVeth
		a := p.Addr.As4()
		copy(value[16:20], a[:])
		copy(value[20:26], p.MAC)
		copy(value[28:34], p.GatewayMAC)
	}
	binary.NativeEndian.PutUint32(value[0:4], kind)
	binary.NativeEndian.PutUint32(value[4:8], uint32(vx))
	s := p.Subnet.Masked().Addr().As4()
	copy(value[8:12], s[:])
	binary.BigEndian.PutUint32(value[12:16], ^uint32(0)<<(32-p.Subnet.Bits()))
	return key, value, nil
}

func (d bypassDest) encode(ifindex func(string) (int, error)) (key, value []byte, err error) {
	dev, vx, err := ifindexes(ifindex, d.Dev, d.VXLAN)
	if err != nil {
		return nil, nil, err
	}
	key = make([]byte, destKeySize)
	binary.NativeEndian.PutUint32(key[0:4], uint32(vx))
	copy(key[4:10], d.MAC)
	value = make([]byte, destValueSize)
	binary.NativeEndian.PutUint32(value[0:4], uint32(dev))
	if d.Bridged {
		binary.NativeEndian.PutUint32(value[4:8], destBridged)
	}
	return key, value, nil
}

// bypassProgram is the loaded program and its maps. The kernel keeps them
// while a tc filter holds the program, so frames keep their way past the
// bridge while meshnetd restarts; a new run loads its own and swaps it in
// on each device (a filter replaced in place), its maps written whole
// first.
type bypassProgram struct {
	prog                   *ebpf.Program
	ports, dests, counters *ebpf.Map
	id                     int
	// written are the map entries as last written (key → value).
	portsWritten, destsWritten map[string]string
}

// errBypassUnavailable marks a kernel that refuses the program (no BPF,
// no bpf_redirect_peer before Linux 5.10, or no CAP_BPF/CAP_SYS_ADMIN).
var errBypassUnavailable = errors.New("the kernel refused the bridge bypass's BPF program")

func loadBypassProgram() (*bypassProgram, error) {
	p := &bypassProgram{portsWritten: map[string]string{}, destsWritten: map[string]string{}}
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
	p.counters = mk("mn_bp_counts", ebpf.PerCPUArray, 4, 8, 2, 0)
	if err == nil {
		p.prog, err = ebpf.NewProgram(&ebpf.ProgramSpec{Name: "mn_bypass", Type: ebpf.SchedCLS, License: "GPL",
			Instructions: bypassInstructions(p.ports.FD(), p.dests.FD(), p.counters.FD())})
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
	for _, m := range []*ebpf.Map{p.ports, p.dests, p.counters} {
		if m != nil {
			_ = m.Close()
		}
	}
}

// counts sums the per-CPU counters: frames sent to vxlan devices, frames
// handed into containers.
func (p *bypassProgram) counts() (toVXLAN, toContainer uint64, err error) {
	for i, dst := range []*uint64{&toVXLAN, &toContainer} {
		var per []uint64
		if err := p.counters.Lookup(uint32(i), &per); err != nil {
			return 0, 0, fmt.Errorf("read the bypass counters: %w", err)
		}
		for _, v := range per {
			*dst += v
		}
	}
	return toVXLAN, toContainer, nil
}

// bypassInstructions is the program, at tc ingress of every bypassed
// device, in direct-action mode; TC_ACT_OK (0) hands the frame on to the
// bridge as if the program were not there. In C it would read:
//
//	port = ports[skb->ifindex]; if !port: ok
//	eth, ip = data; if data+34 > data_end: ok
//	if eth.type != IPv4 or eth.dst is multicast: ok
//	if port is a vxlan device:
//	    if ip.src not in port.subnet: ok                  // needs the host's conntrack
//	    d = dests[port.vxlan, eth.dst]; if !d or d.bridged: ok
//	    count; return redirect_peer(d.veth)               // into the container
//	if eth.src != port.mac or ip.src != port.addr: ok    // forged: anti-spoofing judges
//	if eth.dst == port.gateway_mac: ok                    // routed by the host
//	if ip.dst not in port.subnet: ok
//	d = dests[port.vxlan, eth.dst]
//	if d: if d.bridged: ok; count; return redirect_peer(d.veth)
//	count; return redirect(port.vxlan, egress)            // static FDB: unknown MACs dropped
//
// redirect_peer hands the frame to the veth's peer in the container's
// namespace without a pass through the CPU's backlog queue; the frame's
// type is set to PACKET_HOST first, as the peer's own receive would set
// it (the destination MAC is the container's), or its IP stack drops it.
func bypassInstructions(ports, dests, counters int) asm.Instructions {
	const (
		skbIfindex = 40 // offsetof(struct __sk_buff, ifindex)
		skbData    = 76
		skbDataEnd = 80
	)
	// Registers kept across helper calls: R6 ctx, R7 port value, R8 frame,
	// R9 subnet mask, then the target.
	lookupDest := func(label string) asm.Instructions {
		return asm.Instructions{
			asm.LoadMem(asm.R1, asm.R7, 4, asm.Word).WithSymbol(label),
			asm.StoreMem(asm.RFP, -16, asm.R1, asm.Word),
			asm.LoadMem(asm.R1, asm.R8, 0, asm.Word),
			asm.StoreMem(asm.RFP, -12, asm.R1, asm.Word),
			asm.LoadMem(asm.R1, asm.R8, 4, asm.Half),
			asm.StoreMem(asm.RFP, -8, asm.R1, asm.Half),
			asm.StoreImm(asm.RFP, -6, 0, asm.Half),
			asm.LoadMapPtr(asm.R1, dests),
			asm.Mov.Reg(asm.R2, asm.RFP),
			asm.Add.Imm(asm.R2, -16),
			asm.FnMapLookupElem.Call(),
		}
	}
	count := func(label string, slot int32) asm.Instructions {
		// counters[slot]++ (R1-R5 are free; R0 is what the caller keeps
		// in R9 first).
		return asm.Instructions{
			asm.StoreImm(asm.RFP, -20, int64(slot), asm.Word).WithSymbol(label),
			asm.LoadMapPtr(asm.R1, counters),
			asm.Mov.Reg(asm.R2, asm.RFP),
			asm.Add.Imm(asm.R2, -20),
			asm.FnMapLookupElem.Call(),
			asm.JEq.Imm(asm.R0, 0, label+"_done"),
			asm.LoadMem(asm.R1, asm.R0, 0, asm.DWord),
			asm.Add.Imm(asm.R1, 1),
			asm.StoreMem(asm.R0, 0, asm.R1, asm.DWord),
			asm.Mov.Imm(asm.R0, 0).WithSymbol(label + "_done"),
		}
	}
	var in asm.Instructions
	add := func(is ...asm.Instruction) { in = append(in, is...) }
	add(
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.LoadMem(asm.R1, asm.R6, skbIfindex, asm.Word),
		asm.StoreMem(asm.RFP, -4, asm.R1, asm.Word),
		asm.LoadMapPtr(asm.R1, ports),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -4),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "ok"),
		asm.Mov.Reg(asm.R7, asm.R0),
		asm.LoadMem(asm.R8, asm.R6, skbData, asm.Word),
		asm.LoadMem(asm.R2, asm.R6, skbDataEnd, asm.Word),
		asm.Mov.Reg(asm.R1, asm.R8),
		asm.Add.Imm(asm.R1, 34),
		asm.JGT.Reg(asm.R1, asm.R2, "ok"),
		// EtherType IPv4: bytes 08 00, a little-endian half of 0x0008.
		asm.LoadMem(asm.R1, asm.R8, 12, asm.Half),
		asm.JNE.Imm(asm.R1, 0x0008, "ok"),
		asm.LoadMem(asm.R1, asm.R8, 0, asm.Byte),
		asm.And.Imm(asm.R1, 1),
		asm.JNE.Imm(asm.R1, 0, "ok"),
		asm.LoadMem(asm.R9, asm.R7, 12, asm.Word),
		asm.LoadMem(asm.R1, asm.R7, 0, asm.Word),
		asm.JEq.Imm(asm.R1, bypassKindVeth, "veth"),
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
		asm.LoadMem(asm.R1, asm.R8, 0, asm.Word),
		asm.LoadMem(asm.R2, asm.R7, 28, asm.Word),
		asm.JNE.Reg(asm.R1, asm.R2, "notgw"),
		asm.LoadMem(asm.R1, asm.R8, 4, asm.Half),
		asm.LoadMem(asm.R2, asm.R7, 32, asm.Half),
		asm.JEq.Reg(asm.R1, asm.R2, "ok"),
		asm.LoadMem(asm.R1, asm.R8, 30, asm.Word).WithSymbol("notgw"),
		asm.And.Reg(asm.R1, asm.R9),
		asm.LoadMem(asm.R2, asm.R7, 8, asm.Word),
		asm.JNE.Reg(asm.R1, asm.R2, "ok"),
		asm.Ja.Label("dest"),
	)
	add(lookupDest("dest")...)
	add(
		asm.JNE.Imm(asm.R0, 0, "local"),
		// Not a local container: from the overlay, the bridge decides
		// (the vxlan device's FDB may not know it either); from a
		// container, the vxlan device.
		asm.LoadMem(asm.R1, asm.R7, 0, asm.Word),
		asm.JNE.Imm(asm.R1, bypassKindVeth, "ok"),
	)
	add(count("cnt_vx", bypassCountToVXLAN)...)
	add(
		asm.LoadMem(asm.R1, asm.R7, 4, asm.Word),
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
	)
	add(count("cnt_local", bypassCountToContainer)...)
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
