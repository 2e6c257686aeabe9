package harness

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// A VM run killed outright leaves qemu processes and its underlay namespace. Each run records
// itself in registryDir (vm-ID.json: owner, namespace); [CleanupStale] removes the runs whose
// owner is gone, and any mnvm- namespace no live run owns. qemu is started with the run's
// name in its -name argument (vmQemuMarker+ID), so a guest is recognised even outside its
// namespace.
const vmQemuMarker = "meshnet-e2e-vm-"

type vmRegistryEntry struct {
	ID         string `json:"id"`
	OwnerPID   int    `json:"owner_pid"`
	OwnerStart uint64 `json:"owner_start"`
	Netns      string `json:"netns"`
	WorkDir    string `json:"work_dir"`
}

func vmRegistryFile(id string) string { return filepath.Join(registryDir, "vm-"+id+".json") }

func registerVM(e vmRegistryEntry) error {
	e.OwnerPID = os.Getpid()
	e.OwnerStart, _ = procStartTime(e.OwnerPID)
	b, err := json.MarshalIndent(e, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(registryDir, 0o755); err != nil {
		return fmt.Errorf("registering the VM run: %w", err)
	}
	return os.WriteFile(vmRegistryFile(e.ID), b, 0o644)
}

func readVMRegistry() []vmRegistryEntry {
	return readEntries(filepath.Join(registryDir, "vm-*.json"), func(e vmRegistryEntry) bool { return e.ID != "" })
}

// liveVMRuns returns the IDs of registered VM runs whose owner still runs, other than this
// process's.
func liveVMRuns() map[string]bool {
	live := map[string]bool{}
	for _, e := range readVMRegistry() {
		if e.OwnerPID != os.Getpid() && alive(e.OwnerPID, e.OwnerStart) {
			live[e.ID] = true
		}
	}
	return live
}

// cleanupStaleVMs tears down VM runs of dead owners: their qemu processes, namespaces and
// work folders.
func cleanupStaleVMs(log *slog.Logger) error {
	var errs []error
	live := liveVMRuns()
	for _, e := range readVMRegistry() {
		if live[e.ID] || e.OwnerPID == os.Getpid() {
			continue
		}
		log.Info("tearing down a stale VM run", "run", e.ID, "owner", e.OwnerPID, "netns", e.Netns)
		errs = append(errs, killVMQemus(e.ID), deleteVMNetns(e.Netns))
		if e.WorkDir != "" {
			errs = append(errs, os.RemoveAll(e.WorkDir))
		}
		_ = os.Remove(vmRegistryFile(e.ID))
	}
	// Namespaces and guests of runs that died before registering, or whose entry is gone.
	for _, ns := range vmNetnses() {
		id := strings.TrimPrefix(ns, vmNetnsPrefix)
		if live[id] || ownRun(id) {
			continue
		}
		log.Info("removing a VM underlay namespace no run owns", "netns", ns)
		errs = append(errs, killVMQemus(id), deleteVMNetns(ns))
	}
	for _, q := range vmQemus() {
		if !live[q.run] && !ownRun(q.run) {
			errs = append(errs, killVMQemus(q.run))
		}
	}
	return errors.Join(errs...)
}

// ownVMRuns are the runs of this process, never stale.
var ownVMRuns = struct {
	sync.Mutex
	ids map[string]bool
}{ids: map[string]bool{}}

func ownRun(id string) bool {
	ownVMRuns.Lock()
	defer ownVMRuns.Unlock()
	return ownVMRuns.ids[id]
}

func setOwnRun(id string, on bool) {
	ownVMRuns.Lock()
	defer ownVMRuns.Unlock()
	if on {
		ownVMRuns.ids[id] = true
	} else {
		delete(ownVMRuns.ids, id)
	}
}

type vmQemu struct {
	pid int
	run string
}

// vmQemus lists the machine's qemu processes started by the VM backend, by their -name.
func vmQemus() []vmQemu {
	entries, _ := os.ReadDir("/proc")
	var out []vmQemu
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil {
			continue
		}
		args := strings.Split(string(b), "\x00")
		if len(args) == 0 || !strings.Contains(filepath.Base(args[0]), "qemu-system") {
			continue
		}
		for i, a := range args {
			if a == "-name" && i+1 < len(args) && strings.HasPrefix(args[i+1], vmQemuMarker) {
				// -name meshnet-e2e-vm-ID-vmN
				rest := strings.TrimPrefix(args[i+1], vmQemuMarker)
				if j := strings.IndexByte(rest, '-'); j > 0 {
					rest = rest[:j]
				}
				out = append(out, vmQemu{pid: pid, run: rest})
			}
		}
	}
	return out
}

func killVMQemus(run string) error {
	var pids []int
	for _, q := range vmQemus() {
		if q.run == run {
			pids = append(pids, q.pid)
		}
	}
	return killAndWait(pids, 30*time.Second)
}

// LeftoverVMs lists what VM runs of this process or of dead ones left on the machine: qemu
// processes and mnvm- namespaces. Runs of other live processes do not count.
func LeftoverVMs() []string {
	live := liveVMRuns()
	var out []string
	for _, ns := range vmNetnses() {
		if !live[strings.TrimPrefix(ns, vmNetnsPrefix)] {
			out = append(out, "netns "+ns)
		}
	}
	for _, q := range vmQemus() {
		if !live[q.run] {
			out = append(out, fmt.Sprintf("qemu pid %d (run %s)", q.pid, q.run))
		}
	}
	for _, e := range readVMRegistry() {
		if !live[e.ID] {
			out = append(out, "registry entry "+vmRegistryFile(e.ID))
		}
	}
	return out
}
