package metrics

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"
)

// The alert rules in deploy/prometheus pass `promtool check rules` and
// their own `promtool test rules` (each alert fires on trouble after its
// `for`, and not on healthy series).
func TestAlertRules(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatal("promtool not found: install Debian's prometheus package (apt-get install prometheus; scripts/install-deps.sh does)")
	}
	dir := filepath.Join("..", "deploy", "prometheus")
	for _, args := range [][]string{{"check", "rules", "meshnet-alerts.yml"}, {"test", "rules", "meshnet-alerts.test.yml"}} {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		cmd := exec.CommandContext(ctx, promtool, args...)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		cancel()
		if err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

var metricName = regexp.MustCompile(`\bmeshnet_[a-z_]+[a-z]`)

// Every metric the alert rules and the Grafana dashboard query is one
// meshnetd exports and docs/metrics.md documents: a renamed metric breaks
// this test, not an operator's dashboard.
func TestDeployUsesExportedNames(t *testing.T) {
	st := testState(t)
	m := New(func() State { return st }, func(context.Context) []string { return nil })
	m.Events().Applied(3*time.Millisecond, nil)
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	scrape := get(t, srv.URL+"/metrics", http.StatusOK)
	doc, err := os.ReadFile(filepath.Join("..", "docs", "metrics.md"))
	if err != nil {
		t.Fatal(err)
	}
	used := map[string][]string{}
	for _, f := range []string{"deploy/prometheus/meshnet-alerts.yml", "deploy/grafana/meshnet-dashboard.json"} {
		b, err := os.ReadFile(filepath.Join("..", f))
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range metricName.FindAllString(string(b), -1) {
			n = strings.TrimSuffix(n, "_bucket") // a histogram's series
			used[n] = append(used[n], f)
		}
	}
	if len(used) < 10 {
		t.Fatalf("only %d metric names found in deploy/: %v", len(used), used)
	}
	names := make([]string, 0, len(used))
	for n := range used {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if !strings.Contains(scrape, "\n# TYPE "+n+" ") {
			t.Errorf("%s (used in %s) is not in a scrape of meshnetd's metrics", n, strings.Join(used[n], ", "))
		}
		if !strings.Contains(string(doc), "`"+n+"`") {
			t.Errorf("%s (used in %s) is not documented in docs/metrics.md", n, strings.Join(used[n], ", "))
		}
	}
}
