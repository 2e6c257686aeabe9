package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/meshnet/meshnet/dataplane"
	"github.com/meshnet/meshnet/plugin"
)

// /readyz's checks: not ready while the plugin socket does not answer or
// the DNS server does not listen; ready once both do.
func TestNotReady(t *testing.T) {
	d, h := testDaemon(t, slog.New(slog.DiscardHandler), true)
	d.cfg.PluginDir = t.TempDir()
	d.dnsCfg.Addr = "169.254.53.53:53"
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	got := strings.Join(d.notReady(ctx), "; ")
	if !strings.Contains(got, "plugin socket") || !strings.Contains(got, "DNS server on 169.254.53.53:53: not listening yet") {
		t.Fatalf("before anything serves: %q", got)
	}
	d.setDNSErr(errors.New("dns: listen on 169.254.53.53:53: no address"))
	if got := strings.Join(d.notReady(ctx), "; "); !strings.Contains(got, "no address") {
		t.Fatalf("the DNS error should be shown: %q", got)
	}

	served := make(chan error, 1)
	go func() { served <- plugin.Serve(ctx, d.cfg.PluginDir+"/meshnet.sock", h) }()
	d.dnsListening.Store(true)
	deadline := time.Now().Add(30 * time.Second)
	for {
		nr := d.notReady(ctx)
		if len(nr) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still not ready with the plugin socket served: %v", nr)
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if err := <-served; err != nil {
		t.Fatal(err)
	}
}

// A fresh start's missing DNS address is reported as what it is (meshnetd
// is adding it), not with advice; the advice comes once it persists.
func TestDNSRetryLog(t *testing.T) {
	var b strings.Builder
	d := &Daemon{log: slog.New(slog.NewTextHandler(&b, nil))}
	d.cfg.DNSAddr = "169.254.53.53"
	notMine := fmt.Errorf("dns: listen on 169.254.53.53:53: 169.254.53.53 is not an address of this host; add it to lo (ip addr add 169.254.53.53/32 dev lo): %w",
		&net.OpError{Op: "listen", Err: syscall.EADDRNOTAVAIL})

	d.logDNSRetry(notMine, 300*time.Millisecond, 250*time.Millisecond)
	if got := b.String(); !strings.Contains(got, "level=INFO") || !strings.Contains(got, "meshnetd is adding") || strings.Contains(got, "ip addr add") {
		t.Fatalf("fresh start: %q", got)
	}
	b.Reset()
	d.logDNSRetry(notMine, dnsAddrGrace+time.Second, 5*time.Second)
	if got := b.String(); !strings.Contains(got, "level=WARN") || !strings.Contains(got, "ip addr add") {
		t.Fatalf("persisting: %q", got)
	}
	b.Reset()
	d.logDNSRetry(errors.New("port taken"), 0, time.Second)
	if got := b.String(); !strings.Contains(got, "level=WARN") || !strings.Contains(got, "port taken") {
		t.Fatalf("another error is a warning at once: %q", got)
	}
}

func TestForwardingEntries(t *testing.T) {
	remote := []dataplane.RemoteEndpoint{{Addr: netip.MustParseAddr("10.42.0.2")}, {Addr: netip.MustParseAddr("10.42.0.3")}}
	st := dataplane.State{Networks: []dataplane.Network{
		{VNI: 1, Remotes: remote},
		{VNI: 2, Kind: dataplane.KindWireGuard, Remotes: remote}, // routed: neither
	}}
	if fdb, neigh := forwardingEntries(st); fdb != 2 || neigh != 2 {
		t.Fatalf("fdb %d neigh %d, want 2 and 2", fdb, neigh)
	}
}
