package daemon

import (
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/meshnet/meshnet/gossip"
	"github.com/meshnet/meshnet/plugin"
)

func TestPublishedText(t *testing.T) {
	for _, s := range []string{"0.0.0.0:8081:8080/tcp", "127.0.0.1:53:5353/udp", "198.18.0.1:9:9/sctp"} {
		p, err := parsePublished(s)
		if err != nil || p.String() != s {
			t.Errorf("%s: %v %q", s, err, p.String())
		}
	}
	if p, _ := parsePublished("0.0.0.0:1:2/tcp"); p.hostIP.IsValid() {
		t.Error("0.0.0.0 kept as an address; want every address (zero)")
	}
	for _, s := range []string{"8081:8080/tcp", "0.0.0.0:0:8080/tcp", "[::]:1:2/tcp", "0.0.0.0:1:2/icmp", "0.0.0.0:1:70000/tcp", "x:1:2/tcp"} {
		if _, err := parsePublished(s); err == nil {
			t.Errorf("%s parsed", s)
		}
	}
	if got := portMappings([]string{"0.0.0.0:8081:8080/tcp", "junk"}); len(got) != 1 || got[0].HostPort != 8081 || got[0].ContainerPort != 8080 {
		t.Errorf("portMappings: %+v", got)
	}
}

// Ports on 127.0.0.1 only: the test binds real sockets.
func TestChoosePort(t *testing.T) {
	h := newPortHolder(slog.New(slog.DiscardHandler))
	defer h.close()
	lo := netip.MustParseAddr("127.0.0.1")
	// A program listening on a port.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	busy := uint16(ln.Addr().(*net.TCPAddr).Port)

	if _, err := choosePort(h, plugin.PortBinding{Proto: "tcp", HostIP: lo, Port: 80, HostPort: busy, HostPortEnd: busy}, nil); !errors.Is(err, errPortTaken) ||
		!strings.Contains(err.Error(), "another program") {
		t.Errorf("port a program listens on: %v", err)
	}
	// An address that is not this host's: said so, not "in use".
	if _, err := choosePort(h, plugin.PortBinding{Proto: "udp", HostIP: netip.MustParseAddr("192.0.2.1"), Port: 80, HostPort: 80, HostPortEnd: 80}, nil); !errors.Is(err, errCannotBind) {
		t.Errorf("foreign host address: %v", err)
	}
	// Ephemeral: the kernel's choice, held.
	p, err := choosePort(h, plugin.PortBinding{Proto: "tcp", HostIP: lo, Port: 80}, nil)
	if err != nil || p.hostPort == 0 {
		t.Fatalf("ephemeral: %+v %v", p, err)
	}
	if l, err := net.Listen("tcp", p.key()[len("tcp/"):]); err == nil {
		l.Close()
		t.Errorf("port %d not held: a program could listen on it", p.hostPort)
	}
	// Another container's record claims a port: taken, the range moves on.
	users := []portUser{{p: published{proto: "tcp", hostPort: p.hostPort + 1, port: 80}, container: "web1"}}
	_, err = choosePort(h, plugin.PortBinding{Proto: "tcp", HostIP: lo, Port: 80, HostPort: p.hostPort + 1, HostPortEnd: p.hostPort + 1}, users)
	if !errors.Is(err, errPortTaken) || !strings.Contains(err.Error(), "container web1") {
		t.Errorf("port published by another container: %v", err)
	}
	q, err := choosePort(h, plugin.PortBinding{Proto: "tcp", HostIP: lo, Port: 80, HostPort: p.hostPort, HostPortEnd: p.hostPort + 3}, users)
	if err != nil || q.hostPort <= p.hostPort+1 {
		t.Errorf("range: %+v %v; want a port after %d and %d", q, err, p.hostPort, p.hostPort+1)
	}
	// sync keeps what is wanted or reserved, closes the rest.
	h.done(p, q)
	h.sync([]published{q})
	if l, err := net.Listen("tcp", p.key()[len("tcp/"):]); err != nil {
		t.Errorf("port %d still held after it was unpublished: %v", p.hostPort, err)
	} else {
		l.Close()
	}
	if _, ok := h.socks[q.key()]; !ok {
		t.Error("wanted port closed")
	}
}

func TestInternalIsPartOfIdentity(t *testing.T) {
	a := gossip.NetworkInfo{Subnet: "10.42.0.0/24", Gateway: "10.42.0.1", VNI: 5, Dataplane: "vxlan"}
	b := a
	b.Internal = true
	if d := settingsDiffer(b, a); d != "--internal" {
		t.Errorf("have internal, want not: %q", d)
	}
	if d := settingsDiffer(a, b); d != "no --internal" {
		t.Errorf("have not internal, want internal: %q", d)
	}
}
