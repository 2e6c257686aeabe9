package harness

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// SimOptions configure a simulated cluster.
type SimOptions struct {
	// Hosts is the number of hosts (default 3), named host1, host2, ...
	Hosts int
	// Subnet is the underlay (default 198.18.0.0/24, or fd00:18::/64 when
	// MESHNET_E2E_UNDERLAY=ipv6); host i gets the address .(10+i) (::(10+i) in IPv6). An
	// IPv6 underlay leaves the hosts without any IPv4 address but loopback. Two clusters
	// that are up at once need different subnets.
	Subnet netip.Prefix
	// RootAddress gives the underlay bridge the subnet's first address in the root namespace,
	// so the test process can reach the hosts (the SSH backend needs it). Without it nothing
	// in the root namespace has an address on the underlay.
	RootAddress bool
	// NoEngine leaves Docker off; NoImage skips importing the busybox image.
	NoEngine, NoImage bool
	// DockerdArgs are extra dockerd flags.
	DockerdArgs []string
	// WorkDir is where the cluster keeps its files; default a new folder under os.TempDir().
	WorkDir string
	// Keep keeps WorkDir (logs, engine state) after Close, for debugging.
	Keep bool
	// Logger receives progress; nil discards it.
	Logger *slog.Logger
}

// The folders every simulated host has of its own. Everything else (binaries, /tmp, /etc)
// is the machine's, shared.
var simHostDirs = []string{"run", "var/lib/docker", "var/lib/meshnet", "etc/docker", "etc/meshnet"}

// anchorScript runs inside the fresh namespaces before anything else and then becomes the
// anchor (sleep) that keeps them alive. $1 per-host root of folders, $2 a scratch folder,
// $3 the host name.
//
// /sys is remounted so /sys/class/net shows the host's own links (sysfs shows the network
// namespace of whoever mounts it), but the cgroup mounts are carried across: a plain sysfs
// has an empty /sys/fs/cgroup, and dockerd then fails with "Devices cgroup isn't mounted"
// (that is also why `ip netns exec`, which remounts /sys bare, does not work for dockerd).
const anchorScript = `set -eu
fs=$1
for d in ` + "run var/lib/docker var/lib/meshnet etc/docker etc/meshnet" + `; do
	mount --bind "$fs/$d" "/$d"
done
mount --rbind /sys/fs/cgroup "$2"
mount -t sysfs sysfs /sys
mount --rbind "$2" /sys/fs/cgroup
umount -l "$2"
hostname "$3"
ip link set lo up
echo ready
exec sleep infinity
`

// SimHost is a simulated Docker host: namespaces anchored on one process.
type SimHost struct {
	name      string
	addr      netip.Addr
	dir       string // WorkDir/<name>
	veth      string // the underlay veth's end in the root namespace
	cgroup    string // dockerd's --cgroup-parent
	anchor    *exec.Cmd
	anchorPID int
	anchorP   *Process
	mntNS     string
	netNS     string
	nsFiles   []*os.File // held open so the namespaces' identities cannot be reused before teardown
	log       *slog.Logger
	procs     processList

	dockerdArgs []string
	imageTar    string

	engineMu sync.Mutex
	engine   *Process
	base     *baseline
}

var _ Host = (*SimHost)(nil)

// Name implements Host.
func (h *SimHost) Name() string { return h.name }

// Addr implements Host.
func (h *SimHost) Addr() netip.Addr { return h.addr }

// AnchorPID is the PID of the process holding the host's namespaces.
func (h *SimHost) AnchorPID() int { return h.anchorPID }

// Dir is the host's folder on the test machine (fs/ holds its private folders, logs/ its logs).
func (h *SimHost) Dir() string { return h.dir }

// Processes implements Host.
func (h *SimHost) Processes() []*Process { return h.procs.list() }

// Engine returns the running dockerd process, or nil.
func (h *SimHost) Engine() *Process {
	h.engineMu.Lock()
	defer h.engineMu.Unlock()
	return h.engine
}

func (h *SimHost) nsenter(args []string) []string {
	return append([]string{"nsenter", "-t", strconv.Itoa(h.anchorPID), "-n", "-u", "-m", "--"}, args...)
}

// Exec implements Host.
func (h *SimHost) Exec(ctx context.Context, args ...string) (string, error) {
	full := h.nsenter(args)
	cmd := exec.CommandContext(ctx, full[0], full[1:]...)
	cmd.Env = hostEnv()
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), &CommandError{Host: h.name, Args: args, Output: string(out), Err: err}
	}
	return string(out), nil
}

