package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Tools are the binaries a run builds: netprobe (this package's measuring tool) and a
// standalone wireguard-go of the module version go.mod names.
type Tools struct {
	Netprobe string
	// WireGuardGo is empty when it could not be built; WireGuardGoErr says why.
	WireGuardGo    string
	WireGuardGoErr error
	// WireGuardVersion is the golang.zx2c4.com/wireguard version it was built from.
	WireGuardVersion string
}

// wireguardModule is the module meshnet's WireGuard dataplane embeds; its root package is
// the wireguard-go command, so building it from meshnet's module graph gives the very same
// version of the code as the peer.
const wireguardModule = "golang.zx2c4.com/wireguard"

// BuildTools builds the tools statically into dir.
func BuildTools(ctx context.Context, repo, dir string) (Tools, error) {
	var t Tools
	t.Netprobe = filepath.Join(dir, "netprobe")
	if err := goBuild(ctx, repo, t.Netprobe, "./bench/cmd/netprobe"); err != nil {
		return t, err
	}
	v, err := goOut(ctx, repo, "list", "-m", "-f", "{{.Version}}", wireguardModule)
	if err != nil {
		t.WireGuardGoErr = fmt.Errorf("%s is not in go.mod yet (the WireGuard dataplane brings it): %w", wireguardModule, err)
		return t, nil
	}
	t.WireGuardVersion = v
	out := filepath.Join(dir, "wireguard-go")
	if err := goBuild(ctx, repo, out, wireguardModule); err != nil {
		t.WireGuardGoErr = fmt.Errorf("building wireguard-go %s from go.mod: %w", v, err)
		return t, nil
	}
	t.WireGuardGo = out
	return t, nil
}

func goBin() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return "/usr/local/go/bin/go"
}

func goBuild(ctx context.Context, repo, out, pkg string) error {
	cmd := exec.CommandContext(ctx, goBin(), "build", "-trimpath", "-o", out, pkg)
	cmd.Dir = repo
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %w\n%s", pkg, err, strings.TrimSpace(string(b)))
	}
	return nil
}

func goOut(ctx context.Context, repo string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, goBin(), args...)
	cmd.Dir = repo
	var stderr strings.Builder
	cmd.Stderr = &stderr
	b, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("go %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return "", errors.New("empty answer from go " + strings.Join(args, " "))
	}
	return s, nil
}
