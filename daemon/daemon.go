package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/meshnet/meshnet/control"
	"github.com/meshnet/meshnet/dataplane"
	"github.com/meshnet/meshnet/dns"
	"github.com/meshnet/meshnet/gossip"
	"github.com/meshnet/meshnet/internal/atomicfile"
	"github.com/meshnet/meshnet/ipam"
	"github.com/meshnet/meshnet/metrics"
	"github.com/meshnet/meshnet/plugin"
	"github.com/meshnet/meshnet/sandbox"
)

// Daemon is one meshnetd: it wires the store, gossip, IPAM, dataplane, DNS,
// the Docker plugin and the control API together. It holds no logic that a
// package of its own should own; the translations it needs are in
// desired.go and containers.go.
type Daemon struct {
	cfg       Config
	log       *slog.Logger
	started   time.Time
	advertise netip.Addr
	dnsAddr   netip.Addr
	encrypted bool

	store   *gossip.Store
	cluster *gossip.Cluster
	ipam    *ipam.IPAM
	dp      dataplane.Dataplane
	dnsCfg  dns.Config
	// dnsServer is the running server (a server runs once; runDNS makes a
	// new one per attempt); dnsTable the latest table, for a new server.
	dnsServer atomic.Pointer[dns.Server]
	dnsTable  atomic.Pointer[dns.Table]
	// knownPeers is what peers.json holds (reconcile loop only).
	knownPeers []gossip.KnownPeer
	// sightings asks the cluster how it sees a node (rmpeer.go); nil:
	// cluster.Sightings (tests replace it).
	sightings func(ctx context.Context, node string) ([]gossip.Sighting, error)
	// peersAtStart counts the peers peers.json held at start: a node that
	// knew peers is no new cluster's first node (gate.go).
	peersAtStart int
	// heldDeletes is whether the last reconcile held the dataplane's
	// deletes (holddeletes.go), for logging the transitions.
	heldDeletes atomic.Bool
	// firstNode is set by the IPAM gate when this node starts a new
	// cluster (no seed but itself, no known peers): it has nobody to hear
	// from, so it holds no deletes.
	firstNode atomic.Bool
	watcher   *plugin.Watcher
	// sandboxes serves DNS inside each local container's namespace; nil
	// with --container-dns=false.
	sandboxes *sandbox.Manager
	// local knows this host's container bridges: the DNS server forwards
	// outside names for queries that come from them (localsrc.go).
	local *localSources

	// endpointsMu serialises read-modify-writes of this node's endpoint
	// records (published ports from the plugin, container facts from the
	// watcher), so neither overwrites the other's fields.
	endpointsMu sync.Mutex
	// ports holds a socket per published host port (portholder.go).
	ports *portHolder

	// reconcileMu serialises Apply: the loop, the timer and plugin calls
	// (Join waits for its veth) all reconcile through it.
	reconcileMu sync.Mutex
	applied     struct {
		sync.Mutex
		at    time.Time
		err   error
		count uint64
	}
	dnsErr struct {
		sync.Mutex
		err error
	}
	// dnsListening is set while the DNS server listens on the DNS address
	// (/readyz).
	dnsListening atomic.Bool

	// metrics is nil without --metrics-addr; its Events are nil then too,
	// and count nothing. dnsCounts and boxCounts are the DNS servers'
	// counts (the DNS address's, the containers'), kept across servers.
	metrics              *metrics.Metrics
	dnsCounts, boxCounts *dns.Counts
	// fdbEntries and neighEntries are what the last apply asked for.
	fdbEntries, neighEntries atomic.Int64

	// probes check every peer through each tunnel, VXLAN and WireGuard
	// (datapath.go); probeChanged hears when a peer's data path flips.
	probes       []*dataPathProbe
	probeChanged chan struct{}
	// vipTablesChanged hears when a container's own VIP table comes into
	// place or goes (with the bridge bypass only: bridgedEndpoints).
	vipTablesChanged chan struct{}
	// hostFiltersChanged hears when the host's own forward filtering no
	// longer agrees with the auto bridge bypass the last apply chose.
	hostFiltersChanged chan struct{}
	// labelErrs are local containers whose meshnet.publish does not parse.
	labelErrs labelErrors
}

// recordsFile holds the node's own records across restarts.
const recordsFile = "records.json"

