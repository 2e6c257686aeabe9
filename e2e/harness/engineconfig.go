package harness

import (
	"context"
	"fmt"
)

// daemonJSON is where the engine reads its configuration.
const daemonJSON = "/etc/docker/daemon.json"

// ConfigureEngine gives h's engine the configuration daemonJSON holds ("" removes the file,
// back to the defaults) and restarts the engine so that it reads it. The engine is killed and
// started again (KillEngine, StartEngine: a simulated host has no service manager), so call it
// while the host runs no container a test still needs. A simulated host's /etc/docker is its
// own; on an SSH host this is the real file.
func ConfigureEngine(ctx context.Context, h Host, config string) error {
	if config == "" {
		if _, err := h.Exec(ctx, "rm", "-f", daemonJSON); err != nil {
			return fmt.Errorf("removing %s on %s: %w", daemonJSON, h.Name(), err)
		}
	} else if err := h.WriteFile(daemonJSON, []byte(config), 0o644); err != nil {
		return fmt.Errorf("writing %s on %s: %w", daemonJSON, h.Name(), err)
	}
	if err := h.KillEngine(ctx); err != nil {
		return fmt.Errorf("stopping the engine of %s to reconfigure it: %w", h.Name(), err)
	}
	if err := h.StartEngine(ctx); err != nil {
		return fmt.Errorf("starting the engine of %s with %s: %w", h.Name(), daemonJSON, err)
	}
	return nil
}
