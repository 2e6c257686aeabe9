package dataplane

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"golang.org/x/sys/unix"
)

// inNetNS runs fn on an OS thread that is inside the dataplane's network
// namespace, for the few things netlink cannot do: /proc/sys and
// /proc/thread-self/net belong to the namespace of the thread that opens them.
//
// For the current namespace fn runs right here. For another one it runs on a
// fresh goroutine locked to its thread; the thread is never unlocked, so it exits
// with the goroutine instead of going back to Go's pool inside the wrong
// namespace.
func (d *Kernel) inNetNS(fn func() error) error {
	if !d.foreignNS {
		return fn()
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// No UnlockOSThread: see above.
		if err := unix.Setns(int(d.ns), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("enter network namespace: %w", err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// sysctl is one /proc/sys setting, Path relative to /proc/sys.
type sysctl struct {
	Path  string
	Value string
}

// writeSysctls sets each sysctl in the dataplane's namespace, writing only those
// that differ.
func (d *Kernel) writeSysctls(settings []sysctl) error {
	if len(settings) == 0 {
		return nil
	}
	var written []sysctl
	err := d.inNetNS(func() error {
		var errs []error
		for _, s := range settings {
			p := filepath.Join("/proc/sys", s.Path)
			old, err := os.ReadFile(p)
			if err == nil && string(bytes.TrimSpace(old)) == s.Value {
				continue
			}
			if errors.Is(err, os.ErrNotExist) && strings.HasPrefix(s.Path, "net/ipv6/") {
				continue // IPv6 is off in this kernel: nothing to guard against
			}
			if err := os.WriteFile(p, []byte(s.Value), 0o644); err != nil {
				errs = append(errs, fmt.Errorf("set sysctl %s=%s: %w", s.Path, s.Value, err))
				continue
			}
			written = append(written, s)
		}
		return errors.Join(errs...)
	})
	for _, s := range written {
		d.changed(fmt.Sprintf("set sysctl %s=%s", s.Path, s.Value))
	}
	return err
}