// New prepares everything that can fail at startup, so that a bad key, a
// taken port or an unreadable state directory stops meshnetd at once with
// one line saying what to fix.
func New(cfg Config, log *slog.Logger) (*Daemon, error) {
	d := &Daemon{cfg: cfg, log: log, started: time.Now(), ports: newPortHolder(log)}
	// The persisted keyring (meshctl keys), else --key-file; warns at
	// every start when gossip is not encrypted.
	keys, err := loadKeyring(cfg, log)
	if err != nil {
		return nil, err
	}
	d.encrypted = keys.Primary != nil
	d.dnsAddr, _ = netip.ParseAddr(cfg.DNSAddr) // Validate checked it
	if cfg.AdvertiseAddr != "" {
		d.advertise, _ = netip.ParseAddr(cfg.AdvertiseAddr)
	} else if d.advertise, err = DetectAdvertiseAddr(); err != nil {
		return nil, err
	}
	bind := cfg.BindAddr
	if bind == "" {
		bind = d.advertise.String()
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("create state directory %s: %w", cfg.StateDir, err)
	}
	nodeKey, err := loadNodeKey(cfg.StateDir, log)
	if err != nil {
		return nil, err
	}
	recordsPath := filepath.Join(cfg.StateDir, recordsFile)
	d.store = gossip.NewStore(gossip.StoreConfig{
		Self: cfg.NodeName,
		Key:  nodeKey,
		Log:  log,
		Persist: func(own gossip.OwnState) error {
			buf, err := json.Marshal(own)
			if err != nil {
				return err
			}
			return atomicfile.Write(recordsPath, buf, 0o600)
		},
	})
	if err := d.loadRecords(recordsPath); err != nil {
		return nil, err
	}
	lastKnown := d.loadKnownPeers()
	d.peersAtStart = len(lastKnown)
	d.cluster, err = gossip.New(gossip.Config{
		NodeName:       cfg.NodeName,
		BindAddr:       bind,
		BindPort:       cfg.BindPort,
		AdvertiseAddr:  d.advertise.String(),
		AdvertisePort:  cfg.BindPort,
		Join:           cfg.Join,
		Seeds:          seedResolver(cfg, log),
		LastKnown:      lastKnown,
		Key:            keys.Primary,
		Keys:           keys.Keys,
		PersistKeys:    d.persistKeys,
		Insecure:       cfg.Insecure,
		Label:          cfg.Cluster,
		RejoinInterval: 15 * time.Second,
		WAN:            cfg.GossipProfile == GossipWAN,
		Log:            log,
	}, d.store)
	if err != nil {
		return nil, err
	}
	d.ipam, err = ipam.New(ipam.Config{Store: d.store, Dir: filepath.Join(cfg.StateDir, "ipam"), Log: log})
	if err != nil {
		d.cluster.Close()
		return nil, err
	}
	if d.dp, err = newDataplane(cfg, log); err != nil {
		d.cluster.Close()
		return nil, err
	}
	d.dnsCfg = dns.DefaultConfig()
	d.dnsCfg.Domain = cfg.DNSDomain
	d.dnsCfg.Addr = net.JoinHostPort(cfg.DNSAddr, "53")
	d.local = &localSources{underlay: d.advertise, extra: d.ownSubnets, log: log}
	d.dnsCfg.AllowRecursion = d.local.sourceOK
	d.dnsCfg.RecursionInterface = d.local.interfaceOK
	d.dnsCfg.Upstreams = cfg.upstreams()
	d.dnsCfg.RateLimit.QPS = cfg.DNSRateLimit
	d.dnsCfg.RateLimit.Burst = int(2 * cfg.DNSRateLimit)
	d.dnsCounts, d.boxCounts = new(dns.Counts), new(dns.Counts)
	d.dnsCfg.Counts = d.dnsCounts
	d.vipTablesChanged = make(chan struct{}, 1)
	d.hostFiltersChanged = make(chan struct{}, 1)
	if cfg.ContainerDNS {
		sc := sandbox.Config{Domain: cfg.DNSDomain, TTL: d.dnsCfg.TTL, Counts: d.boxCounts}
		if cfg.BridgeBypassMode() != dataplane.BypassOff {
			// Which containers the bypass may take past the bridge
			// (bridgedEndpoints) follows their VIP tables.
			sc.VIPTableChanged = func() { notify(d.vipTablesChanged) }
		}
		d.sandboxes = sandbox.New(sc, log)
	}
	if cfg.MetricsAddr != "" {
		d.metrics = metrics.New(d.metricsState, d.notReady)
	}
	d.probeChanged = make(chan struct{}, 1)
	d.probes = newProbes(d, d.probeChanged)
	d.watcher = plugin.NewWatcher(cfg.DockerHost, log)
	d.watcher.RestartStranded("meshnet")
	return d, nil
}

