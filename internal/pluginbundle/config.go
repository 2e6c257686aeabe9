package pluginbundle

import (
	"flag"

	"github.com/meshnet/meshnet/daemon"
	"github.com/meshnet/meshnet/internal/daemonflags"
)

// Config is a managed plugin's config.json, in the field names Docker reads
// (docs.docker.com "Plugin Config Version 1 of Plugin V2"; moby's
// api/types.PluginConfig).
type Config struct {
	Description   string    `json:"description"`
	Documentation string    `json:"documentation"`
	Entrypoint    []string  `json:"entrypoint"`
	WorkDir       string    `json:"workdir"`
	Interface     Interface `json:"interface"`
	Network       Network   `json:"network"`
	// PidHost shares the host's PID namespace: meshnetd enters a
	// container's network namespace through /proc/<pid>/ns/net (the
	// engine's namespace mounts are not visible in the plugin).
	PidHost bool    `json:"pidhost"`
	Linux   Linux   `json:"linux"`
	Mounts  []Mount `json:"mounts"`
	Env     []Env   `json:"env"`
}

// Interface names the plugin's socket (under /run/docker/plugins inside the
// plugin) and the driver types it serves there.
type Interface struct {
	Types  []string `json:"types"`
	Socket string   `json:"socket"`
}

// Network is the plugin's network namespace: "host" shares the host's.
type Network struct {
	Type string `json:"type"`
}

// Linux holds the plugin's privileges.
type Linux struct {
	Capabilities    []string `json:"capabilities"`
	AllowAllDevices bool     `json:"allowAllDevices"`
	Devices         []Device `json:"devices"`
}

// Device is one host device node made available inside the plugin.
type Device struct {
	Path string `json:"path"`
}

// Mount is one mount into the plugin's root file system.
type Mount struct {
	Name        string `json:"name"`
	Description string `json:"description"`
	// Settable ["source"] lets `docker plugin set NAME.source=PATH` move
	// the mount.
	Settable    []string `json:"settable,omitempty"`
	Source      string   `json:"source"`
	Destination string   `json:"destination"`
	Type        string   `json:"type"`
	Options     []string `json:"options"`
}

// Env is one environment variable of the plugin; Settable ["value"] lets
// `docker plugin set NAME=VALUE` change it.
type Env struct {
	Name        string   `json:"name"`
	Description string   `json:"description"`
	Settable    []string `json:"settable"`
	Value       string   `json:"value"`
}

// Socket is the plugin socket's name; meshnetd serves it under its
// --plugin-dir (default /run/docker/plugins, which inside a managed plugin
// is where the engine looks).
const Socket = "meshnet.sock"

// The host folders the plugin sees, and where: the parents of meshnet's
// folders, bound without their submounts (see the package doc for why).
const (
	HostRun    = "/run"
	HostVarLib = "/var/lib"
	// MountRoot is where the host's folders appear inside the plugin.
	MountRoot = "/host"
)

// Where meshnetd inside the plugin keeps what DESIGN.md puts in
// /var/lib/meshnet, /run/meshnet/meshnet.sock and /var/run/docker.sock on
// the host.
const (
	StateDir      = MountRoot + HostVarLib + "/meshnet"
	ControlSocket = MountRoot + HostRun + "/meshnet/meshnet.sock"
	DockerHost    = "unix://" + MountRoot + HostRun + "/docker.sock"
)

// Fixed are meshnetd's flags that are not plugin settings, each with
// why: the bundle decides them, or they are commands, not settings.
var Fixed = map[string]string{
	"state-dir":      "the entrypoint puts it in the host's /var/lib/meshnet (move it with docker plugin set meshnet state.source=DIR)",
	"control-socket": "the entrypoint puts it at the host's /run/meshnet/meshnet.sock, where meshctl looks",
	"docker-host":    "the entrypoint names the host's Docker socket as the plugin sees it",
	"plugin-dir":     "the engine looks for the plugin's socket in /run/docker/plugins inside the plugin, the default",
	"managed-plugin": "the entrypoint sets it",
	"version":        "a command",
	"cleanup":        "a command (run meshctl's sibling meshnetd --cleanup on the host, with the plugin disabled)",
}

// Settings are the environment variables an operator sets with `docker
// plugin set`: one per meshnetd flag that is not Fixed, named as the flag
// in upper case with _ (VXLAN_PORT for --vxlan-port), described by the
// flag's help, holding its default; and KEY, which is MESHNET_KEY.
// meshnetd --managed-plugin reads each as the MESHNET_ variable of the
// same name (cmd/meshnetd). Built from the flag set meshnetd parses
// (internal/daemonflags), so a new flag is a new setting.
func Settings() []Env {
	cfg := daemon.DefaultConfig()
	// The default node name is the host's name, found at start; the
	// machine that builds the bundle must not put its own in.
	cfg.NodeName = ""
	var lists daemonflags.Lists
	fs := daemonflags.New(&cfg, &lists)
	out := []Env{{Name: "KEY", Description: "the gossip key, base64 of 32 bytes (meshctl keygen); the same on every host. Or KEY_FILE, a path under /host/ (the host's /run and /var/lib)"}}
	fs.VisitAll(func(f *flag.Flag) {
		if _, fixed := Fixed[f.Name]; fixed {
			return
		}
		out = append(out, Env{Name: daemonflags.SettingName(f.Name), Description: f.Usage, Value: f.DefValue})
	})
	return out
}

// Manifest returns meshnet's config.json.
func Manifest() Config {
	settings := Settings()
	env := make([]Env, len(settings))
	for i, e := range settings {
		e.Settable = []string{"value"}
		env[i] = e
	}
	return Config{
		Description:   "meshnet: one overlay network across Docker hosts, with gossip membership, IPAM and DNS",
		Documentation: "https://github.com/meshnet/meshnet",
		Entrypoint: []string{"/meshnetd", "--managed-plugin",
			"--state-dir", StateDir, "--control-socket", ControlSocket, "--docker-host", DockerHost},
		WorkDir: "/",
		Interface: Interface{
			Types:  []string{"docker.networkdriver/1.0", "docker.ipamdriver/1.0"},
			Socket: Socket,
		},
		Network: Network{Type: "host"},
		PidHost: true,
		Linux: Linux{
			Capabilities: []string{"CAP_NET_ADMIN", "CAP_SYS_ADMIN"},
			Devices:      []Device{{Path: "/dev/net/tun"}},
		},
		Mounts: []Mount{
			{Name: "run", Description: "the host's /run: meshctl's socket /run/meshnet/meshnet.sock, and the engine's API for container names and labels",
				Source: HostRun, Destination: MountRoot + HostRun, Type: "bind", Options: []string{"bind", "rw"}},
			{Name: "state", Description: "a folder whose meshnet/ holds records and address allocations across restarts, disable/enable and upgrades (default: the host's /var/lib)",
				Settable: []string{"source"},
				Source:   HostVarLib, Destination: MountRoot + HostVarLib, Type: "bind", Options: []string{"bind", "rw"}},
		},
		Env: env,
	}
}
