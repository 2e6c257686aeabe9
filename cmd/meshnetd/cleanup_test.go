package main

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// --cleanup is a command, not a setting: the flag is accepted beside the
// others, and MESHNET_CLEANUP (which a unit's env file could carry by
// mistake) does not exist.
func TestCleanupFlag(t *testing.T) {
	args := []string{"--control-socket", "/tmp/x.sock", "--cleanup"}
	if !hasFlag(args, "cleanup") || hasFlag([]string{"--log-level", "debug"}, "cleanup") {
		t.Fatal("hasFlag cleanup")
	}
	cfg, err := parseFlags(args, envMap(nil), io.Discard)
	if err != nil || cfg.ControlSocket != "/tmp/x.sock" {
		t.Fatalf("parseFlags with --cleanup: %v %+v", err, cfg)
	}
	if _, err := parseFlags(nil, envMap(map[string]string{"MESHNET_CLEANUP": "true", "MESHNET_VERSION": "true"}), io.Discard); err != nil {
		t.Fatalf("command flags must have no variable twin to misread: %v", err)
	}
}

// A cleanup under a running daemon would cut its containers off until
// the daemon's next reconcile put everything back: it is refused, naming
// the socket that answered, before the kernel is touched; a socket file
// nobody serves (a daemon killed with -9) is not in the way.
func TestCleanupRefusedWhileRunning(t *testing.T) {
	opened, real := false, openTeardown
	t.Cleanup(func() { openTeardown = real })
	openTeardown = func(*slog.Logger) (teardowner, error) {
		opened = true
		return nil, errors.New("the test's stand-in dataplane")
	}
	defer func() {
		if opened {
			t.Error("cleanup opened the dataplane although a daemon answered")
		}
	}()
	dir := t.TempDir()
	ctl := filepath.Join(dir, "meshnet.sock")
	plugins := filepath.Join(dir, "plugins")
	if err := os.Mkdir(plugins, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, sock := range []string{ctl, filepath.Join(plugins, "meshnet.sock")} {
		ln, err := net.Listen("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		cfg := mustParse(t)
		cfg.ControlSocket, cfg.PluginDir = ctl, plugins
		err = cleanup(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
		if err == nil || !strings.Contains(err.Error(), "refused") || !strings.Contains(err.Error(), sock) {
			t.Errorf("cleanup with a daemon on %s: %v, want a refusal naming the socket", sock, err)
		}
		ln.(*net.UnixListener).SetUnlinkOnClose(false) // leaves a stale socket file, as kill -9 does
		ln.Close()
	}
	for _, sock := range []string{ctl, filepath.Join(plugins, "meshnet.sock")} {
		if _, err := os.Stat(sock); err != nil {
			t.Fatalf("the stale socket should still be there: %v", err)
		}
	}
	if err := refuseIfRunning(ctl, filepath.Join(plugins, "meshnet.sock"), filepath.Join(dir, "absent.sock")); err != nil {
		t.Errorf("stale or absent sockets: %v, want no refusal", err)
	}
}