func (d *Daemon) loadRecords(path string) error {
	buf, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	var own gossip.OwnState
	if err := json.Unmarshal(buf, &own); err != nil {
		return fmt.Errorf("state file %s is corrupt (%v): move it aside to start this node afresh; the cluster will hand its records back", path, err)
	}
	if err := d.store.Load(own); err != nil {
		return fmt.Errorf("state file %s: %w (move it aside to start this node afresh; the cluster hands its records back)", path, err)
	}
	return nil
}

// Run serves until ctx is done. Parts that fail at run time are logged and
// retried; only the plugin and control sockets are fatal (without them the
// node is useless and the operator must know at once).
func (d *Daemon) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	host, port := d.cluster.LocalAddr()
	self := gossip.NodeInfo{Addr: d.advertise.String(), GossipPort: port, NodeKey: gossip.EncodeNodeKey(d.store.PublicKey()), Version: versionString(), Started: d.started,
		Features: []string{gossip.FeatureMeshProbe}}
	d.wireGuardNodeInfo(&self)
	if _, err := d.store.Put(gossip.KindNode, "", self); err != nil {
		return fmt.Errorf("publish node record: %w", err)
	}
	d.log.Info("meshnetd starting", "node", d.cfg.NodeName, "gossip", net.JoinHostPort(host, strconv.Itoa(port)), "join", d.cfg.Join, "encrypted", d.encrypted)

	var wg sync.WaitGroup
	errc := make(chan error, 3)
	run := func(name string, f func(context.Context) error, fatal bool) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := f(ctx)
			if err != nil && ctx.Err() == nil {
				d.log.Error(name+" stopped", "err", err)
				if fatal {
					errc <- fmt.Errorf("%s: %w", name, err)
				}
			}
		}()
	}
	// The plugin socket opens first: an engine that starts with containers
	// to restart waits for it, and it answers from persisted state.
	run("plugin socket", func(ctx context.Context) error {
		return plugin.Serve(ctx, filepath.Join(d.cfg.PluginDir, "meshnet.sock"), plugin.NewHandler(networkBackend{d}, ipamBackend{d}, d.log))
	}, true)
	run("control socket", func(ctx context.Context) error {
		return control.Serve(ctx, d.cfg.ControlSocket, control.NewHandler(controlBackend{d}, d.log))
	}, true)
	run("systemd notification", d.notifyReady, false)
	if d.metrics != nil {
		// Fatal like the sockets: an operator who asked for metrics and
		// health checks must learn at once that the address is taken.
		run("metrics", func(ctx context.Context) error { return d.metrics.Serve(ctx, d.cfg.MetricsAddr, d.log) }, true)
	}
	// Gossip runs until told otherwise below: a stopping daemon does not
	// leave the cluster unless --leave-on-stop says so.
	gctx, gcancel := context.WithCancel(context.Background())
	defer gcancel()
	run("gossip", func(context.Context) error { return d.cluster.Run(gctx) }, false)
	for _, p := range d.probes {
		run(p.Tunnel()+" data-path probe", p.Run, false)
	}
	run("ipam", d.ipam.Run, false)
	run("ipam gate", d.runIPAMGate, false)
	run("reconciler", d.reconcileLoop, false)
	if w, ok := d.dp.(hostFilterWatcher); ok {
		run("host firewall watch", func(ctx context.Context) error {
			return w.WatchHostFilters(ctx, func() { notify(d.hostFiltersChanged) })
		}, false)
	}
	run("dns table", d.dnsTableLoop, false)
	run("dns", d.runDNS, false)
	if d.sandboxes != nil {
		run("container dns", d.sandboxes.Run, false)
	}
	run("container bridges", d.local.run, false)
	run("leak sweep", d.reclaimLoop, false)
	run("service VIPs", d.vipLoop, false)
	run("docker events", func(ctx context.Context) error { return d.watcher.Run(ctx, d.onContainers) }, false)
	run("tombstone expiry", func(ctx context.Context) error {
		t := time.NewTicker(10 * time.Minute)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return nil
			case <-t.C:
				d.store.Expire()
			}
		}
	}, false)

	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	case cerr := <-d.cluster.Conflict():
		err = d.identityConflict(cerr)
	case cerr := <-d.store.Conflict():
		err = d.identityConflict(cerr)
	}
	cancel()
	d.stopGossip(gcancel)
	wg.Wait()
	// Kernel state stays: running containers keep talking while meshnetd
	// restarts or upgrades.
	if cerr := d.dp.Close(); cerr != nil {
		d.log.Warn("closing the dataplane", "err", cerr)
	}
	d.log.Info("meshnetd stopped")
	return err
}

