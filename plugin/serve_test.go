package plugin

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// unixClient talks HTTP to a unix socket, as the engine's plugin client does.
func unixClient(path string) *http.Client {
	return &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		}},
	}
}

// waitFor polls cond until it holds or a generous deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// startServe runs Serve in the background and returns a stop function that cancels it and
// returns Serve's result.
func startServe(t *testing.T, path string, h http.Handler) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, path, h) }()
	var result error
	stopped := false
	stop = func() error {
		if !stopped {
			stopped = true
			cancel()
			result = <-done
		}
		return result
	}
	t.Cleanup(func() { _ = stop() })
	waitFor(t, "the plugin socket", func() bool {
		select {
		case err := <-done: // Serve failed before the socket appeared
			stopped = true
			result = err
			t.Fatalf("Serve returned early: %v", err)
		default:
		}
		conn, err := net.Dial("unix", path) // a stale socket file may be there before Serve's
		if err != nil {
			return false
		}
		conn.Close()
		return true
	})
	return stop
}

func TestServeSocketIsRootOnlyAndServes(t *testing.T) {
	path := filepath.Join(t.TempDir(), "plugins", "meshnet.sock") // directory created by Serve
	_, h := newTestHandler()
	stop := startServe(t, path, h)

	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Errorf("socket mode %v, want 0600", perm)
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Errorf("socket directory holds %d entries, want only the socket: %v", len(entries), entries)
	}

	resp, err := unixClient(path).Post("http://plugin/Plugin.Activate", ContentType, strings.NewReader(""))
	if err != nil {
		t.Fatalf("calling the plugin: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var got activateReply
	if err := json.Unmarshal(body, &got); err != nil || len(got.Implements) != 2 {
		t.Errorf("Activate over the socket: %d %q", resp.StatusCode, body)
	}

	if err := stop(); err != nil {
		t.Errorf("Serve returned %v after cancel, want nil", err)
	}
	if _, err := os.Lstat(path); !os.IsNotExist(err) {
		t.Errorf("socket still present after Serve returned (err %v)", err)
	}
}

func TestServeReplacesStaleSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "meshnet.sock")
	// A socket file nobody listens on, as a crashed daemon leaves it.
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()

	_, h := newTestHandler()
	startServe(t, path, h)
	resp, err := unixClient(path).Post("http://plugin/NetworkDriver.GetCapabilities", ContentType, nil)
	if err != nil {
		t.Fatalf("calling the plugin over a replaced stale socket: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("status %d", resp.StatusCode)
	}
}

func TestServeRefusesLiveSocketAndNonSocket(t *testing.T) {
	dir := t.TempDir()
	live := filepath.Join(dir, "live.sock")
	_, h := newTestHandler()
	startServe(t, live, h)
	if err := Serve(context.Background(), live, h); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Errorf("second Serve on a live socket: %v, want an 'in use' error", err)
	}
	// The first server still owns and serves its socket.
	resp, err := unixClient(live).Post("http://plugin/Plugin.Activate", ContentType, nil)
	if err != nil {
		t.Fatalf("first server lost its socket: %v", err)
	}
	resp.Body.Close()

	file := filepath.Join(dir, "file.sock")
	if err := os.WriteFile(file, []byte("keep me"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Serve(context.Background(), file, h); err == nil {
		t.Error("Serve over a regular file succeeded")
	}
	if b, _ := os.ReadFile(file); string(b) != "keep me" {
		t.Error("Serve clobbered a regular file")
	}
}

func TestServeSlowClientIsCut(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for the header timeout")
	}
	shortTimeouts(t)
	path := filepath.Join(t.TempDir(), "meshnet.sock")
	_, h := newTestHandler()
	startServe(t, path, h)
	conn, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// Half a request line, then silence: the server must hang up by itself.
	if _, err := conn.Write([]byte("POST /Plugin.Activate HTTP/1.1\r\nHost: x\r\n")); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(readHeaderTimeout + 20*time.Second))
	_, err = io.ReadAll(conn)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatalf("server kept a slow client's connection open past its header timeout")
	}
}
