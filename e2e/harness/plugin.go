package harness

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"github.com/meshnet/meshnet/internal/pluginbundle"
)

// WritePluginBundle writes meshnet's managed-plugin bundle (config.json and rootfs/, the same
// `make plugin` writes) for b into dir.
func WritePluginBundle(b Binaries, dir string) error {
	return pluginbundle.Write(dir, []string{b.Meshnetd, b.Meshctl})
}

// Plugin is meshnet installed as a Docker managed plugin on one host.
type Plugin struct {
	Host Host
	// Name is the plugin's name; the engine knows it as Name:latest, which is what networks
	// name as their driver.
	Name string
	// Bundle is the bundle directory it was created from.
	Bundle string
	// Settings are the `docker plugin set` arguments (KEY=VALUE) applied after each create.
	Settings []string
}

// Ref is how the engine addresses the plugin (driver names, plugin commands).
func (p *Plugin) Ref() string { return p.Name + ":latest" }

// InstallPlugin runs, on h,
//
//	docker plugin create NAME BUNDLE
//	docker plugin set NAME SETTINGS...
//	docker plugin enable NAME
//
// On simulated hosts the bundle directory is on the shared file system. The plugin is
// removed by [Plugin.Remove], which the caller must arrange (t.Cleanup).
func InstallPlugin(ctx context.Context, h Host, name, bundle string, settings ...string) (*Plugin, error) {
	if _, ok := h.(*SimHost); !ok {
		return nil, fmt.Errorf("installing the managed plugin on %s: only simulated hosts share the bundle directory", h.Name())
	}
	p := &Plugin{Host: h, Name: name, Bundle: bundle, Settings: settings}
	return p, p.create(ctx)
}

// InstallPluginTarball installs the managed plugin on h from a release's plugin tarball
// (meshnet-plugin_VERSION_linux_ARCH.tar.gz, whose one folder is the bundle), as an operator
// does on a host of their own: the tarball copied to h, unpacked under /var/tmp, then
// `docker plugin create`, `set`, `enable` as InstallPlugin. Works on every kind of host.
func InstallPluginTarball(ctx context.Context, h Host, name, tarball string, settings ...string) (*Plugin, error) {
	data, err := os.ReadFile(tarball)
	if err != nil {
		return nil, err
	}
	const dir = "/var/tmp/meshnet-e2e-plugin"
	remote := dir + "/" + filepath.Base(tarball)
	if out, err := h.Exec(ctx, "mkdir", "-p", dir); err != nil {
		return nil, fmt.Errorf("mkdir %s on %s: %w: %s", dir, h.Name(), err, out)
	}
	if err := h.WriteFile(remote, data, 0o644); err != nil {
		return nil, err
	}
	if out, err := h.Exec(ctx, "tar", "-xzf", remote, "-C", dir); err != nil {
		return nil, fmt.Errorf("unpacking %s on %s: %w: %s", filepath.Base(tarball), h.Name(), err, out)
	}
	bundle := dir + "/" + strings.TrimSuffix(filepath.Base(tarball), ".tar.gz")
	p := &Plugin{Host: h, Name: name, Bundle: bundle, Settings: settings}
	return p, p.create(ctx)
}

func (p *Plugin) create(ctx context.Context) error {
	if _, err := Docker(ctx, p.Host, "plugin", "create", p.Name, p.Bundle); err != nil {
		return err
	}
	if len(p.Settings) > 0 {
		if _, err := Docker(ctx, p.Host, append([]string{"plugin", "set", p.Name}, p.Settings...)...); err != nil {
			return err
		}
	}
	_, err := Docker(ctx, p.Host, "plugin", "enable", p.Name)
	return err
}

// Disable runs `docker plugin disable -f`: -f because networks still use the driver.
func (p *Plugin) Disable(ctx context.Context) error {
	_, err := Docker(ctx, p.Host, "plugin", "disable", "-f", p.Ref())
	return err
}

// Enable runs `docker plugin enable`.
func (p *Plugin) Enable(ctx context.Context) error {
	_, err := Docker(ctx, p.Host, "plugin", "enable", p.Ref())
	return err
}

