package harness

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// A test binary that dies without running its teardown (a `go test -timeout` panic, SIGKILL)
// leaves simulated hosts running: anchors, dockerds, containers, the underlay bridge. Every
// simulated cluster therefore records itself in registryDir, and [CleanupStale] tears down the
// clusters whose owning process is gone. The root namespace's original bridge netfilter values
// are recorded there too, so a crashed run does not make 0 the "original".
const registryDir = "/run/meshnet-e2e"

type registryHost struct {
	Name        string `json:"name"`
	Dir         string `json:"dir"`
	AnchorPID   int    `json:"anchor_pid"`
	AnchorStart uint64 `json:"anchor_start"`
	Veth        string `json:"veth"`
	Cgroup      string `json:"cgroup"`
}

type registryEntry struct {
	ID         string         `json:"id"`
	OwnerPID   int            `json:"owner_pid"`
	OwnerStart uint64         `json:"owner_start"`
	WorkDir    string         `json:"work_dir"`
	Keep       bool           `json:"keep"`
	Bridge     string         `json:"bridge"`
	Hosts      []registryHost `json:"hosts"`
}

func clusterFile(id string) string { return filepath.Join(registryDir, "cluster-"+id+".json") }

func bridgeNFFile() string { return filepath.Join(registryDir, "bridge-nf.json") }

func (sc *simCluster) register() error {
	e := registryEntry{ID: sc.id, OwnerPID: os.Getpid(), WorkDir: sc.workDir, Keep: sc.opts.Keep, Bridge: sc.bridge}
	e.OwnerStart, _ = procStartTime(os.Getpid())
	for _, h := range sc.hosts {
		st, _ := procStartTime(h.anchorPID)
		e.Hosts = append(e.Hosts, registryHost{Name: h.name, Dir: h.dir, AnchorPID: h.anchorPID, AnchorStart: st, Veth: h.veth, Cgroup: h.cgroup})
	}
	b, err := json.MarshalIndent(e, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(registryDir, 0o755); err != nil {
		return fmt.Errorf("registering cluster: %w", err)
	}
	if err := os.WriteFile(clusterFile(sc.id), b, 0o644); err != nil {
		return fmt.Errorf("registering cluster: %w", err)
	}
	sc.registered = true
	return nil
}

func unregister(id string) { _ = os.Remove(clusterFile(id)) }

func readRegistry() []registryEntry {
	return readEntries(filepath.Join(registryDir, "cluster-*.json"), func(e registryEntry) bool { return e.ID != "" })
}

// readEntries reads the registry files matching pattern, keeping the entries that parse and
// are valid; a file half written or removed meanwhile is skipped (its run is alive, or the
// next cleanup sees it whole).
func readEntries[T any](pattern string, valid func(T) bool) []T {
	files, _ := filepath.Glob(pattern)
	var out []T
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		var e T
		if json.Unmarshal(b, &e) == nil && valid(e) {
			out = append(out, e)
		}
	}
	return out
}

// alive reports whether pid is still the process that started at start.
func alive(pid int, start uint64) bool {
	if pid <= 0 {
		return false
	}
	st, ok := procStartTime(pid)
	return ok && st == start && len(aliveOnly([]int{pid})) == 1
}

// liveForeignClusters counts registered clusters owned by other live processes.
func liveForeignClusters() int {
	n := 0
	for _, e := range readRegistry() {
		if e.OwnerPID != os.Getpid() && alive(e.OwnerPID, e.OwnerStart) {
			n++
		}
	}
	return n
}

// CleanupStale tears down simulated clusters left behind by test processes that died without
// closing them, removes their work folders (see NewWorkDir), and restores the root namespace's bridge netfilter sysctls when nothing uses
// them any more. It never touches clusters of live processes.
func CleanupStale(log *slog.Logger) error {
	log = discardLogger(log)
	var errs []error
	for _, e := range readRegistry() {
		if alive(e.OwnerPID, e.OwnerStart) {
			continue
		}
		log.Info("tearing down a stale simulated cluster", "cluster", e.ID, "owner", e.OwnerPID, "work_dir", e.WorkDir)
		errs = append(errs, teardownStale(e))
	}
	errs = append(errs, cleanupStaleVMs(log))
	errs = append(errs, cleanupStaleWorkDirs(log))
	rootBridgeNF.mu.Lock()
	inUse := rootBridgeNF.users > 0
	rootBridgeNF.mu.Unlock()
	if !inUse && liveForeignClusters() == 0 {
		if saved, err := readSavedBridgeNF(); err == nil {
			errs = append(errs, restoreSysctls(saved))
			_ = os.Remove(bridgeNFFile())
		}
	}
	return errors.Join(errs...)
}

