package gossip

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"sync"

	"github.com/hashicorp/memberlist"
)

// Asking the cluster who still sees a node alive. A node that is dead in
// this node's view may only be cut off from it: another member may still
// exchange probes with it, and it may still allocate from its address
// blocks. Before an operator removes a node for good (meshctl rmpeer) the
// daemon asks every member it knows, over memberlist's reliable user
// messages as the keyring rounds do, how it sees the node: those it sees
// down too (a member that answers is not gone, and one that does not
// leaves the question open), and the node itself at its last address,
// since an answer from it is the plainest proof that it runs. Asking is fresher than reading a view each member
// gossips: it needs no new record kind, and a member's word is taken at
// the moment of the removal, not as of its last broadcast.

// Message types of a sighting round (see msgRecord).
const (
	msgSightRequest byte = 'q' // sightRequest, JSON
	msgSightReply   byte = 'Q' // sightReply, JSON
)

// sightQueue bounds the sighting requests a node answers at once; more
// are dropped (the asker reports them as unanswered).
const sightQueue = 16

type sightRequest struct {
	ID   string `json:"id"`
	From string `json:"from"`
	Node string `json:"node"`
}

type sightReply struct {
	ID    string      `json:"id"`
	Node  string      `json:"node"`  // who answers
	State MemberState `json:"state"` // its view of the asked node; "" if unknown
	Self  bool        `json:"self"`  // the asked node answers itself
}

// Sighting is one member's view of a node, as answered to Sightings.
type Sighting struct {
	Node   string      // the member that answered (or was asked)
	Member MemberState // the member's state in this node's view
	State  MemberState // its view of the node; "" if it does not know it
	Self   bool        // the node asked about answered itself: it runs
	Err    string      // not answered, and why
}

// Sightings asks every member this node knows, whatever their state, and
// node itself at its last known address, how they see node. The answers
// are sorted by member name; this node's own view comes first. Members
// that do not answer within the key timeout are listed with Err.
func (c *Cluster) Sightings(ctx context.Context, node string) ([]Sighting, error) {
	timeout := c.cfg.KeyTimeout
	if timeout <= 0 {
		timeout = DefaultKeyTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	idb := make([]byte, 12)
	_, _ = rand.Read(idb)
	req := sightRequest{ID: hex.EncodeToString(idb), From: c.cfg.NodeName, Node: node}
	body, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("encode sighting request: %w", err)
	}
	msg := append([]byte{msgSightRequest}, body...)

	c.mu.Lock()
	ml := c.ml
	if c.sendsClosed || ml == nil {
		c.mu.Unlock()
		return nil, errors.New("gossip: the node is shutting down")
	}
	own := Sighting{Node: c.cfg.NodeName, Member: StateAlive}
	var targets []*memberlist.Node
	state := map[string]MemberState{}
	for name, p := range c.peers {
		if name == c.cfg.NodeName {
			continue
		}
		if name == node {
			own.State = p.state
		}
		state[name] = p.state
		targets = append(targets, &memberlist.Node{Name: name, Addr: p.ip, Port: p.port})
	}
	c.sends.Add(len(targets))
	c.mu.Unlock()

	replies := make(chan sightReply, len(targets)+1)
	c.sight.mu.Lock()
	c.sight.pending[req.ID] = replies
	c.sight.mu.Unlock()
	defer func() {
		c.sight.mu.Lock()
		delete(c.sight.pending, req.ID)
		c.sight.mu.Unlock()
	}()
	errs := make(chan Sighting, len(targets))
	for _, n := range targets {
		go func() {
			defer c.sends.Done()
			if err := ml.SendReliable(n, msg); err != nil {
				errs <- Sighting{Node: n.Name, Err: "not reached: " + err.Error()}
			}
		}()
	}
	answers := map[string]Sighting{}
	for len(answers) < len(targets) {
		select {
		case r := <-replies:
			if _, asked := state[r.Node]; !asked {
				continue
			}
			if _, dup := answers[r.Node]; !dup {
				answers[r.Node] = Sighting{Node: r.Node, Member: state[r.Node], State: r.State, Self: r.Self}
			}
		case s := <-errs:
			if _, dup := answers[s.Node]; !dup {
				s.Member = state[s.Node]
				answers[s.Node] = s
			}
		case <-ctx.Done():
			for _, n := range targets {
				if _, ok := answers[n.Name]; !ok {
					answers[n.Name] = Sighting{Node: n.Name, Member: state[n.Name], Err: fmt.Sprintf("no answer within %s", timeout)}
				}
			}
		}
	}
	out := make([]Sighting, 0, len(answers)+1)
	for _, a := range answers {
		out = append(out, a)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Node < out[j].Node })
	return append([]Sighting{own}, out...), nil
}

