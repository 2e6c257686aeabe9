package sandbox

import (
	"context"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshnet/meshnet/dataplane"
	"github.com/meshnet/meshnet/dns"
)

// Config configures a Manager. Zero fields take the defaults below.
type Config struct {
	// Domain and TTL are the DNS zone's, as the daemon's server has them.
	Domain string
	TTL    time.Duration
	// Counts, when set, is where every container's server counts its
	// replies (dns.Counts): one set for all containers, which come and go.
	Counts *dns.Counts
	// Mark is the firewall mark on meshnet's own queries to Docker's
	// resolver, which the redirect lets through. Default 0x6d6e7364 ("mnsd").
	Mark uint32
	// Lease is how long a redirect outlives a daemon that stops renewing
	// it (killed): then Docker's resolver answers the container again.
	// Renewed every Lease/3. Default 3 s.
	Lease time.Duration
	// WaitForNetNS is how long a sandbox key named in Join may take to
	// become a namespace. Default 1 minute.
	WaitForNetNS time.Duration
	// Forget is how long a box the engine's container list does not show
	// is kept (a container between Join and its first listing). Default 30 s.
	Forget time.Duration
	// VIPTableChanged, when set, is called whenever a container's VIP
	// table comes into place or stops being so (VIPTableReady's answer
	// changed). It may be called with the manager's locks held: it must
	// not block or call back.
	VIPTableChanged func()
}

// Defaults; Config explains each.
const (
	DefaultMark         = 0x6d6e7364
	DefaultLease        = 3 * time.Second
	DefaultWaitForNetNS = time.Minute
	DefaultForget       = 30 * time.Second
)

func (c Config) withDefaults() Config {
	if c.Mark == 0 {
		c.Mark = DefaultMark
	}
	if c.Lease <= 0 {
		c.Lease = DefaultLease
	}
	if c.WaitForNetNS <= 0 {
		c.WaitForNetNS = DefaultWaitForNetNS
	}
	if c.Forget <= 0 {
		c.Forget = DefaultForget
	}
	return c
}

// Sandbox is one running container as the engine lists it: its sandbox
// key, its process, and its endpoints on meshnet networks.
type Sandbox struct {
	Key       string
	Pid       int
	Endpoints map[string]netip.Prefix // endpoint ID → network subnet
}

// Manager keeps one box per container on a meshnet network. Attach and
// Detach follow the driver's Join and Leave (the earliest moments meshnet
// hears of a container); Sync repairs from the engine's full container
// list, after a restart of meshnetd above all.
type Manager struct {
	cfg   Config
	log   *slog.Logger
	table atomicTable

	ctx    context.Context // the boxes' parent: ended by Close
	cancel context.CancelFunc

	// vips are every service VIP of this host's networks; each box writes
	// those of its own networks into its container.
	vips atomic.Pointer[[]dataplane.VIP]

	mu    sync.Mutex
	boxes map[string]*box // by sandbox key
	// closing holds, by sandbox key, the end of a box still taking its
	// tables away, so that a new box for the same container (detached and
	// attached again at once) writes its own only after that.
	closing map[string]chan struct{}
	closed  bool
}

// SetVIPs gives the boxes the service VIPs to balance in their containers'
// namespaces (dataplane.WriteClientVIPs): each container gets those of its
// own networks, rewritten when they change.
func (m *Manager) SetVIPs(vips []dataplane.VIP) {
	vips = slices.Clone(vips)
	m.vips.Store(&vips)
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, b := range m.boxes {
		b.mu.Lock()
		b.syncVIPsLocked()
		b.mu.Unlock()
	}
}

// New makes a manager; boxes start serving as they are attached. A nil
// log discards.
func New(cfg Config, log *slog.Logger) *Manager {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m := &Manager{cfg: cfg.withDefaults(), log: log, boxes: make(map[string]*box), closing: make(map[string]chan struct{})}
	m.ctx, m.cancel = context.WithCancel(context.Background())
	m.table.Store(dns.NewTable(m.cfg.Domain, nil))
	return m
}

// SetTable gives every box the table to answer from.
func (m *Manager) SetTable(t *dns.Table) {
	m.table.Store(t)
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, b := range m.boxes {
		b.mu.Lock()
		if b.srv != nil {
			b.srv.SetTable(t)
		}
		b.mu.Unlock()
	}
}

// Attach says that the container in sandbox key joined the network with
// this subnet through endpoint ep. It returns at once; the box comes up as
// soon as the namespace exists.
func (m *Manager) Attach(key, ep string, subnet netip.Prefix) {
	m.attach(key, 0, map[string]netip.Prefix{ep: subnet})
}

func (m *Manager) attach(key string, pid int, eps map[string]netip.Prefix) {
	if key == "" {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return
	}
	// An endpoint lives in one sandbox.
	for k, b := range m.boxes {
		if k == key {
			continue
		}
		for ep := range eps {
			if m.dropEndpointLocked(b, ep) {
				break
			}
		}
	}
	b := m.boxes[key]
	if b == nil {
		b = &box{m: m, key: key, born: time.Now(), eps: make(map[string]netip.Prefix), done: make(chan struct{}),
			after: m.closing[key]}
		delete(m.closing, key)
		var ctx context.Context
		ctx, b.cancel = context.WithCancel(m.ctx)
		m.boxes[key] = b
		go b.run(ctx)
	}
	b.mu.Lock()
	if pid > 0 {
		b.pid = pid
	}
	changed := false
	for ep, subnet := range eps {
		if b.eps[ep] != subnet {
			b.eps[ep], changed = subnet, true
		}
	}
	if changed && b.srv != nil {
		b.srv.SetScope(b.scopeLocked())
	}
	if changed {
		b.syncVIPsLocked()
	}
	b.mu.Unlock()
}

