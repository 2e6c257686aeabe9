package plugin

import (
	"encoding/json"
	"testing"
)

func TestStranded(t *testing.T) {
	ours := map[string]bool{"n1": true}
	inspect := func(policy, errMsg string, running bool, network string) dockerStrandedInspect {
		var in dockerStrandedInspect
		raw := map[string]any{
			"Id": "c1", "Name": "/c1",
			"HostConfig":      map[string]any{"RestartPolicy": map[string]any{"Name": policy}},
			"State":           map[string]any{"Running": running, "Error": errMsg},
			"NetworkSettings": map[string]any{"Networks": map[string]any{"app": map[string]any{"NetworkID": network}}},
		}
		b, _ := json.Marshal(raw)
		if err := json.Unmarshal(b, &in); err != nil {
			t.Fatal(err)
		}
		return in
	}
	const failed = "error while dialing: dial unix /run/docker/plugins/meshnet.sock: connect: connection refused"
	for _, tc := range []struct {
		name string
		in   dockerStrandedInspect
		want bool
	}{
		{"always, failed start, our network", inspect("always", failed, false, "n1"), true},
		{"unless-stopped, failed start", inspect("unless-stopped", failed, false, "n1"), true},
		{"stopped by hand (no error)", inspect("always", "", false, "n1"), false},
		{"no restart policy", inspect("no", failed, false, "n1"), false},
		{"on-failure is the engine's to retry", inspect("on-failure", failed, false, "n1"), false},
		{"running", inspect("always", failed, true, "n1"), false},
		{"another driver's network", inspect("always", failed, false, "n2"), false},
	} {
		if got := stranded(tc.in, ours); got != tc.want {
			t.Errorf("%s: stranded = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestDriverIs(t *testing.T) {
	for drv, want := range map[string]bool{
		"meshnet": true, "meshnet:latest": true, "registry.example/ops/meshnet:1.2": true,
		"bridge": false, "meshnetx": false, "ops/meshnet-dev:1": false,
	} {
		if got := driverIs(drv, "meshnet"); got != want {
			t.Errorf("driverIs(%q) = %v, want %v", drv, got, want)
		}
	}
}
