package daemon

import (
	"errors"
	"log/slog"

	"github.com/meshnet/meshnet/discover"
	"github.com/meshnet/meshnet/gossip"
)

// seedResolver expands --join on every join attempt: host names into all
// their addresses, cloud discovery queries into the instances found. Seeds
// without a port get this node's gossip port: a mesh runs on one port.
func seedResolver(cfg Config, log *slog.Logger) gossip.SeedResolver {
	return discover.New(cfg.BindPort, log.With("component", "discover"))
}

// checkJoin checks the form of every --join entry (no lookups), so that a
// typo in a provider name stops meshnetd at once instead of being retried
// forever.
func (c *Config) checkJoin() error {
	r := discover.New(c.BindPort, nil)
	var errs []error
	for _, j := range c.Join {
		errs = append(errs, r.Check(j))
	}
	return errors.Join(errs...)
}
