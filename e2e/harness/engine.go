package harness

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// StartEngine implements Host: dockerd with its default paths (the host's own /run and
// /var/lib/docker), starting its own containerd, with the iptables integration on. The
// containers' cgroups go under a parent folder named after the host, so the teardown finds
// and removes exactly them in the machine-wide cgroup hierarchies.
//
// Once the engine answers, the host is made to look like a real Docker host:
//   - br_netfilter on in the host (bridge-nf-call-iptables=1): the sysctl is per network
//     namespace, independent of the root namespace where the underlay needs it off;
//   - the iptables FORWARD policy DROP: dockerd sets it only when it is the one to turn on
//     ip_forward, which is not the case when the engine is restarted on a live host.
func (h *SimHost) StartEngine(ctx context.Context) error {
	h.engineMu.Lock()
	defer h.engineMu.Unlock()
	if h.engine != nil && !h.engine.Exited() {
		return fmt.Errorf("%s: dockerd is already running (pid %d)", h.name, h.engine.Pid())
	}
	h.dropZombieContainerdPid()
	args := append([]string{"dockerd", "--iptables=true", "--cgroup-parent=" + h.cgroup}, h.dockerdArgs...)
	p, err := h.Start(ctx, "dockerd", args...)
	if err != nil {
		return err
	}
	h.engine = p
	if err := waitDocker(ctx, h, p); err != nil {
		return err
	}
	if _, err := h.Exec(ctx, "sh", "-c", "echo 1 > /proc/sys/net/bridge/bridge-nf-call-iptables && echo 1 > /proc/sys/net/bridge/bridge-nf-call-ip6tables"); err != nil {
		return fmt.Errorf("turning on br_netfilter in %s: %w", h.name, err)
	}
	pol, err := forwardPolicy(ctx, h)
	if err != nil {
		return err
	}
	if pol != "DROP" {
		h.log.Debug("FORWARD policy was not DROP after dockerd started; setting it", "host", h.name, "policy", pol)
		if _, err := h.Exec(ctx, "iptables", "-P", "FORWARD", "DROP"); err != nil {
			return fmt.Errorf("setting the FORWARD policy on %s: %w", h.name, err)
		}
	}
	if h.imageTar != "" {
		if err := ImportImage(ctx, h, h.imageTar); err != nil {
			return err
		}
	}
	if h.base == nil {
		b, err := captureBaseline(ctx, h)
		if err != nil {
			return err
		}
		h.base = b
	}
	return nil
}

