package main

import (
	"io"
	"strings"
	"testing"
)

// With --managed-plugin, the plugin's settings (docker plugin set JOIN=...)
// configure meshnetd; without it they are ignored, and a MESHNET_ variable
// or a flag still wins.
func TestManagedPluginSettings(t *testing.T) {
	env := envMap(map[string]string{
		"JOIN":           "seeds.example,provider=aws tag_key=meshnet tag_value=prod",
		"KEY":            "c2VjcmV0",
		"ADVERTISE_ADDR": "198.18.0.11",
		"DATAPLANE":      "wireguard",
		"LOG_LEVEL":      "debug",
		"STATE_DIR":      "/elsewhere", // not a plugin setting
	})
	cfg, err := parseFlags([]string{"--managed-plugin", "--state-dir", "/host/var/lib/meshnet"}, env, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.ManagedPlugin || cfg.Key != "c2VjcmV0" || cfg.AdvertiseAddr != "198.18.0.11" ||
		cfg.Dataplane != "wireguard" || cfg.LogLevel != "debug" || cfg.StateDir != "/host/var/lib/meshnet" {
		t.Fatalf("plugin settings not applied: %+v", cfg)
	}
	if got := strings.Join(cfg.Join, "|"); got != "seeds.example|provider=aws tag_key=meshnet tag_value=prod" {
		t.Fatalf("join list %q", got)
	}

	plain, err := parseFlags(nil, env, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if plain.ManagedPlugin || plain.Key != "" || len(plain.Join) != 0 || plain.Dataplane != "vxlan" {
		t.Fatalf("without --managed-plugin the short names must be ignored: %+v", plain)
	}

	env = envMap(map[string]string{"LOG_LEVEL": "debug", "MESHNET_LOG_LEVEL": "warn", "DATAPLANE": "wireguard"})
	cfg, err = parseFlags([]string{"--managed-plugin", "--dataplane", "vxlan"}, env, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.LogLevel != "warn" || cfg.Dataplane != "vxlan" {
		t.Fatalf("MESHNET_ variables and flags should win over plugin settings: %+v", cfg)
	}
}

// Every flag a plugin user may need beyond the five first settings: the
// new ones are settable too.
func TestManagedPluginNewSettings(t *testing.T) {
	env := envMap(map[string]string{"METRICS_ADDR": "127.0.0.1:9464", "LOG_FORMAT": "json"})
	cfg, err := parseFlags([]string{"--managed-plugin"}, env, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.MetricsAddr != "127.0.0.1:9464" || cfg.LogFormat != "json" {
		t.Fatalf("METRICS_ADDR and LOG_FORMAT not applied: %+v", cfg)
	}
}
