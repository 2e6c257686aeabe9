package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/meshnet/meshnet/e2e/harness"
	"github.com/meshnet/meshnet/internal/release"
)

// freshRoot is the start of a script run with `unshare -m` inside a simulated host: tmpfs-backed
// overlays on /usr, /etc, /var/lib/dpkg and /var/log, and no /etc/meshnet, so the script can
// install packages and binaries as on a host that never had meshnet while the machine's (shared)
// file system, the host's own mount namespace and other hosts see nothing of it; everything
// is gone when the script exits. Simulated hosts share the machine's /usr and /etc, so without
// this a dpkg -i would install meshnet on the machine itself.
const freshRoot = `set -eu
W=/mnt # a tmpfs over it, in this mount namespace only: nothing is left on the machine
mount -t tmpfs tmpfs "$W"
for d in usr etc var/lib/dpkg var/log; do
	k=$(echo "$d" | tr / _)
	mkdir -p "$W/upper/$k" "$W/work/$k"
	mount -t overlay overlay -o "lowerdir=/$d,upperdir=$W/upper/$k,workdir=$W/work/$k" "/$d"
done
rm -rf /etc/meshnet
`

// inFreshRoot runs script (after freshRoot) on h in a mount namespace of its own.
func inFreshRoot(ctx context.Context, h harness.Host, script string, args ...string) (string, error) {
	return h.Exec(ctx, append([]string{"unshare", "-m", "--propagation", "private", "sh", "-c", freshRoot + script, "sh"}, args...)...)
}

func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Dir(filepath.Dir(file))
}

// buildRelease runs `make release` for amd64 into dir and checks that it wrote the .deb,
// SHA256SUMS and both tarballs. It returns the .deb's path and the release's version.
func buildRelease(t *testing.T, ctx context.Context, dir string) (deb, version string) {
	t.Helper()
	root := repoRoot()
	desc, err := exec.CommandContext(ctx, "git", "-C", root, "describe", "--tags", "--always", "--dirty").Output()
	if err != nil {
		t.Fatalf("git describe: %v", err)
	}
	version = strings.TrimSpace(string(desc))
	start := time.Now()
	mk := exec.CommandContext(ctx, "make", "-C", root, "release", "RELEASE_ARCHES=amd64", "RELEASE_DIR="+dir)
	if out, err := mk.CombinedOutput(); err != nil {
		t.Fatalf("make release: %v\n%s", err, out)
	}
	t.Logf("make release RELEASE_ARCHES=amd64 (version %s) took %s", version, time.Since(start).Round(time.Second))
	deb = filepath.Join(dir, fmt.Sprintf("meshnet_%s_amd64.deb", release.DebVersion(version)))
	for _, f := range []string{deb, filepath.Join(dir, "SHA256SUMS"),
		filepath.Join(dir, "meshnet-plugin_"+version+"_linux_amd64.tar.gz"),
		filepath.Join(dir, "meshnet_"+version+"_linux_amd64.tar.gz")} {
		if _, err := os.Stat(f); err != nil {
			t.Fatalf("make release did not write %s: %v", filepath.Base(f), err)
		}
	}
	return deb, version
}