// dropZombieContainerdPid removes containerd's pid file when the process it names is dead or
// a zombie. dockerd starts containerd with a parent-death signal, so a killed dockerd takes its
// containerd along; the orphan is handed to PID 1, and where PID 1 does not reap (as in this
// sandbox), it stays a zombie that `kill -0` still finds. A restarted dockerd then believes
// "containerd is still running", waits for its socket and gives up: "failed to start
// containerd: timeout waiting for containerd to start". On a real host init reaps the zombie.
func (h *SimHost) dropZombieContainerdPid() {
	const pidFile = "/run/docker/containerd/containerd.pid"
	b, err := h.ReadFile(pidFile)
	if err != nil {
		return
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || len(aliveOnly([]int{pid})) == 0 {
		h.log.Debug("dropping a stale containerd pid file", "host", h.name, "pid", strings.TrimSpace(string(b)))
		_ = os.Remove(h.rootPath(pidFile))
	}
}

// waitDocker waits until `docker info` answers on h, failing early if dockerd exited.
func waitDocker(ctx context.Context, h Host, p *Process) error {
	ctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	var last error
	for {
		if p != nil && p.Exited() {
			return fmt.Errorf("dockerd on %s exited:\n%s", h.Name(), p.LogTail(40))
		}
		_, last = h.Exec(ctx, "docker", "info", "--format", "{{.ServerVersion}}")
		if last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			tail := ""
			if p != nil {
				tail = "\n" + p.LogTail(40)
			}
			return fmt.Errorf("docker on %s did not answer: %w%s", h.Name(), last, tail)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// forwardPolicy returns the policy of the iptables FORWARD chain on h.
func forwardPolicy(ctx context.Context, h Host) (string, error) {
	out, err := h.Exec(ctx, "iptables", "-S", "FORWARD")
	if err != nil {
		return "", err
	}
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) == 3 && f[0] == "-P" && f[1] == "FORWARD" {
			return f[2], nil
		}
	}
	return "", fmt.Errorf("no FORWARD policy in iptables -S output on %s:\n%s", h.Name(), out)
}

// ForwardPolicy returns the policy of the iptables FORWARD chain on h ("DROP" on a Docker host).
func ForwardPolicy(ctx context.Context, h Host) (string, error) { return forwardPolicy(ctx, h) }

// engineDown reports whether the host's dockerd is not running.
func (h *SimHost) engineDown() bool {
	h.engineMu.Lock()
	defer h.engineMu.Unlock()
	return h.engine == nil || h.engine.Exited()
}

// KillEngine implements Host.
func (h *SimHost) KillEngine(ctx context.Context) error {
	h.engineMu.Lock()
	p := h.engine
	h.engineMu.Unlock()
	if p == nil || p.Exited() {
		return fmt.Errorf("%s: dockerd is not running", h.name)
	}
	if err := p.Kill(syscall.SIGKILL); err != nil {
		return err
	}
	if err := p.Wait(ctx); err != nil {
		return err
	}
	return h.waitContainerdGone(ctx)
}

// waitContainerdGone waits until the engine's containerd, which its parent-death signal stops
// after a killed dockerd, has exited (or is a zombie: see dropZombieContainerdPid). An engine
// started while it is still shutting down finds it "still running", cannot reach its socket
// and exits; systemd would start it again, the harness waits instead.
func (h *SimHost) waitContainerdGone(ctx context.Context) error {
	b, err := h.ReadFile("/run/docker/containerd/containerd.pid")
	if err != nil {
		return nil // no managed containerd
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return nil
	}
	deadline := time.Now().Add(20 * time.Second)
	for len(aliveOnly([]int{pid})) > 0 {
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: containerd (pid %d) still running 20s after its dockerd was killed", h.name, pid)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil
}

// baseline is a simulated host's kernel state right after its engine first came up; Reset
// returns the host to it.
type baseline struct {
	links    map[string]bool
	nftables map[string]bool
	iptables string          // iptables-save output
	loAddrs  map[string]bool // addresses on lo (meshnetd adds its DNS address and leaves it when it stops)
}

func captureBaseline(ctx context.Context, h *SimHost) (*baseline, error) {
	b := &baseline{}
	var err error
	if b.links, err = linkNames(ctx, h); err != nil {
		return nil, err
	}
	if b.nftables, err = nftTables(ctx, h); err != nil {
		return nil, err
	}
	if b.iptables, err = h.Exec(ctx, "iptables-save"); err != nil {
		return nil, err
	}
	if b.loAddrs, err = loAddrs(ctx, h); err != nil {
		return nil, err
	}
	return b, nil
}

// loAddrs lists lo's addresses as prefixes ("169.254.53.53/32").
func loAddrs(ctx context.Context, h Host) (map[string]bool, error) {
	out, err := h.Exec(ctx, "ip", "-j", "addr", "show", "dev", "lo")
	if err != nil {
		return nil, err
	}
	var ifs []struct {
		Addrs []struct {
			Local  string `json:"local"`
			Prefix int    `json:"prefixlen"`
		} `json:"addr_info"`
	}
	if err := json.Unmarshal([]byte(out), &ifs); err != nil {
		return nil, fmt.Errorf("parsing ip -j addr show dev lo on %s: %w", h.Name(), err)
	}
	m := map[string]bool{}
	for _, i := range ifs {
		for _, a := range i.Addrs {
			m[fmt.Sprintf("%s/%d", a.Local, a.Prefix)] = true
		}
	}
	return m, nil
}

func linkNames(ctx context.Context, h Host) (map[string]bool, error) {
	out, err := h.Exec(ctx, "ip", "-j", "link", "show")
	if err != nil {
		return nil, err
	}
	var links []struct {
		Name string `json:"ifname"`
	}
	if err := json.Unmarshal([]byte(out), &links); err != nil {
		return nil, fmt.Errorf("parsing ip -j link on %s: %w", h.Name(), err)
	}
	m := map[string]bool{}
	for _, l := range links {
		m[l.Name] = true
	}
	return m, nil
}

func nftTables(ctx context.Context, h Host) (map[string]bool, error) {
	out, err := h.Exec(ctx, "nft", "list", "tables")
	if err != nil {
		return nil, err
	}
	m := map[string]bool{}
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) == 3 && f[0] == "table" {
			m[f[1]+" "+f[2]] = true
		}
	}
	return m, nil
}

