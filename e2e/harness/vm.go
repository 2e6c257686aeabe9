package harness

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// VMOptions configure a VM cluster.
type VMOptions struct {
	// Suite is the Debian suite of the guests' image: bookworm (default), trixie or sid.
	Suite string
	// Hosts is the number of guests (default 3).
	Hosts int
	// MemoryMB is each guest's memory (default 2048).
	MemoryMB int
	// Accel is "kvm", "tcg", or "" to probe KVM with a short boot and fall back to TCG.
	Accel string
	// CacheDir holds built images (default DefaultVMCacheDir).
	CacheDir string
	// WorkDir is the local folder for the run's files (default: a new temporary folder).
	WorkDir string
	// Logger receives harness steps; nil discards them.
	Logger *slog.Logger
	// Progress receives the lines an operator watches: phases and their times, a line per
	// guest while it boots. Nil: os.Stderr.
	Progress io.Writer
}

// VMPhaseLine starts the line that reports a phase's time ("vm-phase image 12.3s"), which
// scripts/e2e-vm.sh reads to print the time per phase.
const VMPhaseLine = "vm-phase"

// vmRun is one VM cluster's machine-side state: guests, underlay namespace, registry entry.
type vmRun struct {
	id, netns, workDir string
	ownWorkDir         bool
	progress           io.Writer
	log                *slog.Logger

	mu     sync.Mutex
	guests []*vmGuest
}

type vmGuest struct {
	name    string
	console string // serial console log
	cmd     *exec.Cmd
	done    chan struct{} // closed when qemu exits
}

