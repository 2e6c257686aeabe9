package harness

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Binaries are the paths of meshnetd and meshctl, on the test machine or on a host.
type Binaries struct {
	Meshnetd string
	Meshctl  string
}

// BuildBinaries builds meshnetd and meshctl from the module at repoRoot into outDir, statically
// (CGO_ENABLED=0) so they run on any Linux host the suite reaches.
func BuildBinaries(ctx context.Context, repoRoot, outDir string) (Binaries, error) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = "/usr/local/go/bin/go"
	}
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return Binaries{}, err
	}
	cmd := exec.CommandContext(ctx, goBin, "build", "-o", outDir+string(filepath.Separator), "./cmd/meshnetd", "./cmd/meshctl")
	cmd.Dir = repoRoot
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return Binaries{}, fmt.Errorf("building meshnetd and meshctl in %s: %w\n%s", repoRoot, err, out)
	}
	return Binaries{Meshnetd: filepath.Join(outDir, "meshnetd"), Meshctl: filepath.Join(outDir, "meshctl")}, nil
}

// Install makes b usable on h and returns their paths there. Simulated hosts share the test
// machine's file system, so the paths stay as they are; SSH hosts get copies.
func Install(ctx context.Context, h Host, b Binaries) (Binaries, error) {
	s, ok := h.(*SSHHost)
	if !ok {
		return b, nil
	}
	return s.install(ctx, b)
}

// MeshnetConfig is how one meshnetd is started.
type MeshnetConfig struct {
	// Bin are the binaries' paths on the host (see [Install]).
	Bin Binaries
	// Key is the gossip key (base64), written to /etc/meshnet/key.
	Key string
	// Join is the --join list (host[:port]).
	Join []string
	// Flags are extra meshnetd flags; they come last, so they can override the defaults.
	Flags []string
	// NoWait returns as soon as the process is started, instead of waiting until meshctl
	// reaches its control socket.
	NoWait bool
}

// KeyFile is where StartMeshnet writes the gossip key.
const KeyFile = "/etc/meshnet/key"

// Meshnet is one meshnetd on one host.
type Meshnet struct {
	Host Host
	cfg  MeshnetConfig
	args []string

	mu   sync.Mutex
	proc *Process
}

// StartMeshnet writes the key file and starts
//
//	meshnetd --node-name NAME --advertise-addr ADDR --join J --key-file /etc/meshnet/key --log-level debug FLAGS...
//
// on h, then (unless cfg.NoWait) waits until `meshctl peers` answers. Its log is the host's
// "meshnetd" log. When the daemon starts but does not become ready, the error comes with a
// non-nil *Meshnet, to stop it and read its log.
func StartMeshnet(ctx context.Context, h Host, cfg MeshnetConfig) (*Meshnet, error) {
	if err := h.WriteFile(KeyFile, []byte(cfg.Key+"\n"), 0o600); err != nil {
		return nil, err
	}
	args := []string{cfg.Bin.Meshnetd,
		"--node-name", h.Name(),
		"--advertise-addr", h.Addr().String(),
		"--key-file", KeyFile,
		"--log-level", "debug",
		// The hosts share the machine's /etc/resolv.conf: never forward a test's query to
		// the machine's real resolvers. A test that checks forwarding names its own upstream.
		"--dns-upstream", "none",
	}
	if len(cfg.Join) > 0 {
		args = append(args, "--join", strings.Join(cfg.Join, ","))
	}
	// MESHNET_E2E_DAEMON_FLAGS runs the whole suite with flags of the
	// caller's choice (e.g. --bridge-bypass); a test's own flags come after.
	args = append(args, strings.Fields(os.Getenv("MESHNET_E2E_DAEMON_FLAGS"))...)
	args = append(args, cfg.Flags...)
	m := &Meshnet{Host: h, cfg: cfg, args: args}
	p, err := h.Start(ctx, "meshnetd", m.args...)
	if err != nil {
		return nil, err
	}
	m.proc = p
	if cfg.NoWait {
		return m, nil
	}
	// A daemon that is up but not ready is returned too, so the caller can stop it and read
	// its log.
	return m, m.WaitReady(ctx, 30*time.Second)
}