// IdentityConflictError is why a node stays out of the cluster: its name
// is taken by another node that was there first. meshnetd exits with a
// status of its own for it (a service manager should not restart it).
type IdentityConflictError struct{ Err error }

func (e IdentityConflictError) Error() string { return "refused by the cluster: " + e.Err.Error() }
func (e IdentityConflictError) Unwrap() error { return e.Err }

// identityConflict takes this node out of the cluster at once, without a
// graceful leave: a leave would announce the name as gone, and the name
// belongs to the other node, which must stay untouched.
func (d *Daemon) identityConflict(err error) error {
	d.log.Error("this node's name is taken by another node; leaving the cluster", "err", err)
	if cerr := d.cluster.Close(); cerr != nil {
		d.log.Warn("closing gossip", "err", cerr)
	}
	return IdentityConflictError{Err: err}
}

// hostFilterWatcher is a dataplane whose auto bridge bypass follows the
// host's firewall (dataplane.Kernel.WatchHostFilters).
type hostFilterWatcher interface {
	WatchHostFilters(ctx context.Context, changed func()) error
	BypassStatus() dataplane.BypassStatus
}

// notify wakes whoever waits on ch (a channel with room for one), without
// blocking: a wake-up already pending covers this one.
func notify(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// reconcileLoop applies the desired state on every store change and on a
// timer, which repairs drift (someone deleted a link) and anything missed.
func (d *Daemon) reconcileLoop(ctx context.Context) error {
	changes, cancel := d.store.Subscribe()
	defer cancel()
	t := time.NewTicker(d.cfg.ResyncInterval)
	defer t.Stop()
	// The first full state heard from a peer ends a restarted node's hold
	// on deletes (holddeletes.go). It changes the store only when the peer
	// had news, so it is a reason to reconcile of its own: else the hold
	// lasted until the next resync, and what the restart was to remove
	// (a rule of a changed setting) stayed up to ResyncInterval longer.
	var heard <-chan struct{}
	if d.cluster != nil { // nil in unit tests
		heard = d.cluster.Heard()
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-changes:
		case <-t.C:
		case <-d.probeChanged:
		case <-d.vipTablesChanged:
		case <-d.hostFiltersChanged:
		case <-heard:
			heard = nil // closed for good: once is enough
		}
		_ = d.reconcile(ctx)
		d.saveKnownPeers(d.store.Snapshot())
	}
}

