// Package release owns what `make release` puts in build/release/: for
// each architecture a tarball of the static binaries with the systemd unit,
// its env file, README and LICENSE; a .deb carrying the same; the managed
// plugin's bundle (config.json and rootfs/, written by internal/pluginbundle)
// as a tarball; and SHA256SUMS over all of them.
//
// The .deb is built with dpkg-deb from a staging folder rather than by a
// packaging library: dpkg-deb is on every Debian machine that builds
// meshnet, and what it writes is by definition what dpkg reads. The package
// installs the binaries in /usr/bin, the unit in /usr/lib/systemd/system
// (its ExecStart rewritten from deploy/systemd's /usr/local/bin to
// /usr/bin) and the env file as a conffile in /etc/meshnet (mode 0600 in a
// folder of mode 0700: it may hold the key). It neither enables nor starts
// the service: meshnetd needs its seeds and key first. An upgrade restarts
// a running service (kernel state stays, so containers keep talking).
//
// Versions come from `git describe` (the Makefile's VERSION) and are
// stamped into the binaries; the .deb's Version is the same string made
// valid for Debian (DebVersion).
package release
