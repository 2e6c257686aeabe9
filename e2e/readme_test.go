package e2e

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/meshnet/meshnet/e2e/harness"
)

// TestReadmeRealHostSteps pastes the README's "Running meshnet on real hosts" steps, as
// written, into a host that never had meshnet (no /etc/meshnet, nothing in /usr/local/bin):
// they build, install, make the key folder 0700 and the key 0600, and the daemon they start
// answers meshctl.
func TestReadmeRealHostSteps(t *testing.T) {
	_, hosts := meshHosts(t)
	ctx := testCtx(t)
	h := hosts[0]
	root := repoRoot()
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(readme), "## Running meshnet on real hosts\n")
	if !ok {
		t.Fatal("README.md has no section \"Running meshnet on real hosts\"")
	}
	_, rest, ok = strings.Cut(rest, "```sh\n")
	block, _, ok2 := strings.Cut(rest, "```\n")
	if !ok || !ok2 {
		t.Fatal("the section has no sh block")
	}
	t.Logf("the README's steps:\n%s", block)
	if !strings.Contains(block, "meshnetd ") {
		t.Fatal("the steps do not start meshnetd")
	}
	script := `
cd "$1"
test ! -e /usr/local/bin/meshnetd && test ! -e /etc/meshnet || { echo "not a fresh host"; exit 1; }
# The steps as written, in a shell of their own; the last one runs meshnetd.
log=/tmp/meshnet-readme.$$.log
setsid sh -ec "$2" > $log 2>&1 &
steps=$!
# Whatever happens, the steps' processes (meshnetd) end with this script: they are in a mount
# namespace of their own, which the harness's teardown does not look in.
trap 'env kill -TERM -- -$steps 2>/dev/null || true; rm -f $log' EXIT
i=0
until meshctl peers >/dev/null 2>&1; do
	if ! kill -0 $steps 2>/dev/null || [ $i -ge 600 ]; then
		echo "the steps ended or meshnetd never answered:"; cat $log; exit 1
	fi
	sleep 0.2; i=$((i+1))
done
echo "modes: $(stat -c %a /etc/meshnet) $(stat -c %a /etc/meshnet/key)"
echo "peers: $(meshctl -o json peers | tr -d '\n')"
env kill -TERM -- -$steps; wait $steps || true
/usr/local/bin/meshnetd --cleanup 2>&1 | tail -n 1
`
	out, err := inFreshRoot(ctx, h, script, root, block)
	t.Logf("on %s:\n%s", h.Name(), out)
	if err != nil {
		t.Fatalf("the README's steps on %s: %v", h.Name(), err)
	}
	if !strings.Contains(out, "modes: 700 600\n") {
		t.Errorf("want /etc/meshnet mode 700 and the key 600")
	}
	_, line, _ := strings.Cut(out, "peers: ")
	line, _, _ = strings.Cut(line, "\n")
	if peers, err := harness.ParsePeers(line); err != nil || len(peers) == 0 || !slices.ContainsFunc(peers, func(p harness.Peer) bool { return p.Name == h.Name() && p.Self }) {
		t.Errorf("meshctl peers from the daemon the steps started does not list %s as self: %v %+v", h.Name(), err, peers)
	}
}
