package gossip

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/hashicorp/memberlist"
)

// Gossip key rotation without downtime, as Serf's `keys` and Consul's
// `keyring` do it: every node holds a keyring (one primary key that
// encrypts, any installed key decrypts), and an operator walks the cluster
// through install NEW, use NEW, remove OLD. At every step every pair of
// nodes shares a key the sender encrypts with, so no message is lost.
//
// One node coordinates each step (Cluster.Keyring): it sends a key request
// to every member that is up, over memberlist's reliable user messages (TCP,
// encrypted with its current primary key, so only holders of a key can ask),
// applies the step itself, and collects each node's reply with the node's
// keyring afterwards. A node that is down misses the step and is listed so;
// the operator reruns the command once it is back (every step is
// idempotent).

// Message types of key rotation (see msgRecord).
const (
	msgKeyRequest byte = 'k' // keyRequest, JSON
	msgKeyReply   byte = 'K' // keyReply, JSON
)

// KeyOp is a keyring operation.
type KeyOp string

// Keyring operations, in the order of a rotation (list at any time).
const (
	KeyInstall KeyOp = "install" // accept the key for decryption
	KeyUse     KeyOp = "use"     // encrypt with the key (it must be installed)
	KeyRemove  KeyOp = "remove"  // stop accepting the key (not the primary)
	KeyList    KeyOp = "list"    // report the keyring
)

// Bounds on key messages and keyrings: what a peer can make a node hold.
const (
	// KeySize is the size of a gossip key (AES-256-GCM).
	KeySize = 32
	// MaxKeys bounds a keyring; a rotation needs two.
	MaxKeys       = 16
	maxKeyMsg     = 8 << 10
	maxKeyIDLen   = 64
	maxKeyErrLen  = 1024
	keyReplyQueue = 16 // pending requests a node serves; more are dropped
)

// ErrPrimaryKey is the error of removing the key a node encrypts with.
var ErrPrimaryKey = errors.New("this key is the primary key, which encrypts all gossip: make another key primary first (meshctl keys use NEWKEY), then remove this one")

// ErrNoKeyring is the error of a keyring operation on a node that runs
// without encryption.
var ErrNoKeyring = errors.New("gossip is not encrypted on this node (--insecure): there is no keyring to change; restart it with --key-file")

// KeyringState is a node's keyring: Primary encrypts, every key in Keys
// (Primary among them, first) decrypts. It is what Config.PersistKeys keeps.
type KeyringState struct {
	Primary []byte   `json:"primary"`
	Keys    [][]byte `json:"keys"`
}

// Validate checks a keyring read from disk or built from flags.
func (k KeyringState) Validate() error {
	if len(k.Primary) != KeySize {
		return fmt.Errorf("primary key is %d bytes; a gossip key is %d", len(k.Primary), KeySize)
	}
	if len(k.Keys) > MaxKeys {
		return fmt.Errorf("%d keys: a keyring holds at most %d", len(k.Keys), MaxKeys)
	}
	found := false
	for i, key := range k.Keys {
		if len(key) != KeySize {
			return fmt.Errorf("key %d is %d bytes; a gossip key is %d", i, len(key), KeySize)
		}
		found = found || bytes.Equal(key, k.Primary)
	}
	if !found {
		return errors.New("the primary key is not among the installed keys")
	}
	return nil
}

// DecodeKeyring decodes and validates a persisted keyring.
func DecodeKeyring(buf []byte) (KeyringState, error) {
	var k KeyringState
	if len(buf) > maxKeyMsg {
		return k, fmt.Errorf("keyring of %d bytes is over the limit of %d", len(buf), maxKeyMsg)
	}
	if err := json.Unmarshal(buf, &k); err != nil {
		return k, fmt.Errorf("decode keyring: %w", err)
	}
	if err := k.Validate(); err != nil {
		return k, fmt.Errorf("keyring: %w", err)
	}
	return k, nil
}

// NodeKeys is one node's answer to a keyring operation: its keyring after
// it, or why it did not apply it.
type NodeKeys struct {
	Node    string
	Err     string // empty: applied
	Primary []byte
	Keys    [][]byte
}

// keyRequest asks a node to apply a keyring operation and answer From.
type keyRequest struct {
	ID   string `json:"id"`
	From string `json:"from"`
	Op   KeyOp  `json:"op"`
	Key  []byte `json:"key,omitempty"`
}

