package main

import (
	"flag"
	"io"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/meshnet/meshnet/daemon"
	"github.com/meshnet/meshnet/internal/daemonflags"
	"github.com/meshnet/meshnet/internal/pluginbundle"
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

// Every meshnetd flag is a plugin setting unless the bundle fixes it
// (pluginbundle.Fixed), and every setting really reaches the Config: set
// alone to a value other than its default, through --managed-plugin as
// the plugin's entrypoint runs meshnetd, it changes the parsed Config.
func TestEveryFlagSettable(t *testing.T) {
	settings := map[string]pluginbundle.Env{}
	for _, s := range pluginbundle.Settings() {
		if _, dup := settings[s.Name]; dup {
			t.Errorf("setting %s listed twice", s.Name)
		}
		settings[s.Name] = s
	}
	var lists daemonflags.Lists
	cfg := daemon.DefaultConfig()
	fs := daemonflags.New(&cfg, &lists)
	entry := pluginbundle.Manifest().Entrypoint[1:]
	base, err := parseFlags(entry, envMap(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	fs.VisitAll(func(f *flag.Flag) {
		name := daemonflags.SettingName(f.Name)
		s, ok := settings[name]
		if _, fixed := pluginbundle.Fixed[f.Name]; fixed {
			if ok {
				t.Errorf("--%s is fixed by the bundle and a setting %s too", f.Name, name)
			}
			return
		}
		if !ok {
			t.Errorf("--%s has no plugin setting %s", f.Name, name)
			return
		}
		n++
		v := otherValue(f)
		got, err := parseFlags(entry, envMap(map[string]string{name: v}), io.Discard)
		if err != nil {
			t.Errorf("docker plugin set %s=%s: %v", name, v, err)
			return
		}
		if reflect.DeepEqual(got, base) {
			t.Errorf("docker plugin set %s=%s (default %q) changed nothing in meshnetd's Config", name, v, s.Value)
		}
		// The setting's default is what meshnetd would use anyway.
		if s.Value != "" {
			same, err := parseFlags(entry, envMap(map[string]string{name: s.Value}), io.Discard)
			if err != nil || !reflect.DeepEqual(same, base) {
				t.Errorf("the setting's default %s=%q is not meshnetd's default: %v", name, s.Value, err)
			}
		}
	})
	if n < 20 {
		t.Errorf("only %d flags checked; the flag set seems empty", n)
	}
	key, err := parseFlags(entry, envMap(map[string]string{"KEY": "c2VjcmV0"}), io.Discard)
	if err != nil || key.Key != "c2VjcmV0" {
		t.Errorf("KEY: %v %q", err, key.Key)
	}
}

// otherValue is a valid value of f that differs from its default.
func otherValue(f *flag.Flag) string {
	switch f.Value.(interface{ Get() any }).Get().(type) {
	case bool:
		if f.DefValue == "true" {
			return "false"
		}
		return "true"
	case int:
		return "4242"
	case float64:
		return "4.5"
	case time.Duration:
		return "17s"
	}
	switch f.Name {
	case "advertise-addr", "bind-addr", "dns-addr", "dns-upstream":
		return "198.18.7.7"
	case "bridge-bypass":
		return "off"
	}
	return "other-" + f.DefValue
}
