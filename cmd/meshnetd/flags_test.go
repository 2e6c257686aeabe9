package main

import (
	"io"
	"strings"
	"testing"

	"github.com/meshnet/meshnet/daemon"
	"github.com/meshnet/meshnet/dataplane"
)

func envMap(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestParseFlagsDefaults(t *testing.T) {
	cfg, err := parseFlags(nil, envMap(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.BindPort != 7946 || cfg.VXLANPort != 4789 || cfg.WireGuardPort != 51820 ||
		cfg.DNSAddr != "169.254.53.53" || cfg.DNSDomain != "meshnet" || cfg.Dataplane != "vxlan" ||
		cfg.StateDir != "/var/lib/meshnet" || cfg.PluginDir != "/run/docker/plugins" ||
		cfg.ControlSocket != "/run/meshnet/meshnet.sock" || cfg.LogLevel != "info" ||
		cfg.DockerHost != "unix:///var/run/docker.sock" {
		t.Fatalf("defaults differ from DESIGN.md's contract: %+v", cfg)
	}
}

func TestParseFlagsEnvironmentTwins(t *testing.T) {
	env := envMap(map[string]string{
		"MESHNET_NODE_NAME":      "h1",
		"MESHNET_ADVERTISE_ADDR": "198.18.0.11",
		"MESHNET_BIND_PORT":      "8000",
		"MESHNET_JOIN":           "198.18.0.12, seed.example:7946",
		"MESHNET_KEY":            "c2VjcmV0",
		"MESHNET_INSECURE":       "true",
		"MESHNET_VXLAN_PORT":     "4790",
		"MESHNET_LOG_LEVEL":      "debug",
		"MESHNET_DNS_DOMAIN":     "mesh",
	})
	// The command line wins over the environment.
	cfg, err := parseFlags([]string{"--vxlan-port", "4800"}, env, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.NodeName != "h1" || cfg.AdvertiseAddr != "198.18.0.11" || cfg.BindPort != 8000 ||
		!cfg.Insecure || cfg.Key != "c2VjcmV0" || cfg.LogLevel != "debug" || cfg.DNSDomain != "mesh" {
		t.Fatalf("environment not applied: %+v", cfg)
	}
	if cfg.VXLANPort != 4800 {
		t.Fatalf("command line should win over MESHNET_VXLAN_PORT: got %d", cfg.VXLANPort)
	}
	if strings.Join(cfg.Join, "|") != "198.18.0.12|seed.example:7946" {
		t.Fatalf("join list: %q", cfg.Join)
	}
}

func TestParseFlagsErrors(t *testing.T) {
	if _, err := parseFlags(nil, envMap(map[string]string{"MESHNET_BIND_PORT": "x"}), io.Discard); err == nil || !strings.Contains(err.Error(), "MESHNET_BIND_PORT") {
		t.Fatalf("bad env value should name the variable, got %v", err)
	}
	if _, err := parseFlags([]string{"stray"}, envMap(nil), io.Discard); err == nil {
		t.Fatal("a stray argument should be refused")
	}
	cfg, err := parseFlags([]string{"--dataplane", "gre", "--log-level", "loud"}, envMap(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	err = cfg.Validate()
	if err == nil || !strings.Contains(err.Error(), "--dataplane") || !strings.Contains(err.Error(), "--log-level") {
		t.Fatalf("Validate should name both bad flags, got %v", err)
	}
}

func TestHelpListsEveryContractFlag(t *testing.T) {
	var out strings.Builder
	_, _ = parseFlags([]string{"--help"}, envMap(nil), &out)
	for _, f := range []string{"node-name", "advertise-addr", "bind-port", "join", "key-file", "insecure",
		"state-dir", "plugin-dir", "control-socket", "docker-host", "dataplane", "vxlan-port",
		"wireguard-port", "dns-addr", "dns-domain", "log-level", "MESHNET_"} {
		if !strings.Contains(out.String(), f) {
			t.Errorf("--help does not mention %s", f)
		}
	}
}

func TestLogFormatAndMetricsFlags(t *testing.T) {
	cfg, err := parseFlags([]string{"--log-format", "json", "--metrics-addr", "127.0.0.1:9464"}, envMap(nil), io.Discard)
	if err != nil || cfg.LogFormat != "json" || cfg.MetricsAddr != "127.0.0.1:9464" || cfg.Validate() != nil {
		t.Fatalf("flags: %+v %v %v", cfg, err, cfg.Validate())
	}
	cfg, err = parseFlags(nil, envMap(map[string]string{"MESHNET_LOG_FORMAT": "yaml", "MESHNET_METRICS_ADDR": "9464", "MESHNET_VERSION": "v9"}), io.Discard)
	if err != nil {
		t.Fatalf("MESHNET_VERSION is no setting and must not be parsed: %v", err)
	}
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "--log-format") || !strings.Contains(err.Error(), "--metrics-addr") {
		t.Fatalf("Validate should name both bad settings: %v", err)
	}
	if DefaultLog := mustParse(t).LogFormat; DefaultLog != "text" {
		t.Fatalf("default --log-format %q", DefaultLog)
	}
}

func mustParse(t *testing.T, args ...string) daemon.Config {
	t.Helper()
	cfg, err := parseFlags(args, envMap(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func TestVersionFlagFirst(t *testing.T) {
	if !hasFlag([]string{"--log-level", "debug", "--version"}, "version") || hasFlag([]string{"--log-level", "debug"}, "version") {
		t.Fatal("hasFlag version")
	}
	var out strings.Builder
	_, _ = parseFlags([]string{"--help"}, envMap(nil), &out)
	for _, f := range []string{"-version", "-cleanup", "-log-format", "-metrics-addr", "VXLAN_PORT"} {
		if !strings.Contains(out.String(), f) {
			t.Errorf("--help does not mention %s", f)
		}
	}
}

func TestJSONLogs(t *testing.T) {
	var b strings.Builder
	newLogger(&b, "json", "info").Info("hello", "k", "v")
	if !strings.HasPrefix(b.String(), "{") || !strings.Contains(b.String(), `"msg":"hello"`) {
		t.Fatalf("json log line %q", b.String())
	}
}

func TestGossipProfileFlag(t *testing.T) {
	cfg, err := parseFlags(nil, envMap(nil), io.Discard)
	if err != nil || cfg.GossipProfile != "lan" {
		t.Fatalf("default: %q %v", cfg.GossipProfile, err)
	}
	cfg, err = parseFlags(nil, envMap(map[string]string{"MESHNET_GOSSIP_PROFILE": "wan"}), io.Discard)
	if err != nil || cfg.GossipProfile != "wan" || cfg.Validate() != nil {
		t.Fatalf("MESHNET_GOSSIP_PROFILE=wan: %q %v %v", cfg.GossipProfile, err, cfg.Validate())
	}
	cfg, _ = parseFlags([]string{"--gossip-profile", "satellite"}, envMap(nil), io.Discard)
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "choose lan") {
		t.Errorf("an unknown profile: %v", err)
	}
}

// TestBridgeBypassFlag: auto by default; a bare --bridge-bypass (the
// switch it was) is on; a bad mode is refused with the choices; on without
// --container-dns is refused, auto without it is off.
func TestBridgeBypassFlag(t *testing.T) {
	for _, c := range []struct {
		args []string
		env  map[string]string
		want dataplane.BypassMode
	}{
		{nil, nil, dataplane.BypassAuto},
		{[]string{"--bridge-bypass"}, nil, dataplane.BypassOn},
		{[]string{"--bridge-bypass=false"}, nil, dataplane.BypassOff},
		{[]string{"--bridge-bypass=off"}, nil, dataplane.BypassOff},
		{nil, map[string]string{"MESHNET_BRIDGE_BYPASS": "on"}, dataplane.BypassOn},
	} {
		cfg, err := parseFlags(c.args, envMap(c.env), io.Discard)
		if err != nil || cfg.BridgeBypass != c.want {
			t.Errorf("%q %v: %q, %v; want %q", c.args, c.env, cfg.BridgeBypass, err, c.want)
		}
	}
	if _, err := parseFlags([]string{"--bridge-bypass=sometimes"}, envMap(nil), io.Discard); err == nil || !strings.Contains(err.Error(), "choose auto") {
		t.Errorf("--bridge-bypass=sometimes: %v", err)
	}
	cfg, _ := parseFlags([]string{"--bridge-bypass=on", "--container-dns=false", "--insecure"}, envMap(nil), io.Discard)
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "--bridge-bypass=on needs --container-dns") {
		t.Errorf("on without container DNS: %v", err)
	}
	cfg, _ = parseFlags([]string{"--container-dns=false", "--insecure", "--advertise-addr", "192.0.2.1"}, envMap(nil), io.Discard)
	if err := cfg.Validate(); err != nil || cfg.BridgeBypassMode() != dataplane.BypassOff {
		t.Errorf("auto without container DNS: %q, %v; want off, valid", cfg.BridgeBypassMode(), err)
	}
}