// keyReply is a node's answer to a keyRequest.
type keyReply struct {
	ID      string   `json:"id"`
	Node    string   `json:"node"`
	Err     string   `json:"error,omitempty"`
	Primary []byte   `json:"primary,omitempty"`
	Keys    [][]byte `json:"keys,omitempty"`
}

func checkOp(op KeyOp, key []byte) error {
	switch op {
	case KeyList:
		return nil
	case KeyInstall, KeyUse, KeyRemove:
		if len(key) != KeySize {
			return fmt.Errorf("a gossip key is %d bytes, got %d (make one with `meshctl keygen`)", KeySize, len(key))
		}
		return nil
	}
	return fmt.Errorf("unknown keyring operation %q: use install, use, remove or list", op)
}

// decodeKeyMessage decodes a key request or reply from a peer; the result
// is a keyRequest or a keyReply, validated.
func decodeKeyMessage(buf []byte) (any, error) {
	if len(buf) == 0 {
		return nil, errors.New("empty message")
	}
	if len(buf) > maxKeyMsg {
		return nil, fmt.Errorf("key message of %d bytes is over the limit of %d", len(buf), maxKeyMsg)
	}
	switch buf[0] {
	case msgKeyRequest:
		var r keyRequest
		if err := json.Unmarshal(buf[1:], &r); err != nil {
			return nil, fmt.Errorf("decode key request: %w", err)
		}
		if r.ID == "" || len(r.ID) > maxKeyIDLen || r.From == "" || len(r.From) > maxOwnerLen {
			return nil, errors.New("key request without a valid id or sender")
		}
		if err := checkOp(r.Op, r.Key); err != nil {
			return nil, fmt.Errorf("key request: %w", err)
		}
		return r, nil
	case msgKeyReply:
		var r keyReply
		if err := json.Unmarshal(buf[1:], &r); err != nil {
			return nil, fmt.Errorf("decode key reply: %w", err)
		}
		if r.ID == "" || len(r.ID) > maxKeyIDLen || r.Node == "" || len(r.Node) > maxOwnerLen || len(r.Err) > maxKeyErrLen {
			return nil, errors.New("key reply without a valid id or node")
		}
		if r.Err != "" {
			r.Primary, r.Keys = nil, nil // a refusal carries no keyring
		} else if err := (KeyringState{Primary: r.Primary, Keys: r.Keys}).Validate(); err != nil {
			return nil, fmt.Errorf("key reply: %w", err)
		}
		return r, nil
	}
	return nil, fmt.Errorf("unknown message type 0x%02x", buf[0])
}

// keyring is the Cluster's side of rotation. mu serialises changes (from
// the control API and from peers' requests); state mirrors memberlist's
// ring, which is changed only under mu.
type keyring struct {
	mu    sync.Mutex
	ring  *memberlist.Keyring // nil without encryption
	state KeyringState

	requests chan keyRequest // from NotifyMsg to serveKeyRequests

	pendingMu sync.Mutex
	pending   map[string]chan keyReply // by request ID
}

// setupKeyring builds memberlist's keyring from the configuration, before
// memberlist starts.
func (c *Cluster) setupKeyring(mc *memberlist.Config) error {
	c.kr.requests = make(chan keyRequest, keyReplyQueue)
	c.kr.pending = make(map[string]chan keyReply)
	if c.cfg.Key == nil {
		return nil
	}
	st := KeyringState{Primary: c.cfg.Key, Keys: [][]byte{c.cfg.Key}}
	for _, k := range c.cfg.Keys {
		if !slices.ContainsFunc(st.Keys, func(x []byte) bool { return bytes.Equal(x, k) }) {
			st.Keys = append(st.Keys, k)
		}
	}
	if err := st.Validate(); err != nil {
		return fmt.Errorf("gossip: %w", err)
	}
	ring, err := memberlist.NewKeyring(st.Keys, st.Primary)
	if err != nil {
		return fmt.Errorf("gossip: keyring: %w", err)
	}
	mc.Keyring = ring
	c.kr.ring, c.kr.state = ring, st
	return nil
}

// Keys returns this node's keyring (nil Primary without encryption).
func (c *Cluster) Keys() KeyringState {
	c.kr.mu.Lock()
	defer c.kr.mu.Unlock()
	return cloneKeys(c.kr.state)
}

