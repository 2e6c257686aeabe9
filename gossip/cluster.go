package gossip

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"math"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// Message types on the wire. The first byte of every user message and of
// the push/pull state says what follows, so a foreign or future format is
// rejected rather than misread.
const (
	msgRecord    byte = 'r' // one Record, JSON
	stateVersion byte = 'S' // gzip(JSON([]Record))
)

// Bounds on what a peer can make us decode.
const (
	// maxStateBytes bounds a decompressed push/pull state. Memberlist
	// already caps the compressed state at 20 MiB; JSON records compress
	// about tenfold.
	maxStateBytes = 256 << 20
	// maxStateRecords bounds the records in one state: ten times a
	// thousand hosts with a hundred containers each. Without it, a small
	// state of "{}" repeated would decode to gigabytes of empty Records.
	maxStateRecords = 1 << 20
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

// maxRejoinPeers bounds how many last-known peers one rejoin round tries
// after the seeds: each unreachable one costs a TCP timeout, and one
// answer is enough to merge two halves again.
const maxRejoinPeers = 3

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
		heard:         make(chan struct{}),
		in:            make(chan inbound, inboundQueue),
		conf:          conflicts{logged: make(map[string]bool), fatal: make(chan error, 1)},
	}
	mc := cfg.Memberlist
	if mc == nil {
		mc = memberlist.DefaultLANConfig()
	} else {
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
	prevBroadcast := store.setBroadcast(c.broadcast)
	c.sends.Add(1) // mergeLoop; shutdown waits for it
	go c.mergeLoop()
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
	return c, nil
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

// rejoin contacts the seeds and a few last-known peers that are not up,
// one at a time until one answers. It reports whether this node has at
// least one peer afterwards (or needs none: no seeds and no peers).
func (c *Cluster) rejoin() bool {
	targets := c.rejoinTargets()
	if len(targets) == 0 {
		// Nothing to try: fine without seeds, or with every seed up; but
		// seeds that resolved to nothing yet are retried soon.
		return len(c.cfg.Join) == 0 || c.numUp() > 1
	}
	var errs []error
	for _, t := range targets {
		select {
		case <-c.stop:
			return true
		default:
		}
		n, err := c.ml.Join([]string{t})
		if n > 0 {
			c.log.Debug("joined", "via", t)
			return true
		}
		errs = append(errs, err)
	}
	if c.numUp() > 1 {
		return true
	}
	c.log.Warn("no seed or peer answered; retrying (if peers do answer, check that every node has the same --key-file and cluster label)",
		"targets", targets, "err", errors.Join(errs...))
	return false
}

// rejoinTargets lists the seeds that are not up, then up to maxRejoinPeers
// last-known peers that are not up, in random order.
func (c *Cluster) rejoinTargets() []string {
	c.mu.Lock()
	up := map[string]bool{net.JoinHostPort(c.localHost, strconv.Itoa(c.localPort)): true}
	upNames := map[string]bool{c.cfg.NodeName: true}
	var down []string
	for name, p := range c.peers {
		if name == c.cfg.NodeName {
			continue
		}
		if p.state.Up() {
			up[p.addr] = true
			upNames[name] = true
		} else {
			down = append(down, p.addr)
		}
	}
	c.mu.Unlock()
	// Peers known from an earlier run (Config.LastKnown): after a restart
	// memberlist knows nobody, and a node started without seeds (the first
	// of a cluster) would otherwise stay alone.
	for _, a := range c.cfg.LastKnown {
		if !upNames[a.Name] {
			down = append(down, a.Addr)
		}
	}

	seen := make(map[string]bool)
	var out []string
	add := func(a string) bool {
		if a == "" || seen[a] || up[a] {
			return false
		}
		seen[a] = true
		out = append(out, a)
		return true
	}
	for _, s := range c.seeds() {
		if _, _, err := net.SplitHostPort(s); err != nil {
			s = net.JoinHostPort(s, strconv.Itoa(c.cfg.BindPort))
		}
		add(s)
	}
	rand.Shuffle(len(down), func(i, j int) { down[i], down[j] = down[j], down[i] })
	for i, added := 0, 0; i < len(down) && added < maxRejoinPeers; i++ {
		if add(down[i]) {
			added++
		}
	}
	return out
}

// NumMembers returns how many nodes memberlist has alive or suspect.
func (c *Cluster) NumMembers() int { return c.ml.NumMembers() }

// numUp counts the nodes up in this node's view, itself included: the
// cluster size that broadcast retransmits scale with.
func (c *Cluster) numUp() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, p := range c.peers {
		if p.state.Up() {
			n++
		}
	}
	return max(n, 1)
}

