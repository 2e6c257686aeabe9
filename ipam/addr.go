package ipam

import (
	"fmt"
	"math/bits"
	"net/netip"

	"github.com/meshnet/meshnet/gossip"
)

// u128 is an address (or an offset) as a 128-bit number, so that IPv4 and
// IPv6 share one arithmetic path. IPv4 addresses live in the low 32 bits.
type u128 struct{ hi, lo uint64 }

func u64(v uint64) u128 { return u128{lo: v} }

func (a u128) add(b u128) u128 {
	lo, carry := bits.Add64(a.lo, b.lo, 0)
	hi, _ := bits.Add64(a.hi, b.hi, carry)
	return u128{hi, lo}
}

func (a u128) sub(b u128) u128 {
	lo, borrow := bits.Sub64(a.lo, b.lo, 0)
	hi, _ := bits.Sub64(a.hi, b.hi, borrow)
	return u128{hi, lo}
}

func (a u128) shl(n int) u128 {
	switch {
	case n <= 0:
		return a
	case n >= 128:
		return u128{}
	case n >= 64:
		return u128{hi: a.lo << (n - 64)}
	}
	return u128{hi: a.hi<<n | a.lo>>(64-n), lo: a.lo << n}
}

func (a u128) shr(n int) u128 {
	switch {
	case n <= 0:
		return a
	case n >= 128:
		return u128{}
	case n >= 64:
		return u128{lo: a.hi >> (n - 64)}
	}
	return u128{hi: a.hi >> n, lo: a.lo>>n | a.hi<<(64-n)}
}

func (a u128) cmp(b u128) int {
	switch {
	case a.hi < b.hi:
		return -1
	case a.hi > b.hi:
		return 1
	case a.lo < b.lo:
		return -1
	case a.lo > b.lo:
		return 1
	}
	return 0
}

// ones returns 2^n - 1.
func ones(n int) u128 { return u64(1).shl(n).sub(u64(1)) }

func addrNum(a netip.Addr) u128 {
	if a.Is4() {
		b := a.As4()
		return u64(uint64(b[0])<<24 | uint64(b[1])<<16 | uint64(b[2])<<8 | uint64(b[3]))
	}
	b := a.As16()
	var v u128
	for i := 0; i < 8; i++ {
		v.hi = v.hi<<8 | uint64(b[i])
		v.lo = v.lo<<8 | uint64(b[8+i])
	}
	return v
}

func numAddr(v u128, is4 bool) netip.Addr {
	if is4 {
		x := uint32(v.lo)
		return netip.AddrFrom4([4]byte{byte(x >> 24), byte(x >> 16), byte(x >> 8), byte(x)})
	}
	var b [16]byte
	for i := 0; i < 8; i++ {
		b[7-i] = byte(v.hi >> (8 * i))
		b[15-i] = byte(v.lo >> (8 * i))
	}
	return netip.AddrFrom16(b)
}

// Limits on how a pool is cut. Block size is explained in doc.go.
const (
	defaultBlockBits = 6  // 64 addresses
	minBlockBits     = 4  // 16 addresses: a /28 in IPv4
	maxBlocksLog2    = 14 // at most 16384 blocks per pool: bounds the per-change work
	minBlocksLog2    = 4  // aim for at least 16 blocks, so hosts that join later find space
)

// geometry is how a pool's subnet is cut into blocks: blockBits host bits
// per block, 2^(hostBits-blockBits) blocks.
type geometry struct {
	subnet    netip.Prefix
	is4       bool
	addrBits  int // 32 or 128
	blockBits int // host bits in one block
	blockLen  int // prefix length of one block
	nblocks   int
	base      u128
}

