package bench

import (
	"bufio"
	"context"
	"crypto/ecdh"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/meshnet/meshnet/e2e/harness"
)

// wgGoDevice is the standalone tunnel's device name. Each simulated host has its own /run, so
// the UAPI sockets (/run/wireguard/NAME.sock) of the two instances do not collide.
const wgGoDevice = "wgbench0"

// setupWireGuardGo runs the standalone wireguard-go on both hosts, host to host, configured
// through its UAPI socket as `wg` would: the peer meshnet's WireGuard dataplane must at least
// match. Its path has no container veth or bridge hop, which favours the peer slightly.
func (e *Env) setupWireGuardGo(ctx context.Context) *Path {
	p := &Path{Name: PathWireGuardGo}
	if e.cfg.Tools.WireGuardGo == "" {
		p.Err = e.cfg.Tools.WireGuardGoErr
		return p
	}
	hosts := []*harness.SimHost{e.A, e.B}
	keys := make([]*ecdh.PrivateKey, 2)
	for i := range keys {
		k, err := ecdh.X25519().GenerateKey(rand.Reader)
		if err != nil {
			p.Err = fmt.Errorf("generating a WireGuard key: %w", err)
			return p
		}
		keys[i] = k
	}
	addrs := []netip.Addr{wgGoSubnet.Addr().Next(), wgGoSubnet.Addr().Next().Next()}
	for i, h := range hosts {
		// -f: stay in the foreground, so the harness holds its PID and stops it.
		proc, err := h.Start(ctx, "wireguard-go", e.cfg.Tools.WireGuardGo, "-f", wgGoDevice)
		if err != nil {
			p.Err = err
			return p
		}
		e.wgGo = append(e.wgGo, proc)
		other := 1 - i
		conf := fmt.Sprintf("set=1\nprivate_key=%s\nlisten_port=%d\nreplace_peers=true\npublic_key=%s\nendpoint=%s:%d\nreplace_allowed_ips=true\nallowed_ip=%s/32\n\n",
			hex.EncodeToString(keys[i].Bytes()), wgGoPort, hex.EncodeToString(keys[other].PublicKey().Bytes()),
			hosts[other].Addr(), wgGoPort, addrs[other])
		sock := fmt.Sprintf("/proc/%d/root/run/wireguard/%s.sock", h.AnchorPID(), wgGoDevice)
		if err := uapiSet(ctx, sock, conf); err != nil {
			p.Err = fmt.Errorf("configuring wireguard-go on %s: %w (log: %s)", h.Name(), err, proc.LogTail(5))
			return p
		}
		for _, args := range [][]string{
			{"ip", "addr", "add", netip.PrefixFrom(addrs[i], wgGoSubnet.Bits()).String(), "dev", wgGoDevice},
			{"ip", "link", "set", wgGoDevice, "up"},
		} {
			if _, err := h.Exec(ctx, args...); err != nil {
				p.Err = fmt.Errorf("addressing the tunnel on %s: %s", h.Name(), lastLine(err))
				return p
			}
		}
	}
	p.Client = Endpoint{Host: e.A, PID: e.A.AnchorPID(), IP: addrs[0]}
	p.Server = Endpoint{Host: e.B, PID: e.B.AnchorPID(), IP: addrs[1]}
	p.Err = e.waitPing(ctx, p.Client, p.Server.IP, 30*time.Second)
	return p
}

// uapiSet writes a configuration to a wireguard-go UAPI socket (the cross-platform
// userspace protocol `wg` speaks) and checks its errno, retrying while the socket appears.
func uapiSet(ctx context.Context, sock, conf string) error {
	var c net.Conn
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	err := harness.Poll(ctx, func() error {
		var err error
		c, err = net.DialTimeout("unix", sock, time.Second)
		return err
	})
	if err != nil {
		return fmt.Errorf("reaching %s: %w", sock, err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte(conf)); err != nil {
		return fmt.Errorf("writing to %s: %w", sock, err)
	}
	r := bufio.NewReader(c)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return fmt.Errorf("reading the answer of %s: %w", sock, err)
		}
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "errno="); ok {
			if n, _ := strconv.Atoi(v); n != 0 {
				return fmt.Errorf("wireguard-go refused the configuration: errno %d", n)
			}
			return nil
		}
	}
}