// hostEnv is the environment of commands run in a host: the test's, without variables that
// would point docker or meshnetd somewhere else.
func hostEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "DOCKER_") || strings.HasPrefix(kv, "MESHNET_") || strings.HasPrefix(kv, "PATH=") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
}

// Start implements Host. The process is a child of the test process (nsenter execs the
// command without forking when no PID namespace is entered), so Pid is the command's PID.
func (h *SimHost) Start(_ context.Context, name string, args ...string) (*Process, error) {
	logPath := filepath.Join(h.dir, "logs", name+".log")
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("opening log for %s on %s: %w", name, h.name, err)
	}
	defer f.Close()
	fmt.Fprintf(f, "=== %s start: %s\n", time.Now().Format(time.RFC3339Nano), shellJoin(args))
	full := h.nsenter(args)
	cmd := exec.Command(full[0], full[1:]...)
	cmd.Env = hostEnv()
	cmd.Stdout, cmd.Stderr = f, f
	// A process group of its own: a ^C on the terminal reaches the test, which tears down in
	// order, rather than every daemon at once.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s on %s: %w", shellJoin(args), h.name, err)
	}
	p := &Process{name: name, host: h.name, pid: cmd.Process.Pid, logPath: logPath, ops: newLocalProc(cmd, logPath)}
	h.procs.add(p)
	h.log.Debug("started", "host", h.name, "name", name, "pid", p.pid)
	return p, nil
}

// localProc is a process that is a child of the test process.
type localProc struct {
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
}

func newLocalProc(cmd *exec.Cmd, logPath string) *localProc {
	p := &localProc{cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait() // reaps the child; the exit status is in its log
		close(p.done)
	}()
	return p
}

func (p *localProc) signal(sig syscall.Signal) error {
	if p.exited() {
		return nil
	}
	return syscall.Kill(p.cmd.Process.Pid, sig)
}