// reconcile computes the desired kernel state from the current snapshot and
// applies it. It returns Apply's error (everything it could not do).
func (d *Daemon) reconcile(ctx context.Context) error {
	d.reconcileMu.Lock()
	defer d.reconcileMu.Unlock()
	// Whether to hold deletes is decided before the snapshot is taken: once
	// it says no, the full state that ended the wait is in the snapshot.
	hold := d.holdDeletes()
	snap := d.store.Snapshot()
	// Nodes whose daemon is dead but whose data path answers keep their
	// entries (datapath.go).
	view := dataPathView(snap, anyTunnelUp(d.probes))
	st := desiredDataplane(view, dataplane.UnderlayInfo{Addr: d.advertise}, d.cfg.VXLANPort)
	st.ServiceAddrs = []netip.Addr{d.dnsAddr}
	st.VIPs = desiredVIPs(snap, st.Networks)
	for _, v := range st.VIPs {
		st.ServiceAddrs = append(st.ServiceAddrs, v.Addr)
	}
	if d.cfg.BridgeBypassMode() != dataplane.BypassOff && d.sandboxes != nil {
		bridgedEndpoints(&st, d.sandboxes.VIPTableReady())
	}
	st.AllowDockerBridges = d.cfg.AllowDockerBridges
	st.HoldDeletes = hold
	d.tunnelState(&st, view, dataPathView(snap, d.probeStatus(dataplane.KindWireGuard)))
	st.MeshPorts = desiredMeshPorts(buildMeshTable(view.View().Endpoints), st.Networks)
	st.MeshProbeHosts = meshProbeHosts(view)
	d.setReturnPath(len(st.MeshPorts) > 0)
	d.syncProbes(st, snap, hold, false)
	start := time.Now()
	err := d.dp.Apply(ctx, st)
	if d.sandboxes != nil {
		// After Apply: the replicas' forwarding entries exist before a
		// container is pointed at them.
		d.sandboxes.SetVIPs(st.VIPs)
	}
	d.syncProbes(st, snap, hold, true)
	d.metrics.Events().Applied(time.Since(start), err)
	fdb, neigh := forwardingEntries(st)
	d.fdbEntries.Store(int64(fdb))
	d.neighEntries.Store(int64(neigh))
	d.ports.sync(append(ownPublished(snap), meshHeld(st.MeshPorts)...))
	d.applied.Lock()
	d.applied.at, d.applied.err = time.Now(), err
	d.applied.count++
	d.applied.Unlock()
	if err != nil {
		d.log.Warn("dataplane apply incomplete", "err", err)
	}
	return err
}

// runDNS serves DNS, retrying while the service address is not yet on lo.
func (d *Daemon) runDNS(ctx context.Context) error {
	delay := 250 * time.Millisecond
	var failingSince time.Time // start of the current run of failed attempts
	for {
		srv := dns.NewServer(d.dnsCfg, d.log)
		d.dnsServer.Store(srv)
		// After the Store: a table published meanwhile either is loaded here
		// or finds this server (publishDNSTable).
		if t := d.dnsTable.Load(); t != nil {
			srv.SetTable(t)
		}
		err := srv.Listen()
		d.setDNSErr(err)
		if err == nil {
			failingSince = time.Time{}
			d.dnsListening.Store(true)
			d.log.Info("DNS server listening", "addr", d.dnsCfg.Addr, "domain", d.cfg.DNSDomain)
			err = srv.Run(ctx)
			d.dnsListening.Store(false)
		}
		_ = srv.Close()
		if ctx.Err() != nil {
			return nil
		}
		d.setDNSErr(err)
		if failingSince.IsZero() {
			failingSince = time.Now()
		}
		d.logDNSRetry(err, time.Since(failingSince), delay)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(delay):
		}
		delay = min(2*delay, 5*time.Second)
	}
}

// dnsAddrGrace is how long the DNS server waits quietly for its address:
// the reconcile loop puts it on lo with the first apply, within a second
// of a fresh start, and puts it back at the next resync if someone took it
// away.
const dnsAddrGrace = 10 * time.Second

// logDNSRetry says what is happening while the DNS server cannot listen.
// A missing address is what every fresh start meets until the first apply
// adds it: that is said as it is, and the error with its advice (add the
// address to lo) is only logged once it has lasted past dnsAddrGrace.
func (d *Daemon) logDNSRetry(err error, failingFor, retryIn time.Duration) {
	if errors.Is(err, syscall.EADDRNOTAVAIL) && failingFor < dnsAddrGrace {
		d.log.Info("DNS server waiting for its address, which meshnetd is adding to lo", "addr", d.cfg.DNSAddr, "retry_in", retryIn)
		return
	}
	d.log.Warn("DNS server not serving; retrying", "err", err, "for", failingFor.Round(time.Second), "retry_in", retryIn)
}

// ownSubnets are the subnets of this host's meshnet networks.
func (d *Daemon) ownSubnets() []netip.Prefix {
	var out []netip.Prefix
	for _, n := range networks(d.store.Snapshot()) {
		if n.owner == d.cfg.NodeName {
			out = append(out, n.subnet)
		}
	}
	return out
}

func (d *Daemon) setDNSErr(err error) {
	d.dnsErr.Lock()
	d.dnsErr.err = err
	d.dnsErr.Unlock()
}
