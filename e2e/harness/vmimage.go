package harness

import (
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// The guest image is made by vmimage/build.sh from the packages in vmimage/packages.txt, with
// mmdebstrap from Debian's archive: nothing else is downloaded. Both files are embedded so the
// cache key is what the build will actually run.
//
//go:embed vmimage/build.sh vmimage/packages.txt
var vmImageFiles embed.FS

// DefaultVMCacheDir holds built guest images, one folder per suite and content hash.
const DefaultVMCacheDir = "/var/cache/meshnet-e2e-vm"

// vmImage is a built guest image: a raw ext4 root file system and the kernel and initramfs
// qemu boots it with.
type vmImage struct {
	Suite, Dir           string
	Disk, Kernel, Initrd string
	Engine, KernelVer    string // versions found in the image, for the output
}

// vmImageKey is the cache key of suite's image: a hash of the build script, the package list
// and the suite, so editing either rebuilds the image and nothing else does.
func vmImageKey(suite string) (string, error) {
	h := sha256.New()
	for _, f := range []string{"vmimage/build.sh", "vmimage/packages.txt"} {
		b, err := vmImageFiles.ReadFile(f)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(h, "%s %d\n", f, len(b))
		h.Write(b)
	}
	fmt.Fprintf(h, "suite %s\n", suite)
	return hex.EncodeToString(h.Sum(nil))[:16], nil
}

// ensureVMImage returns suite's image from cacheDir, building it first when it is missing.
// Concurrent runs wait for each other's build (a lock file per suite); older images of the
// suite are removed once the new one is in place. buildLog receives mmdebstrap's output.
func ensureVMImage(ctx context.Context, cacheDir, suite string, buildLog io.Writer) (img vmImage, built bool, err error) {
	key, err := vmImageKey(suite)
	if err != nil {
		return vmImage{}, false, err
	}
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return vmImage{}, false, fmt.Errorf("making the VM image cache %s: %w", cacheDir, err)
	}
	lock, err := os.OpenFile(filepath.Join(cacheDir, suite+".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return vmImage{}, false, err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return vmImage{}, false, fmt.Errorf("locking the %s image cache: %w", suite, err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)

	dir := filepath.Join(cacheDir, suite+"-"+key)
	img = vmImage{Suite: suite, Dir: dir, Disk: filepath.Join(dir, "root.img"),
		Kernel: filepath.Join(dir, "vmlinuz"), Initrd: filepath.Join(dir, "initrd.img")}
	if _, err := os.Stat(img.Disk); err != nil {
		if err := buildVMImage(ctx, suite, dir, buildLog); err != nil {
			return vmImage{}, false, err
		}
		built = true
		// Only the current image of a suite is kept: each is a few hundred MB.
		old, _ := filepath.Glob(filepath.Join(cacheDir, suite+"-*"))
		for _, o := range old {
			if o != dir && !strings.HasSuffix(o, ".tmp") {
				_ = os.RemoveAll(o)
			}
		}
	}
	if b, err := os.ReadFile(filepath.Join(dir, "engine-version")); err == nil {
		img.Engine = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile(filepath.Join(dir, "kernel-version")); err == nil {
		img.KernelVer = strings.TrimSpace(string(b))
	}
	return img, built, nil
}

// buildVMImage runs build.sh into dir (through dir.tmp, so a build cut short is never taken
// for an image).
func buildVMImage(ctx context.Context, suite, dir string, buildLog io.Writer) error {
	for _, tool := range []string{"mmdebstrap", "mkfs.ext4"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("building the %s guest image: %s is missing (run ./scripts/install-deps.sh)", suite, tool)
		}
	}
	src, err := os.MkdirTemp("", "meshnet-vmimage-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(src)
	for _, f := range []string{"build.sh", "packages.txt"} {
		b, err := vmImageFiles.ReadFile("vmimage/" + f)
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(src, f), b, 0o755); err != nil {
			return err
		}
	}
	tmp := dir + ".tmp"
	_ = os.RemoveAll(tmp)
	cmd := exec.CommandContext(ctx, "bash", filepath.Join(src, "build.sh"), suite, tmp, filepath.Join(src, "packages.txt"))
	cmd.Stdout, cmd.Stderr = buildLog, buildLog
	cmd.WaitDelay = 10 * time.Second
	if err := cmd.Run(); err != nil {
		_ = os.RemoveAll(tmp)
		return fmt.Errorf("building the %s guest image with mmdebstrap (output above; Debian's archive must be reachable): %w", suite, err)
	}
	_ = os.RemoveAll(dir)
	if err := os.Rename(tmp, dir); err != nil {
		return fmt.Errorf("building the %s guest image: %w", suite, err)
	}
	return nil
}
