package harness

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// ServeSSH starts an OpenSSH server in every simulated host, listening on the host's underlay
// address, and returns what [NewSSHCluster] needs to reach them: the host list (root@addr,...)
// and the client's private key. The keys and configuration live in the cluster's WorkDir.
// The cluster must have been made with SimOptions.RootAddress, or the test process cannot
// reach the underlay.
func (c *Cluster) ServeSSH(ctx context.Context) (spec, keyPath string, err error) {
	if c.Backend != "sim" {
		return "", "", errors.New("ServeSSH needs simulated hosts")
	}
	dir := filepath.Join(c.WorkDir, "ssh")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", "", err
	}
	keyPath = filepath.Join(dir, "id_ed25519")
	hostKey := filepath.Join(dir, "ssh_host_ed25519_key")
	for _, k := range []string{keyPath, hostKey} {
		if _, err := os.Stat(k); err == nil {
			continue
		}
		if out, err := exec.CommandContext(ctx, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "meshnet-e2e", "-f", k).CombinedOutput(); err != nil {
			return "", "", fmt.Errorf("ssh-keygen: %w: %s", err, out)
		}
	}
	pub, err := os.ReadFile(keyPath + ".pub")
	if err != nil {
		return "", "", err
	}
	authorized := filepath.Join(dir, "authorized_keys")
	if err := os.WriteFile(authorized, pub, 0o600); err != nil {
		return "", "", err
	}
	var targets []string
	for _, host := range c.Hosts {
		h := host.(*SimHost)
		// StrictModes would refuse an authorized_keys file below the world-writable /tmp.
		cfg := strings.Join([]string{
			"ListenAddress " + h.Addr().String(),
			"Port 22",
			"HostKey " + hostKey,
			"PermitRootLogin prohibit-password",
			"PubkeyAuthentication yes",
			"AuthorizedKeysFile " + authorized,
			"StrictModes no",
			"PasswordAuthentication no",
			"KbdInteractiveAuthentication no",
			"UsePAM no",
			"PidFile /run/sshd.pid",
			"PrintMotd no",
			"LogLevel VERBOSE",
		}, "\n") + "\n"
		cfgPath := filepath.Join(dir, "sshd_config-"+h.Name())
		if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
			return "", "", err
		}
		// sshd re-executes itself, so it must be started by its absolute path.
		if _, err := h.Start(ctx, "sshd", "/usr/sbin/sshd", "-D", "-e", "-f", cfgPath); err != nil {
			return "", "", err
		}
		targets = append(targets, "root@"+h.Addr().String())
	}
	for _, host := range c.Hosts {
		h := host.(*SimHost)
		if err := waitTCP(ctx, netip.AddrPortFrom(h.Addr(), 22), 15*time.Second); err != nil {
			return "", "", fmt.Errorf("sshd on %s: %w\n%s", h.Name(), err, lastLogTail(h, "sshd"))
		}
	}
	return strings.Join(targets, ","), keyPath, nil
}

func lastLogTail(h Host, name string) string {
	ps := h.Processes()
	for i := len(ps) - 1; i >= 0; i-- {
		if ps[i].Name() == name {
			return ps[i].LogTail(30)
		}
	}
	return ""
}

func waitTCP(ctx context.Context, ap netip.AddrPort, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return Poll(ctx, func() error {
		var d net.Dialer
		dctx, dcancel := context.WithTimeout(ctx, time.Second)
		defer dcancel()
		conn, err := d.DialContext(dctx, "tcp", ap.String())
		if err != nil {
			return err
		}
		return conn.Close()
	})
}
