package harness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// SSHOptions configure an SSH cluster.
type SSHOptions struct {
	// KeyPath is the private key ssh authenticates with (required).
	KeyPath string
	// BinDir is where meshnetd and meshctl are copied on each host (default /usr/local/bin).
	BinDir string
	// LogDir is where processes started on a host write their logs (default /var/log/meshnet-e2e).
	LogDir string
	// WorkDir is the local folder for the cluster's files (default: a new temporary folder).
	WorkDir string
	// Logger receives progress; nil discards it.
	Logger *slog.Logger
	// Netns, when set, is a named network namespace (/run/netns/NAME) the hosts are reached
	// from: ssh runs inside it. The VM backend keeps its guests' underlay there.
	Netns string
}

// SSHHost is a host reached with the OpenSSH client (`ssh -i KEY ... user@addr -- cmd`).
type SSHHost struct {
	name   string
	addr   netip.Addr
	user   string
	target string // address as ssh takes it
	port   int
	key    string
	netns  string
	binDir string
	logDir string
	log    *slog.Logger
	procs  processList
}

var _ Host = (*SSHHost)(nil)

// sshTarget is one entry of MESHNET_E2E_HOSTS.
type sshTarget struct {
	user, host string
	port       int
}

// parseSSHSpec parses a comma list of user@addr[:port] (user defaults to root, port to 22;
// IPv6 addresses in brackets: root@[fd00::1]:22).
func parseSSHSpec(spec string) ([]sshTarget, error) {
	var out []sshTarget
	for _, item := range strings.Split(spec, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		t := sshTarget{user: "root", port: 22}
		if i := strings.LastIndex(item, "@"); i >= 0 {
			t.user, item = item[:i], item[i+1:]
			if t.user == "" {
				return nil, fmt.Errorf("empty user in %q", spec)
			}
		}
		host, port, err := net.SplitHostPort(item)
		if err != nil {
			// No port given (or a bare IPv6 address).
			host = strings.TrimSuffix(strings.TrimPrefix(item, "["), "]")
		} else {
			p, err := strconv.Atoi(port)
			if err != nil || p < 1 || p > 65535 {
				return nil, fmt.Errorf("bad port in %q", item)
			}
			t.port = p
		}
		if host == "" {
			return nil, fmt.Errorf("empty address in %q", spec)
		}
		t.host = host
		out = append(out, t)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no hosts in %q", spec)
	}
	return out, nil
}

