package metrics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics is the registry of one daemon's metrics and its health checks.
type Metrics struct {
	reg    *prometheus.Registry
	events *Events
	ready  func(context.Context) []string
}

// New registers the collector reading src, the event counters, the gossip
// sink's counts and Go's and the process's own metrics. ready returns what
// keeps the daemon from being ready (nothing: ready); /readyz shows it.
func New(src Source, ready func(context.Context) []string) *Metrics {
	InstallGossipSink()
	m := &Metrics{reg: prometheus.NewRegistry(), events: newEvents(), ready: ready}
	m.reg.MustRegister(collector{src: src}, gossipCollector{sink},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.reg.MustRegister(m.events.collectors()...)
	return m
}

// Events is where the daemon counts what happens; nil on a nil Metrics.
func (m *Metrics) Events() *Events {
	if m == nil {
		return nil
	}
	return m.events
}

// Registry is the registry behind /metrics (tests gather from it).
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves /metrics, /healthz and /readyz.
func (m *Metrics) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError}))
	// healthz: the process is alive and its HTTP server answers; nothing
	// else, so that a restart is never triggered by a peer's trouble.
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if notReady := m.ready(r.Context()); len(notReady) > 0 {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, "not ready: "+strings.Join(notReady, "; "))
			return
		}
		fmt.Fprintln(w, "ready")
	})
	return mux
}

// Serve listens on addr (host:port) and serves Handler until ctx is done.
// A listen error is returned at once, saying which flag to fix.
func (m *Metrics) Serve(ctx context.Context, addr string, log *slog.Logger) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen on --metrics-addr %s: %w", addr, err)
	}
	srv := &http.Server{
		Handler:           m.Handler(),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       time.Minute,
	}
	log.Info("metrics and health checks listening", "addr", ln.Addr().String(), "paths", "/metrics /healthz /readyz")
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
		<-errc
		return nil
	case err := <-errc:
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return err
	}
}

// gossipCollector exports the gossip sink's counts.
type gossipCollector struct{ s *gossipSink }

func (g gossipCollector) Describe(ch chan<- *prometheus.Desc) { g.s.describe(ch) }
func (g gossipCollector) Collect(ch chan<- prometheus.Metric) { g.s.collect(ch) }
