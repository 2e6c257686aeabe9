package bench

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/meshnet/meshnet/e2e/harness"
)

// swarmNetwork is the attachable Swarm overlay the peer's containers use.
const swarmNetwork = "bench-swarm"

// setupSwarm makes host A a Swarm manager and host B a worker, creates an attachable overlay
// (Docker's VXLAN overlay, the peer meshnet replaces) and a container on each host.
func (e *Env) setupSwarm(ctx context.Context) *Path {
	p := &Path{Name: PathSwarm}
	e.Networks[PathSwarm] = swarmNetwork
	a, b := e.A, e.B
	if _, err := harness.Docker(ctx, a, "swarm", "init", "--advertise-addr", a.Addr().String(), "--listen-addr", a.Addr().String()+":2377"); err != nil {
		p.Err = fmt.Errorf("docker swarm init: %s", lastLine(err))
		return p
	}
	tok, err := harness.Docker(ctx, a, "swarm", "join-token", "-q", "worker")
	if err != nil {
		p.Err = fmt.Errorf("docker swarm join-token: %s", lastLine(err))
		return p
	}
	if _, err := harness.Docker(ctx, b, "swarm", "join", "--token", strings.TrimSpace(tok),
		"--advertise-addr", b.Addr().String(), a.Addr().String()+":2377"); err != nil {
		p.Err = fmt.Errorf("docker swarm join: %s", lastLine(err))
		return p
	}
	if _, err := harness.Docker(ctx, a, "network", "create", "-d", "overlay", "--attachable",
		"--subnet", swarmSubnet.String(), swarmNetwork); err != nil {
		p.Err = fmt.Errorf("creating the overlay: %s", lastLine(err))
		return p
	}
	p.Client, p.Server, p.Err = e.containerPair(ctx, swarmNetwork)
	if p.Err != nil {
		return p
	}
	p.Err = e.waitPing(ctx, p.Client, p.Server.IP, 60*time.Second)
	return p
}
