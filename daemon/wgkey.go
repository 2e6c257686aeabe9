package daemon

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/meshnet/meshnet/internal/atomicfile"
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
	buf, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		key, err := wgtypes.GeneratePrivateKey()
		if err != nil {
			return wgtypes.Key{}, fmt.Errorf("generate WireGuard key: %w", err)
		}
		if err := atomicfile.Write(path, []byte(key.String()+"\n"), 0o600); err != nil {
			return wgtypes.Key{}, fmt.Errorf("save WireGuard key: %w", err)
		}
		log.Info("generated this node's WireGuard key", "file", path, "public_key", key.PublicKey().String())
		return key, nil
	}
	if err != nil {
		return wgtypes.Key{}, fmt.Errorf("read WireGuard key: %w", err)
	}
	key, err := wgtypes.ParseKey(strings.TrimSpace(string(buf)))
	if err != nil {
		return wgtypes.Key{}, fmt.Errorf("WireGuard key file %s is corrupt (%v): restore it, or move it aside to give this node a new key", path, err)
	}
	if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
		if err := os.Chmod(path, 0o600); err != nil {
			return wgtypes.Key{}, fmt.Errorf("restrict WireGuard key file %s to mode 0600: %w", path, err)
		}
		log.Warn("WireGuard key file was readable by others; now mode 0600", "file", path, "was", fi.Mode().Perm().String())
	}
	return key, nil
}
