package e2e

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meshnet/meshnet/e2e/harness"
)

// TestHostileInput throws what an attacker on the underlay or in a container could at the
// daemons: random UDP at the gossip, VXLAN and DNS ports, from a container and from a host
// outside the mesh; garbage TCP at the gossip port; slow, garbage and oversized requests on
// the plugin and control sockets. The daemons must keep serving, and must drop slow
// connections rather than hold them forever.
func TestHostileInput(t *testing.T) {
	c, hosts := meshHosts(t)
	if len(c.Hosts) < 4 {
		t.Fatalf("needs a fourth host outside the mesh; the cluster has %d", len(c.Hosts))
	}
	outsider := c.Hosts[3]
	ctx := testCtx(t)
	startMesh(t, ctx, c, hosts)
	waitAllAlive(t, ctx, c, hosts, 15*time.Second)
	createNetworkEverywhere(t, ctx, hosts, "app", "10.42.0.0/24")
	ips := map[string]netip.Addr{}
	for _, h := range hosts {
		ips[h.Name()] = runContainer(t, ctx, h, "h-"+h.Name(), "app", "--label", "meshnet.service=api")
	}
	inContainer := containerNetns{h: hosts[0], name: "h-" + hosts[0].Name()}

	t.Run("random packets", func(t *testing.T) {
		// bash's /dev/udp and /dev/tcp, so that no extra tool is needed in the hosts.
		spray := func(proto, addr string, port, n int) string {
			return fmt.Sprintf("for i in $(seq %d); do head -c $((RANDOM %% 1400 + 1)) /dev/urandom > /dev/%s/%s/%d 2>/dev/null; done; true", n, proto, addr, port)
		}
		var script []string
		for _, h := range hosts {
			for _, port := range []int{7946, 4789} {
				script = append(script, spray("udp", h.Addr().String(), port, 300))
			}
			script = append(script, spray("tcp", h.Addr().String(), 7946, 20))
		}
		all := strings.Join(script, "; ")
		if _, err := outsider.Exec(ctx, "bash", "-c", all); err != nil {
			t.Fatalf("from %s (not a member): %v", outsider.Name(), err)
		}
		if _, err := inContainer.exec(ctx, "bash", "-c", all+"; "+spray("udp", dnsAddr, 53, 300)); err != nil {
			t.Fatalf("from a container: %v", err)
		}
		for _, h := range hosts {
			if !c.Daemon(h).Running() {
				t.Fatalf("meshnetd on %s exited after random packets", h.Name())
			}
		}
		waitAllAlive(t, ctx, c, hosts, 15*time.Second)
		harness.Eventually(t, 15*time.Second, func() error {
			_, answers, err := inContainer.dig(ctx, dnsAddr, "api.meshnet", "A")
			if err == nil && len(answers) != len(hosts) {
				err = fmt.Errorf("api.meshnet: %v", answers)
			}
			return err
		})
		for _, h := range hosts[1:] {
			harness.Eventually(t, 15*time.Second, func() error {
				return harness.Ping(ctx, hosts[0], "h-"+hosts[0].Name(), ips[h.Name()])
			})
		}
	})

	t.Run("slow and bad requests on the sockets", func(t *testing.T) {
		if remoteHosts() {
			t.Skip("reaches the sockets through the simulated host's /proc/PID/root")
		}
		h := hosts[0]
		sim := h.(*harness.SimHost)
		root := filepath.Join("/proc", strconv.Itoa(sim.AnchorPID()), "root")
		sockets := map[string]string{
			"plugin":  filepath.Join(root, "run/docker/plugins/meshnet.sock"),
			"control": filepath.Join(root, "run/meshnet/meshnet.sock"),
		}
		var slow []net.Conn
		defer func() {
			for _, conn := range slow {
				conn.Close()
			}
		}()
		for name, path := range sockets {
			for range 50 {
				conn, err := net.Dial("unix", path)
				if err != nil {
					t.Fatalf("dial the %s socket: %v", name, err)
				}
				// Headers begun, never finished.
				if _, err := io.WriteString(conn, "POST /Plugin.Activate HTTP/1.1\r\nHost: meshnet\r\nX-Slow: "); err != nil {
					t.Fatal(err)
				}
				slow = append(slow, conn)
			}
		}
		// Docker and meshctl are served meanwhile.
		runContainer(t, ctx, h, "during-slowloris", "app")
		if _, err := c.Meshctl(ctx, h, "peers"); err != nil {
			t.Fatalf("meshctl with 50 slow connections open: %v", err)
		}
		for name, path := range sockets {
			code, err := rawRequest(path, "GARBAGE\x00\x01\x02 / HTTP/9\r\n\r\n")
			if err == nil && code < 400 {
				t.Errorf("%s socket: garbage answered %d", name, code)
			}
			big := "POST /NetworkDriver.CreateNetwork HTTP/1.1\r\nHost: meshnet\r\nContent-Length: 67108864\r\n\r\n" + strings.Repeat("a", 1<<20)
			code, err = rawRequest(path, big)
			if err == nil && code < 400 {
				t.Errorf("%s socket: a 64 MiB request answered %d", name, code)
			}
			t.Logf("%s socket: oversized request -> %d %v", name, code, err)
		}
		// The slow connections are dropped by the daemon, not kept forever.
		start := time.Now()
		for _, conn := range slow {
			_ = conn.SetReadDeadline(start.Add(90 * time.Second))
			_, err := io.Copy(io.Discard, conn)
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatalf("a connection with unfinished headers is still open %s later", time.Since(start).Round(time.Second))
			}
		}
		t.Logf("all %d slow connections closed by the daemon within %s", len(slow), time.Since(start).Round(time.Second))
		if !c.Daemon(h).Running() {
			t.Fatalf("meshnetd on %s exited", h.Name())
		}
		if _, err := c.MeshctlStatus(ctx, h); err != nil {
			t.Fatalf("meshctl status after the attack: %v", err)
		}
	})
}

// rawRequest writes req to a unix socket and returns the status code of the reply (0 when
// the daemon closed the connection without one).
func rawRequest(path, req string) (int, error) {
	conn, err := net.DialTimeout("unix", path, 5*time.Second)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	_, werr := io.WriteString(conn, req)
	buf := make([]byte, 512)
	n, _ := io.ReadAtLeast(conn, buf, 12)
	line, _, _ := bytes.Cut(buf[:n], []byte("\r\n"))
	f := strings.Fields(string(line))
	if len(f) >= 2 {
		if code, err := strconv.Atoi(f[1]); err == nil {
			return code, nil
		}
	}
	if werr != nil {
		return 0, werr
	}
	return 0, fmt.Errorf("no status line in %q", line)
}
