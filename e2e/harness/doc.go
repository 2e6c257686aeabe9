// Package harness runs Docker hosts for meshnet's end-to-end tests and drives them the way an
// operator would: with the docker CLI, meshnetd and meshctl, through a shell on each host.
//
// It owns three backends behind one [Host] interface:
//
//   - Simulated hosts ([NewSimCluster]): each host is a set of Linux namespaces (network, UTS,
//     mount) anchored on one long-lived process, with its own /run, /var/lib/docker,
//     /var/lib/meshnet, /etc/docker and /etc/meshnet bound from per-host folders, its own /sys,
//     and its own real dockerd. Hosts share one underlay bridge in the root namespace and have no
//     route out of it, so nothing a test does can leave the machine.
//   - SSH hosts ([NewSSHCluster]): real machines or VMs reached with the OpenSSH client; Docker is
//     already running there as a service.
//   - VMs ([NewVMCluster], MESHNET_E2E_VM=SUITE): qemu guests of a Debian image built offline by
//     vmimage/build.sh (mmdebstrap, cached by a hash of the script, the package list and the
//     suite), joined by taps on a bridge inside a network namespace of their own (mnvm-ID,
//     198.18.0.0/24) and handed to the SSH backend, whose ssh runs inside that namespace. They
//     have kernels of their own, so they run what simulated hosts cannot: kernel WireGuard and
//     netem. KVM is probed with a short boot (on the project's machines a KVM guest
//     hangs silently); otherwise they are emulated (TCG), which makes them slow: about 110 s to
//     boot three on two cores.
//
// What it promises: [Cluster.Close] is idempotent and leaves nothing behind on the machine it
// created (processes, mounts, links, cgroups, sysctls, guests, namespaces), also when a test
// failed or panicked, and a run killed outright is cleaned by the next ([CleanupStale]);
// [Cluster.Reset] returns every host to the state right after the cluster came up, so one
// cluster can be shared by many tests; every failure message carries the output of the
// command that failed.
//
// Why it is shaped so: the tests must exercise the same paths an operator uses (the docker CLI
// against a real engine, the plugin socket found by the engine, gossip over a real underlay),
// and must run on one CI machine in minutes. Namespaces give real engines at the cost of a few
// seconds each; the SSH backend runs the very same tests against VMs. Facts about the machine
// that shaped the simulated host (the /sys remount that keeps cgroups, br_netfilter being per
// network namespace, the FORWARD DROP policy a real Docker host has) are noted where they are
// used.
package harness
