package control

import (
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

type fakeBackend struct{ removed []string }

func (f *fakeBackend) Peers() []Peer {
	return []Peer{{Name: "a", Address: "198.18.0.11", State: "alive", Self: true}, {Name: "b", Address: "198.18.0.12", State: "dead"}}
}
func (f *fakeBackend) Status() Status        { return Status{Node: "a"} }
func (f *fakeBackend) Networks() []Network   { return nil }
func (f *fakeBackend) Endpoints() []Endpoint { return nil }
func (f *fakeBackend) Services() []Service   { return nil }
func (f *fakeBackend) Version() Version      { return Version{Version: "test"} }
func (f *fakeBackend) Lookup(name, qtype string) (Lookup, error) {
	return Lookup{Name: name, Type: qtype, Rcode: "NOERROR"}, nil
}
func (f *fakeBackend) RemovePeer(_ context.Context, req RemovePeerRequest) error {
	node := req.Node
	if node == "a" && !req.Force {
		return UserError{errors.New("node a is alive")}
	}
	if node == "boom" {
		panic("boom")
	}
	f.removed = append(f.removed, node)
	return nil
}

func serve(t *testing.T, b Backend) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "run", "meshnet.sock")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, sock, NewHandler(b, nil)) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	deadline := time.Now().Add(5 * time.Second)
	for {
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			return sock
		}
		if time.Now().After(deadline) {
			t.Fatal("control socket did not come up")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestRoundTrip(t *testing.T) {
	b := &fakeBackend{}
	sock := serve(t, b)
	fi, err := os.Stat(sock)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode %v, want 0600 (root only)", fi.Mode().Perm())
	}
	c := NewClient(sock)
	ctx := context.Background()
	peers, err := c.Peers(ctx)
	if err != nil || len(peers) != 2 || !peers[0].Self || peers[1].State != "dead" {
		t.Fatalf("peers %+v, %v", peers, err)
	}
	if err := c.RemovePeer(ctx, "b", false); err != nil || len(b.removed) != 1 {
		t.Fatalf("rmpeer: %v %v", err, b.removed)
	}
	if err := c.RemovePeer(ctx, "a", false); err == nil || !strings.Contains(err.Error(), "alive") {
		t.Fatalf("rmpeer of a live node should fail with the backend's reason, got %v", err)
	}
	// --force reaches the backend.
	if err := c.RemovePeer(ctx, "a", true); err != nil || len(b.removed) != 2 {
		t.Fatalf("rmpeer --force: %v %v", err, b.removed)
	}
	// A panicking backend is an error reply, and the server keeps serving.
	if err := c.RemovePeer(ctx, "boom", false); err == nil || !strings.Contains(err.Error(), "internal error") {
		t.Fatalf("panic: %v", err)
	}
	if _, err := c.Status(ctx); err != nil {
		t.Fatalf("server stopped serving after a panic: %v", err)
	}
	l, err := c.Lookup(ctx, "api.meshnet", "A")
	if err != nil || l.Name != "api.meshnet" {
		t.Fatalf("lookup %+v %v", l, err)
	}
}

func TestMalformedRequests(t *testing.T) {
	sock := serve(t, &fakeBackend{})
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return net.Dial("unix", sock)
	}}}
	cases := []struct {
		method, path, body string
		want               int
	}{
		{"POST", "/v1/rmpeer", "{not json", 400},
		{"POST", "/v1/rmpeer", `{"node":""}`, 400},
		{"POST", "/v1/rmpeer", `{"node":"x","extra":1}`, 400},
		{"POST", "/v1/rmpeer", `{"node":"` + strings.Repeat("x", 100<<10) + `"}`, 400},
		{"GET", "/v1/lookup", "", 400},
		{"GET", "/v1/nope", "", 404},
		{"DELETE", "/v1/peers", "", 404},
	}
	for _, tc := range cases {
		req, _ := http.NewRequest(tc.method, "http://x"+tc.path, strings.NewReader(tc.body))
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", tc.method, tc.path, err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want && !(tc.want == 404 && resp.StatusCode == 405) {
			t.Errorf("%s %s: status %d, want %d", tc.method, tc.path, resp.StatusCode, tc.want)
		}
	}
}

func TestClientExplainsMissingDaemon(t *testing.T) {
	c := NewClient(filepath.Join(t.TempDir(), "none.sock"))
	_, err := c.Peers(context.Background())
	if err == nil || !strings.Contains(err.Error(), "is meshnetd running") {
		t.Fatalf("want a hint that meshnetd is not running, got %v", err)
	}
}

func TestListenRefusesLiveSocket(t *testing.T) {
	sock := serve(t, &fakeBackend{})
	if _, err := ListenUnix(sock); err == nil || !strings.Contains(err.Error(), "already running") {
		t.Fatalf("a second daemon on the same socket must be refused, got %v", err)
	}
}