// TestReleaseDeb builds the release for amd64 as `make release` does, installs its .deb with
// dpkg -i on a host that never had meshnet, and checks what the package promises: the package
// version, meshctl --version equal to the release's version, the unit with Type=notify and
// ExecStart at the installed meshnetd, the env file 0600 in a 0700 folder. Simulated hosts do
// not run systemd, so meshnetd is then started as the unit would start it (its EnvironmentFile
// and ExecStart, NOTIFY_SOCKET pointing at the test): it sends READY=1 and meshctl reaches it.
// meshnetd --cleanup and dpkg -r end it.
func TestReleaseDeb(t *testing.T) {
	_, hosts := meshHosts(t)
	ctx := testCtx(t)
	h := hosts[0]
	dir := t.TempDir()
	deb, version := buildRelease(t, ctx, filepath.Join(dir, "release"))

	// systemd's side of sd_notify: a datagram socket the unit's NOTIFY_SOCKET names.
	sock := filepath.Join(dir, "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ready := make(chan string, 1)
	go func() {
		buf := make([]byte, 4096)
		var got []string
		_ = conn.SetReadDeadline(time.Now().Add(90 * time.Second))
		for {
			n, err := conn.Read(buf)
			if err != nil {
				ready <- strings.Join(got, " | ") + " (" + err.Error() + ")"
				return
			}
			got = append(got, strings.ReplaceAll(string(buf[:n]), "\n", " "))
			if strings.Contains(string(buf[:n]), "READY=1") {
				ready <- strings.Join(got, " | ")
				return
			}
		}
	}()
	done := filepath.Join(dir, "done")

	script := `
deb=$1; notify=$2; done=$3
test ! -e /usr/bin/meshnetd || { echo "meshnetd is already installed on the machine: not a fresh host"; exit 1; }
dpkg -i "$deb" >/dev/null
echo "version: $(dpkg-query -W -f '${Version}' meshnet)"
echo "meshctl: $(meshctl --version)"
unit=/usr/lib/systemd/system/meshnetd.service
echo "type: $(sed -n 's/^Type=//p' $unit)"
exec_start=$(sed -n 's/^ExecStart=//p' $unit)
echo "execstart: $exec_start"
envfile=$(sed -n 's/^EnvironmentFile=-\{0,1\}//p' $unit)
echo "modes: $(stat -c %a /etc/meshnet) $(stat -c %a "$envfile")"
(umask 077; meshctl keygen > /etc/meshnet/key)
# As systemd starts the unit: its environment file, its ExecStart, NOTIFY_SOCKET.
log=/tmp/meshnetd-deb.$$.log
env $(grep -v '^#' "$envfile" | grep =) NOTIFY_SOCKET="$notify" $exec_start > $log 2>&1 &
pid=$!
# meshnetd ends with this script whatever happens: it is in a mount namespace of its own,
# which the harness's teardown does not look in.
trap 'kill $pid 2>/dev/null || true; rm -f $log' EXIT
i=0; while [ ! -e "$done" ] && [ $i -lt 600 ]; do sleep 0.2; i=$((i+1)); done
echo "peers: $(meshctl -o json peers | tr -d '\n')"
kill -TERM $pid; wait $pid || true
echo "meshnetd's log:"; tail -n 5 $log
/usr/bin/meshnetd --cleanup 2>&1 | tail -n 1
dpkg -r meshnet >/dev/null
echo "removed: $(test -e /usr/bin/meshnetd && echo no || echo yes)"
`
	type result struct {
		out string
		err error
	}
	res := make(chan result, 1)
	go func() {
		out, err := inFreshRoot(ctx, h, script, deb, sock, done)
		res <- result{out, err}
	}()
	var notified string
	select {
	case notified = <-ready:
	case r := <-res:
		t.Fatalf("the script ended before meshnetd said READY=1: %v\n%s", r.err, r.out)
	}
	if err := os.WriteFile(done, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	r := <-res
	t.Logf("on %s:\n%s", h.Name(), r.out)
	if r.err != nil {
		t.Fatalf("installing and running the .deb on %s: %v", h.Name(), r.err)
	}
	t.Logf("sd_notify messages: %s", notified)
	if !strings.Contains(notified, "READY=1") {
		t.Errorf("meshnetd started as the unit starts it sent no READY=1 (got %q)", notified)
	}
	field := func(name string) string {
		for _, line := range strings.Split(r.out, "\n") {
			if v, ok := strings.CutPrefix(line, name+": "); ok {
				return v
			}
		}
		return ""
	}
	for name, want := range map[string]string{
		"version":   release.DebVersion(version),
		"type":      "notify",
		"execstart": "/usr/bin/meshnetd",
		"modes":     "700 600",
		"removed":   "yes",
	} {
		if got := field(name); got != want {
			t.Errorf("%s: %q, want %q", name, got, want)
		}
	}
	if got := field("meshctl"); !strings.HasPrefix(got, "meshctl "+version+" ") {
		t.Errorf("meshctl --version: %q, want meshctl %s", got, version)
	}
	peers, err := harness.ParsePeers(field("peers"))
	if err != nil || len(peers) != 1 || peers[0].Name != h.Name() {
		t.Errorf("meshctl peers against the packaged meshnetd: %v %+v", err, peers)
	}
}
