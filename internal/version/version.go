// Package version holds the build's version, set by the linker:
// -ldflags "-X github.com/meshnet/meshnet/internal/version.Version=v1.2.3".
package version

// Version is the release this binary was built from.
var Version = "dev"
