package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meshnet/meshnet/control"
	"github.com/meshnet/meshnet/e2e/harness"
)

// TestEngineStatus checks how meshnetd stands with a real engine, as meshctl status shows it:
// the Engine API version it negotiated is the engine's own (engines up to 29.0) and it follows
// the engine's events; with the engine stopped for longer than the grace the status lists a
// problem naming the engine, and once the engine is back the problem goes.
func TestEngineStatus(t *testing.T) {
	c, hosts := meshHosts(t)
	ctx := testCtx(t)
	h := hosts[0]
	if _, err := c.StartMeshnet(ctx, h); err != nil {
		t.Fatalf("starting meshnetd on %s: %v", h.Name(), err)
	}
	out, err := harness.Docker(ctx, h, "version", "--format", "{{.Server.APIVersion}}")
	if err != nil {
		t.Fatal(err)
	}
	engineAPI := strings.TrimSpace(out)
	status := func() (control.Status, error) {
		out, err := c.MeshctlStatus(ctx, h, "-o", "json")
		if err != nil {
			return control.Status{}, err
		}
		var st control.Status
		if err := json.Unmarshal([]byte(out), &st); err != nil {
			return st, fmt.Errorf("meshctl -o json status: %w\n%s", err, out)
		}
		return st, nil
	}
	engineProblems := func(st control.Status) []string {
		var ps []string
		for _, p := range st.Problems {
			if strings.HasPrefix(p, "docker engine:") {
				ps = append(ps, p)
			}
		}
		return ps
	}

	harness.Eventually(t, 20*time.Second, func() error {
		st, err := status()
		if err != nil {
			return err
		}
		if !st.Engine.Connected || st.Engine.EngineAPIVersion != engineAPI || st.Engine.APIVersion == "" {
			return fmt.Errorf("engine in status: %+v; want connected, the engine's API %s", st.Engine, engineAPI)
		}
		if ps := engineProblems(st); len(ps) > 0 {
			return fmt.Errorf("problems with a running engine: %v", ps)
		}
		return nil
	})
	st, _ := status()
	t.Logf("engine API %s, meshnetd speaks %s", st.Engine.EngineAPIVersion, st.Engine.APIVersion)
	want := engineAPI
	if minor(engineAPI) > 52 {
		want = "1.52" // the newest meshnet was checked against
	}
	if st.Engine.APIVersion != want {
		t.Errorf("meshnetd speaks API %s to an engine of API %s; want %s", st.Engine.APIVersion, engineAPI, want)
	}
	if table, err := c.MeshctlStatus(ctx, h); err != nil || !strings.Contains(table, "API "+st.Engine.APIVersion+", following events") {
		t.Errorf("meshctl status does not show the engine's line: %v\n%s", err, table)
	}

	if err := h.KillEngine(ctx); err != nil {
		t.Fatal(err)
	}
	engineUp := false
	t.Cleanup(func() {
		if !engineUp {
			_ = h.StartEngine(context.Background())
		}
	})
	stopped := time.Now()
	// Within the grace: an engine restarting is not a problem yet.
	time.Sleep(3 * time.Second)
	if st, err := status(); err != nil || len(engineProblems(st)) > 0 || st.Engine.Connected {
		t.Errorf("3 s after the engine stopped: %v, connected=%v, problems %v; want disconnected, no problem yet", err, st.Engine.Connected, st.Problems)
	}
	harness.Eventually(t, 40*time.Second, func() error {
		st, err := status()
		if err != nil {
			return err
		}
		if len(engineProblems(st)) == 0 {
			return fmt.Errorf("no engine problem %s after the engine stopped: %v", time.Since(stopped).Round(time.Second), st.Problems)
		}
		return nil
	})
	st, _ = status()
	t.Logf("after %s without the engine: %v", time.Since(stopped).Round(time.Second), engineProblems(st))
	if st.Engine.LastError == "" {
		t.Error("no last error while the engine is down")
	}

	if err := h.StartEngine(ctx); err != nil {
		t.Fatal(err)
	}
	engineUp = true
	harness.Eventually(t, 30*time.Second, func() error {
		st, err := status()
		if err != nil {
			return err
		}
		if !st.Engine.Connected || len(engineProblems(st)) > 0 {
			return fmt.Errorf("engine back: connected=%v, problems %v", st.Engine.Connected, st.Problems)
		}
		return nil
	})
}

// minor is the minor number of an Engine API version "1.N" (-1 if it is not one).
func minor(v string) int {
	m, ok := strings.CutPrefix(v, "1.")
	if !ok {
		return -1
	}
	n, err := strconv.Atoi(m)
	if err != nil {
		return -1
	}
	return n
}
