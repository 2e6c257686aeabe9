package daemon

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"time"

	"github.com/meshnet/meshnet/dataplane"
	"github.com/meshnet/meshnet/dns"
	"github.com/meshnet/meshnet/gossip"
	"github.com/meshnet/meshnet/internal/sdnotify"
	"github.com/meshnet/meshnet/metrics"
)

// metricsState is what a scrape reads: the control API's answers to
// meshctl, read at the same moment, plus what only metrics show.
func (d *Daemon) metricsState() metrics.State {
	b := controlBackend{d}
	st := metrics.State{
		Status:          b.Status(),
		Peers:           b.Peers(),
		Endpoints:       b.Endpoints(),
		Records:         map[string]int{},
		FDBEntries:      int(d.fdbEntries.Load()),
		NeighborEntries: int(d.neighEntries.Load()),
		DNSListening:    d.dnsListening.Load(),
		DNS:             map[string]*dns.Counts{"host": d.dnsCounts},
	}
	if d.sandboxes != nil {
		st.DNS["container"] = d.boxCounts
	}
	snap := d.store.Snapshot()
	for _, k := range []gossip.Kind{gossip.KindNode, gossip.KindNetwork, gossip.KindBlock, gossip.KindEndpoint, gossip.KindRemoval} {
		st.Records[string(k)] = len(snap.Records(k))
	}
	for _, p := range d.ipam.Status().Pools {
		st.Pools = append(st.Pools, metrics.Pool{Subnet: p.Subnet, Size: uint64(p.NumBlocks) * p.BlockSize})
	}
	return st
}

// forwardingEntries counts the FDB and neighbour entries st asks for: one
// of each per remote endpoint of a VXLAN network (WireGuard networks are
// routed and have neither).
func forwardingEntries(st dataplane.State) (fdb, neigh int) {
	for _, n := range st.Networks {
		if n.Kind == dataplane.KindWireGuard {
			continue
		}
		fdb += len(n.Remotes)
		neigh += len(n.Remotes)
	}
	return fdb, neigh
}

// notReady lists what keeps this node from serving the engine and its
// containers (/readyz): the plugin socket answering (from the persisted
// state New loaded, so the store is loaded once it answers) and the DNS
// server listening on the DNS address. Empty: ready.
func (d *Daemon) notReady(ctx context.Context) []string {
	var out []string
	if err := d.pluginAnswers(ctx); err != nil {
		out = append(out, "plugin socket: "+err.Error())
	}
	if !d.dnsListening.Load() {
		why := "not listening yet"
		d.dnsErr.Lock()
		if d.dnsErr.err != nil {
			why = d.dnsErr.err.Error()
		}
		d.dnsErr.Unlock()
		out = append(out, fmt.Sprintf("DNS server on %s: %s", d.dnsCfg.Addr, why))
	}
	return out
}

// pluginAnswers asks the plugin socket what the engine asks first
// (Plugin.Activate), as the engine would, and checks the answer.
func (d *Daemon) pluginAnswers(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	sock := filepath.Join(d.cfg.PluginDir, "meshnet.sock")
	c := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var dl net.Dialer
			return dl.DialContext(ctx, "unix", sock)
		},
		DisableKeepAlives: true,
	}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://plugin/Plugin.Activate", strings.NewReader("{}"))
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "NetworkDriver") {
		return fmt.Errorf("Plugin.Activate answered %d %q", resp.StatusCode, body)
	}
	return nil
}

// notifyReady tells systemd READY=1 (Type=notify) once the plugin socket
// answers: an engine ordered after meshnetd then finds its plugin serving.
// It polls briefly: the socket opens within milliseconds of Run.
func (d *Daemon) notifyReady(ctx context.Context) error {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		if err := d.pluginAnswers(ctx); err == nil {
			break
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
	d.log.Info("plugin socket answering", "socket", filepath.Join(d.cfg.PluginDir, "meshnet.sock"))
	if sent, err := sdnotify.Notify(sdnotify.Ready); err != nil {
		d.log.Warn("could not tell systemd the daemon is ready", "err", err)
	} else if sent {
		d.log.Debug("told systemd READY=1")
	}
	<-ctx.Done()
	if _, err := sdnotify.Notify(sdnotify.Stopping); err != nil {
		d.log.Debug("could not tell systemd the daemon is stopping", "err", err)
	}
	return nil
}
