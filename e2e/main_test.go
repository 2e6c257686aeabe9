package e2e

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/meshnet/meshnet/e2e/harness"
)

// The suite shares one cluster between the tests that run meshnet (engines take seconds to
// start); each test resets the hosts when it ends. Tests that check the harness itself make
// clusters of their own.
var suite struct {
	workDir string
	log     *slog.Logger
	keep    bool

	binOnce sync.Once
	bin     harness.Binaries
	binErr  error

	clusterOnce sync.Once
	cluster     *harness.Cluster
	clusterErr  error

	mu       sync.Mutex
	clusters []*harness.Cluster // every cluster made, closed on exit or on a signal
}

// sharedHosts is the size of the shared simulated cluster: three meshnet hosts and one
// outsider (a host whose daemon has the wrong key).
const sharedHosts = 4

func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(runSuite(m))
}

func runSuite(m *testing.M) int {
	level := slog.LevelWarn
	if os.Getenv("MESHNET_E2E_DEBUG") != "" {
		level = slog.LevelDebug
	} else if testing.Verbose() {
		level = slog.LevelInfo
	}
	suite.log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	suite.keep = os.Getenv("MESHNET_E2E_KEEP") != ""
	if os.Geteuid() == 0 {
		if err := harness.CleanupStale(suite.log); err != nil {
			fmt.Fprintf(os.Stderr, "e2e: cleaning up after an earlier run: %v\n", err)
		}
	}
	var err error
	if suite.workDir, err = harness.NewWorkDir("meshnet-e2e-"); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: %v\n", err)
		return 1
	}
	// A ^C or a kill from CI still tears everything down.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		s := <-sigs
		fmt.Fprintf(os.Stderr, "e2e: %v: tearing down\n", s)
		closeAll()
		os.Exit(2)
	}()
	code := m.Run()
	if err := closeAll(); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: teardown: %v\n", err)
		code = 1
	}
	if os.Geteuid() == 0 {
		if links, _ := harness.LeftoverUnderlayLinks(); len(links) > 0 {
			fmt.Fprintf(os.Stderr, "e2e: underlay links left behind: %v\n", links)
			code = 1
		}
		if left := harness.LeftoverVMs(); len(left) > 0 {
			fmt.Fprintf(os.Stderr, "e2e: VM run left behind: %v\n", left)
			code = 1
		}
	}
	if suite.keep {
		harness.KeepWorkDir(suite.workDir)
		fmt.Fprintf(os.Stderr, "e2e: kept %s\n", suite.workDir)
	} else {
		os.RemoveAll(suite.workDir)
	}
	return code
}

func closeAll() error {
	suite.mu.Lock()
	cs := suite.clusters
	suite.clusters = nil
	suite.mu.Unlock()
	var first error
	for _, c := range cs {
		if err := c.Close(); err != nil && first == nil {
			first = err
		}
	}
	return first
}

func track(c *harness.Cluster) {
	suite.mu.Lock()
	defer suite.mu.Unlock()
	suite.clusters = append(suite.clusters, c)
}

// requireRoot fails the test when it cannot run. The suite must never pass by skipping:
// only MESHNET_E2E_SKIP=1 skips it, on purpose.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Getenv("MESHNET_E2E_SKIP") == "1" {
		t.Skip("MESHNET_E2E_SKIP=1: the e2e suite is skipped on purpose")
	}
	if os.Geteuid() != 0 {
		t.Fatal("the e2e suite needs root: it creates network namespaces, bridges and runs dockerd. " +
			"Run it as root (`sudo -E go test -v ./e2e/`), or set MESHNET_E2E_SKIP=1 to skip it on purpose.")
	}
}

// remoteHosts reports whether the hosts are reached over SSH: machines given in
// MESHNET_E2E_HOSTS, or VMs the harness boots (MESHNET_E2E_VM).
func remoteHosts() bool { return os.Getenv("MESHNET_E2E_HOSTS") != "" || vmHosts() }