// NewVMCluster boots opts.Hosts qemu guests of a Debian image built offline (see
// vmimage/build.sh), joined by taps on a bridge inside a network namespace of their own,
// and returns them as an SSH cluster (Backend "vm") reached from inside that namespace.
// Close kills the guests (their disks are qemu snapshots: nothing is written to the image)
// and deletes the namespace with its links.
func NewVMCluster(ctx context.Context, o VMOptions) (_ *Cluster, err error) {
	if o.Suite == "" {
		o.Suite = "bookworm"
	}
	if o.Hosts == 0 {
		o.Hosts = 3
	}
	if o.Hosts < 1 || o.Hosts > 9 {
		return nil, fmt.Errorf("VM cluster: %d guests asked, 1 to 9 supported", o.Hosts)
	}
	if o.MemoryMB == 0 {
		o.MemoryMB = 2048
	}
	if o.CacheDir == "" {
		o.CacheDir = DefaultVMCacheDir
	}
	if o.Progress == nil {
		o.Progress = os.Stderr
	}
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		return nil, errors.New("VM cluster: qemu-system-x86_64 is missing (run ./scripts/install-deps.sh)")
	}
	var idb [4]byte
	_, _ = rand.Read(idb[:])
	r := &vmRun{id: hex.EncodeToString(idb[:]), progress: o.Progress, log: discardLogger(o.Logger)}
	r.netns = vmNetnsPrefix + r.id
	r.workDir = o.WorkDir
	if r.workDir == "" {
		if r.workDir, err = os.MkdirTemp("", "meshnet-e2e-vm-"); err != nil {
			return nil, err
		}
		r.ownWorkDir = true
	} else if err := os.MkdirAll(r.workDir, 0o755); err != nil {
		return nil, err
	}
	setOwnRun(r.id, true)
	defer func() {
		if err != nil {
			_ = r.teardown()
		}
	}()
	if err := registerVM(vmRegistryEntry{ID: r.id, Netns: r.netns, WorkDir: r.ownedWorkDir()}); err != nil {
		return nil, err
	}

	// Phase 1: the image.
	start := time.Now()
	buildLog, err := os.Create(filepath.Join(r.workDir, "image-build.log"))
	if err != nil {
		return nil, err
	}
	img, built, err := ensureVMImage(ctx, o.CacheDir, o.Suite, io.MultiWriter(buildLog, prefixWriter(o.Progress, "vm: image: ")))
	buildLog.Close()
	if err != nil {
		return nil, err
	}
	how := "cached"
	if built {
		how = "built"
	}
	r.printf("vm: image %s (%s): kernel %s, engine docker.io %s, %s", o.Suite, how, img.KernelVer, img.Engine, img.Dir)
	r.printf("%s image %.1fs", VMPhaseLine, time.Since(start).Seconds())

	// Phase 2: the guests.
	start = time.Now()
	accel := o.Accel
	if accel == "" {
		accel = probeKVM(ctx, img, r.workDir)
		if accel == "kvm" {
			r.printf("vm: KVM probe booted the kernel: guests use KVM")
		} else {
			r.printf("vm: KVM unusable here (probe boot showed no kernel output): guests use TCG (emulation, slow)")
		}
	} else {
		r.printf("vm: accelerator %s (asked)", accel)
	}
	if err := setupVMNetns(ctx, r.netns, o.Hosts); err != nil {
		return nil, err
	}
	keyPath := filepath.Join(r.workDir, "id_ed25519")
	if out, err := exec.CommandContext(ctx, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "meshnet-e2e-vm", "-f", keyPath).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("ssh-keygen: %w: %s", err, out)
	}
	pub, err := os.ReadFile(keyPath + ".pub")
	if err != nil {
		return nil, err
	}
	var targets []string
	for i := 1; i <= o.Hosts; i++ {
		g, err := r.startGuest(ctx, img, accel, o.MemoryMB, i, pub)
		if err != nil {
			return nil, err
		}
		r.mu.Lock()
		r.guests = append(r.guests, g)
		r.mu.Unlock()
		targets = append(targets, "root@"+vmGuestAddr(i).String())
	}
	if err := r.waitBooted(ctx, keyPath); err != nil {
		return nil, err
	}
	r.printf("%s boot %.1fs", VMPhaseLine, time.Since(start).Seconds())

	c, err := NewSSHCluster(ctx, strings.Join(targets, ","), SSHOptions{
		KeyPath: keyPath, Netns: r.netns, Logger: o.Logger, WorkDir: filepath.Join(r.workDir, "ssh"),
	})
	if err != nil {
		return nil, err
	}
	c.Backend = "vm"
	c.VM = &VMInfo{Suite: o.Suite, Accel: accel, Kernel: img.KernelVer, Engine: img.Engine, Netns: r.netns}
	sshClose := c.closeFn
	c.closeFn = func() error { return errors.Join(sshClose(), r.teardown()) }
	return c, nil
}

// VMInfo describes the guests of a VM cluster.
type VMInfo struct {
	Suite, Accel, Kernel, Engine string
	// Netns is the namespace holding the guests' underlay; the test process reaches the
	// guests from inside it (see SSHOptions.Netns).
	Netns string
}

func (r *vmRun) ownedWorkDir() string {
	if r.ownWorkDir {
		return r.workDir
	}
	return ""
}

func (r *vmRun) printf(format string, args ...any) {
	fmt.Fprintf(r.progress, format+"\n", args...)
}