func (p *localProc) wait(ctx context.Context) error {
	select {
	case <-p.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (p *localProc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (p *localProc) readLog() ([]byte, error) { return os.ReadFile(p.logPath) }

// WriteFile implements Host. /proc/PID/root resolves paths through the anchor's mount
// namespace, so /etc/meshnet/key lands in the host's own /etc/meshnet.
func (h *SimHost) WriteFile(path string, data []byte, mode os.FileMode) error {
	p := h.rootPath(path)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return fmt.Errorf("writing %s on %s: %w", path, h.name, err)
	}
	if err := os.WriteFile(p, data, mode); err != nil {
		return fmt.Errorf("writing %s on %s: %w", path, h.name, err)
	}
	return os.Chmod(p, mode)
}

// ReadFile reads a file in the host's file system view.
func (h *SimHost) ReadFile(path string) ([]byte, error) {
	return os.ReadFile(h.rootPath(path))
}

func (h *SimHost) rootPath(path string) string {
	return fmt.Sprintf("/proc/%d/root%s", h.anchorPID, filepath.Clean("/"+path))
}

// simCluster is the machine-side state of a simulated cluster.
type simCluster struct {
	id                           string
	workDir                      string
	bridge                       string
	opts                         SimOptions
	hosts                        []*SimHost
	log                          *slog.Logger
	bridgeUp, nfHeld, registered bool
}

// NewSimCluster creates opts.Hosts simulated hosts on an underlay bridge, starts a Docker
// engine in each and imports the busybox image. On error everything made so far is torn down.
func NewSimCluster(ctx context.Context, opts SimOptions) (_ *Cluster, err error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("simulated hosts need root (namespaces, mounts, links)")
	}
	if opts.Hosts == 0 {
		opts.Hosts = 3
	}
	if opts.Hosts < 1 || opts.Hosts > 200 {
		return nil, fmt.Errorf("simulated cluster: %d hosts is out of range", opts.Hosts)
	}
	if !opts.Subnet.IsValid() {
		opts.Subnet = DefaultUnderlay()
	}
	opts.Subnet = opts.Subnet.Masked()
	if opts.Subnet.Addr().Is4() && opts.Subnet.Bits() > 24 || opts.Subnet.Addr().Is6() && opts.Subnet.Bits() > 120 {
		return nil, fmt.Errorf("simulated cluster: underlay %s must be an IPv4 /24 or larger, or an IPv6 /120 or larger", opts.Subnet)
	}
	log := discardLogger(opts.Logger)
	var rnd [3]byte
	_, _ = rand.Read(rnd[:])
	sc := &simCluster{id: hex.EncodeToString(rnd[:]), opts: opts, log: log}
	sc.bridge = "mnu-" + sc.id
	if opts.WorkDir == "" {
		if sc.workDir, err = os.MkdirTemp("", "meshnet-e2e-sim-"); err != nil {
			return nil, fmt.Errorf("making work dir: %w", err)
		}
	} else {
		sc.workDir = opts.WorkDir
		if err := os.MkdirAll(sc.workDir, 0o755); err != nil {
			return nil, fmt.Errorf("making work dir: %w", err)
		}
	}
	c := &Cluster{WorkDir: sc.workDir, Backend: "sim", Key: NewKey(), Underlay: sc.bridge, log: log, closeFn: sc.close}
	defer func() {
		if err != nil {
			if cerr := c.Close(); cerr != nil {
				log.Warn("teardown after failed start", "err", cerr)
			}
		}
	}()
	start := time.Now()
	if err := sc.setupUnderlay(ctx); err != nil {
		return nil, err
	}
	for i := 1; i <= opts.Hosts; i++ {
		h, err := sc.addHost(ctx, i)
		if err != nil {
			return nil, err
		}
		c.Hosts = append(c.Hosts, h)
	}
	if err := sc.register(); err != nil {
		return nil, err
	}
	log.Info("simulated hosts up", "cluster", sc.id, "hosts", opts.Hosts, "took", time.Since(start).Round(time.Millisecond))
	if opts.NoEngine {
		return c, nil
	}
	if !opts.NoImage {
		tar, err := buildBusyboxTar(ctx, filepath.Join(sc.workDir, "image"))
		if err != nil {
			return nil, err
		}
		for _, h := range sc.hosts {
			h.imageTar = tar
		}
	}
	if err := forEachHost(c.Hosts, func(h Host) error { return h.StartEngine(ctx) }); err != nil {
		return nil, err
	}
	log.Info("docker engines up", "cluster", sc.id, "took", time.Since(start).Round(time.Millisecond))
	return c, nil
}

// forEachHost runs fn for every host at once and joins the errors.
func forEachHost(hosts []Host, fn func(Host) error) error {
	errs := make([]error, len(hosts))
	var wg sync.WaitGroup
	for i, h := range hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = fn(h)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

func run(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), &CommandError{Host: "root namespace", Args: args, Output: string(out), Err: err}
	}
	return string(out), nil
}

func (sc *simCluster) setupUnderlay(ctx context.Context) error {
	if err := acquireRootBridgeNF(); err != nil {
		return fmt.Errorf("turning off bridge netfilter for the underlay: %w", err)
	}
	sc.nfHeld = true
	if _, err := run(ctx, "ip", "link", "add", sc.bridge, "type", "bridge"); err != nil {
		return fmt.Errorf("creating underlay bridge: %w", err)
	}
	sc.bridgeUp = true
	if sc.opts.RootAddress {
		a := sc.opts.Subnet.Addr().Next()
		if _, err := run(ctx, addrAdd(netip.PrefixFrom(a, sc.opts.Subnet.Bits()), sc.bridge)...); err != nil {
			return fmt.Errorf("addressing underlay bridge: %w", err)
		}
	}
	if _, err := run(ctx, "ip", "link", "set", sc.bridge, "up"); err != nil {
		return fmt.Errorf("bringing underlay bridge up: %w", err)
	}
	return nil
}

// hostAddr is host i's underlay address: .(10+i) in the subnet (::(10+i) in IPv6).
func hostAddr(subnet netip.Prefix, i int) netip.Addr {
	a := subnet.Addr()
	for range 10 + i {
		a = a.Next()
	}
	return a
}

// addrAdd is the ip command that gives dev the address p; an IPv6 one without duplicate
// address detection, which would hold it tentative for a second or two.
func addrAdd(p netip.Prefix, dev string) []string {
	args := []string{"ip", "addr", "add", p.String(), "dev", dev}
	if p.Addr().Is6() {
		args = append(args, "nodad")
	}
	return args
}