// NewSSHCluster connects to the hosts in spec (comma list of user@addr[:port]), checks that
// each answers and runs Docker, and imports the busybox image. Host names are the hosts' own
// `hostname`; addresses are resolved on the test machine.
func NewSSHCluster(ctx context.Context, spec string, o SSHOptions) (_ *Cluster, err error) {
	targets, err := parseSSHSpec(spec)
	if err != nil {
		return nil, err
	}
	if o.KeyPath == "" {
		return nil, errors.New("SSH cluster: no private key given")
	}
	if _, err := os.Stat(o.KeyPath); err != nil {
		return nil, fmt.Errorf("SSH cluster: private key: %w", err)
	}
	if o.BinDir == "" {
		o.BinDir = "/usr/local/bin"
	}
	if o.LogDir == "" {
		o.LogDir = "/var/log/meshnet-e2e"
	}
	log := discardLogger(o.Logger)
	workDir := o.WorkDir
	if workDir == "" {
		if workDir, err = os.MkdirTemp("", "meshnet-e2e-ssh-"); err != nil {
			return nil, err
		}
	}
	c := &Cluster{WorkDir: workDir, Backend: "ssh", Key: NewKey(), log: log}
	c.closeFn = func() error {
		var errs []error
		for _, h := range c.Hosts {
			for _, p := range h.Processes() {
				if !p.Exited() {
					errs = append(errs, p.Stop(context.Background(), 10*time.Second))
				}
			}
		}
		if o.WorkDir == "" {
			errs = append(errs, os.RemoveAll(workDir))
		}
		return errors.Join(errs...)
	}
	defer func() {
		if err != nil {
			_ = c.Close()
		}
	}()
	for _, t := range targets {
		addr, err := netip.ParseAddr(t.host)
		if err != nil {
			ips, lerr := net.DefaultResolver.LookupNetIP(ctx, "ip", t.host)
			if lerr != nil || len(ips) == 0 {
				return nil, fmt.Errorf("resolving %s: %v", t.host, lerr)
			}
			addr = ips[0].Unmap()
		}
		h := &SSHHost{addr: addr, user: t.user, target: t.host, port: t.port, key: o.KeyPath, netns: o.Netns,
			binDir: o.BinDir, logDir: o.LogDir, log: log}
		out, err := h.Exec(ctx, "hostname")
		if err != nil {
			return nil, fmt.Errorf("reaching %s@%s: %w", t.user, t.host, err)
		}
		h.name = strings.TrimSpace(out)
		if h.name == "" {
			return nil, fmt.Errorf("%s@%s has no hostname", t.user, t.host)
		}
		if other := c.Host(h.name); other != nil {
			return nil, fmt.Errorf("two hosts are named %s (%s and %s): meshnet node names must differ", h.name, other.Addr(), addr)
		}
		c.Hosts = append(c.Hosts, h)
	}
	if err := forEachHost(c.Hosts, func(h Host) error { return waitDocker(ctx, h, nil) }); err != nil {
		return nil, err
	}
	if err := c.EnsureImage(ctx); err != nil {
		return nil, err
	}
	return c, nil
}

// Name implements Host.
func (h *SSHHost) Name() string { return h.name }

// Addr implements Host.
func (h *SSHHost) Addr() netip.Addr { return h.addr }

// Processes implements Host.
func (h *SSHHost) Processes() []*Process { return h.procs.list() }

func (h *SSHHost) sshArgs() []string {
	var pre []string
	if h.netns != "" {
		pre = []string{"nsenter", "--net=/run/netns/" + h.netns, "--"}
	}
	return append(pre, "ssh", "-F", "/dev/null", "-i", h.key, "-p", strconv.Itoa(h.port),
		"-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes",
		"-o", "LogLevel=ERROR", "-o", "ConnectTimeout=10", "-o", "ServerAliveInterval=15",
		"-o", "IdentitiesOnly=yes",
		h.user+"@"+h.target)
}

// shell runs a shell command line on the host with stdin.
func (h *SSHHost) shell(ctx context.Context, stdin []byte, display []string, cmdline string) (string, error) {
	args := append(h.sshArgs(), cmdline)
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), &CommandError{Host: h.name + " (ssh " + h.target + ")", Args: display, Output: string(out), Err: err}
	}
	return string(out), nil
}

// Exec implements Host. The arguments are quoted for the remote shell.
func (h *SSHHost) Exec(ctx context.Context, args ...string) (string, error) {
	return h.shell(ctx, nil, args, shellJoin(args))
}

// WriteFile implements Host: `cat > path` over ssh, through a temporary name so a running
// binary is replaced, not overwritten.
func (h *SSHHost) WriteFile(p string, data []byte, mode os.FileMode) error {
	tmp := p + ".meshnet-e2e-tmp"
	cmdline := fmt.Sprintf("mkdir -p %s && cat > %s && chmod %o %s && mv -f %s %s",
		shellQuote(path.Dir(p)), shellQuote(tmp), mode.Perm(), shellQuote(tmp), shellQuote(tmp), shellQuote(p))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	_, err := h.shell(ctx, data, []string{"write", p}, cmdline)
	return err
}

