package main

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/meshnet/meshnet/control"
)

// printWireGuard adds the WireGuard lines to meshctl status: which WireGuard
// runs and why, and one line per peer.
func printWireGuard(w io.Writer, wg *control.WireGuardInfo, now time.Time) {
	if wg == nil {
		return
	}
	mode := wg.Mode
	switch mode {
	case "":
		mode = "not running"
	case "userspace":
		mode = "userspace (embedded wireguard-go)"
	}
	fmt.Fprintf(w, "WireGuard:\t%s — %s\n", mode, wg.Reason)
	if wg.Offloads != "" {
		fmt.Fprintf(w, "WireGuard offloads:\t%s\n", wg.Offloads)
	}
	if wg.Device != "" {
		fmt.Fprintf(w, "WireGuard device:\t%s port %d key %s\n", wg.Device, wg.Port, wg.PublicKey)
	}
	for _, p := range wg.Peers {
		hs := "no handshake"
		if !p.LastHandshake.IsZero() {
			hs = "handshake " + age(now, p.LastHandshake) + " ago"
		}
		name := p.Node
		if name == "" {
			name = p.PublicKey
		}
		fmt.Fprintf(w, "  peer %s:\t%s %s, %s, rx %d tx %d\n", name, p.Endpoint, strings.Join(p.AllowedIPs, ","), hs, p.RxBytes, p.TxBytes)
	}
}
