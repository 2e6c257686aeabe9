package gossip

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// DefaultKeyTimeout bounds how long a keyring operation waits for the
// members' replies. A member that is up answers within a round trip; one
// that does not answer in time is reported, not waited for.
const DefaultKeyTimeout = 5 * time.Second

// Keyring applies op (with key, except for list) on every member that is up
// and on this node, and returns every node's answer, sorted by name. Nodes
// that are down are listed with an error saying so; a node that does not
// answer in time too. The error is for this node's own refusal (no keyring,
// a bad key, removing its primary key) or a key that some node still
// encrypts with (remove); the per-node errors are in the answers.
func (c *Cluster) Keyring(ctx context.Context, op KeyOp, key []byte) ([]NodeKeys, error) {
	if err := checkOp(op, key); err != nil {
		return nil, err
	}
	local := c.Keys()
	if local.Primary == nil {
		return nil, ErrNoKeyring
	}
	switch op {
	case KeyUse:
		if !containsKey(local.Keys, key) {
			return nil, fmt.Errorf("the key is not installed on %s: install it everywhere first (meshctl keys install KEY)", c.cfg.NodeName)
		}
		// A node that cannot decrypt the new key would be cut off by the
		// others once they encrypt with it: ask first.
		answers, err := c.keyRound(ctx, KeyList, nil)
		if err != nil {
			return nil, err
		}
		if lacking := nodesWhere(answers, func(a NodeKeys) bool { return !containsKey(a.Keys, key) }); lacking != "" {
			return answers, fmt.Errorf("%s do not have this key installed: run `meshctl keys install KEY` first", lacking)
		}
	case KeyRemove:
		if bytes.Equal(local.Primary, key) {
			return nil, ErrPrimaryKey
		}
		// A node that still encrypts with the key would be cut off by the
		// others once they drop it: ask first.
		answers, err := c.keyRound(ctx, KeyList, nil)
		if err != nil {
			return nil, err
		}
		if users := nodesWhere(answers, func(a NodeKeys) bool { return bytes.Equal(a.Primary, key) }); users != "" {
			return answers, fmt.Errorf("%s still encrypt with this key: run `meshctl keys use NEWKEY` again once they are up, then remove it", users)
		}
	}
	return c.keyRound(ctx, op, key)
}

// nodesWhere names the nodes that answered and match.
func nodesWhere(answers []NodeKeys, match func(NodeKeys) bool) string {
	var names []string
	for _, a := range answers {
		if a.Err == "" && match(a) {
			names = append(names, a.Node)
		}
	}
	return strings.Join(names, ", ")
}

func containsKey(keys [][]byte, key []byte) bool {
	for _, k := range keys {
		if bytes.Equal(k, key) {
			return true
		}
	}
	return false
}

