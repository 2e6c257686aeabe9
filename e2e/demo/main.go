// Command demo shows meshnet on three simulated Docker hosts on this machine: daemons find each
// other, one overlay network spans the hosts, containers ping and resolve each other across
// them. It needs root. Run it with `make demo` (or `go run ./e2e/demo` after `make build`).
//
// With -hold it keeps the hosts up until ^C and prints how to enter them.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/meshnet/meshnet/e2e/harness"
)

func main() {
	hosts := flag.Int("hosts", 3, "number of simulated hosts")
	binDir := flag.String("bin", "bin", "folder holding meshnetd and meshctl (built by `make build`); built into a temporary folder when missing")
	hold := flag.Bool("hold", false, "keep the hosts up until ^C")
	verbose := flag.Bool("v", false, "log the harness's progress")
	flag.Parse()
	if err := run(*hosts, *binDir, *hold, *verbose); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func run(n int, binDir string, hold, verbose bool) error {
	if os.Geteuid() != 0 {
		return errors.New("the demo needs root: it creates network namespaces and runs dockerd")
	}
	level := slog.LevelWarn
	if verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := harness.CleanupStale(log); err != nil {
		log.Warn("cleaning up an earlier run", "err", err)
	}

	bin, tmp, err := binaries(ctx, binDir)
	if tmp != "" {
		defer os.RemoveAll(tmp)
	}
	if err != nil {
		return err
	}
	step("starting %d simulated Docker hosts", n)
	c, err := harness.NewSimCluster(ctx, harness.SimOptions{Hosts: n, Logger: log})
	if err != nil {
		return err
	}
	defer func() {
		step("tearing down")
		if err := c.Close(); err != nil {
			fmt.Fprintln(os.Stderr, "teardown:", err)
		}
	}()
	c.Bin = bin

	step("meshnetd on every host (key from `meshctl keygen`, joining %s)", c.Hosts[0].Addr())
	for _, h := range c.Hosts {
		if _, err := c.StartMeshnet(ctx, h); err != nil {
			return err
		}
	}
	if err := waitPeers(ctx, c); err != nil {
		return err
	}
	show(ctx, c.Hosts[0], "meshctl", "peers")
	out, _ := c.Meshctl(ctx, c.Hosts[0], "peers")
	fmt.Print(indent(out))

	step("docker network create -d meshnet --ipam-driver meshnet --subnet 10.42.0.0/24 app  (on every host)")
	for _, h := range c.Hosts {
		if err := harness.CreateNetwork(ctx, h, "app", "10.42.0.0/24"); err != nil {
			return err
		}
	}
	step("two replicas of service api per host: docker run -d --network app --label meshnet.service=api ...")
	ips := map[string]string{}
	var names []string
	for _, h := range c.Hosts {
		for i := 1; i <= 2; i++ {
			name := fmt.Sprintf("api-%s-%d", h.Name(), i)
			if err := harness.RunContainer(ctx, h, name, "app", "--label", "meshnet.service=api"); err != nil {
				return err
			}
			ip, err := harness.ContainerIP(ctx, h, name, "app")
			if err != nil {
				return err
			}
			ips[name] = ip.String()
			names = append(names, name)
			fmt.Printf("    %s on %s: %s\n", name, h.Name(), ip)
		}
	}
	first := c.Hosts[0]
	step("a client on %s, no DNS setting: docker run -d --network app --name client ...", first.Name())
	if err := harness.RunContainer(ctx, first, "client", "app"); err != nil {
		return err
	}

	step("the client pings every replica, on every host, by address")
	for _, name := range names {
		pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err := harness.Poll(pctx, func() error {
			_, err := harness.Docker(pctx, first, "exec", "client", "ping", "-c1", "-W1", ips[name])
			return err
		})
		cancel()
		if err != nil {
			return fmt.Errorf("client on %s cannot reach %s (%s): %w", first.Name(), name, ips[name], err)
		}
		fmt.Printf("    %-12s %-15s reachable\n", name, ips[name])
	}
	last := names[len(names)-1]
	step("a container on another host, by its bare name, through the client's own resolver (127.0.0.11)")
	show(ctx, first, "docker", "exec", "client", "ping", "-c2", last)

	step("api: every replica cluster-wide, the order rotated per query (also as api.meshnet)")
	for range 3 {
		show(ctx, first, "docker", "exec", "client", "nslookup", "-type=a", "api")
	}
	// The demo fails loudly rather than print a partial answer.
	for _, qname := range []string{"api", "api.meshnet"} {
		answer, err := harness.Docker(ctx, first, "exec", "client", "nslookup", "-type=a", qname)
		if err != nil {
			return fmt.Errorf("resolving %s in the client: %w", qname, err)
		}
		for _, name := range names {
			if !strings.Contains(answer, ips[name]+"\n") {
				return fmt.Errorf("%s does not list %s (%s):\n%s", qname, name, ips[name], answer)
			}
		}
	}
	out, _ = c.Meshctl(ctx, first, "services")
	show(ctx, first, "meshctl", "services")
	fmt.Print(indent(out))

	if hold {
		step("hosts are up. Enter one with:")
		for _, h := range c.Hosts {
			fmt.Printf("    nsenter -t %d -n -u -m   # %s (%s)\n", h.(*harness.SimHost).AnchorPID(), h.Name(), h.Addr())
		}
		fmt.Println("    ^C tears everything down")
		<-ctx.Done()
	}
	return nil
}

// binaries returns meshnetd and meshctl from dir, or builds them into a temporary folder
// (returned, for removal) when dir lacks them.
func binaries(ctx context.Context, dir string) (harness.Binaries, string, error) {
	b := harness.Binaries{Meshnetd: filepath.Join(dir, "meshnetd"), Meshctl: filepath.Join(dir, "meshctl")}
	if abs, err := filepath.Abs(dir); err == nil {
		b = harness.Binaries{Meshnetd: filepath.Join(abs, "meshnetd"), Meshctl: filepath.Join(abs, "meshctl")}
	}
	if _, err := os.Stat(b.Meshnetd); err == nil {
		if _, err := os.Stat(b.Meshctl); err == nil {
			return b, "", nil
		}
	}
	tmp, err := harness.NewWorkDir("meshnet-demo-bin-") // a crashed demo's is removed by the next CleanupStale
	if err != nil {
		return b, "", err
	}
	step("building meshnetd and meshctl")
	b, err = harness.BuildBinaries(ctx, ".", tmp)
	return b, tmp, err
}

func waitPeers(ctx context.Context, c *harness.Cluster) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return harness.Poll(ctx, func() error {
		for _, h := range c.Hosts {
			peers, err := c.Peers(ctx, h)
			if err != nil {
				return err
			}
			alive := 0
			for _, p := range peers {
				if p.State == "alive" {
					alive++
				}
			}
			if alive != len(c.Hosts) {
				return fmt.Errorf("%s sees %d of %d hosts alive", h.Name(), alive, len(c.Hosts))
			}
		}
		return nil
	})
}

func step(format string, args ...any) { fmt.Printf("\n==> "+format+"\n", args...) }

func show(ctx context.Context, h harness.Host, args ...string) {
	fmt.Printf("  %s$ %s\n", h.Name(), strings.Join(args, " "))
	if args[0] == "meshctl" {
		return // printed by the caller through the cluster's binaries
	}
	out, err := h.Exec(ctx, args...)
	if err != nil {
		fmt.Printf("%s    (failed: %v)\n", indent(out), err)
		return
	}
	fmt.Print(indent(out))
}

func indent(s string) string {
	var b strings.Builder
	for _, l := range strings.Split(strings.TrimRight(s, "\n"), "\n") {
		b.WriteString("    " + l + "\n")
	}
	return b.String()
}
