package daemon

import (
	"fmt"
	"time"

	"github.com/meshnet/meshnet/control"
	"github.com/meshnet/meshnet/plugin"
)

// engineGrace is how long the watcher may be without the engine before
// meshctl status calls it a problem: an engine that starts after meshnetd
// (or restarts) answers within seconds.
const engineGrace = 20 * time.Second

func engineInfo(st plugin.EngineState) control.EngineInfo {
	return control.EngineInfo{
		Connected: st.Connected, Since: st.Since,
		APIVersion: st.APIVersion, EngineAPIVersion: st.EngineAPIVersion,
		LastError: st.LastError, LastErrorAt: st.LastErrorAt,
	}
}

// engineProblem names what a watcher that cannot follow the engine leaves
// undone, once it has been so for engineGrace; "" otherwise.
func engineProblem(e control.EngineInfo, now time.Time) string {
	if e.Connected || e.Since.IsZero() || now.Sub(e.Since) < engineGrace {
		return ""
	}
	why := "no answer yet"
	if e.LastError != "" {
		why = firstLine(e.LastError)
	}
	return fmt.Sprintf("docker engine: not following its events for %s (%s): container names, services and aliases are not updated and the leak sweep waits; check --docker-host and that the engine runs",
		now.Sub(e.Since).Round(time.Second), why)
}
