package bench

import (
	"context"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"strings"
)

// Machine is the conditions every figure of a run was measured under.
type Machine struct {
	Hostname string `json:"hostname"`
	CPUs     int    `json:"cpus"`
	CPUModel string `json:"cpu_model"`
	Kernel   string `json:"kernel"`
	MemoryGB string `json:"memory"`
	// LoadStart and LoadEnd are /proc/loadavg when the run began and ended: on a shared
	// machine they say how much the figures could have been disturbed.
	LoadStart string `json:"load_start"`
	LoadEnd   string `json:"load_end,omitempty"`
	Go        string `json:"go"`
	Meshnet   string `json:"meshnet_version"`
	// Tools are the versions of the programs the run drove (dockerd, iperf3, dnsperf, ...).
	Tools map[string]string `json:"tools"`
	// Modules are the versions of the Go modules the figures depend on.
	Modules map[string]string `json:"modules"`
}

// DescribeMachine reads the machine's conditions; repo is the module's root, for the meshnet
// version (git describe) and the module versions (go list).
func DescribeMachine(ctx context.Context, repo string) Machine {
	m := Machine{
		CPUs:      runtime.NumCPU(),
		Go:        runtime.Version(),
		LoadStart: LoadAvg(),
		Tools:     map[string]string{},
		Modules:   map[string]string{},
	}
	m.Hostname, _ = os.Hostname()
	m.Kernel = firstLine(readFile("/proc/sys/kernel/osrelease"))
	for _, l := range strings.Split(readFile("/proc/cpuinfo"), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
			m.CPUModel = strings.TrimSpace(v)
			break
		}
	}
	for _, l := range strings.Split(readFile("/proc/meminfo"), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "MemTotal:" {
			m.MemoryGB = f[1] + " kB"
		}
	}
	m.Meshnet = cmdOut(ctx, repo, "git", "describe", "--tags", "--always", "--dirty")
	for name, args := range map[string][]string{
		"dockerd": {"dockerd", "--version"},
		"iperf3":  {"iperf3", "--version"},
		"dnsperf": {"dnsperf", "-h"},
	} {
		m.Tools[name] = toolVersion(ctx, args)
	}
	for _, mod := range []string{"github.com/hashicorp/memberlist", "github.com/miekg/dns",
		"github.com/vishvananda/netlink", "golang.zx2c4.com/wireguard"} {
		if v := cmdOut(ctx, repo, "go", "list", "-m", "-f", "{{.Version}}", mod); v != "" {
			m.Modules[mod] = v
		} else {
			m.Modules[mod] = "not in go.mod"
		}
	}
	if bi, ok := debug.ReadBuildInfo(); ok && m.Meshnet == "" {
		m.Meshnet = bi.Main.Version
	}
	return m
}

// LoadAvg returns the first three fields of /proc/loadavg.
func LoadAvg() string {
	f := strings.Fields(readFile("/proc/loadavg"))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

// toolVersion returns the line of a tool's output that names its version.
func toolVersion(ctx context.Context, args []string) string {
	out, _ := exec.CommandContext(ctx, args[0], args[1:]...).CombinedOutput()
	for _, l := range strings.Split(string(out), "\n") {
		if strings.Contains(strings.ToLower(l), "version") || strings.HasPrefix(l, "iperf ") {
			return strings.TrimSpace(l)
		}
	}
	if len(out) == 0 {
		return "not installed"
	}
	return firstLine(string(out))
}

func cmdOut(ctx context.Context, dir string, name string, args ...string) string {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}

func readFile(p string) string {
	b, _ := os.ReadFile(p)
	return string(b)
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	return s
}