// Detach says that endpoint ep left its sandbox (Leave): a box with no
// meshnet endpoint left hands the container back to Docker's resolver.
func (m *Manager) Detach(ep string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, b := range m.boxes {
		if m.dropEndpointLocked(b, ep) {
			return
		}
	}
}

// dropEndpointLocked removes ep from b, closing b when it was its last; it
// reports whether b had ep.
func (m *Manager) dropEndpointLocked(b *box, ep string) bool {
	b.mu.Lock()
	_, ok := b.eps[ep]
	delete(b.eps, ep)
	empty := len(b.eps) == 0
	if ok && !empty && b.srv != nil {
		b.srv.SetScope(b.scopeLocked())
	}
	if ok && !empty {
		b.syncVIPsLocked()
	}
	if ok && empty {
		b.leaving = true
	}
	b.mu.Unlock()
	if ok && empty {
		m.closeLocked(b)
	}
	return ok
}

func (m *Manager) closeLocked(b *box) {
	delete(m.boxes, b.key)
	b.cancel()
	m.closing[b.key] = b.done
	go func() {
		<-b.done
		m.mu.Lock()
		if m.closing[b.key] == b.done {
			delete(m.closing, b.key)
		}
		m.mu.Unlock()
	}()
}

// Sync makes the boxes match the engine's list of running containers on
// meshnet networks: what it lists gets a box (a restarted meshnetd finds
// its containers again), a box it has not listed for Forget goes (its
// Leave was missed).
func (m *Manager) Sync(list []Sandbox) {
	seen := make(map[string]bool, len(list))
	for _, s := range list {
		if len(s.Endpoints) == 0 {
			continue
		}
		seen[s.Key] = true
		m.attach(s.Key, s.Pid, s.Endpoints)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for key, b := range m.boxes {
		if !seen[key] && time.Since(b.born) > m.cfg.Forget {
			m.log.Debug("container DNS: sandbox gone", "sandbox", key)
			b.mu.Lock()
			b.leaving = true
			b.mu.Unlock()
			m.closeLocked(b)
		}
	}
}

// Status is one box as meshctl shows it.
type Status struct {
	Key     string
	Subnets []netip.Prefix
	Serving bool
	Err     error
	// VIPs is how many service VIPs the container balances in its own
	// namespace; VIPErr why the last write of them failed (the host's
	// table balances its connections meanwhile).
	VIPs   int
	VIPErr error
}

// Status lists the boxes, by sandbox key.
func (m *Manager) Status() []Status {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []Status
	for _, key := range slices.Sorted(maps.Keys(m.boxes)) {
		b := m.boxes[key]
		b.mu.Lock()
		out = append(out, Status{Key: key, Subnets: b.scopeLocked().Subnets(), Serving: b.rd != nil && b.err == nil, Err: b.err,
			VIPs: len(b.vips), VIPErr: b.vipErr})
		b.mu.Unlock()
	}
	return out
}

// VIPTableReady lists, by endpoint ID, the endpoints whose container
// balances service VIPs in its own namespace: its box runs and has written
// the container's VIP table as the VIPs are now. The bridge bypass keeps
// the others' traffic on the bridge (dataplane.LocalEndpoint.Bridged).
func (m *Manager) VIPTableReady() map[string]bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[string]bool{}
	for _, b := range m.boxes {
		b.mu.Lock()
		if b.vipReadyLocked() {
			for ep := range b.eps {
				out[ep] = true
			}
		}
		b.mu.Unlock()
	}
	return out
}

func (m *Manager) vipTableChanged() {
	if m.cfg.VIPTableChanged != nil {
		m.cfg.VIPTableChanged()
	}
}

// Run renews every box's lease until ctx is done, then closes the boxes,
// which hands every container back to Docker's resolver at once (a clean
// stop; a killed daemon's leases run out instead).
func (m *Manager) Run(ctx context.Context) error {
	t := time.NewTicker(m.cfg.Lease / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			m.Close()
			return nil
		case <-t.C:
			m.renew()
		}
	}
}

func (m *Manager) renew() {
	m.mu.Lock()
	var rds []*redirect
	for _, b := range m.boxes {
		b.mu.Lock()
		if b.rd != nil {
			rds = append(rds, b.rd)
		}
		b.mu.Unlock()
	}
	m.mu.Unlock()
	for _, rd := range rds {
		if err := rd.renew(); err != nil {
			m.log.Debug("container DNS: renew lease", "err", err)
		}
	}
}

// Close stops every box and waits for them: their redirects are removed.
// It is idempotent.
func (m *Manager) Close() {
	m.mu.Lock()
	m.closed = true
	var boxes []*box
	for _, b := range m.boxes {
		boxes = append(boxes, b)
		m.closeLocked(b)
	}
	m.mu.Unlock()
	m.cancel()
	for _, b := range boxes {
		<-b.done
	}
}

// atomicTable holds the current table.
type atomicTable = atomic.Pointer[dns.Table]