func newGeometry(subnet netip.Prefix, blockBits int) (geometry, error) {
	addrBits := subnet.Addr().BitLen()
	hostBits := addrBits - subnet.Bits()
	if blockBits < 2 || blockBits > hostBits {
		return geometry{}, fmt.Errorf("block of %d host bits does not fit subnet %s", blockBits, subnet)
	}
	if hostBits-blockBits > 16 {
		return geometry{}, fmt.Errorf("blocks of %d host bits cut subnet %s into more than 65536 blocks", blockBits, subnet)
	}
	return geometry{
		subnet:    subnet,
		is4:       subnet.Addr().Is4(),
		addrBits:  addrBits,
		blockBits: blockBits,
		blockLen:  addrBits - blockBits,
		nblocks:   1 << (hostBits - blockBits),
		base:      addrNum(subnet.Addr()),
	}, nil
}

func (g geometry) blockSize() u128 { return u64(1).shl(g.blockBits) }

func (g geometry) blockStart(i int) u128 { return g.base.add(u64(uint64(i)).shl(g.blockBits)) }

func (g geometry) blockPrefix(i int) netip.Prefix {
	return netip.PrefixFrom(numAddr(g.blockStart(i), g.is4), g.blockLen)
}

func (g geometry) addrAt(i int, off u128) netip.Addr {
	return numAddr(g.blockStart(i).add(off), g.is4)
}

// blockOf returns the index of the block holding a.
func (g geometry) blockOf(a netip.Addr) (int, bool) {
	if !g.subnet.Contains(a) {
		return 0, false
	}
	return int(addrNum(a).sub(g.base).shr(g.blockBits).lo), true
}

// blocksIn returns the range [first, last] of blocks that overlap p.
func (g geometry) blocksIn(p netip.Prefix) (int, int, bool) {
	if !g.subnet.Overlaps(p) {
		return 0, 0, false
	}
	if p.Bits() <= g.subnet.Bits() {
		return 0, g.nblocks - 1, true
	}
	first, _ := g.blockOf(p.Addr())
	if p.Bits() >= g.blockLen {
		return first, first, true
	}
	return first, first + (1 << (g.blockLen - p.Bits())) - 1, true
}

// reserved reports addresses never handed to a container: the subnet's
// own address, its broadcast address (IPv4), and the gateway.
func (g geometry) reserved(a, gateway netip.Addr) bool {
	if a == gateway || a == g.subnet.Addr() {
		return true
	}
	if g.is4 {
		last := g.base.add(ones(g.addrBits - g.subnet.Bits()))
		return addrNum(a) == last
	}
	return false
}

// firstHost is the default gateway: the first address after the subnet's own.
func firstHost(subnet netip.Prefix) netip.Addr { return subnet.Addr().Next() }

// chooseBlockBits picks the block size for a new pool (doc.go explains
// why): 64 addresses, larger when the subnet would have more than 16384
// blocks, smaller (down to minBits) so that the subnet has at least 16
// blocks and one for every current member.
func chooseBlockBits(subnet netip.Prefix, members, minBits int) (int, error) {
	addrBits := subnet.Addr().BitLen()
	hostBits := addrBits - subnet.Bits()
	if members < 1 {
		members = 1
	}
	needLog2 := log2ceil(members)
	if hostBits < minBits+needLog2 {
		return 0, &Error{Kind: ErrTooSmall, Msg: fmt.Sprintf(
			"subnet %s is too small for %d node(s): every node needs a block of at least %d addresses; use /%d or larger",
			subnet, members, 1<<minBits, addrBits-minBits-needLog2)}
	}
	bb := defaultBlockBits
	if hostBits-bb > maxBlocksLog2 {
		bb = hostBits - maxBlocksLog2
	}
	want := max(minBlocksLog2, needLog2)
	if hostBits-bb < want {
		bb = hostBits - want
	}
	return max(bb, minBits), nil
}

func log2ceil(n int) int {
	l := 0
	for 1<<l < n {
		l++
	}
	return l
}

// encodeAddrs and decodeAddrs are the Held lists' wire form, owned by
// gossip with every other record's.
func encodeAddrs(addrs []netip.Addr) []string { return gossip.EncodeAddrList(addrs) }

func decodeAddrs(in []string) ([]netip.Addr, error) { return gossip.ParseAddrList(in) }
