package main

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// writableProcSys undoes the one part of a managed plugin's sandbox that
// stands in meshnet's way. The engine runs plugins with /proc/sys mounted
// read-only, as it does containers, but the dataplane writes the host
// network namespace's sysctls (accept_ra off on its bridges, ip_forward on;
// the plugin shares the host's network namespace, so they are the host's).
// The remount only touches the plugin's own mount namespace; it is what
// config.json's CAP_SYS_ADMIN is for.
func writableProcSys() error {
	if err := unix.Mount("", "/proc/sys", "", unix.MS_REMOUNT|unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("make /proc/sys writable inside the plugin (the dataplane sets the bridges' sysctls; config.json grants CAP_SYS_ADMIN for it): %w", err)
	}
	return nil
}