// DefaultUnderlay is the simulated hosts' underlay: 198.18.0.0/24, or fd00:18::/64 when
// MESHNET_E2E_UNDERLAY is "ipv6" (the suite on an IPv6-only underlay).
func DefaultUnderlay() netip.Prefix {
	if os.Getenv("MESHNET_E2E_UNDERLAY") == "ipv6" {
		return netip.MustParsePrefix("fd00:18::/64")
	}
	return netip.MustParsePrefix("198.18.0.0/24")
}

func (sc *simCluster) addHost(ctx context.Context, i int) (*SimHost, error) {
	h := &SimHost{
		name:        fmt.Sprintf("host%d", i),
		addr:        hostAddr(sc.opts.Subnet, i),
		veth:        fmt.Sprintf("%s-%d", sc.bridge, i),
		cgroup:      fmt.Sprintf("/meshnet-e2e-%s-%d", sc.id, i),
		log:         sc.log,
		dockerdArgs: sc.opts.DockerdArgs,
	}
	h.dir = filepath.Join(sc.workDir, h.name)
	sc.hosts = append(sc.hosts, h) // before anything can fail: teardown covers partial hosts
	fs := filepath.Join(h.dir, "fs")
	for _, d := range append(simHostDirs, "run/lock", "run/sshd") {
		if err := os.MkdirAll(filepath.Join(fs, d), 0o755); err != nil {
			return nil, fmt.Errorf("making %s's folders: %w", h.name, err)
		}
	}
	if err := os.MkdirAll(filepath.Join(h.dir, "logs"), 0o755); err != nil {
		return nil, err
	}
	carry := filepath.Join(h.dir, "cgroup-carry")
	if err := os.MkdirAll(carry, 0o755); err != nil {
		return nil, err
	}
	// Bind mounts need their mount points in the shared root file system; on a machine without
	// Docker or meshnet installed these are new, empty folders.
	for _, d := range simHostDirs {
		if err := os.MkdirAll("/"+d, 0o755); err != nil {
			return nil, fmt.Errorf("making mount point /%s: %w", d, err)
		}
	}
	if err := h.startAnchor(ctx, fs, carry); err != nil {
		return nil, err
	}
	if _, err := run(ctx, "ip", "link", "add", h.veth, "type", "veth", "peer", "name", "eth0", "netns", strconv.Itoa(h.anchorPID)); err != nil {
		return nil, fmt.Errorf("creating %s's underlay veth: %w", h.name, err)
	}
	if _, err := run(ctx, "ip", "link", "set", h.veth, "master", sc.bridge, "up"); err != nil {
		return nil, fmt.Errorf("attaching %s to the underlay: %w", h.name, err)
	}
	for _, args := range [][]string{
		addrAdd(netip.PrefixFrom(h.addr, sc.opts.Subnet.Bits()), "eth0"),
		{"ip", "link", "set", "eth0", "up"},
	} {
		if _, err := h.Exec(ctx, args...); err != nil {
			return nil, fmt.Errorf("configuring %s's underlay: %w", h.name, err)
		}
	}
	return h, nil
}

func (h *SimHost) startAnchor(ctx context.Context, fs, carry string) error {
	logPath := filepath.Join(h.dir, "logs", "anchor.log")
	logf, err := os.Create(logPath)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command("unshare", "--net", "--uts", "--mount", "--propagation", "private",
		"sh", "-c", anchorScript, "anchor", fs, carry, h.name)
	cmd.Env = hostEnv()
	cmd.Stderr = logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s's anchor: %w", h.name, err)
	}
	h.anchor = cmd
	h.anchorPID = cmd.Process.Pid
	h.anchorP = &Process{name: "anchor", host: h.name, pid: h.anchorPID, logPath: logPath, ops: newLocalProc(cmd, logPath)}
	ready := make(chan error, 1)
	go func() {
		line, err := bufio.NewReader(stdout).ReadString('\n')
		if err == nil && strings.TrimSpace(line) != "ready" {
			err = fmt.Errorf("unexpected %q", line)
		}
		ready <- err
		_, _ = io.Copy(io.Discard, stdout)
	}()
	select {
	case err = <-ready:
	case <-ctx.Done():
		err = ctx.Err()
	case <-time.After(30 * time.Second):
		err = errors.New("timed out")
	}
	if err != nil {
		b, _ := os.ReadFile(logPath)
		return fmt.Errorf("setting up %s's namespaces: %w\n%s", h.name, err, b)
	}
	// The anchor ran unshare(2) itself before exec'ing the script, so its namespaces are the
	// host's.
	for _, kind := range []string{"mnt", "net"} {
		f, err := os.Open(fmt.Sprintf("/proc/%d/ns/%s", h.anchorPID, kind))
		if err != nil {
			return fmt.Errorf("holding %s's %s namespace: %w", h.name, kind, err)
		}
		h.nsFiles = append(h.nsFiles, f)
	}
	h.mntNS, h.netNS = nsID(h.anchorPID, "mnt"), nsID(h.anchorPID, "net")
	if h.mntNS == "" || h.netNS == "" || h.mntNS == nsID(os.Getpid(), "mnt") || h.netNS == nsID(os.Getpid(), "net") {
		return fmt.Errorf("%s's anchor is not in namespaces of its own (mnt %q, net %q)", h.name, h.mntNS, h.netNS)
	}
	return nil
}

