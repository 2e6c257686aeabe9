package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"
)

// Backend is what the daemon answers. Methods are called concurrently.
type Backend interface {
	Peers() []Peer
	Status() Status
	Networks() []Network
	Endpoints() []Endpoint
	Services() []Service
	Lookup(name, qtype string) (Lookup, error)
	// RemovePeer may ask the cluster (it bounds its wait itself).
	RemovePeer(ctx context.Context, req RemovePeerRequest) error
	Version() Version
}

// UserError marks an error caused by the request (HTTP 400) rather than by
// the daemon (500).
type UserError struct{ Err error }

func (e UserError) Error() string { return e.Err.Error() }
func (e UserError) Unwrap() error { return e.Err }

// maxRequestBytes bounds a request body: the API takes only small objects.
const maxRequestBytes = 64 << 10

// NewHandler routes the control API to b.
func NewHandler(b Backend, log *slog.Logger) http.Handler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	mux := http.NewServeMux()
	get := func(path string, f func() any) {
		mux.HandleFunc("GET "+path, func(w http.ResponseWriter, r *http.Request) { reply(w, http.StatusOK, f()) })
	}
	get("/v1/peers", func() any { return b.Peers() })
	get("/v1/status", func() any { return b.Status() })
	get("/v1/networks", func() any { return b.Networks() })
	get("/v1/endpoints", func() any { return b.Endpoints() })
	get("/v1/services", func() any { return b.Services() })
	get("/v1/version", func() any { return b.Version() })
	mux.HandleFunc("GET /v1/lookup", func(w http.ResponseWriter, r *http.Request) {
		name := r.URL.Query().Get("name")
		if name == "" {
			replyErr(w, log, UserError{errors.New("lookup needs a name: meshctl lookup NAME")})
			return
		}
		res, err := b.Lookup(name, r.URL.Query().Get("type"))
		if err != nil {
			replyErr(w, log, err)
			return
		}
		reply(w, http.StatusOK, res)
	})
	mux.HandleFunc("POST /v1/rmpeer", func(w http.ResponseWriter, r *http.Request) {
		var req RemovePeerRequest
		if err := decodeRequest(w, r, &req); err != nil {
			replyErr(w, log, UserError{fmt.Errorf("malformed rmpeer request: %w", err)})
			return
		}
		if req.Node == "" {
			replyErr(w, log, UserError{errors.New("rmpeer needs a node name: meshctl rmpeer NODE")})
			return
		}
		if err := b.RemovePeer(r.Context(), req); err != nil {
			replyErr(w, log, err)
			return
		}
		reply(w, http.StatusOK, struct{}{})
	})
	registerKeys(mux, b, log)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		reply(w, http.StatusNotFound, Error{Error: fmt.Sprintf("no such control API call: %s %s", r.Method, r.URL.Path)})
	})
	return recoverer(mux, log)
}

func recoverer(h http.Handler, log *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if p := recover(); p != nil {
				if p == http.ErrAbortHandler {
					panic(p)
				}
				log.Error("control API handler panicked", "path", r.URL.Path, "panic", p)
				reply(w, http.StatusInternalServerError, Error{Error: fmt.Sprintf("internal error: %v", p)})
			}
		}()
		h.ServeHTTP(w, r)
	})
}

func reply(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func replyErr(w http.ResponseWriter, log *slog.Logger, err error) {
	var ue UserError
	if errors.As(err, &ue) {
		reply(w, http.StatusBadRequest, Error{Error: err.Error()})
		return
	}
	log.Warn("control API call failed", "err", err)
	reply(w, http.StatusInternalServerError, Error{Error: err.Error()})
}

// timeouts stop slow or stuck clients (slowloris) from holding connections
// open. WriteTimeout covers the slowest call, a key rotation waiting for
// members' answers. A variable so that tests can shorten it.
var timeouts = struct{ readHeader, read, write, idle time.Duration }{
	readHeader: 5 * time.Second,
	read:       10 * time.Second,
	write:      30 * time.Second,
	idle:       60 * time.Second,
}

// Serve listens on a unix socket at path (mode 0600: root only) and serves
// h until ctx is done. A stale socket from a crashed run is replaced.
func Serve(ctx context.Context, path string, h http.Handler) error {
	ln, err := ListenUnix(path)
	if err != nil {
		return err
	}
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: timeouts.readHeader, // slow clients cannot hold the socket
		ReadTimeout:       timeouts.read,
		WriteTimeout:      timeouts.write,
		IdleTimeout:       timeouts.idle,
		MaxHeaderBytes:    16 << 10,
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
		_ = os.Remove(path)
		return nil
	case err := <-errc:
		_ = os.Remove(path)
		return fmt.Errorf("serve control API on %s: %w", path, err)
	}
}

// ListenUnix opens a unix socket only root can connect to: the directory is
// made 0700 if it is new, a stale socket is removed, and the socket is
// created under a 0177 umask-equivalent chmod before anyone can connect.
func ListenUnix(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("create socket directory for %s: %w", path, err)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("listen on %s: a file that is not a socket is in the way; remove it", path)
		}
		// Another live daemon on the same socket would be a mistake worth
		// refusing rather than stealing its socket.
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("listen on %s: another process is serving it (is meshnetd already running?)", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("remove stale socket %s: %w", path, err)
		}
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("restrict %s to root: %w", path, err)
	}
	return ln, nil
}
