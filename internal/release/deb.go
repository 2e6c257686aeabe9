package release

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
)

// DebVersion makes a `git describe` version valid as a Debian version: no
// leading v, a digit first, and no hyphen (which would start a Debian
// revision): v1.2.0-3-gabc123-dirty is 1.2.0+3+gabc123+dirty, a bare
// commit (git describe --always before the first tag: abc1234, 5611b8e) is
// 0~abc1234 (older than any tagged release).
func DebVersion(v string) string {
	v = strings.TrimPrefix(v, "v")
	first, _, _ := strings.Cut(v, "-")
	v = strings.ReplaceAll(v, "-", "+")
	// A bare commit (no tag yet) may start with a digit, and would then
	// sort above every real release.
	if v == "" || v[0] < '0' || v[0] > '9' || commitHash.MatchString(first) {
		v = "0~" + v
	}
	return v
}

var commitHash = regexp.MustCompile(`^[0-9a-f]{7,40}$`)

// Debian architecture names of Go's GOARCH values.
var debArch = map[string]string{"amd64": "amd64", "arm64": "arm64"}

const control = `Package: meshnet
Version: %s
Architecture: %s
Maintainer: meshnet developers <meshnet@users.noreply.github.com>
Section: net
Priority: optional
Homepage: https://github.com/meshnet/meshnet
Suggests: docker.io | docker-ce
Description: one overlay network across Docker hosts, without Swarm
 meshnetd joins Docker hosts by encrypted gossip into one flat VXLAN or
 WireGuard overlay, hands out container addresses that never collide across
 hosts and answers DNS for services; meshctl shows what it knows.
 Set MESHNET_JOIN and the key in /etc/meshnet, then:
 systemctl enable --now meshnetd
`

const postinst = `#!/bin/sh
set -e
if [ "$1" = configure ]; then
	chmod 0700 /etc/meshnet
	if [ -d /run/systemd/system ]; then
		systemctl daemon-reload || true
		# An upgrade restarts a running meshnetd; kernel state stays, so containers keep talking.
		if [ -n "$2" ]; then systemctl try-restart meshnetd.service || true; fi
	fi
fi
`

const prerm = `#!/bin/sh
set -e
if [ "$1" = remove ] && [ -d /run/systemd/system ]; then
	systemctl disable --now meshnetd.service || true
fi
`

const postrm = `#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then systemctl daemon-reload || true; fi
`

// Deb writes out (a .deb) for arch from the static binaries meshnetd and
// meshctl in bin, with the unit and env file of deploy/systemd and the
// LICENSE under root (the repository).
func Deb(out, version, arch, bin, root string) error {
	da, ok := debArch[arch]
	if !ok {
		return fmt.Errorf("deb: no Debian architecture for GOARCH %q", arch)
	}
	stage, err := os.MkdirTemp("", "meshnet-deb-")
	if err != nil {
		return fmt.Errorf("deb: %w", err)
	}
	defer os.RemoveAll(stage)
	unit, err := os.ReadFile(filepath.Join(root, "deploy/systemd/meshnetd.service"))
	if err != nil {
		return fmt.Errorf("deb: %w", err)
	}
	unit = []byte(strings.ReplaceAll(string(unit), "/usr/local/bin/", "/usr/bin/"))
	files := []struct {
		dst  string
		mode os.FileMode
		src  string // a file to copy, or
		data []byte // its content
	}{
		{"usr/bin/meshnetd", 0o755, filepath.Join(bin, "meshnetd"), nil},
		{"usr/bin/meshctl", 0o755, filepath.Join(bin, "meshctl"), nil},
		{"usr/lib/systemd/system/meshnetd.service", 0o644, "", unit},
		{"etc/meshnet/meshnetd.env", 0o600, filepath.Join(root, "deploy/systemd/meshnetd.env"), nil},
		{"usr/share/doc/meshnet/copyright", 0o644, filepath.Join(root, "LICENSE"), nil},
		{"DEBIAN/control", 0o644, "", []byte(fmt.Sprintf(control, DebVersion(version), da))},
		{"DEBIAN/conffiles", 0o644, "", []byte("/etc/meshnet/meshnetd.env\n")},
		{"DEBIAN/postinst", 0o755, "", []byte(postinst)},
		{"DEBIAN/prerm", 0o755, "", []byte(prerm)},
		{"DEBIAN/postrm", 0o755, "", []byte(postrm)},
	}
	for _, f := range files {
		data := f.data
		if f.src != "" {
			if data, err = os.ReadFile(f.src); err != nil {
				return fmt.Errorf("deb: %w", err)
			}
		}
		dst := filepath.Join(stage, f.dst)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return fmt.Errorf("deb: %w", err)
		}
		if err := os.WriteFile(dst, data, f.mode); err != nil {
			return fmt.Errorf("deb: %w", err)
		}
		if err := os.Chmod(dst, f.mode); err != nil { // past the umask
			return fmt.Errorf("deb: %w", err)
		}
	}
	if err := os.Chmod(filepath.Join(stage, "etc/meshnet"), 0o700); err != nil {
		return fmt.Errorf("deb: %w", err)
	}
	cmd := exec.Command("dpkg-deb", "--root-owner-group", "-Zxz", "--build", stage, out)
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("deb: dpkg-deb --build (Debian's dpkg package): %w\n%s", err, b)
	}
	return nil
}
