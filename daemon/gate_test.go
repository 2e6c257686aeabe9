package daemon

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meshnet/meshnet/gossip"
	"github.com/meshnet/meshnet/ipam"
)

// pluginDaemon is a daemon with a real store and IPAM and no kernel,
// driven through its plugin handler.
type pluginDaemon struct {
	t *testing.T
	d *Daemon
	h http.Handler
}

func newPluginDaemon(t *testing.T, joined bool) *pluginDaemon {
	t.Helper()
	d, h := testDaemon(t, slog.New(slog.DiscardHandler), joined, "198.18.0.12")
	return &pluginDaemon{t: t, d: d, h: h}
}

// call posts body to path and returns the status and the error text of
// the reply ("" on success).
func (p *pluginDaemon) call(path, body string) (int, string) {
	p.t.Helper()
	rec := httptest.NewRecorder()
	p.h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, path, strings.NewReader(body)))
	var reply struct{ Err, Error string }
	if err := json.Unmarshal(rec.Body.Bytes(), &reply); err != nil {
		p.t.Fatalf("%s: reply is not JSON: %q", path, rec.Body.String())
	}
	return rec.Code, reply.Err + reply.Error
}

func (p *pluginDaemon) must(path, body string) {
	p.t.Helper()
	if code, msg := p.call(path, body); code != http.StatusOK {
		p.t.Fatalf("%s %s: %d %s", path, body, code, msg)
	}
}

// network creates a meshnet network as the engine does: pool, gateway,
// CreateNetwork.
func (p *pluginDaemon) network(id, subnet, gateway string) {
	p.t.Helper()
	p.must("/IpamDriver.RequestPool", `{"AddressSpace":"meshnet-local","Pool":"`+subnet+`"}`)
	p.must("/IpamDriver.RequestAddress", `{"PoolID":"`+subnet+`","Options":{"RequestAddressType":"com.docker.network.gateway"}}`)
	p.must("/NetworkDriver.CreateNetwork", `{"NetworkID":"`+id+`","IPv4Data":[{"AddressSpace":"meshnet-local","Pool":"`+subnet+`","Gateway":"`+gateway+`"}]}`)
}

// A node that has not heard from its cluster refuses to create a network
// at once, saying why and what to check; meshctl status lists it. Once it
// has heard, the same request works.
func TestPluginRefusesBeforeJoin(t *testing.T) {
	p := newPluginDaemon(t, false)
	code, msg := p.call("/IpamDriver.RequestPool", `{"AddressSpace":"meshnet-local","Pool":"10.42.0.0/24"}`)
	if code != http.StatusBadRequest {
		t.Fatalf("RequestPool before joining: %d %s", code, msg)
	}
	for _, want := range []string{"has not reached its cluster yet", "seeds: 198.18.0.12", "--join", "7946", "10.42.0.0/24"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not say %q", msg, want)
		}
	}
	// A network the engine kept while meshnet's state was wiped.
	code, msg = p.call("/IpamDriver.RequestAddress", `{"PoolID":"10.42.0.0/24"}`)
	if code != http.StatusBadRequest || !strings.Contains(msg, "has not reached its cluster yet") {
		t.Errorf("RequestAddress of an unknown pool before joining: %d %s", code, msg)
	}
	if pr := p.d.gateProblem(); !strings.Contains(pr, "has not reached its cluster yet") {
		t.Errorf("status problem %q", pr)
	}
	if err := p.d.ipam.MarkJoined("test"); err != nil {
		t.Fatal(err)
	}
	p.network("net1", "10.42.0.0/24", "10.42.0.1/24")
	if pr := p.d.gateProblem(); pr != "" {
		t.Errorf("status problem after joining: %q", pr)
	}
}

// The gate opens at once for a new cluster's first node, and otherwise at
// the first full state exchange with a peer.
func TestIPAMGate(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	newNode := func(t *testing.T, name, addr string, join []string, peers int) *Daemon {
		t.Helper()
		store := gossip.NewStore(gossip.StoreConfig{Self: name, Log: log})
		c, err := gossip.New(gossip.Config{NodeName: name, BindAddr: addr, BindPort: 0, Join: join, Insecure: true,
			Label: "gate-test", RejoinInterval: 200 * time.Millisecond, RetryInterval: 50 * time.Millisecond, Log: log}, store)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		alloc, err := ipam.New(ipam.Config{Store: store, Dir: filepath.Join(t.TempDir(), "ipam"), Log: log})
		if err != nil {
			t.Fatal(err)
		}
		cfg := DefaultConfig()
		cfg.NodeName, cfg.Join = name, join
		return &Daemon{cfg: cfg, log: log, store: store, cluster: c, ipam: alloc, peersAtStart: peers}
	}
	gate := func(d *Daemon, ctx context.Context) <-chan struct{} {
		done := make(chan struct{})
		go func() { defer close(done); d.runIPAMGate(ctx) }()
		return done
	}

	t.Run("first node", func(t *testing.T) {
		d := newNode(t, "a", "127.0.201.1", nil, 0)
		<-gate(d, context.Background())
		if j, ok := d.ipam.Joined(); !ok || !strings.Contains(j.How, "first node") {
			t.Fatalf("Joined = %+v %v", j, ok)
		}
	})
	t.Run("join names only itself", func(t *testing.T) {
		d := newNode(t, "a", "127.0.201.2", nil, 0)
		_, port := d.cluster.LocalAddr()
		d.cfg.Join = []string{"127.0.201.2:" + strconv.Itoa(port)}
		<-gate(d, context.Background())
		if _, ok := d.ipam.Joined(); !ok {
			t.Fatal("a node whose --join names only itself waits")
		}
	})
	t.Run("known peers", func(t *testing.T) {
		d := newNode(t, "a", "127.0.201.3", nil, 2)
		ctx, cancel := context.WithCancel(context.Background())
		done := gate(d, ctx)
		cancel()
		<-done
		if _, ok := d.ipam.Joined(); ok {
			t.Fatal("a node that knew peers took itself for a new cluster")
		}
	})
	t.Run("seed answers", func(t *testing.T) {
		seed := newNode(t, "seed", "127.0.201.4", nil, 0)
		sh, sp := seed.cluster.LocalAddr()
		d := newNode(t, "a", "127.0.201.5", []string{sh + ":" + strconv.Itoa(sp)}, 0)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		if d.cluster.SeedsOnlySelf() {
			t.Fatal("a node whose seed is another node takes itself for a new cluster")
		}
		done := gate(d, ctx)
		go seed.cluster.Run(ctx)
		go d.cluster.Run(ctx)
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			t.Fatal("the gate did not open 20s after the seed came up")
		}
		if j, ok := d.ipam.Joined(); !ok || !strings.Contains(j.How, "full state exchange") {
			t.Fatalf("Joined = %+v %v", j, ok)
		}
	})
}
