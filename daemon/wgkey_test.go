package daemon

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestWireGuardKeyPersists(t *testing.T) {
	dir := t.TempDir()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	k1, err := loadWireGuardKey(dir, log)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, wireGuardKeyFile)
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file %v mode %v, want 0600", err, fi.Mode().Perm())
	}
	k2, err := loadWireGuardKey(dir, log)
	if err != nil || k2 != k1 {
		t.Fatalf("second load: %v, same key %v", err, k2 == k1)
	}

	// Too open: narrowed, same key.
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	k3, err := loadWireGuardKey(dir, log)
	if fi, _ := os.Stat(path); err != nil || k3 != k1 || fi.Mode().Perm() != 0o600 {
		t.Errorf("open key file: %v, same %v, mode %v", err, k3 == k1, fi.Mode().Perm())
	}

	// Corrupt: an error that says what to do, never a silent new key.
	if err := os.WriteFile(path, []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := loadWireGuardKey(dir, log); err == nil || !strings.Contains(err.Error(), "corrupt") {
		t.Errorf("corrupt key file: %v", err)
	}
}
