package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"time"

	"github.com/meshnet/meshnet/daemon"
	"github.com/meshnet/meshnet/dataplane"
	"github.com/meshnet/meshnet/internal/pluginbundle"
)

// cleanup is `meshnetd --cleanup`: it removes from this host's kernel
// everything meshnet's dataplane made (dataplane's Teardown: mnbr*, mnvx*,
// mnh*/mnc* veths, mnwg0, routes of protocol 109, tables inet meshnet and
// bridge meshnet, the iptables rules commented "meshnet: ...", the DNS
// service address on lo), for uninstalling. Running it again finds nothing
// and succeeds. It keeps --state-dir (keys, allocations): an uninstall that
// wants them gone removes the folder.
//
// A running meshnetd would put everything back at its next reconcile, and
// its containers would lose their network meanwhile, so cleanup refuses
// while the control socket or the plugin socket answers.
func cleanup(cfg daemon.Config, log *slog.Logger) error {
	if err := refuseIfRunning(cfg.ControlSocket, filepath.Join(cfg.PluginDir, pluginbundle.Socket)); err != nil {
		return err
	}
	dp, err := openTeardown(log)
	if err != nil {
		return fmt.Errorf("cleanup: open the kernel handles: %w", err)
	}
	defer dp.Close()
	if err := dp.Teardown(); err != nil {
		return fmt.Errorf("cleanup: %w (run meshnetd --cleanup again once the cause is fixed: it removes what is left)", err)
	}
	return nil
}

// teardowner is the part of the dataplane cleanup uses.
type teardowner interface {
	Teardown() error
	Close() error
}

// openTeardown opens the host's dataplane (its Teardown removes mnwg0 and
// the probe's device too); tests replace it so that they never touch the
// machine's kernel.
var openTeardown = func(log *slog.Logger) (teardowner, error) {
	return dataplane.New(log, dataplane.Options{})
}

// refuseIfRunning fails when a process answers on one of meshnetd's
// sockets; a socket file nobody serves (a daemon killed with -9) is no
// obstacle.
func refuseIfRunning(sockets ...string) error {
	for _, s := range sockets {
		c, err := net.DialTimeout("unix", s, time.Second)
		if err != nil {
			continue
		}
		c.Close()
		return errors.New("cleanup refused: a meshnetd is running (it answers on " + s + "); stop it first " +
			"(systemctl stop meshnetd, or docker plugin disable meshnet), or point --control-socket and --plugin-dir at the daemon to clean up after")
	}
	return nil
}
