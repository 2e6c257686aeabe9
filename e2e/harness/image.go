package harness

import (
	"context"
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// buildBusyboxTar makes the root file system of the meshnet/busybox image in dir and returns
// the path of its tarball: /bin/busybox from busybox-static with its applets as symlinks, and
// the few files a container expects. No registry is reachable, so images are made locally.
func buildBusyboxTar(ctx context.Context, dir string) (string, error) {
	tarPath := filepath.Join(dir, "busybox.tar")
	if _, err := os.Stat(tarPath); err == nil {
		return tarPath, nil
	}
	src, err := exec.LookPath("busybox")
	if err != nil {
		return "", fmt.Errorf("building the busybox image: busybox-static is not installed: %w", err)
	}
	if err := checkStatic(src); err != nil {
		return "", fmt.Errorf("building the busybox image: %w", err)
	}
	rootfs := filepath.Join(dir, "rootfs")
	for _, d := range []string{"bin", "sbin", "usr/bin", "usr/sbin", "etc", "proc", "sys", "dev", "tmp", "root", "var"} {
		if err := os.MkdirAll(filepath.Join(rootfs, d), 0o755); err != nil {
			return "", err
		}
	}
	if err := os.Chmod(filepath.Join(rootfs, "tmp"), 0o1777); err != nil {
		return "", err
	}
	b, err := os.ReadFile(src)
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(rootfs, "bin/busybox"), b, 0o755); err != nil {
		return "", err
	}
	// Run inside the root file system so the applet links point at /bin/busybox there.
	if out, err := exec.CommandContext(ctx, "chroot", rootfs, "/bin/busybox", "--install", "-s").CombinedOutput(); err != nil {
		return "", fmt.Errorf("installing busybox applets: %w: %s", err, out)
	}
	// curl with the host's glibc: a client that resolves names through
	// libc's own resolver (getaddrinfo, /etc/resolv.conf), as applications
	// do; the static busybox's wget cannot (static glibc has no NSS).
	// getent, for the same reason: getent ahosts lists what libc's
	// resolver makes of a name, both families.
	for _, prog := range []string{"/usr/bin/curl", "/usr/bin/getent"} {
		if err := addDynamic(ctx, rootfs, prog, prog); err != nil {
			return "", fmt.Errorf("building the busybox image: %w", err)
		}
	}
	// iputils' ping, beside busybox's (which stays `ping`): busybox's asks
	// for a 7 KB receive buffer, which a burst of a dozen echo replies
	// overflows when a slow host (a TCG guest) delivers them at once; the
	// no-loss tests would count as lost replies that reached the container.
	// iputils' asks for 64 KB.
	if err := addDynamic(ctx, rootfs, "/usr/bin/ping", IPutilsPing); err != nil {
		return "", fmt.Errorf("building the busybox image (install iputils-ping): %w", err)
	}
	files := map[string]string{
		"etc/passwd":        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
		"etc/group":         "root:x:0:\nnogroup:x:65534:\n",
		"etc/nsswitch.conf": "hosts: files dns\n",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(rootfs, name), []byte(content), 0o644); err != nil {
			return "", err
		}
	}
	if out, err := exec.CommandContext(ctx, "tar", "-C", rootfs, "-cf", tarPath, ".").CombinedOutput(); err != nil {
		return "", fmt.Errorf("packing the busybox image: %w: %s", err, out)
	}
	return tarPath, nil
}

// IPutilsPing is where the image has iputils' ping.
const IPutilsPing = "/opt/iputils/ping"

// addDynamic copies a dynamically linked program into rootfs at dst, and
// every library ldd names for it at the same paths.
func addDynamic(ctx context.Context, rootfs, prog, dst string) error {
	out, err := exec.CommandContext(ctx, "ldd", prog).Output()
	if err != nil {
		return fmt.Errorf("ldd %s (is its package installed? scripts/install-deps.sh): %w", prog, err)
	}
	files := map[string]string{prog: dst}
	for _, line := range strings.Split(string(out), "\n") {
		for _, f := range strings.Fields(line) {
			if strings.HasPrefix(f, "/") {
				files[f] = f
			}
		}
	}
	for f, to := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		dst := filepath.Join(rootfs, to)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(dst, b, 0o755); err != nil {
			return err
		}
	}
	return nil
}

func checkStatic(path string) error {
	f, err := elf.Open(path)
	if err != nil {
		return fmt.Errorf("reading %s: %w", path, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("%s is dynamically linked; install busybox-static", path)
		}
	}
	return nil
}

// ImportImage imports the busybox tarball as [Image] on h unless the image is there already.
// The tarball is copied to the host's /run first, so this works for SSH hosts too.
func ImportImage(ctx context.Context, h Host, tarPath string) error {
	if _, err := h.Exec(ctx, "docker", "image", "inspect", "--format", "{{.Id}}", Image); err == nil {
		return nil
	}
	remote := tarPath
	if _, sim := h.(*SimHost); !sim {
		b, err := os.ReadFile(tarPath)
		if err != nil {
			return err
		}
		remote = "/run/meshnet-e2e-busybox.tar"
		if err := h.WriteFile(remote, b, 0o644); err != nil {
			return err
		}
		defer func() { _, _ = h.Exec(context.WithoutCancel(ctx), "rm", "-f", remote) }()
	}
	out, err := h.Exec(ctx, "docker", "import", remote, Image)
	if err != nil {
		return fmt.Errorf("importing %s: %w", Image, err)
	}
	if !strings.HasPrefix(strings.TrimSpace(out), "sha256:") {
		return fmt.Errorf("importing %s on %s: unexpected output %q", Image, h.Name(), out)
	}
	return nil
}

// EnsureImage builds the busybox tarball in c.WorkDir (once) and imports it on every host.
func (c *Cluster) EnsureImage(ctx context.Context) error {
	tar, err := buildBusyboxTar(ctx, filepath.Join(c.WorkDir, "image"))
	if err != nil {
		return err
	}
	return forEachHost(c.Hosts, func(h Host) error { return ImportImage(ctx, h, tar) })
}
