package harness

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// The guests' underlay lives in a network namespace of its own (named vmNetnsPrefix+ID): a
// bridge holding the test process's address and one tap per guest. Nothing on it can reach the
// machine's own network, and deleting the namespace removes every link at once.
const vmNetnsPrefix = "mnvm-"

// vmSubnet is the guests' underlay: the bridge is .1, guest N is .10+N.
var vmSubnet = netip.MustParsePrefix("198.18.0.0/24")

func vmBridgeAddr() netip.Addr { return vmSubnet.Addr().Next() }

func vmGuestAddr(i int) netip.Addr {
	a := vmSubnet.Addr().As4()
	a[3] = byte(10 + i)
	return netip.AddrFrom4(a)
}

func vmTap(i int) string { return fmt.Sprintf("tap%d", i) }

func runIP(ctx context.Context, args ...string) error {
	out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
	if err != nil {
		return &CommandError{Host: "machine", Args: append([]string{"ip"}, args...), Output: string(out), Err: err}
	}
	return nil
}

// setupVMNetns makes the namespace, its bridge and n taps (tap1..tapN), all up.
func setupVMNetns(ctx context.Context, ns string, n int) error {
	if err := runIP(ctx, "netns", "add", ns); err != nil {
		return fmt.Errorf("making the VM underlay namespace: %w", err)
	}
	steps := [][]string{
		{"-n", ns, "link", "set", "lo", "up"},
		{"-n", ns, "link", "add", "br0", "type", "bridge"},
		{"-n", ns, "addr", "add", netip.PrefixFrom(vmBridgeAddr(), vmSubnet.Bits()).String(), "dev", "br0"},
		{"-n", ns, "link", "set", "br0", "up"},
	}
	for i := 1; i <= n; i++ {
		steps = append(steps,
			[]string{"-n", ns, "tuntap", "add", "dev", vmTap(i), "mode", "tap"},
			[]string{"-n", ns, "link", "set", vmTap(i), "master", "br0", "up"})
	}
	for _, s := range steps {
		if err := runIP(ctx, s...); err != nil {
			return fmt.Errorf("making the VM underlay: %w", err)
		}
	}
	// The machine's br_netfilter is on, and bridged frames would pass this namespace's
	// (empty, ACCEPT) iptables; turned off so the underlay never depends on it.
	_ = exec.CommandContext(ctx, "nsenter", "--net=/run/netns/"+ns, "--", "sysctl", "-q", "-w",
		"net.bridge.bridge-nf-call-iptables=0", "net.bridge.bridge-nf-call-ip6tables=0").Run()
	return nil
}

// netnsInode identifies a named namespace as /proc/PID/ns/net shows it ("net:[N]").
func netnsInode(ns string) string {
	var st syscall.Stat_t
	if err := syscall.Stat("/run/netns/"+ns, &st); err != nil {
		return ""
	}
	return fmt.Sprintf("net:[%d]", st.Ino)
}

// deleteVMNetns kills every process inside the namespace (qemu, ssh clients) and deletes it,
// which removes its bridge and taps. A missing namespace is not an error.
func deleteVMNetns(ns string) error {
	if _, err := os.Stat("/run/netns/" + ns); os.IsNotExist(err) {
		return nil
	}
	if id := netnsInode(ns); id != "" {
		var pids []int
		for _, p := range listProcs() {
			if p.net == id {
				pids = append(pids, p.pid)
			}
		}
		if err := killAndWait(pids, 10*time.Second); err != nil {
			return fmt.Errorf("emptying namespace %s: %w", ns, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := runIP(ctx, "netns", "del", ns); err != nil {
		return fmt.Errorf("deleting the VM underlay namespace: %w", err)
	}
	return nil
}

// vmNetnses lists the named namespaces the VM backend made (live runs' and stale ones).
func vmNetnses() []string {
	entries, _ := os.ReadDir("/run/netns")
	var out []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), vmNetnsPrefix) {
			out = append(out, e.Name())
		}
	}
	return out
}
