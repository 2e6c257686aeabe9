// Config: what an IPAM is given, and the defaults with why.

package ipam

import (
	"log/slog"
	"time"

	"github.com/meshnet/meshnet/gossip"
	"github.com/meshnet/meshnet/internal/clock"
)

// Config configures an IPAM. Zero values take the defaults of DefaultConfig.
type Config struct {
	// Store is the replicated state. Its Persist hook must be wired, and
	// the node's own records loaded (Store.Load) before New: what a node
	// owns and what it handed away is only in those records.
	Store *gossip.Store
	// Dir holds the local allocation table (StateFile).
	Dir string
	Log *slog.Logger
	// BlockBits is the number of host bits in a block of a pool this node
	// creates (6 = 64 addresses); 0 chooses per subnet (doc.go). A pool's
	// block size is fixed by its creator; --ipam-opt block-prefix=N
	// overrides it for one pool.
	BlockBits int
	// MinBlockBits is the smallest block the automatic choice makes
	// (4 = 16 addresses, a /28 in IPv4).
	MinBlockBits int
	// RequestTimeout is how long a request for blocks waits for one donor
	// before asking another.
	RequestTimeout time.Duration
	// HandoffWait bounds how long RequestAddress waits for a block from
	// another node (the caller's context may bound it more).
	HandoffWait time.Duration
	// FullAfter is how long a pool must look full before RequestAddress
	// says so: other nodes' spare counts are gossip, and right after a
	// rival creation of the pool gives way they lag the blocks it freed.
	FullAfter time.Duration
	// PublishInterval is how often the count of allocated addresses in the
	// node's pool record is refreshed (it is only a hint for status).
	PublishInterval time.Duration
	// ResyncInterval is how often Run re-checks without a store change
	// (request timeouts, lazy counts).
	ResyncInterval time.Duration
	// Clock tells the time and makes the timers of RequestAddress and Run
	// (tests pass a clock.Fake and advance it instead of sleeping).
	Clock clock.Clock
}

// DefaultConfig returns the defaults, without Store and Dir.
func DefaultConfig() Config {
	return Config{
		BlockBits:       0,                // per subnet, see chooseBlockBits
		MinBlockBits:    minBlockBits,     // /28: 13 usable addresses at worst
		RequestTimeout:  5 * time.Second,  // a live donor answers within a gossip round or two
		HandoffWait:     20 * time.Second, // under Docker's 30 s plugin call timeout
		FullAfter:       3 * time.Second,  // a few gossip rounds
		PublishInterval: 10 * time.Second, // status hint only
		ResyncInterval:  time.Second,
		Clock:           clock.Real{},
	}
}

func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.MinBlockBits == 0 {
		c.MinBlockBits = d.MinBlockBits
	}
	if c.RequestTimeout == 0 {
		c.RequestTimeout = d.RequestTimeout
	}
	if c.HandoffWait == 0 {
		c.HandoffWait = d.HandoffWait
	}
	if c.FullAfter == 0 {
		c.FullAfter = d.FullAfter
	}
	if c.PublishInterval == 0 {
		c.PublishInterval = d.PublishInterval
	}
	if c.ResyncInterval == 0 {
		c.ResyncInterval = d.ResyncInterval
	}
	if c.Clock == nil {
		c.Clock = d.Clock
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	return c
}