func cloneKeys(k KeyringState) KeyringState {
	out := KeyringState{Primary: bytes.Clone(k.Primary)}
	for _, key := range k.Keys {
		out.Keys = append(out.Keys, bytes.Clone(key))
	}
	return out
}

// applyKeyOp applies op to this node's keyring: persisted first (a change
// the node cannot keep across a restart is not made), then memberlist's.
func (c *Cluster) applyKeyOp(op KeyOp, key []byte) (KeyringState, error) {
	c.kr.mu.Lock()
	defer c.kr.mu.Unlock()
	if c.kr.ring == nil {
		return KeyringState{}, ErrNoKeyring
	}
	if err := checkOp(op, key); err != nil {
		return cloneKeys(c.kr.state), err
	}
	cur := c.kr.state
	has := slices.ContainsFunc(cur.Keys, func(x []byte) bool { return bytes.Equal(x, key) })
	next := KeyringState{Primary: cur.Primary, Keys: slices.Clone(cur.Keys)}
	switch op {
	case KeyList:
		return cloneKeys(cur), nil
	case KeyInstall:
		if has {
			return cloneKeys(cur), nil
		}
		if len(cur.Keys) >= MaxKeys {
			return cloneKeys(cur), fmt.Errorf("the keyring holds %d keys, the most it may: remove old keys first (meshctl keys remove)", MaxKeys)
		}
		next.Keys = append(next.Keys, bytes.Clone(key))
	case KeyUse:
		if !has {
			return cloneKeys(cur), errors.New("the key is not installed on this node: install it everywhere first (meshctl keys install KEY)")
		}
		if bytes.Equal(cur.Primary, key) {
			return cloneKeys(cur), nil
		}
		next.Primary = bytes.Clone(key)
		next.Keys = slices.DeleteFunc(next.Keys, func(x []byte) bool { return bytes.Equal(x, key) })
		next.Keys = append([][]byte{next.Primary}, next.Keys...)
	case KeyRemove:
		if bytes.Equal(cur.Primary, key) {
			return cloneKeys(cur), ErrPrimaryKey
		}
		if !has {
			return cloneKeys(cur), nil
		}
		next.Keys = slices.DeleteFunc(next.Keys, func(x []byte) bool { return bytes.Equal(x, key) })
	}
	if c.cfg.PersistKeys != nil {
		if err := c.cfg.PersistKeys(cloneKeys(next)); err != nil {
			return cloneKeys(cur), fmt.Errorf("persist the keyring (nothing changed): %w", err)
		}
	}
	var err error
	switch op {
	case KeyInstall:
		err = c.kr.ring.AddKey(key)
	case KeyUse:
		err = c.kr.ring.UseKey(key)
	case KeyRemove:
		err = removeKey(c.kr.ring, key)
	}
	if err != nil { // checked above: a bug, but say so rather than diverge silently
		return cloneKeys(cur), fmt.Errorf("memberlist keyring %s: %w", op, err)
	}
	c.kr.state = next
	c.log.Info("gossip keyring changed", "op", op, "key", KeyID(key), "primary", KeyID(next.Primary), "keys", len(next.Keys))
	return cloneKeys(next), nil
}

// removeKey drops key from memberlist's ring. Keyring.RemoveKey shifts the
// ring's slice in place, and memberlist's packet handlers iterate that very
// slice without a lock (decryptPayload over GetKeys): a data race. Removing
// the last key shifts nothing, so the keys after key are taken off from the
// end, key is removed last, and they are added back (AddKey builds a new
// slice). In the usual rotation key is already last.
func removeKey(ring *memberlist.Keyring, key []byte) error {
	keys := ring.GetKeys()
	i := slices.IndexFunc(keys, func(x []byte) bool { return bytes.Equal(x, key) })
	if i < 0 {
		return nil
	}
	tail := slices.Clone(keys[i+1:])
	for j := len(tail) - 1; j >= 0; j-- {
		if err := ring.RemoveKey(tail[j]); err != nil {
			return err
		}
	}
	if err := ring.RemoveKey(key); err != nil {
		return err
	}
	for _, k := range tail {
		if err := ring.AddKey(k); err != nil {
			return err
		}
	}
	return nil
}

// KeyID names a key in logs and reports without revealing it: the start
// of its SHA-256.
func KeyID(key []byte) string {
	if len(key) == 0 {
		return "none"
	}
	sum := sha256.Sum256(key)
	return hex.EncodeToString(sum[:4])
}
