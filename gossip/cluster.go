package gossip

import (
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// Config configures a Cluster. DefaultConfig explains every default.
type Config struct {
	// NodeName is this node's unique name in the cluster.
	NodeName string
	// BindAddr and BindPort: where memberlist listens (TCP and UDP).
	BindAddr string
	BindPort int
	// AdvertiseAddr and AdvertisePort: what peers use to reach us; the
	// same as the bind address unless behind NAT.
	AdvertiseAddr string
	AdvertisePort int
	// Join lists seeds (host or host:port; a host name may resolve to several
	// addresses, each a seed). Empty: this node starts a cluster of its own
	// and waits for others to join it.
	Join []string
	// Seeds, when set, expands Join into addresses on every join attempt
	// (a host name into all its addresses, a cloud discovery query into
	// the instances found; see package discover). Nil: Join as it is.
	Seeds SeedResolver
	// LastKnown are peers this node knew in an earlier run (the daemon
	// keeps them on disk); rejoins try them like last-known live peers.
	LastKnown []KnownPeer
	// Key is the 32-byte gossip encryption key (AES-256-GCM). Nil only with
	// Insecure.
	Key      []byte
	Insecure bool
	// Keys are further keys accepted for decryption (a rotation under
	// way); Key, the primary, encrypts. See keyring.go.
	Keys [][]byte
	// PersistKeys, when set, keeps the keyring after every change, before
	// the change takes effect (a failure refuses the change).
	PersistKeys func(KeyringState) error
	// KeyTimeout bounds how long a keyring operation waits for answers
	// (DefaultKeyTimeout when zero).
	KeyTimeout time.Duration
	// Label names the cluster; packets with another label are dropped, so
	// two meshes on one underlay cannot merge by accident.
	Label string
	// RejoinInterval is how often the node retries its seeds and last-known
	// peers that are not up, so that a healed partition merges again.
	RejoinInterval time.Duration
	// RetryInterval is the first retry delay while the node has no peer at
	// all (a host that booted before its seeds); it doubles up to
	// RejoinInterval.
	RetryInterval time.Duration
	// Memberlist, when set, is used as the base memberlist configuration
	// (tests shorten its timers). Name, addresses, keys, label, delegates
	// are filled in from the fields above.
	Memberlist *memberlist.Config
	// WAN, without Memberlist, takes memberlist's WAN timings (probes every
	// 5 s with 3 s to answer, suspicion 6 rounds) instead of its LAN ones
	// (1 s, 500 ms, 4): hosts far apart are not suspected for their round
	// trips, and a dead host is declared so later.
	WAN bool
	// Transport replaces memberlist's network transport (tests drop it to
	// make partitions).
	Transport memberlist.Transport
	Log       *slog.Logger
}

// DefaultConfig returns the production defaults.
func DefaultConfig() Config {
	return Config{
		BindPort: 7946, // memberlist's, Serf's and Docker's networkdb's port
		Label:    "meshnet",
		// Memberlist's push/pull runs every 30 s on a LAN; rejoining at the
		// same pace bounds how long two healed halves stay apart.
		RejoinInterval: 30 * time.Second,
		RetryInterval:  time.Second,
	}
}

// Cluster is the local node's membership in the mesh: memberlist plus the
// replicated Store it gossips.
type Cluster struct {
	cfg   Config
	store *Store
	log   *slog.Logger
	ml    *memberlist.Memberlist // set in New (under mu: see sendLarge)
	queue *memberlist.TransmitLimitedQueue

	localHost string
	localPort int

	// peers is this node's view of every node memberlist told it of. It is
	// written only from memberlist's event callbacks, which run under
	// memberlist's node lock: the *memberlist.Node values that Members()
	// returns are rewritten in place by memberlist, so reading them
	// anywhere else is a data race (hashicorp/memberlist#306).
	mu    sync.Mutex
	peers map[string]peer
	// suspects maps a peer reported suspect to the suspicion's sequence
	// number, so that only the latest suspicion's timer lapses it
	// (suspect.go).
	suspects   map[string]uint64
	suspectSeq uint64
	// suspectTimers end suspicions that memberlist never ruled on; Close
	// stops them.
	suspectTimers map[string]*time.Timer
	mlConfig      *memberlist.Config

	// Sends of records too big for a packet (sendLarge); sendsClosed,
	// under mu, stops new ones once the node shuts down.
	sends          sync.WaitGroup
	sendsClosed    bool
	maxPacketMsg   int // the largest record message a gossip packet carries
	retransmitMult int

	kr    keyring   // gossip key rotation (keyring.go)
	sight sightings // who sees a node alive (sightings.go)

	// in carries peers' records from the delegate to mergeLoop
	// (inbound.go); inDropped counts messages dropped when it was full.
	in        chan inbound
	inDropped atomic.Uint64

	// life serialises the end: Run's graceful leave and Close. It is held
	// across Leave, which waits for gossip, so nothing on memberlist's
	// paths may take it.
	life    sync.Mutex
	leaving atomic.Bool // read by NodeMeta
	shut    bool
	running bool
	stop    chan struct{} // closed when the node shuts down
	done    chan struct{} // closed when Run returns

	cameUp chan string // peers that came up, for a catch-up exchange (catchup.go)
	// lastKnown are the names of Config.LastKnown (read-only after New).
	lastKnown map[string]bool
	// announced: this run's own records were gossiped again after its first
	// join (restarted nodes only; see announceOwn).
	announced bool

	unrelayed unrelayed // records a push/pull brought, not passed on yet (relay.go)

	heard     chan struct{} // closed at the first merged push/pull state (heard.go)
	heardOnce sync.Once
	conf      conflicts // identity conflicts (identity.go), under mu
}

type peer struct {
	addr    string // host:port memberlist reaches it at
	ip      net.IP // the same, apart (a copy: memberlist reuses its own)
	port    uint16
	state   MemberState
	nodeKey string // from its metadata (identity.go)
}

// leaveTimeout bounds how long a graceful leave waits for its broadcast.
const leaveTimeout = 2 * time.Second

// New creates the memberlist for store's node and starts listening. Run
// joins the cluster and keeps membership in the store.
func New(cfg Config, store *Store) (*Cluster, error) {
	if cfg.NodeName == "" {
		return nil, errors.New("gossip: node name is empty")
	}
	if cfg.NodeName != store.Self() {
		return nil, fmt.Errorf("gossip: node name %q differs from the store's %q", cfg.NodeName, store.Self())
	}
	if cfg.Key == nil && !cfg.Insecure {
		return nil, errors.New("gossip: no encryption key: make one with `meshctl keygen` and pass --key-file, or run with --insecure on a trusted network")
	}
	if cfg.Key != nil && len(cfg.Key) != 32 {
		return nil, fmt.Errorf("gossip: encryption key is %d bytes; it must be 32 (make one with `meshctl keygen`)", len(cfg.Key))
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	def := DefaultConfig()
	if cfg.RejoinInterval == 0 {
		cfg.RejoinInterval = def.RejoinInterval
	}
	if cfg.RetryInterval == 0 {
		cfg.RetryInterval = def.RetryInterval
	}
	c := &Cluster{
		cfg:           cfg,
		store:         store,
		log:           cfg.Log.With("component", "gossip"),
		peers:         make(map[string]peer),
		suspects:      make(map[string]uint64),
		suspectTimers: make(map[string]*time.Timer),
		stop:          make(chan struct{}),
		done:          make(chan struct{}),
		cameUp:        make(chan string, catchUpQueue),
		lastKnown:     map[string]bool{},
		heard:         make(chan struct{}),
		in:            make(chan inbound, inboundQueue),
		conf:          conflicts{logged: make(map[string]bool), fatal: make(chan error, 1)},
	}
	for _, k := range cfg.LastKnown {
		c.lastKnown[k.Name] = true
	}
	mc := cfg.Memberlist
	switch {
	case mc == nil && cfg.WAN:
		mc = memberlist.DefaultWANConfig()
	case mc == nil:
		mc = memberlist.DefaultLANConfig()
	default:
		copied := *mc
		mc = &copied
	}
	mc.Name = cfg.NodeName
	mc.BindAddr = cfg.BindAddr
	mc.BindPort = cfg.BindPort
	mc.AdvertiseAddr = cfg.AdvertiseAddr
	mc.AdvertisePort = cfg.AdvertisePort
	if mc.AdvertisePort == 0 {
		mc.AdvertisePort = cfg.BindPort
	}
	mc.Label = cfg.Label
	if err := c.setupKeyring(mc); err != nil {
		return nil, err
	}
	mc.Delegate = &delegate{c: c}
	mc.Events = &events{c: c}
	mc.Conflict = &conflictDelegate{c: c}
	mc.Merge = &mergeDelegate{c: c}
	mc.Logger = log.New(&memberlistLog{log: c.log, note: c.noteLogLine}, "", 0)
	mc.LogOutput = nil
	if cfg.Transport != nil {
		mc.Transport = cfg.Transport
	}
	// A node that restarts under its own name must be able to take it back
	// at once (memberlist refuses a dead name's new address otherwise).
	mc.DeadNodeReclaimTime = time.Second
	c.mlConfig = mc
	// Memberlist calls the delegates from its goroutines as soon as Create
	// starts them: the queue and the store's broadcast hook must be ready
	// before, and must not need c.ml.
	// What fits in a gossip packet after memberlist's framing: compound
	// and message headers, the label, and encryption (nonce, tag), with
	// some room to spare.
	c.maxPacketMsg = mc.UDPBufferSize - 64 - len(mc.Label)
	c.retransmitMult = max(mc.RetransmitMult, 1)
	c.queue = &memberlist.TransmitLimitedQueue{
		NumNodes:       c.numUp,
		RetransmitMult: mc.RetransmitMult,
	}
	c.sight.pending = make(map[string]chan sightReply)
	c.sight.requests = make(chan sightRequest, sightQueue)
	prevBroadcast := store.setBroadcast(c.broadcastOwn)
	c.sends.Add(1) // mergeLoop; shutdown waits for it
	go c.mergeLoop()
	// The store must know this run's address before a peer's push/pull
	// can reach it (SetOwnAddress); a dynamic port is known only after.
	if host := knownAdvertiseHost(mc); host != "" && mc.AdvertisePort != 0 {
		store.SetOwnAddress(host, mc.AdvertisePort)
	}
	ml, err := memberlist.Create(mc)
	if err != nil {
		close(c.stop)
		c.sends.Wait()
		store.setBroadcast(prevBroadcast)
		return nil, fmt.Errorf("gossip: start memberlist on %s:%d: %w", cfg.BindAddr, cfg.BindPort, err)
	}
	c.mu.Lock() // sendLarge may already run on memberlist's goroutines
	c.ml = ml
	c.sends.Add(2) // the key and sighting request servers; shutdown waits for them
	c.mu.Unlock()
	go c.serveKeyRequests()
	go c.serveSightRequests()
	local := ml.LocalNode()
	c.localHost, c.localPort = local.Addr.String(), int(local.Port)
	store.SetOwnAddress(c.localHost, c.localPort)
	return c, nil
}

// knownAdvertiseHost is the address memberlist will advertise, when the
// configuration names it: the advertise address, else a bind address that
// is not a wildcard. Empty when memberlist must choose.
func knownAdvertiseHost(mc *memberlist.Config) string {
	if mc.AdvertiseAddr != "" {
		return mc.AdvertiseAddr
	}
	if ip := net.ParseIP(mc.BindAddr); ip != nil && !ip.IsUnspecified() {
		return mc.BindAddr
	}
	return ""
}

// Store returns the replicated store.
func (c *Cluster) Store() *Store { return c.store }

// LocalAddr returns the address and port peers reach this node at.
func (c *Cluster) LocalAddr() (string, int) { return c.localHost, c.localPort }

// Run joins the seeds (retrying until one answers), rejoins periodically,
// and keeps members' liveness in the store until ctx is done. It then
// leaves the cluster gracefully. After Close, Run returns at once.
func (c *Cluster) Run(ctx context.Context) error {
	c.life.Lock()
	if c.running {
		c.life.Unlock()
		return errors.New("gossip: Run called twice")
	}
	c.running = true
	shut := c.shut
	c.life.Unlock()
	defer close(c.done)
	if shut {
		return nil
	}
	caughtUp := make(chan struct{})
	go func() { defer close(caughtUp); c.catchUp() }()
	defer func() { <-caughtUp }() // before done: nothing of the node outlives Run
	delay := c.cfg.RetryInterval
	join := time.NewTimer(0)
	defer join.Stop()
	for {
		select {
		case <-ctx.Done():
			return c.shutdown(true)
		case <-c.stop:
			return nil
		case <-join.C:
			if c.rejoin() {
				c.announceOwn()
				delay = c.cfg.RejoinInterval
			} else if delay < c.cfg.RejoinInterval {
				delay *= 2
				if delay > c.cfg.RejoinInterval {
					delay = c.cfg.RejoinInterval
				}
			}
			join.Reset(delay)
		}
	}
}

// Close stops memberlist without a graceful leave (cancelling Run's ctx is
// the way to leave) and waits for Run to return. Safe to call more than
// once, and before, during or after Run.
func (c *Cluster) Close() error {
	err := c.shutdown(false)
	c.life.Lock()
	running := c.running
	c.life.Unlock()
	if running {
		<-c.done
	}
	return err
}

func (c *Cluster) shutdown(leave bool) error {
	c.life.Lock()
	defer c.life.Unlock()
	if c.shut {
		return nil
	}
	c.shut = true
	close(c.stop)
	if leave {
		// Say "leaving" first, so that peers report this node as left,
		// not dead (see metaLeaving).
		c.leaving.Store(true)
		if err := c.ml.UpdateNode(leaveTimeout); err != nil {
			c.log.Warn("announcing the leave", "err", err)
		}
		if err := c.ml.Leave(leaveTimeout); err != nil {
			c.log.Warn("leaving the cluster", "err", err)
		}
	}
	c.mu.Lock()
	c.sendsClosed = true
	c.stopSuspicions()
	c.mu.Unlock()
	err := c.ml.Shutdown()
	c.sends.Wait()
	if err != nil {
		return fmt.Errorf("gossip: shut down memberlist: %w", err)
	}
	return nil
}

// memberlistLog turns memberlist's "[LEVEL] memberlist: msg" lines into
// slog records at the matching level.
type memberlistLog struct {
	log  *slog.Logger
	note func(line string) // sees every line (suspicions: suspect.go)
}

func (w *memberlistLog) Write(p []byte) (int, error) {
	line := strings.TrimSpace(string(p))
	level := slog.LevelInfo
	for prefix, l := range map[string]slog.Level{"[DEBUG]": slog.LevelDebug, "[INFO]": slog.LevelInfo, "[WARN]": slog.LevelWarn, "[ERR]": slog.LevelError} {
		if strings.HasPrefix(line, prefix) {
			level = l
			line = strings.TrimSpace(strings.TrimPrefix(line, prefix))
			break
		}
	}
	line = strings.TrimPrefix(line, "memberlist: ")
	if strings.HasPrefix(line, "Conflicting address for ") {
		// Said for every alive message of the refused node; the
		// ConflictDelegate logs each conflict once (identity.go).
		level = slog.LevelDebug
	}
	if w.note != nil {
		w.note(line)
	}
	w.log.Log(context.Background(), level, line)
	return len(p), nil
}