// startGuest boots guest i: its identity (hostname vmI, address, root's SSH key) goes on the
// kernel command line, read by the image's meshnet-guest-setup unit. The disk is opened with
// snapshot=on: writes go to a temporary file qemu deletes, so the cached image never changes
// and a guest's reboot keeps what it wrote.
func (r *vmRun) startGuest(ctx context.Context, img vmImage, accel string, memMB, i int, pub []byte) (*vmGuest, error) {
	g := &vmGuest{name: fmt.Sprintf("vm%d", i), console: filepath.Join(r.workDir, fmt.Sprintf("vm%d.console", i)), done: make(chan struct{})}
	cmdline := strings.Join([]string{
		"root=/dev/vda", "rw", "console=ttyS0", "net.ifnames=0", "panic=-1",
		"mn.host=" + g.name,
		"mn.addr=" + vmGuestAddr(i).String() + "/" + fmt.Sprint(vmSubnet.Bits()),
		"mn.key=" + base64.StdEncoding.EncodeToString(pub),
	}, " ")
	args := []string{"--net=/run/netns/" + r.netns, "--", "qemu-system-x86_64",
		"-name", vmQemuMarker + r.id + "-" + g.name,
		"-accel", accel, "-m", fmt.Sprint(memMB), "-smp", "1",
		"-nodefaults", "-no-user-config", "-display", "none", "-monitor", "none",
		"-serial", "file:" + g.console,
		"-kernel", img.Kernel, "-initrd", img.Initrd, "-append", cmdline,
		"-drive", "file=" + img.Disk + ",format=raw,if=virtio,snapshot=on,cache=unsafe",
		"-netdev", "tap,id=net0,ifname=" + vmTap(i) + ",script=no,downscript=no",
		"-device", fmt.Sprintf("virtio-net-pci,netdev=net0,mac=52:54:00:4d:4e:%02x", i),
		"-object", "rng-random,filename=/dev/urandom,id=rng0", "-device", "virtio-rng-pci,rng=rng0",
	}
	logf, err := os.Create(filepath.Join(r.workDir, g.name+".qemu.log"))
	if err != nil {
		return nil, err
	}
	g.cmd = exec.Command("nsenter", args...)
	g.cmd.Stdout, g.cmd.Stderr = logf, logf
	// The guests die with the test process even when it is killed outright; the next run
	// still sweeps anything left (cleanupStaleVMs).
	g.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := g.cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("starting qemu for %s: %w", g.name, err)
	}
	go func() {
		_ = g.cmd.Wait()
		logf.Close()
		close(g.done)
	}()
	r.log.Info("guest started", "guest", g.name, "pid", g.cmd.Process.Pid, "accel", accel)
	return g, nil
}

// bootMilestones are what a guest's console shows on its way up, in order; the progress line
// names the last one seen.
var bootMilestones = []struct{ marker, stage string }{
	{"Linux version", "kernel"},
	{"Run /init as init process", "initramfs"},
	{"systemd[1]", "systemd"},
	{"MESHNET-GUEST: ", "network up"},
	{"OpenBSD Secure Shell server", "sshd"},
	{"MESHNET-GUEST: docker ready", "engine ready"},
}

func (g *vmGuest) stage() string {
	b, _ := os.ReadFile(g.console)
	s := string(b)
	stage := "firmware"
	for _, m := range bootMilestones {
		if strings.Contains(s, m.marker) {
			stage = m.stage
		}
	}
	return stage
}

func (g *vmGuest) consoleTail(n int) string {
	b, _ := os.ReadFile(g.console)
	return tail(string(b), n)
}

