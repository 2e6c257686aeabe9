package harness

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
)

// Cluster is a set of Docker hosts for one test run.
type Cluster struct {
	// Hosts are the cluster's hosts, in a stable order; Hosts[0] is where meshnetd joins.
	Hosts []Host
	// WorkDir holds the cluster's files on the test machine: logs, per-host folders of a
	// simulated cluster, the busybox image.
	WorkDir string
	// Backend is "sim", "ssh" or "vm" (SSH hosts the harness booted: see [NewVMCluster]).
	Backend string
	// VM describes the guests of a "vm" cluster; nil otherwise.
	VM *VMInfo
	// Key is the cluster's gossip key (base64, 32 bytes), written to /etc/meshnet/key.
	Key string
	// Bin are meshnetd and meshctl built on the test machine; see [BuildBinaries].
	Bin Binaries
	// Underlay is the underlay bridge of a simulated cluster (its veths are Underlay-N); its
	// suffix names the cluster's cgroups (meshnet-e2e-SUFFIX-N) and registry entry.
	Underlay string

	log       *slog.Logger
	closeFn   func() error
	closeOnce sync.Once
	closeErr  error

	mu        sync.Mutex
	daemons   []*Meshnet
	installed map[string]Binaries
}

// Label marks the containers and networks the suite creates on SSH hosts, so that Reset
// removes only those and never an operator's own.
const Label = "meshnet-e2e"

// Image is the name of the busybox image the harness imports on every host.
const Image = "meshnet/busybox"

// NewKey returns a fresh gossip key in the form `meshctl keygen` prints: base64 of 32 random
// bytes.
func NewKey() string {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return base64.StdEncoding.EncodeToString(b[:])
}

// Host returns the host with the given name, or nil.
func (c *Cluster) Host(name string) Host {
	for _, h := range c.Hosts {
		if h.Name() == name {
			return h
		}
	}
	return nil
}

// Close tears the cluster down. It is idempotent and safe to call from t.Cleanup and from a
// signal handler; later calls return the first call's result.
func (c *Cluster) Close() error {
	c.closeOnce.Do(func() {
		var errs []error
		for _, d := range c.Daemons() {
			if err := d.Stop(context.Background()); err != nil {
				errs = append(errs, err)
			}
		}
		if c.closeFn != nil {
			errs = append(errs, c.closeFn())
		}
		c.closeErr = errors.Join(errs...)
	})
	return c.closeErr
}

// Daemons lists the meshnetd daemons started through [Cluster.StartMeshnet].
func (c *Cluster) Daemons() []*Meshnet {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*Meshnet(nil), c.daemons...)
}

// Daemon returns the most recent meshnetd started through the cluster on h, or nil.
func (c *Cluster) Daemon(h Host) *Meshnet {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := len(c.daemons) - 1; i >= 0; i-- {
		if c.daemons[i].Host == h {
			return c.daemons[i]
		}
	}
	return nil
}

// Options of FromEnv.
type EnvOptions struct {
	// Sim configures the simulated cluster made when MESHNET_E2E_HOSTS is not set.
	Sim SimOptions
	// SSH configures the SSH cluster made when it is.
	SSH SSHOptions
	// VM configures the VM cluster made when MESHNET_E2E_VM is set.
	VM VMOptions
}

// FromEnv makes the cluster the environment asks for: MESHNET_E2E_HOSTS (comma list of
// user@addr[:port]) selects SSH hosts, with the private key in MESHNET_E2E_SSH_KEY; otherwise
// hosts are simulated on this machine. MESHNET_E2E_VM=SUITE (bookworm, trixie, sid) boots
// VMs of that Debian suite instead and reaches them over SSH (MESHNET_E2E_VM_HOSTS guests, 3
// by default; MESHNET_E2E_VM_ACCEL=kvm|tcg skips the KVM probe).
func FromEnv(ctx context.Context, o EnvOptions) (*Cluster, error) {
	if suite := strings.TrimSpace(os.Getenv("MESHNET_E2E_VM")); suite != "" {
		o.VM.Suite = suite
		if n := os.Getenv("MESHNET_E2E_VM_HOSTS"); n != "" {
			if _, err := fmt.Sscan(n, &o.VM.Hosts); err != nil {
				return nil, fmt.Errorf("MESHNET_E2E_VM_HOSTS=%q: want a number of guests", n)
			}
		}
		if a := os.Getenv("MESHNET_E2E_VM_ACCEL"); a != "" {
			o.VM.Accel = a
		}
		if o.VM.Logger == nil {
			o.VM.Logger = o.Sim.Logger
		}
		return NewVMCluster(ctx, o.VM)
	}
	spec := strings.TrimSpace(os.Getenv("MESHNET_E2E_HOSTS"))
	if spec == "" {
		return NewSimCluster(ctx, o.Sim)
	}
	key := os.Getenv("MESHNET_E2E_SSH_KEY")
	if key == "" {
		return nil, fmt.Errorf("MESHNET_E2E_HOSTS is set but MESHNET_E2E_SSH_KEY (the SSH private key) is not")
	}
	o.SSH.KeyPath = key
	if o.SSH.Logger == nil {
		o.SSH.Logger = o.Sim.Logger
	}
	return NewSSHCluster(ctx, spec, o.SSH)
}

func discardLogger(l *slog.Logger) *slog.Logger {
	if l != nil {
		return l
	}
	return slog.New(slog.DiscardHandler)
}