func (m *Meshnet) start(ctx context.Context) error {
	p, err := m.Host.Start(ctx, "meshnetd", m.args...)
	if err != nil {
		return err
	}
	m.mu.Lock()
	m.proc = p
	m.mu.Unlock()
	if m.cfg.NoWait {
		return nil
	}
	return m.WaitReady(ctx, 30*time.Second)
}

// WaitReady waits until meshctl reaches the daemon, failing early if it exited.
func (m *Meshnet) WaitReady(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for {
		p := m.Process()
		if p.Exited() {
			return fmt.Errorf("meshnetd on %s exited:\n%s", m.Host.Name(), p.LogTail(40))
		}
		if _, last = m.Peers(ctx); last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("meshnetd on %s not ready after %s: %w\nlog:\n%s", m.Host.Name(), timeout, last, p.LogTail(40))
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// Process is the current meshnetd process.
func (m *Meshnet) Process() *Process {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.proc
}

// Running reports whether the daemon process is alive.
func (m *Meshnet) Running() bool {
	p := m.Process()
	return p != nil && !p.Exited()
}

// Kill kills the daemon with SIGKILL and waits for it to be gone: a crash, no goodbye.
func (m *Meshnet) Kill(ctx context.Context) error {
	p := m.Process()
	if p.Exited() {
		return nil
	}
	if err := p.Kill(syscall.SIGKILL); err != nil {
		return err
	}
	return p.Wait(ctx)
}

// Stop stops the daemon with SIGTERM (SIGKILL after 10 s).
func (m *Meshnet) Stop(ctx context.Context) error {
	return m.Process().Stop(ctx, 10*time.Second)
}

// Restart starts the daemon again with the same flags (after Kill or Stop).
func (m *Meshnet) Restart(ctx context.Context) error {
	if m.Running() {
		return fmt.Errorf("meshnetd on %s is still running", m.Host.Name())
	}
	return m.start(ctx)
}

// Log returns the daemon's log (every start of it on this host).
func (m *Meshnet) Log() (string, error) { return m.Process().Log() }

// Ctl runs meshctl on the daemon's host.
func (m *Meshnet) Ctl(ctx context.Context, args ...string) (string, error) {
	return Meshctl(ctx, m.Host, m.cfg.Bin.Meshctl, args...)
}

// Peers runs `meshctl -o json peers` on the daemon's host.
func (m *Meshnet) Peers(ctx context.Context) ([]Peer, error) {
	return Peers(ctx, m.Host, m.cfg.Bin.Meshctl)
}

// Meshctl runs meshctl (at path meshctl on h) with args on h.
func Meshctl(ctx context.Context, h Host, meshctl string, args ...string) (string, error) {
	return h.Exec(ctx, append([]string{meshctl}, args...)...)
}

// Peer is one entry of `meshctl -o json peers`.
type Peer struct {
	Name    string `json:"name"`
	Address string `json:"address"`
	State   string `json:"state"` // alive, suspect, dead, left
	Self    bool   `json:"self"`
}

// Peers runs `meshctl -o json peers` on h and parses the list.
func Peers(ctx context.Context, h Host, meshctl string) ([]Peer, error) {
	out, err := Meshctl(ctx, h, meshctl, "-o", "json", "peers")
	if err != nil {
		return nil, err
	}
	return ParsePeers(out)
}

// ParsePeers parses the output of `meshctl -o json peers`: a JSON list of peers, each with at
// least name, address, state and self.
func ParsePeers(out string) ([]Peer, error) {
	var peers []Peer
	if err := json.Unmarshal([]byte(strings.TrimSpace(out)), &peers); err != nil {
		return nil, fmt.Errorf("parsing meshctl -o json peers: %w\n%s", err, out)
	}
	for i, p := range peers {
		if p.Name == "" || p.State == "" {
			return nil, fmt.Errorf("meshctl -o json peers: entry %d lacks name or state: %s", i, out)
		}
	}
	return peers, nil
}

// InstalledBinaries returns the binaries' paths on h, installing them there first if needed.
func (c *Cluster) InstalledBinaries(ctx context.Context, h Host) (Binaries, error) {
	if c.Bin.Meshnetd == "" {
		return Binaries{}, fmt.Errorf("the cluster has no meshnet binaries: set Cluster.Bin (see BuildBinaries)")
	}
	c.mu.Lock()
	b, ok := c.installed[h.Name()]
	c.mu.Unlock()
	if ok {
		return b, nil
	}
	b, err := Install(ctx, h, c.Bin)
	if err != nil {
		return Binaries{}, err
	}
	c.mu.Lock()
	if c.installed == nil {
		c.installed = map[string]Binaries{}
	}
	c.installed[h.Name()] = b
	c.mu.Unlock()
	return b, nil
}

// StartMeshnet starts meshnetd on h with the cluster's key, joining the cluster's first host,
// plus extra flags; see [StartMeshnet]. The daemon is stopped by Reset and Close.
func (c *Cluster) StartMeshnet(ctx context.Context, h Host, extra ...string) (*Meshnet, error) {
	return c.StartMeshnetWith(ctx, h, MeshnetConfig{Key: c.Key, Join: []string{c.Hosts[0].Addr().String()}, Flags: extra})
}

// StartMeshnetWith starts meshnetd on h with cfg; an empty cfg.Bin means the cluster's binaries.
func (c *Cluster) StartMeshnetWith(ctx context.Context, h Host, cfg MeshnetConfig) (*Meshnet, error) {
	if cfg.Bin.Meshnetd == "" {
		b, err := c.InstalledBinaries(ctx, h)
		if err != nil {
			return nil, err
		}
		cfg.Bin = b
	}
	m, err := StartMeshnet(ctx, h, cfg)
	if m == nil {
		return nil, err
	}
	// Recorded even when not ready, so Reset and Close stop it.
	c.mu.Lock()
	c.daemons = append(c.daemons, m)
	c.mu.Unlock()
	return m, err
}

// Meshctl runs meshctl on h with the cluster's binaries.
func (c *Cluster) Meshctl(ctx context.Context, h Host, args ...string) (string, error) {
	b, err := c.InstalledBinaries(ctx, h)
	if err != nil {
		return "", err
	}
	return Meshctl(ctx, h, b.Meshctl, args...)
}

// MeshctlStatus runs `meshctl ARGS status` on h with the cluster's binaries. meshctl status
// exits 1 when it lists problems; that is no error here (the problems are in the output, which
// tests read): only a meshctl that could not print a status is.
func (c *Cluster) MeshctlStatus(ctx context.Context, h Host, args ...string) (string, error) {
	out, err := c.Meshctl(ctx, h, append(args, "status")...)
	var ce *CommandError
	if errors.As(err, &ce) && ce.ExitCode() == 1 && strings.TrimSpace(ce.Output) != "" &&
		!strings.HasPrefix(ce.Output, "meshctl: ") {
		return ce.Output, nil
	}
	return out, err
}

// Peers runs `meshctl -o json peers` on h with the cluster's binaries.
func (c *Cluster) Peers(ctx context.Context, h Host) ([]Peer, error) {
	b, err := c.InstalledBinaries(ctx, h)
	if err != nil {
		return nil, err
	}
	return Peers(ctx, h, b.Meshctl)
}

func (c *Cluster) forgetDaemons(h Host) {
	c.mu.Lock()
	defer c.mu.Unlock()
	kept := c.daemons[:0]
	for _, d := range c.daemons {
		if d.Host != h {
			kept = append(kept, d)
		}
	}
	c.daemons = kept
}
