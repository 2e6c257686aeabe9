package main

import (
	"strings"

	"github.com/meshnet/meshnet/internal/pluginbundle"
)

// pluginEnv reads the settings of a managed plugin. `docker plugin set`
// takes short names (JOIN, KEY, ...: pluginbundle.Settings); with
// --managed-plugin, meshnetd reads each as the MESHNET_ variable of the same
// name would be read. A MESHNET_ variable, if set, still wins.
func pluginEnv(env func(string) string) func(string) string {
	short := make(map[string]string, len(pluginbundle.Settings))
	for _, s := range pluginbundle.Settings {
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

// pluginSettingNames lists the settings for --help.
func pluginSettingNames() string {
	names := make([]string, len(pluginbundle.Settings))
	for i, s := range pluginbundle.Settings {
		names[i] = s.Name
	}
	return strings.Join(names, ", ")
}
