package dns

import (
	"encoding/binary"
	"net"

	"github.com/miekg/dns"
)

// Bounds of one listener's reply cache. Keys come from the network, so a
// flood of distinct queries must not grow it: past either bound it is
// emptied and refills with what is asked now.
const (
	cacheMaxEntries = 1024
	cacheMaxBytes   = 1 << 20 // keys and replies together
	cacheMaxQuery   = 512     // longer queries are answered, not cached
)

// replyCache holds packed table answers of one UDP listener, so that a
// query seen before is answered by copying bytes: no unpack, no records
// built, no pack. It is owned by one goroutine and takes no lock.
//
// The key is the query's bytes after its ID (flags, counts, question,
// EDNS, all of it) and whether the source may recurse (the RA bit): the
// reply is a function of exactly those, of the table, and of the rotation
// offset. So a hit is answered as the slow path would have answered it,
// with the query's ID; the owner names keep the asker's spelling because
// the spelling is part of the key.
//
// Entries belong to the table they were built from: the first query after
// SetTable finds another table and empties the cache. A/AAAA answers keep
// the rotation: the entry points at the table's record set and the offsets
// of the addresses in the reply, and every hit takes the set's next
// rotation offset (the same atomic counter as the slow path) and writes
// the addresses in that order.
type replyCache struct {
	table   *Table
	entries map[cacheKey]map[string]*cachedReply
	count   int // entries in all maps
	bytes   int
	scratch []byte // packs replies built on a miss
	hits    int    // tests
}

type cachedReply struct {
	reply []byte
	// rot, when not nil, is the record set the answer section rotates
	// over; rdata holds the offset in reply of each answer's address, in
	// answer order (one per item of rot: truncated answers are not cached).
	rot   *rotating[net.IP]
	rdata []uint16
}

func newReplyCache() *replyCache {
	return &replyCache{scratch: make([]byte, 2*DefaultMaxUDPSize)}
}

// sync empties the cache when the table it was filled from is no longer
// the one in use.
func (c *replyCache) sync(t *Table) {
	if c.table != t {
		c.reset()
		c.table = t
	}
}

func (c *replyCache) reset() {
	c.entries = nil
	c.count, c.bytes = 0, 0
}

// cacheKey: besides the query's bytes, a reply depends on whether the
// client may recurse and on the view of the zone it sees.
type cacheKey struct {
	view *zoneView
	ra   bool
}

// lookup returns the reply to raw (a query whose header was accepted),
// with raw's ID and the next rotation, in c.scratch; nil on a miss. c must
// have been synced with the table in use.
func (c *replyCache) lookup(raw []byte, ra bool, v *zoneView) []byte {
	m := c.entries[cacheKey{v, ra}]
	if m == nil || len(raw) > cacheMaxQuery {
		return nil
	}
	e := m[string(raw[2:])] // no allocation: the compiler keys by the bytes
	if e == nil {
		return nil
	}
	c.hits++
	if len(c.scratch) < len(e.reply) {
		c.scratch = make([]byte, len(e.reply))
	}
	b := c.scratch[:len(e.reply)]
	copy(b, e.reply)
	copy(b[0:2], raw[0:2])
	if e.rot != nil {
		n := len(e.rot.items)
		first := e.rot.start()
		for i, off := range e.rdata {
			copy(b[off:], e.rot.items[(first+i)%n])
		}
	}
	return b
}

// store remembers reply (the packed answer to raw from c's table) when it
// can be replayed: rot is the record set the answer rotates over, nil if
// none does.
func (c *replyCache) store(raw []byte, ra bool, v *zoneView, reply []byte, rot *rotating[net.IP]) {
	if len(raw) > cacheMaxQuery || len(reply) < 12 {
		return
	}
	e := &cachedReply{reply: append([]byte(nil), reply...)}
	if rot != nil && len(rot.items) > 1 {
		e.rot = rot
		if e.rdata = addrOffsets(e.reply, rot); e.rdata == nil {
			return
		}
	}
	size := len(raw) + len(e.reply) + 2*len(e.rdata)
	if c.count >= cacheMaxEntries || c.bytes+size > cacheMaxBytes {
		c.reset()
	}
	if c.entries == nil {
		c.entries = make(map[cacheKey]map[string]*cachedReply)
	}
	k := cacheKey{v, ra}
	m := c.entries[k]
	if m == nil {
		m = make(map[string]*cachedReply)
		c.entries[k] = m
	}
	if _, ok := m[string(raw[2:])]; !ok {
		c.count++
	}
	m[string(raw[2:])] = e
	c.bytes += size
}

// addrOffsets walks a packed reply and returns where the address of each
// answer record starts, or nil unless the answer section is exactly the
// records of rot (all of them: a truncated answer would have to keep a
// different subset per rotation), of its type and address length.
func addrOffsets(b []byte, rot *rotating[net.IP]) []uint16 {
	n := len(rot.items)
	rrtype, rdlen := dns.TypeA, net.IPv4len
	if len(rot.items[0]) == net.IPv6len {
		rrtype, rdlen = dns.TypeAAAA, net.IPv6len
	}
	if binary.BigEndian.Uint16(b[2:])&(1<<9) != 0 || // TC
		binary.BigEndian.Uint16(b[4:]) != 1 || int(binary.BigEndian.Uint16(b[6:])) != n {
		return nil
	}
	off, ok := skipName(b, 12)
	if !ok || off+4 > len(b) {
		return nil
	}
	off += 4 // qtype, qclass
	out := make([]uint16, 0, n)
	for range n {
		if off, ok = skipName(b, off); !ok || off+10 > len(b) {
			return nil
		}
		if binary.BigEndian.Uint16(b[off:]) != rrtype || int(binary.BigEndian.Uint16(b[off+8:])) != rdlen {
			return nil
		}
		off += 10
		if off+rdlen > len(b) {
			return nil
		}
		out = append(out, uint16(off))
		off += rdlen
	}
	return out
}

// skipName returns the offset just past the (possibly compressed) domain
// name at off.
func skipName(b []byte, off int) (int, bool) {
	for off < len(b) {
		l := int(b[off])
		switch {
		case l == 0:
			return off + 1, true
		case l&0xC0 == 0xC0:
			if off+2 > len(b) {
				return 0, false
			}
			return off + 2, true
		case l&0xC0 != 0:
			return 0, false
		}
		off += 1 + l
	}
	return 0, false
}