// Replace upgrades the plugin the way an operator does without a registry: disable (if it is
// enabled), remove, create from the bundle again, set the same settings, enable.
func (p *Plugin) Replace(ctx context.Context) error {
	state, err := p.state(ctx)
	if err != nil {
		return err
	}
	if state == pluginEnabled {
		if err := p.Disable(ctx); err != nil {
			return err
		}
	}
	if _, err := Docker(ctx, p.Host, "plugin", "rm", "-f", p.Ref()); err != nil {
		return err
	}
	return p.create(ctx)
}

type pluginState int

const (
	pluginGone pluginState = iota
	pluginDisabled
	pluginEnabled
)

// state asks the engine whether the plugin is installed and enabled.
func (p *Plugin) state(ctx context.Context) (pluginState, error) {
	out, err := Docker(ctx, p.Host, "plugin", "ls", "--format", "{{.Name}} {{.Enabled}}")
	if err != nil {
		return pluginGone, err
	}
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) == 2 && f[0] == p.Ref() {
			if f[1] == "true" {
				return pluginEnabled, nil
			}
			return pluginDisabled, nil
		}
	}
	return pluginGone, nil
}

// Remove removes every container and every network of the plugin's driver, then the plugin,
// so the host is left as before the install. A disabled plugin is enabled first, so that the
// driver answers the engine's calls for the cleanup (without it, each call waits for a driver
// that never comes). It tolerates a plugin already gone.
func (p *Plugin) Remove(ctx context.Context) error {
	state, err := p.state(ctx)
	if err != nil {
		return err
	}
	if state == pluginGone {
		return nil
	}
	var errs []error
	if state == pluginDisabled {
		if err := p.Enable(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	if out, err := Docker(ctx, p.Host, "ps", "-aq"); err == nil && strings.TrimSpace(out) != "" {
		if _, err := Docker(ctx, p.Host, append([]string{"rm", "-f"}, strings.Fields(out)...)...); err != nil {
			errs = append(errs, err)
		}
	}
	if out, err := Docker(ctx, p.Host, "network", "ls", "-q", "--filter", "driver="+p.Ref()); err == nil {
		for _, n := range strings.Fields(out) {
			if _, err := Docker(ctx, p.Host, "network", "rm", n); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if _, err := Docker(ctx, p.Host, "plugin", "rm", "-f", p.Ref()); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// CreatePluginNetwork runs, on h,
//
//	docker network create -d NAME:latest --ipam-driver NAME:latest --subnet SUBNET --label meshnet-e2e NETWORK
//
// A managed plugin is addressed with its tag: plain `-d meshnet` asks a registry.
func CreatePluginNetwork(ctx context.Context, p *Plugin, network, subnet string) error {
	_, err := Docker(ctx, p.Host, "network", "create", "-d", p.Ref(), "--ipam-driver", p.Ref(), "--subnet", subnet, "--label", Label, network)
	return err
}

// StateSource is the folder to give the plugin's state mount (`state.source=`) on a simulated
// host: the host's own /var/lib. The plugin's default, the host's /var/lib, is bound without
// its submounts, and a simulated host's /var/lib/meshnet is a submount of the machine's.
func (h *SimHost) StateSource() string { return filepath.Join(h.dir, "fs", "var", "lib") }

// pluginIDPattern matches a managed plugin's ID, which also names its cgroups.
var pluginIDPattern = regexp.MustCompile(`^[0-9a-f]{64}$`)

// pluginIDs lists the IDs of the managed plugins installed on the host. The engine puts a
// plugin's cgroup at the top of each hierarchy, named after its ID: dockerd's --cgroup-parent
// does not apply to plugins, so the teardown looks for these too.
func (h *SimHost) pluginIDs() []string {
	entries, err := os.ReadDir(filepath.Join(h.dir, "fs", "var", "lib", "docker", "plugins"))
	if err != nil {
		return nil
	}
	var ids []string
	for _, e := range entries {
		if e.IsDir() && pluginIDPattern.MatchString(e.Name()) {
			ids = append(ids, e.Name())
		}
	}
	sort.Strings(ids)
	return ids
}
