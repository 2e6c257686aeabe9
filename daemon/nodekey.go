package daemon

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"log/slog"
	"path/filepath"

	"github.com/meshnet/meshnet/gossip"
)

// nodeKeyFile holds the node's Ed25519 node key (the base64 seed), mode
// 0600. It signs every record the node writes; peers pin its public key to
// the node's name (gossip/trust.go). It must live as long as the node's
// records.json: a node that keeps its records but loses this file writes
// under a key its peers refuse until it is removed (meshctl rmpeer).
const nodeKeyFile = "node.key"

// loadNodeKey returns the node key from the state directory, generating
// and persisting it on first start. Like the WireGuard key, a file
// readable by others is narrowed to 0600, and one that does not parse
// stops the daemon rather than silently giving the node a new identity.
func loadNodeKey(stateDir string, log *slog.Logger) (ed25519.PrivateKey, error) {
	path := filepath.Join(stateDir, nodeKeyFile)
	text, created, err := secretFile(path, "node key", func() (string, error) {
		_, key, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return "", err
		}
		return base64.StdEncoding.EncodeToString(key.Seed()), nil
	}, log)
	if err != nil {
		return nil, err
	}
	seed, err := base64.StdEncoding.DecodeString(text)
	if err != nil || len(seed) != ed25519.SeedSize {
		return nil, fmt.Errorf("node key file %s is corrupt: restore it (peers know this node by its key), or move it aside together with records.json and remove the node with `meshctl rmpeer` before it starts again", path)
	}
	key := ed25519.NewKeyFromSeed(seed)
	if created {
		log.Info("generated this node's node key (it signs the node's records)", "file", path, "public_key", gossip.EncodeNodeKey(key.Public().(ed25519.PublicKey)))
	}
	return key, nil
}
