package daemon

import (
	"log/slog"
	"net/http"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/meshnet/meshnet/gossip"
	"github.com/meshnet/meshnet/ipam"
	"github.com/meshnet/meshnet/plugin"
)

// testDaemon is node n1 (198.18.0.11) with a real store and IPAM and no
// kernel, and the plugin handler that drives it. joined marks its IPAM as
// having heard from its cluster; join are its seeds.
func testDaemon(t testing.TB, log *slog.Logger, joined bool, join ...string) (*Daemon, http.Handler) {
	t.Helper()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	store := gossip.NewStore(gossip.StoreConfig{Self: "n1", Log: log})
	store.SetMember(gossip.Member{Name: "n1", Addr: "198.18.0.11", State: gossip.StateAlive})
	icfg := ipam.DefaultConfig()
	icfg.Store, icfg.Dir, icfg.Log = store, filepath.Join(t.TempDir(), "ipam"), log
	// Alone, a handoff never comes: do not wait for one.
	icfg.HandoffWait, icfg.RequestTimeout = 20*time.Millisecond, 10*time.Millisecond
	alloc, err := ipam.New(icfg)
	if err != nil {
		t.Fatal(err)
	}
	if joined {
		if err := alloc.MarkJoined("test"); err != nil {
			t.Fatal(err)
		}
	}
	cfg := DefaultConfig()
	cfg.NodeName = "n1"
	cfg.Join = join
	d := &Daemon{cfg: cfg, log: log, store: store, ipam: alloc, dp: nopDataplane{}, ports: newPortHolder(log),
		advertise: netip.MustParseAddr("198.18.0.11"), dnsAddr: netip.MustParseAddr(cfg.DNSAddr)}
	t.Cleanup(d.ports.close)
	return d, plugin.NewHandler(networkBackend{d}, ipamBackend{d}, log)
}