// metaLeaving is the node metadata of a node that is leaving gracefully.
// Memberlist's event for a node gone does not say whether it failed or
// left (the Node it hands over never has its State set: memberlist keeps
// the state in a field of its own that shadows Node.State), so a leaving
// node first re-advertises itself with this metadata, and NotifyLeave reads
// it back.
var metaLeaving = []byte("leaving")

// memberState is what a memberlist event says of a node. Memberlist
// offers no event for suspicion (and never sets Node.State); suspect.go
// reads it from memberlist's log instead. Consumers treat suspect and
// alive alike anyway.
func memberState(n *memberlist.Node, gone bool) MemberState {
	switch {
	case !gone:
		return StateAlive
	case bytes.Equal(n.Meta, metaLeaving):
		return StateLeft
	default:
		return StateDead
	}
}

// setMember is called only from memberlist's event callbacks (see peers).
// It must not call into memberlist or the broadcast queue.
func (c *Cluster) setMember(n *memberlist.Node, gone bool) {
	m := Member{Name: n.Name, Addr: n.Addr.String(), State: memberState(n, gone), NodeKey: metaNodeKey(n.Meta)}
	c.mu.Lock()
	prev, known := c.peers[n.Name]
	if known && m.State.Up() && n.Name != c.cfg.NodeName {
		switch {
		case !prev.state.Up():
			c.noteUp(n.Address()) // it is back: catch up (catchup.go)
		case m.NodeKey != "" && prev.nodeKey != "" && m.NodeKey != prev.nodeKey:
			// Restarted with a new node key before it was declared
			// dead: its node record under that key is taken now
			// (Store, pinMovesLocked), so fetch it and the records it
			// adopted again rather than wait for push/pull.
			c.noteUp(n.Address())
		}
	}
	if m.NodeKey == "" {
		m.NodeKey = prev.nodeKey
	}
	c.peers[n.Name] = peer{addr: n.Address(), ip: append(net.IP(nil), n.Addr...), port: n.Port, state: m.State, nodeKey: m.NodeKey}
	c.notePeerLocked(n.Name, m.State.Up())
	delete(c.suspects, n.Name) // memberlist's verdict ends a suspicion
	c.mu.Unlock()
	c.store.SetMember(m)
}

func (c *Cluster) broadcast(r Record) {
	buf, err := json.Marshal(r)
	if err != nil {
		c.log.Error("encoding a record for gossip", "record", r.Key.String(), "err", err)
		return
	}
	msg := append([]byte{msgRecord}, buf...)
	if len(msg) > c.maxPacketMsg {
		c.sendLarge(r.Key, msg)
		return
	}
	// The queue's name must be unique per key: Key.String's slashes also
	// occur in IDs (subnets).
	name := string(r.Kind) + "\x00" + r.Owner + "\x00" + r.ID
	c.queue.QueueBroadcast(&recordBroadcast{key: name, msg: msg})
}

// sendLarge sends a record too big for a gossip packet over TCP to a few
// random peers that are up, about as many as memberlist would retransmit a
// broadcast. Memberlist's queue skips a message that does not fit in a
// packet, forever: such a record would travel only by push/pull, and sit
// in the queue until replaced. Receivers pass it on the same way, once per
// version, so it spreads like a broadcast.
func (c *Cluster) sendLarge(k Key, msg []byte) {
	c.mu.Lock()
	ml := c.ml
	if c.sendsClosed || ml == nil {
		c.mu.Unlock()
		return
	}
	var targets []*memberlist.Node
	for name, p := range c.peers {
		if name != c.cfg.NodeName && p.state.Up() {
			targets = append(targets, &memberlist.Node{Name: name, Addr: p.ip, Port: p.port})
		}
	}
	up := len(targets) + 1
	// Memberlist's retransmit count, and at least 4: every peer of a
	// small cluster directly.
	fanout := max(c.retransmitMult*int(math.Ceil(math.Log10(float64(up+1)))), 4)
	rand.Shuffle(len(targets), func(i, j int) { targets[i], targets[j] = targets[j], targets[i] })
	if len(targets) > fanout {
		targets = targets[:fanout]
	}
	if len(targets) == 0 {
		c.mu.Unlock()
		return // push/pull carries it to whoever comes
	}
	c.sends.Add(1)
	c.mu.Unlock()
	// Dialing may take a TCP timeout: not on the caller's goroutine, which
	// may be memberlist's packet handler or a plugin request.
	go func() {
		defer c.sends.Done()
		for _, n := range targets {
			if err := ml.SendReliable(n, msg); err != nil {
				c.log.Debug("sending a large record", "record", k.String(), "to", n.Name, "err", err)
			}
		}
	}()
}

