package daemon

import (
	"strings"
	"testing"
	"time"

	"github.com/meshnet/meshnet/control"
)

func TestEngineProblem(t *testing.T) {
	now := time.Date(2026, 12, 4, 21, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name string
		e    control.EngineInfo
		want string // substring; "" means no problem
	}{
		{"before the watcher runs", control.EngineInfo{}, ""},
		{"connected", control.EngineInfo{Connected: true, Since: now.Add(-time.Hour), LastError: "old"}, ""},
		{"starting engine, within the grace", control.EngineInfo{Since: now.Add(-5 * time.Second), LastError: "dial unix /var/run/docker.sock: connect: no such file or directory"}, ""},
		{"engine gone", control.EngineInfo{Since: now.Add(-time.Minute), LastError: "dial unix /var/run/docker.sock: connect: connection refused\nmore"},
			"not following its events for 1m0s (dial unix /var/run/docker.sock: connect: connection refused)"},
		{"never answered", control.EngineInfo{Since: now.Add(-30 * time.Second)}, "(no answer yet)"},
	} {
		got := engineProblem(tc.e, now)
		if tc.want == "" && got != "" || tc.want != "" && !strings.Contains(got, tc.want) {
			t.Errorf("%s: engineProblem = %q, want %q", tc.name, got, tc.want)
		}
		if got != "" && (!strings.HasPrefix(got, "docker engine: ") || strings.Contains(got, "\n")) {
			t.Errorf("%s: problem %q: want one line naming the engine", tc.name, got)
		}
	}
}
