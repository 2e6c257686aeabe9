package daemon

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/meshnet/meshnet/gossip"
	"github.com/meshnet/meshnet/internal/atomicfile"
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
	buf, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		_, key, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, fmt.Errorf("generate node key: %w", err)
		}
		if err := atomicfile.Write(path, []byte(base64.StdEncoding.EncodeToString(key.Seed())+"\n"), 0o600); err != nil {
			return nil, fmt.Errorf("save node key: %w", err)
		}
		log.Info("generated this node's node key (it signs the node's records)", "file", path, "public_key", gossip.EncodeNodeKey(key.Public().(ed25519.PublicKey)))
		return key, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read node key: %w", err)
	}
	seed, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(buf)))
	if err != nil || len(seed) != ed25519.SeedSize {
		return nil, fmt.Errorf("node key file %s is corrupt: restore it (peers know this node by its key), or move it aside together with records.json and remove the node with `meshctl rmpeer` before it starts again", path)
	}
	if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
		if err := os.Chmod(path, 0o600); err != nil {
			return nil, fmt.Errorf("restrict node key file %s to mode 0600: %w", path, err)
		}
		log.Warn("node key file was readable by others; now mode 0600", "file", path, "was", fi.Mode().Perm().String())
	}
	return ed25519.NewKeyFromSeed(seed), nil
}
