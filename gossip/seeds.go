package gossip

import (
	"context"
	"time"
)

// SeedResolver expands a join list into seed addresses (host:port). It is
// asked again on every join attempt, because what stands behind a name or a
// cloud query changes: hosts are replaced, a seed comes up after this node.
// Seeds may return some addresses together with an error about the entries
// it could not expand; the addresses are used, the error is logged.
// Implementations must be safe for concurrent use and return when ctx ends.
type SeedResolver interface {
	Seeds(ctx context.Context, join []string) ([]string, error)
}

// seedTimeout bounds one expansion of the join list: a DNS server or a
// cloud API that does not answer must not stall the join loop, which also
// retries lost peers.
const seedTimeout = 20 * time.Second

// seeds returns the join list for one attempt: Config.Join expanded by
// Config.Seeds, or Join itself. The expansion ends early when the node
// shuts down.
func (c *Cluster) seeds() []string {
	if c.cfg.Seeds == nil {
		return c.cfg.Join
	}
	ctx, cancel := context.WithTimeout(context.Background(), seedTimeout)
	defer cancel()
	go func() {
		select {
		case <-c.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	seeds, err := c.cfg.Seeds.Seeds(ctx, c.cfg.Join)
	if err != nil {
		c.log.Warn("expanding the join list; using what was found", "join", c.cfg.Join, "found", seeds, "err", err)
	}
	return seeds
}
