package harness

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// nsID returns the identity of one of pid's namespaces ("mnt:[4026531840]"), or "" when it
// cannot be read (the process is gone, or a zombie).
func nsID(pid int, kind string) string {
	s, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/%s", pid, kind))
	if err != nil {
		return ""
	}
	return s
}

// procInfo is what the teardown needs to know of one process.
type procInfo struct {
	pid, ppid int
	mnt, net  string
}

// listProcs reads every process of the machine from /proc.
func listProcs() []procInfo {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []procInfo
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		ppid, ok := parseStatPPID(stat)
		if !ok {
			continue
		}
		out = append(out, procInfo{pid: pid, ppid: ppid, mnt: nsID(pid, "mnt"), net: nsID(pid, "net")})
	}
	return out
}

// parseStatPPID reads the parent PID from /proc/PID/stat. The command name (field 2) may hold
// spaces and parentheses, so fields are counted after its closing parenthesis.
func parseStatPPID(stat []byte) (int, bool) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 2 {
		return 0, false
	}
	ppid, err := strconv.Atoi(f[1])
	return ppid, err == nil
}

// procStartTime returns field 22 of /proc/PID/stat (start time in clock ticks since boot),
// which with the PID identifies a process across PID reuse.
func procStartTime(pid int) (uint64, bool) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, false
	}
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(string(stat[i+1:]))
	// f[0] is field 3 (state), so field 22 is f[19].
	if len(f) < 20 {
		return 0, false
	}
	v, err := strconv.ParseUint(f[19], 10, 64)
	return v, err == nil
}

// hostVictims returns the processes that belong to a simulated host: those in its mount or
// network namespace, the processes in its cgroups, and every descendant of those. Container
// processes live in mount and network namespaces of their own, under a containerd shim that
// lives in the host's mount namespace: descendants and cgroups catch them.
func hostVictims(procs []procInfo, mnt, net string, cgroupPIDs []int, exclude map[int]bool) []int {
	self := os.Getpid()
	children := map[int][]int{}
	for _, p := range procs {
		children[p.ppid] = append(children[p.ppid], p.pid)
	}
	seen := map[int]bool{}
	var queue []int
	mark := func(pid int) {
		if pid <= 1 || pid == self || seen[pid] || exclude[pid] {
			return
		}
		seen[pid] = true
		queue = append(queue, pid)
	}
	for _, p := range procs {
		if (mnt != "" && p.mnt == mnt) || (net != "" && p.net == net) {
			mark(p.pid)
		}
	}
	for _, pid := range cgroupPIDs {
		mark(pid)
	}
	for len(queue) > 0 {
		pid := queue[0]
		queue = queue[1:]
		for _, c := range children[pid] {
			mark(c)
		}
	}
	out := make([]int, 0, len(seen))
	for pid := range seen {
		out = append(out, pid)
	}
	sort.Ints(out)
	return out
}

// killHostProcesses SIGKILLs every process of a simulated host (see hostVictims) until none is
// left or the deadline passes; processes keep being found while containerd restarts shims.
func killHostProcesses(mnt, net string, cgroupDirs []string, exclude map[int]bool, deadline time.Duration) error {
	stop := time.Now().Add(deadline)
	for {
		victims := hostVictims(listProcs(), mnt, net, cgroupProcs(cgroupDirs), exclude)
		if len(victims) == 0 {
			return nil
		}
		for _, pid := range victims {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		if time.Now().After(stop) {
			return fmt.Errorf("processes still alive after SIGKILL: %v", victims)
		}
		time.Sleep(50 * time.Millisecond)
		// A killed process stays in /proc as a zombie until reaped; zombies have no readable
		// namespaces, so they drop out of hostVictims by themselves (except via cgroups and
		// parentage, which is fine: SIGKILL to a zombie is harmless).
		victims = aliveOnly(victims)
		if len(victims) == 0 {
			return nil
		}
	}
}

// aliveOnly keeps the PIDs that are still running (not gone, not zombies).
func aliveOnly(pids []int) []int {
	var out []int
	for _, pid := range pids {
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		i := bytes.LastIndexByte(stat, ')')
		if i >= 0 && i+2 < len(stat) && (stat[i+2] == 'Z' || stat[i+2] == 'X') {
			continue
		}
		out = append(out, pid)
	}
	return out
}

// cgroupProcs lists the PIDs in the given cgroup folders and all folders below them.
func cgroupProcs(dirs []string) []int {
	var pids []int
	for _, d := range dirs {
		_ = filepath.WalkDir(d, func(path string, e os.DirEntry, err error) error {
			if err != nil || e.IsDir() || e.Name() != "cgroup.procs" {
				return nil
			}
			f, err := os.Open(path)
			if err != nil {
				return nil
			}
			defer f.Close()
			s := bufio.NewScanner(f)
			for s.Scan() {
				if pid, err := strconv.Atoi(strings.TrimSpace(s.Text())); err == nil {
					pids = append(pids, pid)
				}
			}
			return nil
		})
	}
	return pids
}

// removeCgroupDirs removes the given cgroup folders, deepest first. A cgroup folder can only
// be removed with rmdir, once no process is in it.
func removeCgroupDirs(dirs []string) error {
	var errs []string
	for _, d := range dirs {
		var all []string
		_ = filepath.WalkDir(d, func(path string, e os.DirEntry, err error) error {
			if err == nil && e.IsDir() {
				all = append(all, path)
			}
			return nil
		})
		sort.Slice(all, func(i, j int) bool { return len(all[i]) > len(all[j]) })
		for _, p := range all {
			var err error
			for try := 0; try < 50; try++ {
				if err = syscall.Rmdir(p); err == nil || err == syscall.ENOENT {
					err = nil
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
			if err != nil {
				errs = append(errs, fmt.Sprintf("rmdir %s: %v", p, err))
			}
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("removing cgroups: %s", strings.Join(errs, "; "))
	}
	return nil
}

// cgroupRoots lists the mount points of the machine's cgroup hierarchies (v1 controllers and
// the v2 unified tree), as seen by the test process.
func cgroupRoots() []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var roots []string
	for _, m := range parseMountinfo(f) {
		if m.fstype == "cgroup" || m.fstype == "cgroup2" {
			roots = append(roots, m.mountPoint)
		}
	}
	return roots
}