// waitBooted waits until every guest answers SSH, printing a line per guest when its boot
// stage changes and every 15 s while it is still booting.
func (r *vmRun) waitBooted(ctx context.Context, keyPath string) error {
	ctx, cancel := context.WithTimeout(ctx, 8*time.Minute)
	defer cancel()
	start := time.Now()
	r.mu.Lock()
	guests := append([]*vmGuest(nil), r.guests...)
	r.mu.Unlock()
	errs := make([]error, len(guests))
	var wg sync.WaitGroup
	for i, g := range guests {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = r.waitGuest(ctx, g, i+1, keyPath, start)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

func (r *vmRun) waitGuest(ctx context.Context, g *vmGuest, i int, keyPath string, start time.Time) error {
	last, lastPrint := "", time.Time{}
	for {
		stage := g.stage()
		if stage != last || time.Since(lastPrint) >= 15*time.Second {
			r.printf("vm: %s booting, %3.0fs: %s", g.name, time.Since(start).Seconds(), stage)
			last, lastPrint = stage, time.Now()
		}
		select {
		case <-g.done:
			return fmt.Errorf("guest %s: qemu exited while booting (%v); console:\n%s", g.name, g.cmd.ProcessState, g.consoleTail(30))
		case <-ctx.Done():
			return fmt.Errorf("guest %s not reachable over SSH after %s (stage %s): %w; console:\n%s",
				g.name, time.Since(start).Round(time.Second), stage, ctx.Err(), g.consoleTail(30))
		case <-time.After(2 * time.Second):
		}
		// From the network on: sshd may be socket-activated (no line of its own on the console).
		if stage == "network up" || stage == "sshd" || stage == "engine ready" {
			probe, cancel := context.WithTimeout(ctx, 30*time.Second)
			err := exec.CommandContext(probe, "nsenter", "--net=/run/netns/"+r.netns, "--", "ssh", "-F", "/dev/null",
				"-i", keyPath, "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
				"-o", "BatchMode=yes", "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=15", "-o", "IdentitiesOnly=yes",
				"root@"+vmGuestAddr(i).String(), "true").Run()
			cancel()
			if err == nil {
				r.printf("vm: %s up, %3.0fs: SSH answers (%s)", g.name, time.Since(start).Seconds(), stage)
				return nil
			}
		}
	}
}

// probeKVM boots the image's kernel under KVM for a few seconds and answers "kvm" when it
// printed its banner on the serial console, else "tcg". Where nested virtualisation is broken
// KVM guests hang silently before the kernel (measured on the project's machines).
func probeKVM(ctx context.Context, img vmImage, dir string) string {
	if f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0); err != nil {
		return "tcg"
	} else {
		f.Close()
	}
	console := filepath.Join(dir, "kvm-probe.console")
	ctx, cancel := context.WithTimeout(ctx, 8*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "qemu-system-x86_64", "-accel", "kvm", "-m", "256", "-nodefaults",
		"-no-user-config", "-display", "none", "-monitor", "none", "-serial", "file:"+console,
		"-kernel", img.Kernel, "-append", "console=ttyS0 panic=-1", "-no-reboot")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return "tcg"
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	for ctx.Err() == nil {
		if b, _ := os.ReadFile(console); strings.Contains(string(b), "Linux version") {
			return "kvm"
		}
		time.Sleep(200 * time.Millisecond)
	}
	return "tcg"
}

// teardown kills the guests, deletes the underlay namespace (its bridge and taps go with it),
// the registry entry and the work folder the run made. Idempotent.
func (r *vmRun) teardown() error {
	var errs []error
	r.mu.Lock()
	guests := r.guests
	r.guests = nil
	r.mu.Unlock()
	for _, g := range guests {
		_ = syscall.Kill(g.cmd.Process.Pid, syscall.SIGKILL)
		select {
		case <-g.done:
		case <-time.After(30 * time.Second):
			errs = append(errs, fmt.Errorf("qemu of %s (pid %d) did not exit after SIGKILL", g.name, g.cmd.Process.Pid))
		}
	}
	errs = append(errs, killVMQemus(r.id), deleteVMNetns(r.netns))
	if r.ownWorkDir {
		errs = append(errs, os.RemoveAll(r.workDir))
	}
	_ = os.Remove(vmRegistryFile(r.id))
	setOwnRun(r.id, false)
	return errors.Join(errs...)
}

// killAndWait sends SIGKILL to pids and waits up to within until they are gone.
func killAndWait(pids []int, within time.Duration) error {
	for _, pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	deadline := time.Now().Add(within)
	for len(aliveOnly(pids)) > 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if left := aliveOnly(pids); len(left) > 0 {
		return fmt.Errorf("processes %v survive SIGKILL", left)
	}
	return nil
}

// prefixWriter writes each line it is given to w with prefix.
func prefixWriter(w io.Writer, prefix string) io.Writer {
	return &linePrefixer{w: w, prefix: prefix}
}

type linePrefixer struct {
	w      io.Writer
	prefix string
	mu     sync.Mutex
	buf    []byte
}

func (p *linePrefixer) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.buf = append(p.buf, b...)
	for {
		i := strings.IndexByte(string(p.buf), '\n')
		if i < 0 {
			break
		}
		fmt.Fprintf(p.w, "%s%s\n", p.prefix, p.buf[:i])
		p.buf = p.buf[i+1:]
	}
	return len(b), nil
}
