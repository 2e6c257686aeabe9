package plugin

import (
	"fmt"
	"strconv"
	"strings"
)

// Engine API versions. An engine refuses versions outside its own range
// (engine 20.10 speaks up to 1.41; engine 29 refuses anything below 1.44),
// so the client asks the engine which it speaks (GET /_ping, header
// API-Version) and uses the lower of that and maxDockerAPIVersion, as the
// docker CLI does.
const (
	// minDockerAPIVersion is engine 20.10's, the oldest engine meshnet
	// supports; it is also used when an engine names no version at all.
	minDockerAPIVersion = "1.41"
	// maxDockerAPIVersion is engine 29.0's, the newest this client was
	// checked against: every field the watcher, HeldBy and RestartStranded
	// read exists with the same meaning from 1.41 through 1.52 (moby
	// api/docs/CHANGELOG.md and the v1.41/v1.52 swagger files). Two changes
	// in that range touch what is read and are handled: 1.45 stopped
	// listing the short container ID among a network's Aliases (the daemon
	// skips ID prefixes either way), and 1.52 dropped NetworkSettings'
	// top-level addresses (read here per network, from Networks). Raise it
	// only after checking the changelog again.
	maxDockerAPIVersion = "1.52"
)

// apiVersion is an Engine API version, "MAJOR.MINOR".
type apiVersion struct{ major, minor int }

func parseAPIVersion(s string) (apiVersion, error) {
	s = strings.TrimPrefix(strings.TrimSpace(s), "v")
	maj, mi, ok := strings.Cut(s, ".")
	if !ok {
		return apiVersion{}, fmt.Errorf("engine API version %q: want MAJOR.MINOR", s)
	}
	a, err1 := strconv.Atoi(maj)
	b, err2 := strconv.Atoi(mi)
	if err1 != nil || err2 != nil || a < 1 || b < 0 {
		return apiVersion{}, fmt.Errorf("engine API version %q: want MAJOR.MINOR", s)
	}
	return apiVersion{a, b}, nil
}

func mustAPIVersion(s string) apiVersion {
	v, err := parseAPIVersion(s)
	if err != nil {
		panic(err)
	}
	return v
}

func (v apiVersion) String() string { return strconv.Itoa(v.major) + "." + strconv.Itoa(v.minor) }

func (v apiVersion) less(o apiVersion) bool {
	return v.major < o.major || v.major == o.major && v.minor < o.minor
}

// chooseAPIVersion is the version to speak with an engine whose /_ping
// answered engine: the lower of that and maxDockerAPIVersion. An engine
// that names none (or garbage) gets minDockerAPIVersion: every engine
// meshnet supports names its version, so it is a guess either way, and
// the oldest is the one most engines accept.
func chooseAPIVersion(engine string) apiVersion {
	maxV := mustAPIVersion(maxDockerAPIVersion)
	v, err := parseAPIVersion(engine)
	if err != nil {
		return mustAPIVersion(minDockerAPIVersion)
	}
	if maxV.less(v) {
		return maxV
	}
	return v
}

// versionRefused reports whether an engine's error message says it does
// not speak the version asked for: "client version 1.41 is too old.
// Minimum supported API version is 1.44, ..." (or "is too new").
func versionRefused(msg string) bool {
	return strings.Contains(msg, "client version") && (strings.Contains(msg, "is too old") || strings.Contains(msg, "is too new"))
}