// vmHosts reports whether the hosts are VMs the harness boots (MESHNET_E2E_VM=SUITE).
func vmHosts() bool { return os.Getenv("MESHNET_E2E_VM") != "" }

// testCtx is a context that ends a little before the test binary's deadline, so a hung
// command fails the test with its output instead of a panic without teardown.
func testCtx(t *testing.T) context.Context {
	ctx := context.Background()
	if d, ok := t.Deadline(); ok {
		margin := time.Until(d) / 4
		if margin > 2*time.Minute {
			margin = 2 * time.Minute
		}
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, d.Add(-margin))
		t.Cleanup(cancel)
	}
	return ctx
}

// binaries builds meshnetd and meshctl once per run.
func binaries(t *testing.T) harness.Binaries {
	t.Helper()
	suite.binOnce.Do(func() {
		_, file, _, _ := runtime.Caller(0)
		repo := filepath.Dir(filepath.Dir(file))
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		start := time.Now()
		suite.bin, suite.binErr = harness.BuildBinaries(ctx, repo, filepath.Join(suite.workDir, "bin"))
		if suite.binErr == nil {
			suite.log.Info("built meshnetd and meshctl", "took", time.Since(start).Round(time.Millisecond))
		}
	})
	if suite.binErr != nil {
		t.Fatal(suite.binErr)
	}
	return suite.bin
}

// sharedCluster returns the suite's cluster (made on first use) with meshnet's binaries, and
// registers the end-of-test cleanup: dump every host's state if the test failed, then reset.
func sharedCluster(t *testing.T) *harness.Cluster {
	t.Helper()
	if !remoteHosts() {
		requireRoot(t)
	}
	bin := binaries(t)
	suite.clusterOnce.Do(func() {
		// VMs may build their image and boot under emulation first.
		up := 5 * time.Minute
		if vmHosts() {
			up = 20 * time.Minute
		}
		ctx, cancel := context.WithTimeout(context.Background(), up)
		defer cancel()
		start := time.Now()
		c, err := harness.FromEnv(ctx, harness.EnvOptions{
			Sim: harness.SimOptions{Hosts: sharedHosts, WorkDir: filepath.Join(suite.workDir, "shared"), Keep: suite.keep, Logger: suite.log},
			SSH: harness.SSHOptions{Logger: suite.log},
		})
		if err != nil {
			suite.clusterErr = fmt.Errorf("making the shared cluster: %w", err)
			return
		}
		track(c)
		c.Bin = bin
		suite.cluster = c
		suite.log.Info("shared cluster up", "backend", c.Backend, "hosts", len(c.Hosts), "took", time.Since(start).Round(time.Millisecond))
	})
	if suite.clusterErr != nil {
		t.Fatal(suite.clusterErr)
	}
	c := suite.cluster
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		if err := c.Reset(ctx); err != nil {
			t.Errorf("resetting the hosts after the test: %v", err)
		}
	})
	c.DumpOnFailure(t) // registered last, so it runs before the reset
	return c
}

// meshHosts returns the shared cluster and its first three hosts, the ones that run meshnet.
func meshHosts(t *testing.T) (*harness.Cluster, []harness.Host) {
	t.Helper()
	c := sharedCluster(t)
	if len(c.Hosts) < 3 {
		t.Fatalf("the suite needs at least 3 hosts, the cluster has %d", len(c.Hosts))
	}
	return c, c.Hosts[:3]
}

// startMesh starts meshnetd on hosts, one after the other (the first is the join target),
// each with flags.
func startMesh(t *testing.T, ctx context.Context, c *harness.Cluster, hosts []harness.Host, flags ...string) []*harness.Meshnet {
	t.Helper()
	var ds []*harness.Meshnet
	for _, h := range hosts {
		d, err := c.StartMeshnet(ctx, h, flags...)
		if err != nil {
			t.Fatalf("starting meshnetd on %s: %v", h.Name(), err)
		}
		ds = append(ds, d)
	}
	return ds
}
