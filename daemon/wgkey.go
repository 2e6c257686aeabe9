package daemon

import (
	"fmt"
	"log/slog"
	"path/filepath"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// wireGuardKeyFile holds the node's WireGuard private key (base64), mode 0600.
const wireGuardKeyFile = "wireguard.key"

// loadWireGuardKey returns the node's WireGuard private key from the state
// directory, generating and persisting it on first start. The key lives as
// long as the state directory: a restart keeps the same public key, so peers
// need no new configuration and sessions resume. A key file readable by
// others is narrowed to 0600 (and said so); one that does not parse stops
// the daemon rather than silently getting a new identity.
func loadWireGuardKey(stateDir string, log *slog.Logger) (wgtypes.Key, error) {
	path := filepath.Join(stateDir, wireGuardKeyFile)
	text, created, err := secretFile(path, "WireGuard key", func() (string, error) {
		key, err := wgtypes.GeneratePrivateKey()
		return key.String(), err
	}, log)
	if err != nil {
		return wgtypes.Key{}, err
	}
	key, err := wgtypes.ParseKey(text)
	if err != nil {
		return wgtypes.Key{}, fmt.Errorf("WireGuard key file %s is corrupt (%v): restore it, or move it aside to give this node a new key", path, err)
	}
	if created {
		log.Info("generated this node's WireGuard key", "file", path, "public_key", key.PublicKey().String())
	}
	return key, nil
}
