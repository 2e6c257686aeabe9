package release

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestDebVersion(t *testing.T) {
	for in, want := range map[string]string{
		"v1.2.0":                  "1.2.0",
		"v1.2.0-3-gabc1234":       "1.2.0+3+gabc1234",
		"v1.2.0-3-gabc1234-dirty": "1.2.0+3+gabc1234+dirty",
		"abc1234":                 "0~abc1234",
		"abc1234-dirty":           "0~abc1234+dirty",
		"5611b8e":                 "0~5611b8e",
		"5611b8e-dirty":           "0~5611b8e+dirty",
		"1.2.0":                   "1.2.0",
		"dev":                     "0~dev",
	} {
		if got := DebVersion(in); got != want {
			t.Errorf("DebVersion(%q) = %q, want %q", in, got, want)
		}
	}
}

// repoRoot is the module root, where deploy/systemd and LICENSE are.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// The .deb as dpkg reads it: its fields, its files with their modes and
// owners, the env file as a conffile, and a unit whose ExecStart is the
// binary the package installs and which keeps Type=notify.
func TestDeb(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "bin")
	if err := os.Mkdir(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, b := range []string{"meshnetd", "meshctl"} {
		if err := os.WriteFile(filepath.Join(bin, b), []byte("#!/bin/sh\necho "+b+"\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	deb := filepath.Join(dir, "m.deb")
	if err := Deb(deb, "v1.2.0-3-gabc1234", "arm64", bin, repoRoot(t)); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) string {
		t.Helper()
		out, err := exec.Command("dpkg-deb", args...).CombinedOutput()
		if err != nil {
			t.Fatalf("dpkg-deb %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	if v := strings.TrimSpace(run("-f", deb, "Version")); v != "1.2.0+3+gabc1234" {
		t.Errorf("Version %q", v)
	}
	if a := strings.TrimSpace(run("-f", deb, "Architecture")); a != "arm64" {
		t.Errorf("Architecture %q", a)
	}
	contents := run("-c", deb)
	for _, want := range []string{
		"-rwxr-xr-x root/root .* ./usr/bin/meshnetd\n",
		"-rwxr-xr-x root/root .* ./usr/bin/meshctl\n",
		"-rw-r--r-- root/root .* ./usr/lib/systemd/system/meshnetd.service\n",
		"drwx------ root/root .* ./etc/meshnet/\n",
		"-rw------- root/root .* ./etc/meshnet/meshnetd.env\n",
	} {
		if !matchLine(contents, want) {
			t.Errorf("the .deb has no entry like %q:\n%s", want, contents)
		}
	}
	if cf := run("--ctrl-tarfile", deb); !strings.Contains(cf, "/etc/meshnet/meshnetd.env") {
		t.Errorf("the env file is not a conffile")
	}
	x := filepath.Join(dir, "x")
	run("-x", deb, x)
	unit, err := os.ReadFile(filepath.Join(x, "usr/lib/systemd/system/meshnetd.service"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"\nType=notify\n", "\nExecStart=/usr/bin/meshnetd\n", "\nEnvironmentFile=-/etc/meshnet/meshnetd.env\n"} {
		if !strings.Contains(string(unit), want) {
			t.Errorf("packaged unit lacks %q:\n%s", strings.TrimSpace(want), unit)
		}
	}
	if strings.Contains(string(unit), "/usr/local/bin") {
		t.Errorf("packaged unit still names /usr/local/bin:\n%s", unit)
	}
}

func matchLine(s, pattern string) bool {
	// pattern: literal parts around one ".*"
	pre, post, _ := strings.Cut(pattern, ".*")
	for _, line := range strings.SplitAfter(s, "\n") {
		if strings.HasPrefix(line, pre) && strings.HasSuffix(line, post) {
			return true
		}
	}
	return false
}

// SHA256SUMS is in sha256sum's format: sha256sum -c accepts it, and
// rejects it once a file changes.
func TestSums(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []string{"a.tar.gz", "b.deb"} {
		if err := os.WriteFile(filepath.Join(dir, n), []byte(n), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := writeSums(dir, []string{"a.tar.gz", "b.deb"}); err != nil {
		t.Fatal(err)
	}
	check := exec.Command("sha256sum", "-c", "SHA256SUMS")
	check.Dir = dir
	if out, err := check.CombinedOutput(); err != nil {
		t.Fatalf("sha256sum -c: %v\n%s", err, out)
	}
	if err := os.WriteFile(filepath.Join(dir, "b.deb"), []byte("changed"), 0o644); err != nil {
		t.Fatal(err)
	}
	check = exec.Command("sha256sum", "-c", "SHA256SUMS")
	check.Dir = dir
	if out, err := check.CombinedOutput(); err == nil {
		t.Fatalf("sha256sum -c passed a changed file:\n%s", out)
	}
}
