package harness

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
)

// The underlay bridge lives in the root network namespace. If br_netfilter is active there
// (net.bridge.bridge-nf-call-iptables=1, which any dockerd run in the root namespace leaves
// behind together with an iptables FORWARD policy of DROP), frames bridged between the
// simulated hosts pass the root namespace's FORWARD chain and are silently dropped. The
// harness turns these sysctls off while any simulated cluster is up and restores the old
// values when the last one closes. The sysctls are per network namespace (checked on Linux
// 6.18: a new namespace starts with 1 and changing it does not change the root's), so the
// hosts keep br_netfilter on, as real Docker hosts have it.
var rootBridgeNF = struct {
	mu    sync.Mutex
	users int
	saved map[string]string
}{}

var bridgeNFSysctls = []string{
	"/proc/sys/net/bridge/bridge-nf-call-iptables",
	"/proc/sys/net/bridge/bridge-nf-call-ip6tables",
}

// ensureBrNetfilter makes the br_netfilter sysctls exist: on most kernels they appear only once
// the module is loaded. Here it is built in; elsewhere modprobe loads it.
func ensureBrNetfilter() error {
	if _, err := os.Stat(bridgeNFSysctls[0]); err == nil {
		return nil
	}
	out, err := exec.Command("modprobe", "br_netfilter").CombinedOutput()
	if _, serr := os.Stat(bridgeNFSysctls[0]); serr == nil {
		return nil
	}
	return fmt.Errorf("br_netfilter is not available (modprobe br_netfilter: %v: %s)", err, strings.TrimSpace(string(out)))
}

// acquireRootBridgeNF turns bridge netfilter off in the root namespace for the underlay.
func acquireRootBridgeNF() error {
	rootBridgeNF.mu.Lock()
	defer rootBridgeNF.mu.Unlock()
	if rootBridgeNF.users == 0 {
		if err := ensureBrNetfilter(); err != nil {
			return err
		}
		// Values recorded by an earlier process (alive, or crashed before restoring) are the
		// originals; what the sysctls hold now may be that process's 0.
		saved, err := readSavedBridgeNF()
		if err != nil {
			saved = map[string]string{}
			for _, p := range bridgeNFSysctls {
				old, err := os.ReadFile(p)
				if err != nil {
					return fmt.Errorf("reading %s: %w", p, err)
				}
				saved[p] = strings.TrimSpace(string(old))
			}
			if err := writeSavedBridgeNF(saved); err != nil {
				return fmt.Errorf("recording bridge netfilter sysctls: %w", err)
			}
		}
		for _, p := range bridgeNFSysctls {
			if err := os.WriteFile(p, []byte("0"), 0o644); err != nil {
				restoreSysctls(saved)
				return fmt.Errorf("writing 0 to %s: %w", p, err)
			}
		}
		rootBridgeNF.saved = saved
	}
	rootBridgeNF.users++
	return nil
}

// releaseRootBridgeNF restores the saved values once no simulated cluster needs them.
func releaseRootBridgeNF() error {
	rootBridgeNF.mu.Lock()
	defer rootBridgeNF.mu.Unlock()
	if rootBridgeNF.users == 0 {
		return nil
	}
	rootBridgeNF.users--
	if rootBridgeNF.users > 0 {
		return nil
	}
	saved := rootBridgeNF.saved
	rootBridgeNF.saved = nil
	if liveForeignClusters() > 0 {
		return nil // another test process still has an underlay up; the last one restores
	}
	err := restoreSysctls(saved)
	if err == nil {
		_ = os.Remove(bridgeNFFile())
	}
	return err
}

func restoreSysctls(saved map[string]string) error {
	var firstErr error
	for p, v := range saved {
		if err := os.WriteFile(p, []byte(v), 0o644); err != nil && firstErr == nil {
			firstErr = fmt.Errorf("restoring %s to %s: %w", p, v, err)
		}
	}
	return firstErr
}

// RootBridgeNFInUse reports whether a simulated cluster of this process currently holds the
// root namespace's bridge netfilter sysctls (tests use it to know whether they must be back to
// their old values).
func RootBridgeNFInUse() bool {
	rootBridgeNF.mu.Lock()
	defer rootBridgeNF.mu.Unlock()
	return rootBridgeNF.users > 0
}
