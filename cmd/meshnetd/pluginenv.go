package main

import "github.com/meshnet/meshnet/internal/pluginbundle"

// pluginEnv reads the settings of a managed plugin. `docker plugin set`
// takes short names (JOIN, KEY, VXLAN_PORT, ...: pluginbundle.Settings); with
// --managed-plugin, meshnetd reads each as the MESHNET_ variable of the same
// name would be read. A MESHNET_ variable, if set, still wins.
func pluginEnv(env func(string) string) func(string) string {
	settings := pluginbundle.Settings()
	short := make(map[string]string, len(settings))
	for _, s := range settings {
		short["MESHNET_"+s.Name] = s.Name
	}
	return func(name string) string {
		if v := env(name); v != "" {
			return v
		}
		if s, ok := short[name]; ok {
			return env(s)
		}
		return ""
	}
}
