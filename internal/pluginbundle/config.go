package pluginbundle

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

// Settings are the environment variables an operator sets with `docker
// plugin set`; meshnetd --managed-plugin reads each as the MESHNET_
// variable of the same flag (see cmd/meshnetd).
var Settings = []Env{
	{Name: "JOIN", Description: "comma-separated seeds: host[:port], a name resolving to several seeds, or cloud discovery such as 'provider=aws tag_key=meshnet tag_value=prod'"},
	{Name: "KEY", Description: "the gossip key, base64 of 32 bytes (meshctl keygen); the same on every host"},
	{Name: "ADVERTISE_ADDR", Description: "underlay address other hosts reach this one at (default: detected)"},
	{Name: "DATAPLANE", Description: "default dataplane of new networks: vxlan or wireguard", Value: "vxlan"},
	{Name: "LOG_LEVEL", Description: "debug, info, warn or error", Value: "info"},
	{Name: "LOG_FORMAT", Description: "text or json (docker plugin logs show meshnetd's output in the engine's log)", Value: "text"},
	{Name: "METRICS_ADDR", Description: "host:port for Prometheus metrics and health checks (/metrics, /healthz, /readyz), e.g. 127.0.0.1:9464; the plugin shares the host's network; empty: off"},
	{Name: "ALLOW_DOCKER_BRIDGES", Description: "true: containers on Docker's own bridges and on meshnet networks may open connections to each other (default: kept apart)"},
}

// Manifest returns meshnet's config.json.
func Manifest() Config {
	env := make([]Env, len(Settings))
	for i, e := range Settings {
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
