package daemon

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The node key and the WireGuard key live in secret files of the state
// folder: made once with mode 0600, read back the same, narrowed when too
// open, and a corrupt or cut-short file is an error that says what to do,
// never a silent new identity.
func TestSecretKeysPersist(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, tc := range []struct {
		name string
		file string
		load func(dir string) (string, error) // the key, printed
	}{
		{"node key", nodeKeyFile, func(dir string) (string, error) {
			k, err := loadNodeKey(dir, log)
			return fmt.Sprintf("%x", []byte(k)), err
		}},
		{"wireguard key", wireGuardKeyFile, func(dir string) (string, error) {
			k, err := loadWireGuardKey(dir, log)
			return fmt.Sprintf("%x", k[:]), err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			k1, err := tc.load(dir)
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(dir, tc.file)
			fi, err := os.Stat(path)
			if err != nil || fi.Mode().Perm() != 0o600 {
				t.Fatalf("key file %v mode %v, want 0600", err, fi.Mode().Perm())
			}
			if k2, err := tc.load(dir); err != nil || k2 != k1 {
				t.Fatalf("second load: %v, same key %v", err, k2 == k1)
			}

			// Too open: narrowed, same key.
			if err := os.Chmod(path, 0o644); err != nil {
				t.Fatal(err)
			}
			k3, err := tc.load(dir)
			if fi, _ := os.Stat(path); err != nil || k3 != k1 || fi.Mode().Perm() != 0o600 {
				t.Errorf("open key file: %v, same %v, mode %v", err, k3 == k1, fi.Mode().Perm())
			}

			for _, bad := range []string{"garbage", "AAAA"} {
				if err := os.WriteFile(path, []byte(bad), 0o600); err != nil {
					t.Fatal(err)
				}
				if _, err := tc.load(dir); err == nil || !strings.Contains(err.Error(), "corrupt") {
					t.Errorf("key file %q: %v", bad, err)
				}
			}
		})
	}
}
