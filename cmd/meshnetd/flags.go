package main

import (
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/meshnet/meshnet/daemon"
	"github.com/meshnet/meshnet/internal/daemonflags"
)

// parseFlags maps the command line and MESHNET_* environment variables onto
// a Config. A flag given on the command line wins over its variable.
func parseFlags(args []string, env func(string) string, stderr io.Writer) (daemon.Config, error) {
	cfg := daemon.DefaultConfig()
	var lists daemonflags.Lists
	fs := daemonflags.New(&cfg, &lists)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: meshnetd [flags]\n\nmeshnetd joins this host to the meshnet overlay and serves Docker's network and IPAM\nplugin. Every flag can also be set as MESHNET_<FLAG> (upper case, - as _).\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected argument %q (meshnetd takes flags only)", fs.Arg(0))
	}
	if cfg.ManagedPlugin {
		env = pluginEnv(env)
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var errs []string
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] || daemonflags.CommandOnly[f.Name] {
			return
		}
		name := daemonflags.EnvName(f.Name)
		if v := env(name); v != "" {
			if err := f.Value.Set(v); err != nil {
				errs = append(errs, fmt.Sprintf("%s=%q: %v", name, v, err))
			}
		}
	})
	if len(errs) > 0 {
		return cfg, fmt.Errorf("bad environment: %s", strings.Join(errs, "; "))
	}
	cfg.Key = env("MESHNET_KEY")
	for _, s := range strings.Split(lists.Upstreams, ",") {
		if s = strings.TrimSpace(s); s != "" {
			cfg.DNSUpstreams = append(cfg.DNSUpstreams, s)
		}
	}
	for _, s := range strings.Split(lists.Join, ",") {
		if s = strings.TrimSpace(s); s != "" {
			cfg.Join = append(cfg.Join, s)
		}
	}
	return cfg, nil
}