// Reset returns every host to the state it had right after the cluster came up: meshnetd
// daemons stopped, containers and networks the tests made removed, meshnet's state and
// configuration wiped; on simulated hosts also links, nftables tables, iptables rules and
// addresses on lo that were not there at the start removed, and, when the engine cannot
// remove a network (its driver is gone), the engine restarted with a clean network store.
func (c *Cluster) Reset(ctx context.Context) error {
	return forEachHost(c.Hosts, func(h Host) error { return c.resetHost(ctx, h) })
}

func (c *Cluster) resetHost(ctx context.Context, h Host) error {
	sim, isSim := h.(*SimHost)
	var errs []error
	// Containers and networks go first, while meshnetd answers the engine's calls. A test may
	// have left meshnet networks behind a crashed daemon, and without its driver the engine
	// retries the plugin for a minute per call before giving up; so the daemon is brought
	// back for the cleanup. If it cannot be, a simulated host gets a fresh engine instead.
	graceful := true
	if isSim && sim.engineDown() {
		// A test left the engine dead (or it failed to come back): the
		// next test needs one, so the host gets a fresh engine.
		c.log.Info("reset: the engine is not running", "host", h.Name())
		graceful = false
	} else if nets, err := meshnetNetworks(ctx, h); err != nil {
		errs = append(errs, err)
	} else if len(nets) > 0 {
		if err := c.reviveDaemon(ctx, h); err != nil {
			c.log.Info("reset: meshnetd cannot be brought back for the cleanup", "host", h.Name(), "err", lastLine(err.Error()))
			graceful = !isSim
		}
	}
	var left []string
	if graceful {
		start := time.Now()
		var err error
		left, err = removeDockerObjects(ctx, h, isSim, c.log)
		if err != nil {
			errs = append(errs, err)
		}
		c.log.Debug("reset: docker objects removed", "host", h.Name(), "took", time.Since(start), "left", left)
	}
	for _, d := range c.Daemons() {
		if d.Host == h {
			if err := d.Stop(ctx); err != nil {
				errs = append(errs, err)
			}
		}
	}
	c.forgetDaemons(h)
	// Helper processes a test started (sshd, iperf3, ...), but not the engine.
	for _, p := range h.Processes() {
		if p.Name() != "dockerd" && !p.Exited() {
			if err := p.Stop(ctx, 5*time.Second); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if _, err := h.Exec(ctx, "sh", "-c", "rm -rf /var/lib/meshnet/* /run/meshnet /etc/meshnet/* /run/docker/plugins/meshnet.sock /run/docker/plugins/meshnet.spec"); err != nil {
		errs = append(errs, fmt.Errorf("wiping meshnet state on %s: %w", h.Name(), err))
	}
	if !isSim {
		return errors.Join(errs...)
	}
	if !graceful || len(left) > 0 {
		c.log.Info("reset: giving the host a fresh engine", "host", h.Name(), "networks_left", left)
		if err := sim.recycleEngine(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	if err := sim.restoreKernel(ctx); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// meshnetNetworks lists the engine's networks that use the meshnet driver.
func meshnetNetworks(ctx context.Context, h Host) ([]string, error) {
	out, err := h.Exec(ctx, "docker", "network", "ls", "--filter", "driver=meshnet", "--format", "{{.Name}}")
	if err != nil {
		return nil, err
	}
	return strings.Fields(out), nil
}

// reviveDaemon restarts the last meshnetd started on h if it is not running.
func (c *Cluster) reviveDaemon(ctx context.Context, h Host) error {
	d := c.Daemon(h)
	if d == nil {
		return errors.New("no meshnetd was started through the cluster")
	}
	if d.Running() {
		return nil
	}
	c.log.Info("reset: restarting meshnetd to remove what a test left", "host", h.Name())
	if err := d.start(ctx); err != nil {
		return err
	}
	return d.WaitReady(ctx, 20*time.Second)
}

// removeDockerObjects removes containers and user networks: all of them on a simulated host
// (it is the suite's), only those labelled [Label] elsewhere. It returns the networks left.
func removeDockerObjects(ctx context.Context, h Host, all bool, log *slog.Logger) ([]string, error) {
	filter := []string{"--filter", "label=" + Label}
	if all {
		filter = nil
	}
	var errs []error
	out, err := h.Exec(ctx, append([]string{"docker", "ps", "-aq"}, filter...)...)
	if err != nil {
		return nil, err
	}
	if ids := strings.Fields(out); len(ids) > 0 {
		start := time.Now()
		rctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		_, err := h.Exec(rctx, append([]string{"docker", "rm", "-f"}, ids...)...)
		cancel()
		log.Debug("reset: containers removed", "host", h.Name(), "n", len(ids), "took", time.Since(start), "err", err)
		if err != nil {
			errs = append(errs, err)
		}
	}
	nets, err := userNetworks(ctx, h, filter)
	if err != nil {
		return nil, err
	}
	for _, n := range nets {
		start := time.Now()
		rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		_, err := h.Exec(rctx, "docker", "network", "rm", n)
		cancel()
		log.Debug("reset: network removed", "host", h.Name(), "network", n, "took", time.Since(start), "err", err)
	}
	left, err := userNetworks(ctx, h, filter)
	if err != nil {
		return nil, err
	}
	if len(left) > 0 && !all {
		errs = append(errs, fmt.Errorf("networks left on %s: %v", h.Name(), left))
	}
	return left, errors.Join(errs...)
}

func userNetworks(ctx context.Context, h Host, filter []string) ([]string, error) {
	out, err := h.Exec(ctx, append([]string{"docker", "network", "ls", "--format", "{{.Name}}"}, filter...)...)
	if err != nil {
		return nil, err
	}
	var nets []string
	for _, n := range strings.Fields(out) {
		switch n {
		case "bridge", "host", "none":
		default:
			nets = append(nets, n)
		}
	}
	return nets, nil
}

// recycleEngine gives the host a fresh engine, keeping only its images: every process of the
// host but the anchor is killed (dockerd, containerd, shims, containers, meshnetd), the mounts
// the engine made are unmounted, its container, network and containerd state and its /run/docker
// are dropped, and dockerd is started again. Killing is the way because a graceful engine stop
// would ask a dead network driver to tear endpoints down and wait for it.
func (h *SimHost) recycleEngine(ctx context.Context) error {
	if err := killHostProcesses(h.mntNS, h.netNS, h.cgroupDirs(), map[int]bool{h.anchorPID: true}, 15*time.Second); err != nil {
		return fmt.Errorf("recycling %s's engine: %w", h.name, err)
	}
	for _, p := range h.procs.list() {
		if err := p.Wait(ctx); err != nil {
			return err
		}
	}
	if err := h.unmountInside(ctx, "/var/lib/docker/", "/run/docker/"); err != nil {
		return fmt.Errorf("recycling %s's engine: %w", h.name, err)
	}
	fs := filepath.Join(h.dir, "fs")
	for _, p := range []string{"var/lib/docker/containers", "var/lib/docker/network", "var/lib/docker/containerd", "run/docker", "run/docker.pid", "run/containerd"} {
		if err := os.RemoveAll(filepath.Join(fs, p)); err != nil {
			return fmt.Errorf("dropping %s on %s: %w", p, h.name, err)
		}
	}
	h.engineMu.Lock()
	h.engine = nil
	h.engineMu.Unlock()
	return h.StartEngine(ctx)
}

// unmountInside lazily unmounts, in the host's mount namespace, everything mounted below the
// given prefixes (paths as the host sees them), deepest first.
func (h *SimHost) unmountInside(ctx context.Context, prefixes ...string) error {
	f, err := os.Open(fmt.Sprintf("/proc/%d/mountinfo", h.anchorPID))
	if err != nil {
		return err
	}
	entries := parseMountinfo(f)
	f.Close()
	var mps []string
	for _, p := range prefixes {
		for _, mp := range mountsUnder(entries, strings.TrimSuffix(p, "/")) {
			if mp != strings.TrimSuffix(p, "/") {
				mps = append(mps, mp)
			}
		}
	}
	sort.SliceStable(mps, func(i, j int) bool { return strings.Count(mps[i], "/") > strings.Count(mps[j], "/") })
	for len(mps) > 0 {
		n := min(len(mps), 100)
		if out, err := h.Exec(ctx, append([]string{"umount", "-l"}, mps[:n]...)...); err != nil && !strings.Contains(out, "not mounted") {
			return err
		}
		mps = mps[n:]
	}
	return nil
}

// restoreKernel removes links and nftables tables that were not there when the host came up,
// and loads the iptables rules it had then.
func (h *SimHost) restoreKernel(ctx context.Context) error {
	if h.base == nil {
		return nil
	}
	var errs []error
	links, err := linkNames(ctx, h)
	if err != nil {
		return err
	}
	var extra []string
	for l := range links {
		if !h.base.links[l] {
			extra = append(extra, l)
		}
	}
	sort.Strings(extra)
	for _, l := range extra {
		if _, err := h.Exec(ctx, "ip", "link", "del", l); err != nil && !linkGone(err) {
			errs = append(errs, err)
		}
	}
	tables, err := nftTables(ctx, h)
	if err != nil {
		return err
	}
	for t := range tables {
		if !h.base.nftables[t] {
			f := strings.Fields(t)
			if _, err := h.Exec(ctx, "nft", "delete", "table", f[0], f[1]); err != nil {
				errs = append(errs, err)
			}
		}
	}
	addrs, err := loAddrs(ctx, h)
	if err != nil {
		return err
	}
	for a := range addrs {
		if !h.base.loAddrs[a] {
			if _, err := h.Exec(ctx, "ip", "addr", "del", a, "dev", "lo"); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if now, err := h.Exec(ctx, "iptables-save"); err == nil && stripIptablesCounters(now) != stripIptablesCounters(h.base.iptables) {
		if err := h.WriteFile("/run/meshnet-e2e-iptables", []byte(h.base.iptables), 0o600); err != nil {
			errs = append(errs, err)
		} else if _, err := h.Exec(ctx, "iptables-restore", "/run/meshnet-e2e-iptables"); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// stripIptablesCounters drops comments and counters so two iptables-save outputs compare by rules.
func stripIptablesCounters(s string) string {
	var b strings.Builder
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(l, "#") {
			continue
		}
		if strings.HasPrefix(l, ":") {
			if i := strings.Index(l, " ["); i >= 0 {
				l = l[:i]
			}
		}
		b.WriteString(l)
		b.WriteByte('\n')
	}
	return b.String()
}

func lastLine(s string) string {
	s = strings.TrimRight(s, "\n")
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}
