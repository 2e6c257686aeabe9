package daemon

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestNodeKeyPersists(t *testing.T) {
	dir := t.TempDir()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	k1, err := loadNodeKey(dir, log)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, nodeKeyFile)
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file %v mode %v, want 0600", err, fi.Mode().Perm())
	}
	k2, err := loadNodeKey(dir, log)
	if err != nil || !k2.Equal(k1) {
		t.Fatalf("second load: %v, same key %v", err, k2.Equal(k1))
	}

	// Too open: narrowed, same key.
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	k3, err := loadNodeKey(dir, log)
	if fi, _ := os.Stat(path); err != nil || !k3.Equal(k1) || fi.Mode().Perm() != 0o600 {
		t.Errorf("open key file: %v, same %v, mode %v", err, k3.Equal(k1), fi.Mode().Perm())
	}

	// Corrupt or cut short: an error that says what to do, never a
	// silent new identity.
	for _, bad := range []string{"garbage", "AAAA"} {
		if err := os.WriteFile(path, []byte(bad), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := loadNodeKey(dir, log); err == nil || !strings.Contains(err.Error(), "corrupt") {
			t.Errorf("key file %q: %v", bad, err)
		}
	}
}
