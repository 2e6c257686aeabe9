// Package sdnotify tells systemd about the daemon's state (sd_notify(3)):
// READY=1 once it serves, STOPPING=1 when it stops, for a unit of
// Type=notify. It is the datagram systemd documents, written here rather
// than imported: ten lines do not warrant a dependency.
package sdnotify

import (
	"fmt"
	"net"
	"os"
)

// Messages systemd understands (sd_notify(3)).
const (
	Ready    = "READY=1"
	Stopping = "STOPPING=1"
)

// Notify sends state to the socket $NOTIFY_SOCKET names. It reports
// whether a message was sent: false, nil when systemd did not ask for one
// (not started by systemd, or a unit not of Type=notify).
func Notify(state string) (bool, error) {
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		return false, nil
	}
	if path[0] == '@' { // an abstract socket
		path = "\x00" + path[1:]
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return false, fmt.Errorf("tell systemd %s: %w", state, err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(state)); err != nil {
		return false, fmt.Errorf("tell systemd %s: %w", state, err)
	}
	return true, nil
}
