package daemon

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/meshnet/meshnet/control"
	"github.com/meshnet/meshnet/gossip"
	"github.com/meshnet/meshnet/internal/atomicfile"
)

// keyringFile holds the gossip keyring under --state-dir (mode 0600). Once
// it exists it is the node's keyring: --key-file and MESHNET_KEY only seed
// it on the first start, because after a rotation (meshctl keys) the key
// file no longer names the key the cluster encrypts with.
const keyringFile = "keyring.json"

// loadKeyring decides the gossip keyring at startup: the persisted one if
// there is one, else the key from --key-file or MESHNET_KEY (persisted at
// once), else none with --insecure. It logs the warnings an operator must
// see at every start: unencrypted gossip, and flags that have no effect.
func loadKeyring(cfg Config, log *slog.Logger) (gossip.KeyringState, error) {
	path := filepath.Join(cfg.StateDir, keyringFile)
	buf, err := os.ReadFile(path)
	switch {
	case err == nil:
		ring, err := gossip.DecodeKeyring(buf)
		if err != nil {
			return ring, fmt.Errorf("gossip keyring %s is damaged (%v): restore it from a backup, or move it aside to start again from --key-file with the cluster's current primary key", path, err)
		}
		if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
			if err := os.Chmod(path, 0o600); err != nil {
				return ring, fmt.Errorf("restrict gossip keyring %s to root: %w", path, err)
			}
			log.Warn("gossip keyring was readable by others; made it 0600", "path", path)
		}
		if cfg.KeyFile != "" || cfg.Key != "" {
			key, kerr := cfg.GossipKey()
			switch {
			case kerr != nil:
				log.Warn("ignoring the gossip key flag: the persisted keyring is used", "keyring", path, "err", kerr)
			case !containsKey(ring.Keys, key):
				log.Warn("the key from --key-file / MESHNET_KEY is not in the persisted keyring, which is used (keys are rotated with meshctl keys)", "keyring", path, "key", gossip.KeyID(key), "primary", gossip.KeyID(ring.Primary))
			}
		}
		if cfg.Insecure {
			log.Warn("--insecure has no effect: gossip is encrypted with the persisted keyring", "keyring", path)
		}
		log.Info("gossip keyring loaded", "keyring", path, "primary", gossip.KeyID(ring.Primary), "keys", len(ring.Keys))
		return ring, nil
	case !errors.Is(err, os.ErrNotExist):
		return gossip.KeyringState{}, fmt.Errorf("read gossip keyring: %w", err)
	}
	key, err := cfg.GossipKey()
	if err != nil {
		return gossip.KeyringState{}, err
	}
	if key == nil {
		log.Warn("gossip is NOT encrypted or authenticated (--insecure): anyone who reaches the gossip port can join the mesh and change its state")
		return gossip.KeyringState{}, nil
	}
	if cfg.Insecure {
		log.Warn("--insecure has no effect: a gossip key is set, gossip is encrypted")
	}
	ring := gossip.KeyringState{Primary: key, Keys: [][]byte{key}}
	if err := saveKeyring(path, ring); err != nil {
		return ring, err
	}
	return ring, nil
}

// persistKeys keeps the keyring after every change (gossip.Config.PersistKeys).
func (d *Daemon) persistKeys(k gossip.KeyringState) error {
	return saveKeyring(filepath.Join(d.cfg.StateDir, keyringFile), k)
}

func saveKeyring(path string, ring gossip.KeyringState) error {
	buf, err := json.Marshal(ring)
	if err != nil {
		return fmt.Errorf("encode gossip keyring: %w", err)
	}
	if err := atomicfile.Write(path, buf, 0o600); err != nil {
		return fmt.Errorf("persist gossip keyring (is %s writable and not full?): %w", filepath.Dir(path), err)
	}
	return nil
}

func containsKey(keys [][]byte, key []byte) bool {
	for _, k := range keys {
		if bytes.Equal(k, key) {
			return true
		}
	}
	return false
}

// Keys runs a meshctl keys operation across the cluster.
func (b controlBackend) Keys(ctx context.Context, req control.KeysRequest) (control.KeysReply, error) {
	var key []byte
	if req.Op != "list" {
		var err error
		key, err = base64.StdEncoding.DecodeString(strings.TrimSpace(req.Key))
		if err != nil || len(key) != gossip.KeySize {
			return control.KeysReply{}, control.UserError{Err: fmt.Errorf("the key is not base64 of %d bytes: make one with `meshctl keygen`", gossip.KeySize)}
		}
	}
	answers, err := b.d.cluster.Keyring(ctx, gossip.KeyOp(req.Op), key)
	if err != nil {
		return control.KeysReply{}, control.UserError{Err: err}
	}
	return keysReply(req.Op, answers), nil
}

// keysReply turns the nodes' answers into the control API's reply.
func keysReply(op string, answers []gossip.NodeKeys) control.KeysReply {
	out := control.KeysReply{Op: op, Nodes: []control.KeyNode{}, Keys: []control.KeyUse{}}
	uses := map[string]*control.KeyUse{}
	b64 := base64.StdEncoding.EncodeToString
	for _, a := range answers {
		n := control.KeyNode{Node: a.Node, OK: a.Err == "", Error: a.Err}
		if a.Primary != nil {
			n.Primary = b64(a.Primary)
		}
		for _, k := range a.Keys {
			s := b64(k)
			n.Keys = append(n.Keys, s)
			u := uses[s]
			if u == nil {
				u = &control.KeyUse{Key: s}
				uses[s] = u
			}
			u.Installed++
			if bytes.Equal(k, a.Primary) {
				u.Primary++
			}
		}
		out.Nodes = append(out.Nodes, n)
	}
	for _, u := range uses {
		out.Keys = append(out.Keys, *u)
	}
	sort.Slice(out.Keys, func(i, j int) bool {
		if out.Keys[i].Primary != out.Keys[j].Primary {
			return out.Keys[i].Primary > out.Keys[j].Primary
		}
		return out.Keys[i].Key < out.Keys[j].Key
	})
	return out
}
