package discover

import (
	"context"
	"errors"
	"fmt"
	"log"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeProvider answers queries from a table and records the arguments.
type fakeProvider struct {
	mu    sync.Mutex
	calls []map[string]string
	addrs []string
	err   error
	block chan struct{} // if set, Addrs waits on it
}

func (p *fakeProvider) Addrs(args map[string]string, l *log.Logger) ([]string, error) {
	p.mu.Lock()
	p.calls = append(p.calls, args)
	addrs, err, block := p.addrs, p.err, p.block
	p.mu.Unlock()
	l.Printf("[DEBUG] discover-fake: %d instances", len(addrs))
	if block != nil {
		<-block
	}
	return addrs, err
}

func (p *fakeProvider) Help() string { return "fake: tag_key, tag_value" }

// fakeHosts is a LookupHost over a table whose answers the test changes.
type fakeHosts struct {
	mu      sync.Mutex
	answers map[string][]string
	lookups int
}

func (f *fakeHosts) lookup(ctx context.Context, host string) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lookups++
	a, ok := f.answers[host]
	if !ok {
		return nil, fmt.Errorf("lookup %s: no such host", host)
	}
	return a, nil
}

func (f *fakeHosts) set(host string, addrs ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.answers[host] = addrs
}

func testResolver(p Provider, hosts *fakeHosts) *Resolver {
	return &Resolver{Providers: map[string]Provider{"fake": p}, LookupHost: hosts.lookup, Port: 7946}
}

func TestSeedsForms(t *testing.T) {
	p := &fakeProvider{addrs: []string{"10.0.1.5", "10.0.1.6"}}
	hosts := &fakeHosts{answers: map[string][]string{"seeds.example": {"198.18.0.11", "198.18.0.12"}}}
	r := testResolver(p, hosts)
	for _, tc := range []struct {
		entry string
		want  []string
	}{
		{"198.18.0.11", []string{"198.18.0.11:7946"}},
		{"198.18.0.11:8000", []string{"198.18.0.11:8000"}},
		{"fd00::1", []string{"[fd00::1]:7946"}},
		{"[fd00::1]:8000", []string{"[fd00::1]:8000"}},
		{"seeds.example", []string{"198.18.0.11:7946", "198.18.0.12:7946"}},
		{"seeds.example:8000", []string{"198.18.0.11:8000", "198.18.0.12:8000"}},
		{"provider=fake tag_key=meshnet tag_value=prod", []string{"10.0.1.5:7946", "10.0.1.6:7946"}},
		{"provider=fake tag_key=meshnet port=8000", []string{"10.0.1.5:8000", "10.0.1.6:8000"}},
	} {
		got, err := r.Seeds(context.Background(), []string{tc.entry})
		if err != nil {
			t.Errorf("%q: %v", tc.entry, err)
			continue
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("%q: got %v, want %v", tc.entry, got, tc.want)
		}
	}
	// The provider got the whole query, parsed.
	last := p.calls[len(p.calls)-2]
	if last["provider"] != "fake" || last["tag_key"] != "meshnet" || last["tag_value"] != "prod" {
		t.Errorf("provider got %v", last)
	}
}

// Names and queries are expanded again on every call: the addresses behind
// them change.
func TestSeedsAreNotCached(t *testing.T) {
	p := &fakeProvider{addrs: []string{"10.0.1.5"}}
	hosts := &fakeHosts{answers: map[string][]string{"seeds.example": {"198.18.0.11"}}}
	r := testResolver(p, hosts)
	join := []string{"seeds.example", "provider=fake tag_key=k tag_value=v"}
	first, err := r.Seeds(context.Background(), join)
	if err != nil {
		t.Fatal(err)
	}
	hosts.set("seeds.example", "198.18.0.21", "198.18.0.22")
	p.mu.Lock()
	p.addrs = []string{"10.0.1.9"}
	p.mu.Unlock()
	second, err := r.Seeds(context.Background(), join)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"198.18.0.11:7946", "10.0.1.5:7946"}; !slices.Equal(first, want) {
		t.Fatalf("first call: %v, want %v", first, want)
	}
	if want := []string{"198.18.0.21:7946", "198.18.0.22:7946", "10.0.1.9:7946"}; !slices.Equal(second, want) {
		t.Fatalf("second call: %v, want %v", second, want)
	}
	if hosts.lookups != 2 || len(p.calls) != 2 {
		t.Fatalf("%d lookups and %d queries, want 2 of each", hosts.lookups, len(p.calls))
	}
}

// One entry that fails does not hide the others, and the error names it.
func TestSeedsPartialFailure(t *testing.T) {
	p := &fakeProvider{err: errors.New("AccessDenied: ec2:DescribeInstances")}
	hosts := &fakeHosts{answers: map[string][]string{"seeds.example": {"198.18.0.11", "198.18.0.11"}}}
	r := testResolver(p, hosts)
	got, err := r.Seeds(context.Background(), []string{"gone.example", "provider=fake tag_key=k", "seeds.example", "198.18.0.11"})
	if want := []string{"198.18.0.11:7946"}; !slices.Equal(got, want) {
		t.Fatalf("got %v, want %v (duplicates dropped)", got, want)
	}
	if err == nil || !strings.Contains(err.Error(), "gone.example") || !strings.Contains(err.Error(), "AccessDenied") {
		t.Fatalf("error should name both failed entries: %v", err)
	}
}

// A provider that hangs is abandoned when the context ends.
func TestSeedsQueryHonoursContext(t *testing.T) {
	p := &fakeProvider{block: make(chan struct{})}
	defer close(p.block)
	r := testResolver(p, &fakeHosts{answers: map[string][]string{}})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := r.Seeds(ctx, []string{"provider=fake tag_key=k"})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want the context's deadline", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("took %s", d)
	}
}

func TestCheck(t *testing.T) {
	r := New(7946, nil)
	for _, ok := range []string{"198.18.0.11", "198.18.0.11:7946", "seeds.example", "seeds.example:8000", "[fd00::1]:7946",
		"provider=aws tag_key=meshnet tag_value=prod", "provider=gce tag_value=meshnet"} {
		if err := r.Check(ok); err != nil {
			t.Errorf("Check(%q): %v", ok, err)
		}
	}
	for entry, want := range map[string]string{
		"provider=azure tag_name=x":   `unknown provider "azure" (known: aws, gce)`,
		"provider=aws tag_key=\"open": "unterminated quote",
		"tag_key=x provider=":         "no provider",
		"seeds.example:http":          "not a number",
		"seeds.example:0":             "want host",
		"a:b:c":                       "too many colons",
	} {
		err := r.Check(entry)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Check(%q) = %v, want an error with %q", entry, err, want)
		}
	}
}

// The built-in providers are go-discover's AWS and GCE providers.
func TestBuiltin(t *testing.T) {
	b := Builtin()
	if len(b) != 2 {
		t.Fatalf("%d built-in providers, want aws and gce", len(b))
	}
	for name, key := range map[string]string{"aws": "tag_key", "gce": "tag_value"} {
		p, ok := b[name]
		if !ok {
			t.Fatalf("no %s provider", name)
		}
		if !strings.Contains(p.Help(), key) {
			t.Errorf("%s provider's help does not mention %s:\n%s", name, key, p.Help())
		}
		// A provider refuses a query meant for another, without a network call.
		if _, err := p.Addrs(map[string]string{"provider": "other"}, nil); err == nil || !strings.Contains(err.Error(), "invalid provider") {
			t.Errorf("%s provider accepted provider=other: %v", name, err)
		}
	}
}
