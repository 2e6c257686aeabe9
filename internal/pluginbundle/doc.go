// Package pluginbundle owns meshnet's Docker managed-plugin bundle: the
// contents of config.json and the layout of the directory that
// `docker plugin create meshnet DIR` reads (config.json beside rootfs/).
// `make plugin` writes it to build/plugin/ through cmd/mkplugin; the e2e
// suite writes it with the same code, so what the tests install is what
// operators install.
//
// # What it promises
//
//   - One socket, meshnet.sock, serves both the network and the IPAM driver.
//   - The plugin runs in the host's network namespace (it programs the
//     host's links, routes and firewall) with the privileges meshnetd uses
//     beyond Docker's default set: CAP_NET_ADMIN (netlink, nftables) and
//     CAP_SYS_ADMIN (the engine mounts /proc/sys read-only in a plugin, and
//     the dataplane sets its bridges' sysctls: meshnetd --managed-plugin
//     remounts it writable in the plugin's own mount namespace), and one
//     device, /dev/net/tun (the userspace WireGuard dataplane where the kernel
//     has no module).
//   - State outlives the plugin: meshnetd keeps it in the host's
//     /var/lib/meshnet and serves meshctl on the host's
//     /run/meshnet/meshnet.sock, so disable, enable and upgrade keep
//     allocations and peers, and meshctl on the host needs no options.
//   - The rootfs holds the static binaries and nothing else: no shell, no
//     libc, no mount points (the runtime makes those).
//   - The operator's settings are environment variables (`docker plugin
//     set`), one per meshnetd flag, named as the flag in upper case with _
//     (VXLAN_PORT for --vxlan-port), plus KEY (MESHNET_KEY), which meshnetd
//     reads when started with --managed-plugin, its entrypoint. Settings
//     builds them from meshnetd's flag set (internal/daemonflags), so a new
//     flag is a new setting; only the flags Fixed names are not (paths the
//     bundle's layout decides, and commands). The plugin shares the host's
//     network namespace, so METRICS_ADDR is an address of the host.
//
// # Why it is shaped so
//
// The plugin mounts the host's /run and /var/lib rather than /run/meshnet
// and /var/lib/meshnet: a bind mount's source must exist when the engine
// starts the plugin, /run is emptied at every boot, and the engine starts
// enabled plugins before anything could create /run/meshnet, so a reboot
// would leave the plugin unable to start. The binds are not recursive, so the
// mounts below them (containers' network namespaces in /run/docker/netns,
// their file systems in /var/lib/docker) are not copied into the plugin's
// mount namespace, where they would outlive their containers. The Docker
// socket, which meshnetd reads events from, comes with /run; nothing else
// under /run or /var/lib grants more than that socket already does.
//
// The manifest is Go data rather than a checked-in JSON file, so that a test
// holds it against what meshnetd needs (the socket name, the settings the
// daemon reads, the paths it writes) and fails when the two drift apart.
package pluginbundle
