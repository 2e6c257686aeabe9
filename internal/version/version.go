// Package version holds the build's version, set by the linker:
// -ldflags "-X github.com/meshnet/meshnet/internal/version.Version=v1.2.3".
//
// A build the linker did not stamp (go install, go build) takes its version
// from the build information Go embeds: the module version for `go install
// …@v1.2.3`, else the VCS revision of a checkout, so no binary an operator
// meets calls itself "dev" without saying what it was built from.
package version

import (
	"runtime/debug"
	"sync"
)

// Version is the release this binary was built from, as stamped by the
// linker; "dev" when it was not (see String).
var Version = "dev"

// String is the version to show: Version when stamped, else what the
// build information says, else "dev".
func String() string { return resolved() }

var resolved = sync.OnceValue(func() string {
	if Version != "dev" {
		return Version
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return Version
	}
	return fromBuildInfo(bi)
})

// fromBuildInfo prefers the module's version (go install …@vX), then the
// VCS revision go build records in a checkout (12 hex digits, "-dirty" with
// uncommitted changes).
func fromBuildInfo(bi *debug.BuildInfo) string {
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	var rev, dirty string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				dirty = "-dirty"
			}
		}
	}
	if rev == "" {
		return "dev"
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	return "dev-" + rev + dirty
}