func teardownStale(e registryEntry) error {
	var errs []error
	self := nsID(os.Getpid(), "mnt")
	for _, h := range e.Hosts {
		// A namespace's identity may be reused once it is gone, so it is taken only from a
		// process proven to be the host's: the anchor (PID and start time), or the host's
		// dockerd or containerd named by their pid files in the host's own /run.
		var mnt, net string
		if alive(h.AnchorPID, h.AnchorStart) {
			mnt, net = nsID(h.AnchorPID, "mnt"), nsID(h.AnchorPID, "net")
		} else {
			for _, pf := range []string{"run/docker.pid", "run/docker/containerd/containerd.pid"} {
				b, err := os.ReadFile(filepath.Join(h.Dir, "fs", pf))
				if err != nil {
					continue
				}
				pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
				if err != nil {
					continue
				}
				comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
				c := strings.TrimSpace(string(comm))
				if (c == "dockerd" || c == "containerd") && nsID(pid, "mnt") != self {
					mnt, net = nsID(pid, "mnt"), nsID(pid, "net")
					break
				}
			}
		}
		var dirs []string
		for _, root := range cgroupRoots() {
			dirs = append(dirs, filepath.Join(root, h.Cgroup))
		}
		if mnt != "" && mnt != self {
			if err := killHostProcesses(mnt, net, dirs, nil, 15*time.Second); err != nil {
				errs = append(errs, err)
			}
		} else if err := killHostProcesses("", "", dirs, nil, 15*time.Second); err != nil {
			errs = append(errs, err)
		}
		errs = append(errs, removeCgroupDirs(dirs))
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, _ = run(ctx, "ip", "link", "del", h.Veth)
		cancel()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	_, _ = run(ctx, "ip", "link", "del", e.Bridge)
	cancel()
	errs = append(errs, unmountUnder(e.WorkDir))
	if !e.Keep {
		errs = append(errs, os.RemoveAll(e.WorkDir))
	}
	unregister(e.ID)
	return errors.Join(errs...)
}

func readSavedBridgeNF() (map[string]string, error) {
	b, err := os.ReadFile(bridgeNFFile())
	if err != nil {
		return nil, err
	}
	var m map[string]string
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	return m, nil
}

func writeSavedBridgeNF(m map[string]string) error {
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(registryDir, 0o755); err != nil {
		return err
	}
	return os.WriteFile(bridgeNFFile(), b, 0o644)
}

// ownerFile marks a work folder made by NewWorkDir with the PID and start time of its owner.
const ownerFile = ".meshnet-e2e-owner"

// NewWorkDir makes a temporary folder (os.TempDir()/PREFIX*) owned by this process.
// CleanupStale removes such folders once their owner is gone, unless KeepWorkDir was called.
func NewWorkDir(prefix string) (string, error) {
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		return "", err
	}
	st, _ := procStartTime(os.Getpid())
	if err := os.WriteFile(filepath.Join(dir, ownerFile), fmt.Appendf(nil, "%d %d\n", os.Getpid(), st), 0o644); err != nil {
		os.RemoveAll(dir)
		return "", err
	}
	return dir, nil
}

// KeepWorkDir marks a folder made by NewWorkDir as one to keep (for debugging).
func KeepWorkDir(dir string) { _ = os.Remove(filepath.Join(dir, ownerFile)) }

// cleanupStaleWorkDirs removes folders made by NewWorkDir whose owner is gone.
func cleanupStaleWorkDirs(log *slog.Logger) error {
	marks, _ := filepath.Glob(filepath.Join(os.TempDir(), "*", ownerFile))
	var errs []error
	for _, m := range marks {
		b, err := os.ReadFile(m)
		if err != nil {
			continue
		}
		var pid int
		var st uint64
		if _, err := fmt.Sscan(string(b), &pid, &st); err != nil || alive(pid, st) {
			continue
		}
		dir := filepath.Dir(m)
		if mi, err := os.ReadFile("/proc/self/mountinfo"); err == nil && strings.Contains(string(mi), " "+dir) {
			errs = append(errs, unmountUnder(dir))
		}
		log.Info("removing a stale work folder", "dir", dir, "owner", pid)
		errs = append(errs, os.RemoveAll(dir))
	}
	return errors.Join(errs...)
}

// LeftoverUnderlayLinks lists the simulated underlay links (bridges "mnu-ID" and their host
// ports "mnu-ID-N") in the root namespace that no live foreign process's cluster owns: after
// a suite has closed its clusters, what it left behind. Suites running side by side on one
// machine do not count each other's links.
func LeftoverUnderlayLinks() ([]string, error) {
	links, err := UnderlayLinks("mnu-")
	if err != nil {
		return nil, err
	}
	var foreign []string
	for _, e := range readRegistry() {
		if e.OwnerPID != os.Getpid() && alive(e.OwnerPID, e.OwnerStart) && e.Bridge != "" {
			foreign = append(foreign, e.Bridge)
		}
	}
	var out []string
	for _, l := range links {
		owned := false
		for _, b := range foreign {
			if l == b || strings.HasPrefix(l, b+"-") {
				owned = true
				break
			}
		}
		if !owned {
			out = append(out, l)
		}
	}
	return out, nil
}
