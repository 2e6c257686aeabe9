package plugin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"
)

// Server timeouts. The engine sends small bodies at once; these only stop a slow or stuck client
// (slowloris) from holding connections. WriteTimeout is long because a backend may wait on the
// cluster (an address block handoff) before it answers. Variables, so that tests can shorten them.
var (
	readHeaderTimeout = 5 * time.Second
	readTimeout       = 30 * time.Second
	writeTimeout      = 2 * time.Minute
	idleTimeout       = 2 * time.Minute
)

const shutdownTimeout = 5 * time.Second

// Serve serves h on the unix socket socketPath until ctx is done, then shuts down (waiting a few
// seconds for calls in flight) and removes the socket. It creates the socket's directory, replaces
// a stale socket, refuses to replace one another process still answers on, and makes the socket
// 0600: whoever can talk to it can create networks, so only root may.
func Serve(ctx context.Context, socketPath string, h http.Handler) error {
	ln, info, err := listenUnix(socketPath)
	if err != nil {
		return err
	}
	defer removeIfSame(socketPath, info)

	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(slog.Default().Handler(), slog.LevelWarn),
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	select {
	case err := <-served:
		return fmt.Errorf("serving plugin socket %s: %w", socketPath, err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		_ = srv.Close()
	}
	if err := <-served; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serving plugin socket %s: %w", socketPath, err)
	}
	return nil
}

// listenUnix binds socketPath with mode 0600 and returns the socket file's info (to remove only
// our own socket later). It binds inside a fresh 0700 directory, sets the mode, then renames the
// socket into place: no moment exists where the socket is reachable with looser permissions, and
// the rename replaces a stale socket atomically.
func listenUnix(socketPath string) (net.Listener, os.FileInfo, error) {
	dir := filepath.Dir(socketPath)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, nil, fmt.Errorf("creating plugin socket directory: %w", err)
	}
	if err := checkStale(socketPath); err != nil {
		return nil, nil, err
	}

	tmpDir, err := os.MkdirTemp(dir, ".mn-")
	if err != nil {
		return nil, nil, fmt.Errorf("creating plugin socket: %w", err)
	}
	defer os.RemoveAll(tmpDir)
	tmp := filepath.Join(tmpDir, "s")

	ln, err := net.Listen("unix", tmp)
	if err != nil {
		return nil, nil, fmt.Errorf("listening on plugin socket: %w", err)
	}
	// The listener would unlink tmp on Close, a name that no longer exists; Serve removes the
	// real path itself.
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	if err := os.Chmod(tmp, 0o600); err != nil {
		ln.Close()
		return nil, nil, fmt.Errorf("restricting plugin socket: %w", err)
	}
	if err := os.Rename(tmp, socketPath); err != nil {
		ln.Close()
		return nil, nil, fmt.Errorf("placing plugin socket at %s: %w", socketPath, err)
	}
	info, err := os.Lstat(socketPath)
	if err != nil {
		ln.Close()
		return nil, nil, fmt.Errorf("placing plugin socket at %s: %w", socketPath, err)
	}
	return ln, info, nil
}

// checkStale fails if socketPath is something other than a socket, or a socket someone answers on.
func checkStale(socketPath string) error {
	fi, err := os.Lstat(socketPath)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("checking plugin socket %s: %w", socketPath, err)
	}
	if fi.Mode().Type() != os.ModeSocket {
		return fmt.Errorf("plugin socket path %s exists and is not a socket; remove it", socketPath)
	}
	conn, err := net.DialTimeout("unix", socketPath, time.Second)
	if err == nil {
		conn.Close()
		return fmt.Errorf("plugin socket %s is in use by another process (is meshnetd already running?)", socketPath)
	}
	return nil // stale: the rename replaces it
}

// removeIfSame removes path if it is still the socket we created (another instance may have
// taken the name over since).
func removeIfSame(path string, ours os.FileInfo) {
	fi, err := os.Lstat(path)
	if err == nil && os.SameFile(fi, ours) {
		_ = os.Remove(path)
	}
}