type recordBroadcast struct {
	key string
	msg []byte
}

func (b *recordBroadcast) Invalidates(o memberlist.Broadcast) bool {
	ob, ok := o.(*recordBroadcast)
	return ok && ob.key == b.key
}
func (b *recordBroadcast) Name() string    { return b.key }
func (b *recordBroadcast) Message() []byte { return b.msg }
func (b *recordBroadcast) Finished()       {}

// delegate is memberlist's Delegate. Its methods are called from
// memberlist's packet and push/pull goroutines: they must not block, and
// they must be safe for concurrent use. Records only pass through: they
// are decoded here and merged by mergeLoop (inbound.go).
type delegate struct{ c *Cluster }

var _ memberlist.Delegate = (*delegate)(nil)

func (d *delegate) NodeMeta(limit int) []byte {
	if d.c.leaving.Load() {
		return metaLeaving
	}
	return nodeKeyMeta(d.c.store.PublicKey(), limit)
}

func (d *delegate) NotifyMsg(buf []byte) {
	if len(buf) > 0 && (buf[0] == msgKeyRequest || buf[0] == msgKeyReply) {
		d.c.notifyKeyMsg(buf)
		return
	}
	if len(buf) > 0 && (buf[0] == msgSightRequest || buf[0] == msgSightReply) {
		d.c.notifySightMsg(buf)
		return
	}
	recs, err := DecodeMessage(buf)
	if err != nil {
		d.c.log.Warn("dropping a gossip message", "err", err)
		return
	}
	d.c.enqueueMessage(recs) // merged by mergeLoop (inbound.go)
}

func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte {
	return d.c.queue.GetBroadcasts(overhead, limit)
}

func (d *delegate) LocalState(join bool) []byte {
	buf, err := EncodeState(d.c.store.All())
	if err != nil {
		d.c.log.Error("encoding state for push/pull", "err", err)
		return nil
	}
	return buf
}

func (d *delegate) MergeRemoteState(buf []byte, join bool) {
	recs, err := DecodeState(buf)
	if err != nil {
		d.c.log.Warn("dropping a peer's push/pull state", "err", err)
		return
	}
	d.c.enqueueState(recs) // merged by mergeLoop (inbound.go)
}

// DecodeMessage decodes one gossip user message.
func DecodeMessage(buf []byte) ([]Record, error) {
	if len(buf) == 0 {
		return nil, errors.New("empty message")
	}
	if buf[0] != msgRecord {
		return nil, fmt.Errorf("unknown message type 0x%02x", buf[0])
	}
	var r Record
	if err := json.Unmarshal(buf[1:], &r); err != nil {
		return nil, fmt.Errorf("decode record message: %w", err)
	}
	return []Record{r}, nil
}

// EncodeState encodes the full state for push/pull.
func EncodeState(recs []Record) ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte(stateVersion)
	zw := gzip.NewWriter(&b)
	if err := json.NewEncoder(zw).Encode(recs); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// DecodeState decodes a peer's push/pull state. What a peer (anyone with
// the key) can make us allocate is bounded: the decompressed bytes by
// maxStateBytes, the records by maxStateRecords, each record's encoding by
// maxStateElement. Records are decoded one at a time, so neither a gzip bomb
// nor a huge list is ever held whole.
func DecodeState(buf []byte) ([]Record, error) {
	return decodeState(buf, maxStateBytes, maxStateRecords)
}

var errStateTooLarge = errors.New("state is too large")

