package harness

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Host is one Docker host of a cluster, simulated or reached over SSH. Commands run inside the
// host (its network, UTS and mount namespaces for a simulated host; a login shell for SSH), so
// `docker`, `ip`, `iptables`, `meshctl` see what an operator logged into that host would see.
//
// Implementations are safe for concurrent use.
type Host interface {
	// Name is the host's name; meshnetd runs with it as --node-name.
	Name() string
	// Addr is the host's underlay address; meshnetd advertises it.
	Addr() netip.Addr
	// Exec runs a command in the host and returns its combined output. A non-zero exit status
	// is an error that carries the command line and the output.
	Exec(ctx context.Context, args ...string) (string, error)
	// Start runs a long-lived command in the background. Its stdout and stderr are appended to
	// a log file named after name. ctx bounds only the start, not the process's life.
	Start(ctx context.Context, name string, args ...string) (*Process, error)
	// WriteFile writes a file in the host's file system view (creating parent folders).
	WriteFile(path string, data []byte, mode os.FileMode) error
	// StartEngine starts the host's Docker engine and waits until `docker info` answers.
	StartEngine(ctx context.Context) error
	// KillEngine kills the host's dockerd with SIGKILL, by PID, and waits until it is gone.
	// containerd and the containers keep running, as after an engine crash.
	KillEngine(ctx context.Context) error
	// Processes lists the processes started with Start, oldest first, running or not.
	Processes() []*Process
}

// Process is a long-lived process started on a host with [Host.Start].
type Process struct {
	name    string
	host    string
	pid     int
	logPath string
	ops     processOps
}

// processOps is what a backend does for a process: signal it, wait for it, read its log.
type processOps interface {
	signal(sig syscall.Signal) error
	// wait returns nil once the process has exited, or ctx's error.
	wait(ctx context.Context) error
	exited() bool
	readLog() ([]byte, error)
}

// Name is the name the process was started with (its log is named after it).
func (p *Process) Name() string { return p.name }

// Pid is the process ID on its host.
func (p *Process) Pid() int { return p.pid }

// LogPath is the log file's path: on the test machine for a simulated host, on the remote
// machine for an SSH host.
func (p *Process) LogPath() string { return p.logPath }

// Kill sends sig to the process.
func (p *Process) Kill(sig syscall.Signal) error {
	if err := p.ops.signal(sig); err != nil {
		return fmt.Errorf("signal %v to %s (pid %d) on %s: %w", sig, p.name, p.pid, p.host, err)
	}
	return nil
}

// Wait waits until the process has exited or ctx is done.
func (p *Process) Wait(ctx context.Context) error {
	if err := p.ops.wait(ctx); err != nil {
		return fmt.Errorf("waiting for %s (pid %d) on %s to exit: %w", p.name, p.pid, p.host, err)
	}
	return nil
}

// Exited reports whether the process has exited.
func (p *Process) Exited() bool { return p.ops.exited() }

// Stop sends SIGTERM, waits up to grace, then sends SIGKILL and waits for the exit.
func (p *Process) Stop(ctx context.Context, grace time.Duration) error {
	if p.Exited() {
		return nil
	}
	_ = p.ops.signal(syscall.SIGTERM)
	gctx, cancel := context.WithTimeout(ctx, grace)
	err := p.ops.wait(gctx)
	cancel()
	if err == nil {
		return nil
	}
	_ = p.ops.signal(syscall.SIGKILL)
	return p.Wait(ctx)
}

// Log returns the whole log of the process (all its starts, when a log name was reused).
func (p *Process) Log() (string, error) {
	b, err := p.ops.readLog()
	if err != nil {
		return "", fmt.Errorf("reading log of %s on %s: %w", p.name, p.host, err)
	}
	return string(b), nil
}

// LogTail returns the last n lines of the log, or a note saying why it could not be read.
func (p *Process) LogTail(n int) string {
	s, err := p.Log()
	if err != nil {
		return err.Error()
	}
	return tail(s, n)
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// processList is the record of processes a host started.
type processList struct {
	mu    sync.Mutex
	procs []*Process
}

func (l *processList) add(p *Process) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.procs = append(l.procs, p)
}

func (l *processList) list() []*Process {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]*Process(nil), l.procs...)
}

// CommandError is a command that failed on a host, with what it printed.
type CommandError struct {
	Host   string
	Args   []string
	Output string
	Err    error
}

func (e *CommandError) Error() string {
	out := strings.TrimSpace(e.Output)
	if out == "" {
		out = "(no output)"
	}
	return fmt.Sprintf("%s: %s: %v\n%s", e.Host, shellJoin(e.Args), e.Err, out)
}

func (e *CommandError) Unwrap() error { return e.Err }

// ExitCode returns the command's exit status, or -1 when it did not exit normally.
func (e *CommandError) ExitCode() int {
	var ee interface{ ExitCode() int }
	if errors.As(e.Err, &ee) {
		return ee.ExitCode()
	}
	return -1
}

// shellQuote quotes s for a POSIX shell.
func shellQuote(s string) string {
	if s == "" {
		return "''"
	}
	safe := true
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./:=,@%+", r)) {
			safe = false
			break
		}
	}
	if safe {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// shellJoin quotes args and joins them into one shell command line.
func shellJoin(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		q[i] = shellQuote(a)
	}
	return strings.Join(q, " ")
}
