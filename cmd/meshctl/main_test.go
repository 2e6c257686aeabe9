package main

import (
	"bytes"
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"github.com/meshnet/meshnet/control"
)

func TestParseOptionsAnywhere(t *testing.T) {
	for _, args := range [][]string{
		{"-o", "json", "peers"},
		{"peers", "-o", "json"},
		{"--output=json", "peers"},
		{"peers", "-o=json"},
	} {
		o := options{output: "table"}
		rest, err := parseOptions(args, &o)
		if err != nil || o.output != "json" || len(rest) != 1 || rest[0] != "peers" {
			t.Errorf("%v: rest %v output %q err %v", args, rest, o.output, err)
		}
	}
	o := options{}
	if _, err := parseOptions([]string{"--socket"}, &o); err == nil {
		t.Error("--socket without a value must fail")
	}
	if _, err := parseOptions([]string{"--bogus", "peers"}, &o); err == nil {
		t.Error("an unknown flag must fail")
	}
}

func TestPeersTable(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	var b bytes.Buffer
	err := printPeers(&b, []control.Peer{
		{Name: "host-b", Address: "198.18.0.12", State: "dead", Since: now.Add(-90 * time.Second)},
		{Name: "a", Address: "198.18.0.11", State: "alive", Since: now.Add(-time.Hour), Self: true},
	}, now)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimRight(b.String(), "\n"), "\n")
	if len(lines) != 3 {
		t.Fatalf("want header and two rows:\n%s", b.String())
	}
	if !strings.HasPrefix(lines[1], "a (self)") || !strings.Contains(lines[2], "dead") || !strings.Contains(lines[2], "1m30s") {
		t.Fatalf("rows sorted by name, self marked, age shown:\n%s", b.String())
	}
	// Columns aligned: every row has its address at the header's offset.
	col := strings.Index(lines[0], "ADDRESS")
	for _, l := range lines[1:] {
		if !strings.HasPrefix(l[col:], "198.18.0.1") {
			t.Fatalf("misaligned columns:\n%s", b.String())
		}
	}
}

// The DATA PATH column: a VXLAN-only peer reads as it always has; a peer
// probed through WireGuard names each tunnel.
func TestDataPathColumn(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		p    control.Peer
		want string
	}{
		{control.Peer{Self: true}, "self"},
		{control.Peer{}, "-"},
		{control.Peer{DataPath: "up", RTTSeconds: 0.000312, Tunnels: []control.TunnelPath{{Tunnel: "vxlan", State: "up", RTTSeconds: 0.000312}}}, "up 312µs"},
		{control.Peer{DataPath: "down", DataPathSince: now.Add(-12 * time.Second), Tunnels: []control.TunnelPath{
			{Tunnel: "vxlan", State: "up", RTTSeconds: 0.000312},
			{Tunnel: "wireguard", State: "down", Since: now.Add(-12 * time.Second)}}}, "vxlan up 312µs, wireguard down 12s"},
		{control.Peer{DataPath: "unknown", DataPathSince: now.Add(-time.Second), Tunnels: []control.TunnelPath{
			{Tunnel: "wireguard", State: "unknown", Since: now.Add(-time.Second)}}}, "wireguard unknown 1s"},
	} {
		if got := dataPath(tc.p, now); got != tc.want {
			t.Errorf("dataPath(%+v) = %q, want %q", tc.p, got, tc.want)
		}
	}
}

func TestKeygenAndUsageErrors(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"keygen"}, &out, &errb); code != 0 {
		t.Fatalf("keygen exit %d: %s", code, errb.String())
	}
	key, err := base64.StdEncoding.DecodeString(strings.TrimSpace(out.String()))
	if err != nil || len(key) != 32 {
		t.Fatalf("keygen printed %q", out.String())
	}
	for _, args := range [][]string{{"frobnicate"}, {"rmpeer"}, {"peers", "extra"}, {"-o", "yaml", "peers"}, {}} {
		out.Reset()
		errb.Reset()
		if code := run(args, &out, &errb); code != 2 {
			t.Errorf("%v: exit %d, want 2 (usage)", args, code)
		}
	}
	// A missing daemon is an error (1) with a hint, not a usage error.
	errb.Reset()
	if code := run([]string{"--socket", t.TempDir() + "/none.sock", "peers"}, &out, &errb); code != 1 || !strings.Contains(errb.String(), "meshnetd") {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
}

func TestEngineLine(t *testing.T) {
	now := time.Date(2026, 12, 4, 21, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		e    control.EngineInfo
		want string
	}{
		{control.EngineInfo{Connected: true, Since: now.Add(-90 * time.Second), APIVersion: "1.52", EngineAPIVersion: "1.52"},
			"API 1.52, following events for 1m30s"},
		{control.EngineInfo{Connected: true, Since: now.Add(-time.Second), APIVersion: "1.52", EngineAPIVersion: "1.56"},
			"API 1.52 (the engine's: 1.56), following events for 1s"},
		{control.EngineInfo{Since: now.Add(-time.Minute), APIVersion: "1.41", LastError: "docker event stream ended"},
			"API 1.41, NOT following events for 1m0s — docker event stream ended"},
		{control.EngineInfo{Since: now.Add(-3 * time.Second), LastError: "connection refused"},
			"API version not negotiated yet, NOT following events for 3s — connection refused"},
	} {
		if got := engineLine(tc.e, now); got != tc.want {
			t.Errorf("engineLine(%+v) = %q, want %q", tc.e, got, tc.want)
		}
	}
}
