// Command meshnetd is meshnet's per-host daemon: gossip membership, the
// Docker network and IPAM plugin, the dataplane and the DNS server.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"syscall"

	"github.com/meshnet/meshnet/daemon"
	"github.com/meshnet/meshnet/internal/version"
)

// The main goroutine keeps the main thread to itself. Threads that enter a
// container's network namespace (package sandbox, the dataplane's sysctls)
// are locked and left to exit with their goroutine, so that they never
// serve another goroutine; Go cannot end the main thread, and would keep it
// parked in that namespace instead. Holding it here means no such
// goroutine ever runs on it.
func init() { runtime.LockOSThread() }

func main() {
	if hasFlag(os.Args[1:], "version") {
		fmt.Printf("meshnetd %s (%s)\n", version.String(), runtime.Version())
		return
	}
	cleanupOnly := hasFlag(os.Args[1:], "cleanup")
	cfg, err := parseFlags(os.Args[1:], os.Getenv, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "meshnetd: %v\n", err)
		os.Exit(2)
	}
	if err := cfg.Validate(); err != nil {
		fmt.Fprintf(os.Stderr, "meshnetd: %v\n", oneLine(err))
		os.Exit(2)
	}
	if cfg.ManagedPlugin {
		if err := writableProcSys(); err != nil {
			fmt.Fprintf(os.Stderr, "meshnetd: %v\n", err)
			os.Exit(1)
		}
	}
	log := newLogger(os.Stderr, cfg.LogFormat, cfg.LogLevel)
	if cleanupOnly {
		if err := cleanup(cfg, log); err != nil {
			fmt.Fprintf(os.Stderr, "meshnetd: %v\n", oneLine(err))
			os.Exit(1)
		}
		log.Info("cleanup done: meshnet's devices, routes, firewall rules and DNS address are gone from this host", "state-dir kept", cfg.StateDir)
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	d, err := daemon.New(cfg, log)
	if err != nil {
		fmt.Fprintf(os.Stderr, "meshnetd: %v\n", oneLine(err))
		os.Exit(1)
	}
	if err := d.Run(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "meshnetd: %v\n", oneLine(err))
		if errors.As(err, new(daemon.IdentityConflictError)) {
			os.Exit(3) // restarting would only be refused again
		}
		os.Exit(1)
	}
}

// newLogger logs to w in format (text or json; Validate checked it) at
// level and above.
func newLogger(w io.Writer, format, lvl string) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level(lvl)}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// hasFlag reports whether the boolean flag --name (or -name) is among
// args: --version is answered before anything else is parsed or checked,
// and --cleanup changes what main does with the parsed settings.
func hasFlag(args []string, name string) bool {
	for _, a := range args {
		if a == "--"+name || a == "-"+name || a == "--"+name+"=true" || a == "-"+name+"=true" {
			return true
		}
	}
	return false
}

func level(s string) slog.Level {
	var l slog.Level
	_ = l.UnmarshalText([]byte(s))
	return l
}

// oneLine joins a multi-error into one line: startup errors are read from
// a terminal or a unit's status line.
func oneLine(err error) string {
	s := err.Error()
	out := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		if s[i] == '\n' {
			out = append(out, ';', ' ')
			continue
		}
		out = append(out, s[i])
	}
	return string(out)
}