// cgroupDirs are the cgroup folders dockerd creates for the host's containers, one per
// hierarchy (they exist only where a container ran).
func (h *SimHost) cgroupDirs() []string {
	var out []string
	for _, root := range cgroupRoots() {
		out = append(out, filepath.Join(root, h.cgroup))
		for _, id := range h.pluginIDs() {
			out = append(out, filepath.Join(root, id))
		}
	}
	return out
}

// teardown kills every process of the host and removes its cgroups.
func (h *SimHost) teardown() error {
	var errs []error
	if h.mntNS != "" {
		if err := killHostProcesses(h.mntNS, h.netNS, h.cgroupDirs(), nil, 15*time.Second); err != nil {
			errs = append(errs, fmt.Errorf("killing %s's processes: %w", h.name, err))
		}
	} else if h.anchor != nil && h.anchor.Process != nil {
		_ = h.anchor.Process.Kill()
	}
	// Reap what the test process started (the anchor, dockerd, meshnetd, ...).
	wctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, p := range h.procs.list() {
		_ = p.Wait(wctx)
	}
	if h.anchorP != nil {
		_ = h.anchorP.Wait(wctx)
	}
	if h.cgroup != "" {
		if err := removeCgroupDirs(h.cgroupDirs()); err != nil {
			errs = append(errs, err)
		}
	}
	for _, f := range h.nsFiles {
		f.Close()
	}
	h.nsFiles = nil
	return errors.Join(errs...)
}

// linkGone: ip link del failed because the link is not there, either before
// it looked ("Cannot find device") or between its lookup and the delete, as
// when the kernel is still taking down the namespace that held its peer ("No
// such device").
func linkGone(err error) bool {
	return strings.Contains(err.Error(), "Cannot find device") || strings.Contains(err.Error(), "No such device")
}

func (sc *simCluster) close() error {
	var errs []error
	start := time.Now()
	for _, h := range sc.hosts {
		errs = append(errs, h.teardown())
	}
	sc.log.Debug("host processes killed", "took", time.Since(start))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, h := range sc.hosts {
		// The veth pair goes away with the host's network namespace; this catches the case
		// where the namespace outlived its processes.
		if _, err := run(ctx, "ip", "link", "del", h.veth); err != nil && !linkGone(err) {
			errs = append(errs, err)
		}
	}
	if sc.bridgeUp {
		if _, err := run(ctx, "ip", "link", "del", sc.bridge); err != nil && !linkGone(err) {
			errs = append(errs, err)
		}
	}
	sc.log.Debug("links deleted", "took", time.Since(start))
	if err := unmountUnder(sc.workDir); err != nil {
		errs = append(errs, fmt.Errorf("unmounting under %s: %w", sc.workDir, err))
	}
	if sc.nfHeld {
		errs = append(errs, releaseRootBridgeNF())
	}
	if sc.registered {
		unregister(sc.id)
	}
	if !sc.opts.Keep {
		if err := os.RemoveAll(sc.workDir); err != nil {
			errs = append(errs, fmt.Errorf("removing %s: %w", sc.workDir, err))
		}
	}
	err := errors.Join(errs...)
	sc.log.Info("simulated cluster torn down", "cluster", sc.id, "err", err)
	return err
}

// UnderlayLinks lists the links in the root namespace whose names start with prefix ("mnu-"
// for every simulated underlay); after all clusters are closed there should be none.
func UnderlayLinks(prefix string) ([]string, error) {
	entries, err := os.ReadDir("/sys/class/net")
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), prefix) {
			out = append(out, e.Name())
		}
	}
	return out, nil
}