// sightings is the Cluster's side of sighting rounds.
type sightings struct {
	mu       sync.Mutex
	pending  map[string]chan sightReply
	requests chan sightRequest
}

func decodeSightMessage(buf []byte) (any, error) {
	if len(buf) > maxKeyMsg {
		return nil, fmt.Errorf("sighting message of %d bytes is over the limit of %d", len(buf), maxKeyMsg)
	}
	switch buf[0] {
	case msgSightRequest:
		var r sightRequest
		if err := json.Unmarshal(buf[1:], &r); err != nil {
			return nil, fmt.Errorf("decode sighting request: %w", err)
		}
		if r.ID == "" || len(r.ID) > maxKeyIDLen || r.From == "" || len(r.From) > maxOwnerLen || r.Node == "" || len(r.Node) > maxOwnerLen {
			return nil, errors.New("sighting request without a valid id, sender or node")
		}
		return r, nil
	case msgSightReply:
		var r sightReply
		if err := json.Unmarshal(buf[1:], &r); err != nil {
			return nil, fmt.Errorf("decode sighting reply: %w", err)
		}
		if r.ID == "" || len(r.ID) > maxKeyIDLen || r.Node == "" || len(r.Node) > maxOwnerLen || len(r.State) > 16 {
			return nil, errors.New("sighting reply without a valid id or node")
		}
		return r, nil
	}
	return nil, fmt.Errorf("unknown message type 0x%02x", buf[0])
}

// notifySightMsg handles a sighting message from NotifyMsg without
// blocking memberlist's handler.
func (c *Cluster) notifySightMsg(buf []byte) {
	m, err := decodeSightMessage(buf)
	if err != nil {
		c.log.Warn("dropping a sighting message", "err", err)
		return
	}
	switch m := m.(type) {
	case sightRequest:
		select {
		case c.sight.requests <- m:
		default:
			c.log.Warn("dropping a sighting request: too many queued", "from", m.From)
		}
	case sightReply:
		c.sight.mu.Lock()
		ch := c.sight.pending[m.ID]
		c.sight.mu.Unlock()
		if ch == nil {
			return
		}
		select {
		case ch <- m:
		default:
		}
	}
}

// serveSightRequests answers peers' sighting requests until the node
// shuts down.
func (c *Cluster) serveSightRequests() {
	defer c.sends.Done()
	for {
		select {
		case <-c.stop:
			return
		case req := <-c.sight.requests:
			r := sightReply{ID: req.ID, Node: c.cfg.NodeName, Self: req.Node == c.cfg.NodeName}
			c.mu.Lock()
			if p, ok := c.peers[req.Node]; ok {
				r.State = p.state
			}
			to, known := c.peers[req.From]
			ml := c.ml
			c.mu.Unlock()
			if r.Self {
				r.State = StateAlive
			}
			if !known || ml == nil {
				c.log.Warn("cannot answer a sighting request: the sender is not a known member", "from", req.From)
				continue
			}
			body, err := json.Marshal(r)
			if err != nil {
				continue
			}
			n := &memberlist.Node{Name: req.From, Addr: to.ip, Port: to.port}
			if err := ml.SendReliable(n, append([]byte{msgSightReply}, body...)); err != nil {
				c.log.Warn("answering a sighting request", "to", req.From, "err", err)
			}
		}
	}
}
