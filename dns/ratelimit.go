package dns

import (
	"encoding/binary"
	"net/netip"
	"sync"
	"time"
)

// limiterShards spreads sources over independently locked maps, so the
// UDP listeners on different cores rarely wait for each other.
const limiterShards = 16

// limiter is a token bucket per source address with bounded memory.
//
// Each shard keeps two generations of buckets. New sources go into cur;
// when cur is full it becomes prev and prev is dropped. A source found in
// prev moves back to cur. So active sources keep their buckets, and a
// flood of spoofed sources costs at most maxPerGen×2 entries per shard,
// O(1) work per packet. A forgotten source starts again with a full
// bucket: nothing more can be done per source once sources are forged.
type limiter struct {
	rate      float64 // tokens per nanosecond
	burst     float64
	maxPerGen int
	now       func() int64 // monotonic nanoseconds; a field so tests can drive time
	shards    [limiterShards]limiterShard
}

type limiterShard struct {
	mu   sync.Mutex // guards cur and prev
	cur  map[netip.Addr]bucket
	prev map[netip.Addr]bucket
	_    [32]byte // keep shards on separate cache lines
}

type bucket struct {
	tokens float64 // queries answered
	spare  float64 // queries over the limit answered truncated
	last   int64
}

// verdict is what the limiter says of one query.
type verdict uint8

const (
	admit    verdict = iota // within the source's rate: answer it
	truncate                // over it: answer truncated (TC), the client goes on over TCP
	drop                    // over twice the rate: a flood, not a client; no answer at all
)

// newLimiter returns nil (no limit) when rl.QPS is not positive.
func newLimiter(rl RateLimit) *limiter {
	if rl.QPS <= 0 {
		return nil
	}
	burst := rl.Burst
	if burst <= 0 {
		burst = max(int(2*rl.QPS), 1)
	}
	maxSources := rl.MaxSources
	if maxSources <= 0 {
		maxSources = 1 << 16
	}
	start := time.Now()
	l := &limiter{
		rate:      rl.QPS / float64(time.Second),
		burst:     float64(burst),
		maxPerGen: max(maxSources/(2*limiterShards), 1),
		now:       func() int64 { return int64(time.Since(start)) },
	}
	for i := range l.shards {
		l.shards[i].cur = make(map[netip.Addr]bucket)
	}
	return l
}

// take judges one query from src. Within the rate it is admitted. Over it, a
// second bucket of the same rate and size pays for truncated answers: a busy
// client up to twice the limit is slowed (its surplus goes over TCP), never
// left waiting out a timeout. Past that the source is flooding, and its
// queries are dropped: a truncated answer costs the server about what an
// answer does (the write is most of either), so answering a flood in any
// form is what would take the server from the other clients.
func (l *limiter) take(src netip.Addr) verdict {
	if l == nil {
		return admit
	}
	now := l.now()
	sh := &l.shards[shardOf(src)]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	b, inCur := sh.cur[src]
	if !inCur {
		var inPrev bool
		if b, inPrev = sh.prev[src]; inPrev {
			delete(sh.prev, src)
		} else {
			b = bucket{tokens: l.burst, spare: l.burst, last: now}
		}
		if len(sh.cur) >= l.maxPerGen {
			sh.prev, sh.cur = sh.cur, make(map[netip.Addr]bucket, l.maxPerGen)
		}
	}
	refill := float64(now-b.last) * l.rate
	b.tokens = min(l.burst, b.tokens+refill)
	b.spare = min(l.burst, b.spare+refill)
	b.last = now
	v := drop
	switch {
	case b.tokens >= 1:
		b.tokens--
		v = admit
	case b.spare >= 1:
		b.spare--
		v = truncate
	}
	sh.cur[src] = b
	return v
}

// size returns the number of tracked sources (tests).
func (l *limiter) size() int {
	n := 0
	for i := range l.shards {
		sh := &l.shards[i]
		sh.mu.Lock()
		n += len(sh.cur) + len(sh.prev)
		sh.mu.Unlock()
	}
	return n
}

func shardOf(a netip.Addr) int {
	b := a.As16()
	h := binary.LittleEndian.Uint64(b[:8]) ^ binary.LittleEndian.Uint64(b[8:])
	h *= 0x9e3779b97f4a7c15 // Fibonacci hashing: the top bits mix all input bits
	return int(h >> 60)     // 16 shards
}

// truncatedReply is the answer to a UDP query over the rate limit: its
// header and question with QR and TC set and no other record, so the
// client retries over TCP at once instead of waiting out its timeout
// (glibc: 5 s). It is never longer than the query: the server is reachable
// only from the host and its containers, whose sources are not spoofable
// (dataplane's anti-spoofing), and even a forged source gains nothing. It
// reports false for bytes that are not a query with one question.
func truncatedReply(q []byte) ([]byte, bool) {
	const hdr = 12
	if len(q) < hdr || q[2]&0x80 != 0 || binary.BigEndian.Uint16(q[4:]) != 1 {
		return nil, false
	}
	i := hdr
	for {
		if i >= len(q) {
			return nil, false
		}
		l := int(q[i])
		if l == 0 {
			i++
			break
		}
		if l&0xC0 != 0 { // a query's name is never compressed
			return nil, false
		}
		i += 1 + l
	}
	if i+4 > len(q) {
		return nil, false
	}
	b := make([]byte, i+4)
	copy(b, q[:i+4])
	b[2] = (q[2] & 0x79) | 0x80 | 0x02 // QR, TC; keep opcode and RD; AA off
	b[3] = 0                           // RA off, rcode NOERROR
	binary.BigEndian.PutUint16(b[6:], 0)
	binary.BigEndian.PutUint16(b[8:], 0)
	binary.BigEndian.PutUint16(b[10:], 0)
	return b, true
}