func decodeState(buf []byte, maxBytes int64, maxRecords int) ([]Record, error) {
	if len(buf) == 0 {
		return nil, nil // a peer with nothing to say
	}
	if buf[0] != stateVersion {
		return nil, fmt.Errorf("unknown state format 0x%02x", buf[0])
	}
	zr, err := gzip.NewReader(bytes.NewReader(buf[1:]))
	if err != nil {
		return nil, fmt.Errorf("decode state: %w", err)
	}
	dec := json.NewDecoder(&stateGuard{r: zr, left: maxBytes, limit: maxBytes})
	tok, err := dec.Token()
	if err != nil {
		return nil, fmt.Errorf("decode state: %w", err)
	}
	var recs []Record
	switch tok {
	case nil: // null: an empty state
	case json.Delim('['):
		for dec.More() {
			if len(recs) >= maxRecords {
				return nil, fmt.Errorf("decode state: over %d records: %w", maxRecords, errStateTooLarge)
			}
			var r Record
			if err := dec.Decode(&r); err != nil {
				return nil, fmt.Errorf("decode state: record %d: %w", len(recs), err)
			}
			recs = append(recs, r)
		}
		if _, err := dec.Token(); err != nil { // the closing ]
			return nil, fmt.Errorf("decode state: %w", err)
		}
	default:
		return nil, fmt.Errorf("decode state: want a list of records, got %v", tok)
	}
	// Read to the end: trailing data is an error, and gzip checks its
	// checksum only at EOF.
	if tok, err := dec.Token(); err != io.EOF {
		if err == nil {
			err = fmt.Errorf("trailing data %v", tok)
		}
		return nil, fmt.Errorf("decode state: %w", err)
	}
	return recs, nil
}

// maxStateElement bounds the encoding of one element of the state list,
// with the blanks around it. A valid record is at most maxValueLen plus a
// key of a few hundred bytes (a little more when escaped).
const maxStateElement = 64 << 10

// stateGuard reads a decompressed state and fails once it exceeds limit
// bytes in all, or maxStateElement bytes between two separators of the
// top-level list. The second bound matters because json.Decoder buffers,
// and rescans on every read, a run of blanks before a value: without it a
// state of "[" and a gigabyte of spaces costs quadratic time.
type stateGuard struct {
	r           io.Reader
	left, limit int64

	depth    int  // nesting of [ and { outside strings
	inString bool // inside a JSON string
	escaped  bool // the previous byte in the string was a backslash
	element  int  // bytes since the last separator at depth <= 1
}

func (g *stateGuard) Read(p []byte) (int, error) {
	if g.left <= 0 {
		return 0, fmt.Errorf("over %d bytes decompressed: %w", g.limit, errStateTooLarge)
	}
	if int64(len(p)) > g.left {
		p = p[:g.left]
	}
	n, err := g.r.Read(p)
	g.left -= int64(n)
	for _, c := range p[:n] {
		g.element++
		switch {
		case g.inString:
			switch {
			case g.escaped:
				g.escaped = false
			case c == '\\':
				g.escaped = true
			case c == '"':
				g.inString = false
			}
		case c == '"':
			g.inString = true
		case c == '[' || c == '{':
			g.depth++
			if g.depth == 1 {
				g.element = 0
			}
		case c == ']' || c == '}':
			g.depth--
		case c == ',' && g.depth == 1:
			g.element = 0
		}
		if g.element > maxStateElement {
			return 0, fmt.Errorf("a state element over %d bytes: %w", maxStateElement, errStateTooLarge)
		}
	}
	return n, err
}

// events is memberlist's EventDelegate. Memberlist calls it with its node
// lock held: one call at a time, and the only place where the Node it is
// handed may be read without a race.
type events struct{ c *Cluster }

func (e *events) NotifyJoin(n *memberlist.Node) {
	e.c.log.Info("peer joined", "node", n.Name, "addr", n.Address())
	e.c.setMember(n, false)
}

func (e *events) NotifyLeave(n *memberlist.Node) {
	st := memberState(n, true)
	e.c.log.Info("peer gone", "node", n.Name, "addr", n.Address(), "state", st)
	e.c.setMember(n, true)
}

func (e *events) NotifyUpdate(n *memberlist.Node) { e.c.setMember(n, false) }

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