// Start implements Host: `nohup CMD >> LOG 2>&1 & echo $!`.
func (h *SSHHost) Start(ctx context.Context, name string, args ...string) (*Process, error) {
	logPath := path.Join(h.logDir, name+".log")
	// The background job must be the nohup command alone, with all its descriptors redirected:
	// `a && b & echo $!` would background a subshell that keeps the session's stdout open.
	cmdline := fmt.Sprintf("mkdir -p %s && echo %s >> %s && cd / || exit 1; nohup %s >> %s 2>&1 < /dev/null & echo $!",
		shellQuote(h.logDir),
		shellQuote("=== "+time.Now().Format(time.RFC3339Nano)+" start: "+shellJoin(args)), shellQuote(logPath),
		shellJoin(args), shellQuote(logPath))
	out, err := h.shell(ctx, nil, args, cmdline)
	if err != nil {
		return nil, fmt.Errorf("starting %s on %s: %w", name, h.name, err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(out))
	if err != nil {
		return nil, fmt.Errorf("starting %s on %s: no PID in %q", name, h.name, out)
	}
	p := &Process{name: name, host: h.name, pid: pid, logPath: logPath, ops: &remoteProc{h: h, pid: pid, logPath: logPath}}
	h.procs.add(p)
	return p, nil
}

// remoteProc is a process on an SSH host, known by its PID.
type remoteProc struct {
	h       *SSHHost
	pid     int
	logPath string
	mu      sync.Mutex
	gone    bool
}

func (p *remoteProc) signal(sig syscall.Signal) error {
	if p.exited() {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := p.h.Exec(ctx, "kill", "-"+strconv.Itoa(int(sig)), strconv.Itoa(p.pid))
	return err
}

// exited reports whether the PID is gone or a zombie (a zombie nobody reaps still answers kill -0).
func (p *remoteProc) exited() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.gone {
		return true
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	script := fmt.Sprintf(`s=$(cat /proc/%d/stat 2>/dev/null) || exit 3; s=${s##*) }; case $s in Z*|X*) exit 3;; esac; exit 0`, p.pid)
	_, err := p.h.shell(ctx, nil, []string{"check", strconv.Itoa(p.pid)}, script)
	var ce *CommandError
	if errors.As(err, &ce) && ce.ExitCode() == 3 {
		p.gone = true
	}
	return p.gone
}

func (p *remoteProc) wait(ctx context.Context) error {
	for !p.exited() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	return nil
}

func (p *remoteProc) readLog() ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := p.h.Exec(ctx, "cat", p.logPath)
	return []byte(out), err
}

// StartEngine implements Host: Docker is a system service on an SSH host.
func (h *SSHHost) StartEngine(ctx context.Context) error {
	if _, err := h.shell(ctx, nil, []string{"start docker"}, "systemctl start docker 2>/dev/null || service docker start"); err != nil {
		return err
	}
	return waitDocker(ctx, h, nil)
}

// KillEngine implements Host: SIGKILL to the PID in /var/run/docker.pid.
func (h *SSHHost) KillEngine(ctx context.Context) error {
	out, err := h.Exec(ctx, "cat", "/var/run/docker.pid")
	if err != nil {
		return err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(out))
	if err != nil {
		return fmt.Errorf("reading dockerd's pid on %s: %q", h.name, out)
	}
	p := &remoteProc{h: h, pid: pid}
	if err := p.signal(syscall.SIGKILL); err != nil {
		return err
	}
	return p.wait(ctx)
}

func (h *SSHHost) install(ctx context.Context, b Binaries) (Binaries, error) {
	out := Binaries{Meshnetd: path.Join(h.binDir, "meshnetd"), Meshctl: path.Join(h.binDir, "meshctl")}
	for local, remote := range map[string]string{b.Meshnetd: out.Meshnetd, b.Meshctl: out.Meshctl} {
		data, err := os.ReadFile(local)
		if err != nil {
			return Binaries{}, err
		}
		if err := h.WriteFile(remote, data, 0o755); err != nil {
			return Binaries{}, fmt.Errorf("installing %s on %s: %w", remote, h.name, err)
		}
	}
	return out, nil
}