// keyRound sends op to every member that is up, applies it here, and
// collects the answers.
func (c *Cluster) keyRound(ctx context.Context, op KeyOp, key []byte) ([]NodeKeys, error) {
	timeout := c.cfg.KeyTimeout
	if timeout <= 0 {
		timeout = DefaultKeyTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	idb := make([]byte, 12)
	_, _ = rand.Read(idb)
	req := keyRequest{ID: hex.EncodeToString(idb), From: c.cfg.NodeName, Op: op, Key: key}
	body, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("encode key request: %w", err)
	}
	msg := append([]byte{msgKeyRequest}, body...)

	answers := map[string]NodeKeys{}
	var targets []*memberlist.Node
	c.mu.Lock()
	ml := c.ml
	if c.sendsClosed || ml == nil {
		c.mu.Unlock()
		return nil, errors.New("gossip: the node is shutting down")
	}
	for name, p := range c.peers {
		switch {
		case name == c.cfg.NodeName:
		case p.state.Up():
			targets = append(targets, &memberlist.Node{Name: name, Addr: p.ip, Port: p.port})
		default:
			answers[name] = NodeKeys{Node: name, Err: fmt.Sprintf("not reached: the node is %s; rerun this command once it is back", p.state)}
		}
	}
	c.sends.Add(len(targets)) // shutdown waits for the sends
	c.mu.Unlock()

	asked := make(map[string]bool, len(targets))
	for _, n := range targets {
		asked[n.Name] = true
	}
	replies := make(chan keyReply, len(targets)+1)
	c.kr.pendingMu.Lock()
	c.kr.pending[req.ID] = replies
	c.kr.pendingMu.Unlock()
	defer func() {
		c.kr.pendingMu.Lock()
		delete(c.kr.pending, req.ID)
		c.kr.pendingMu.Unlock()
	}()

	// Peers first, this node last: a request is encrypted with this
	// node's primary key, which "use" is about to change. Each send has a
	// goroutine of its own: a peer that does not answer costs a TCP
	// timeout, which must not hold up the others.
	var wg sync.WaitGroup
	for _, n := range targets {
		wg.Add(1)
		go func() {
			defer c.sends.Done()
			defer wg.Done()
			if err := ml.SendReliable(n, msg); err != nil {
				select {
				case replies <- keyReply{ID: req.ID, Node: n.Name, Err: "not reached: " + err.Error()}:
				default: // full of (duplicate) replies: reported as no answer
				}
			}
		}()
	}
	sent := make(chan struct{})
	go func() { wg.Wait(); close(sent) }()
	select {
	case <-sent:
	case <-ctx.Done():
	}
	st, err := c.applyKeyOp(op, key)
	self := NodeKeys{Node: c.cfg.NodeName, Primary: st.Primary, Keys: st.Keys}
	if err != nil {
		self.Err = err.Error()
	}
	answers[c.cfg.NodeName] = self

	waiting := len(targets)
	for waiting > 0 {
		select {
		case r := <-replies:
			if _, dup := answers[r.Node]; dup || !asked[r.Node] {
				continue
			}
			answers[r.Node] = NodeKeys{Node: r.Node, Err: r.Err, Primary: r.Primary, Keys: r.Keys}
			waiting--
		case <-ctx.Done():
			waiting = 0
		}
	}
	for _, n := range targets {
		if _, ok := answers[n.Name]; !ok {
			answers[n.Name] = NodeKeys{Node: n.Name, Err: fmt.Sprintf("no answer within %s (a node without this cluster's current key cannot read the request)", timeout)}
		}
	}
	out := make([]NodeKeys, 0, len(answers))
	for _, a := range answers {
		out = append(out, a)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Node < out[j].Node })
	return out, nil
}

// notifyKeyMsg handles a key request or reply from NotifyMsg: it must not
// block memberlist's handler, so requests go to serveKeyRequests.
func (c *Cluster) notifyKeyMsg(buf []byte) {
	m, err := decodeKeyMessage(buf)
	if err != nil {
		c.log.Warn("dropping a key message", "err", err)
		return
	}
	switch m := m.(type) {
	case keyRequest:
		select {
		case c.kr.requests <- m:
		default:
			c.log.Warn("dropping a key request: too many queued", "from", m.From, "op", m.Op)
		}
	case keyReply:
		c.kr.pendingMu.Lock()
		ch := c.kr.pending[m.ID]
		c.kr.pendingMu.Unlock()
		if ch == nil {
			return // late, or not ours
		}
		select {
		case ch <- m:
		default: // more replies than asked: a duplicate
		}
	}
}

// serveKeyRequests applies peers' key requests one at a time and answers
// each, until the node shuts down.
func (c *Cluster) serveKeyRequests() {
	defer c.sends.Done()
	for {
		select {
		case <-c.stop:
			return
		case req := <-c.kr.requests:
			st, err := c.applyKeyOp(req.Op, req.Key)
			r := keyReply{ID: req.ID, Node: c.cfg.NodeName, Primary: st.Primary, Keys: st.Keys}
			if err != nil {
				r.Err = err.Error()
				r.Primary, r.Keys = nil, nil
			}
			c.log.Info("key request from a peer", "from", req.From, "op", req.Op, "key", KeyID(req.Key), "err", err)
			c.sendKeyReply(req.From, r)
		}
	}
}

func (c *Cluster) sendKeyReply(to string, r keyReply) {
	body, err := json.Marshal(r)
	if err != nil {
		c.log.Error("encoding a key reply", "err", err)
		return
	}
	c.mu.Lock()
	p, ok := c.peers[to]
	ml := c.ml
	c.mu.Unlock()
	if !ok || ml == nil {
		c.log.Warn("cannot answer a key request: the sender is not a known member", "from", to)
		return
	}
	n := &memberlist.Node{Name: to, Addr: p.ip, Port: p.port}
	if err := ml.SendReliable(n, append([]byte{msgKeyReply}, body...)); err != nil {
		c.log.Warn("answering a key request", "to", to, "err", err)
	}
}
