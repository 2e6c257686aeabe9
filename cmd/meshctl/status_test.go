package main

import (
	"bytes"
	"encoding/json"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meshnet/meshnet/control"
)

// statusServer serves /v1/status with st on a unix socket, as meshnetd's
// control API would, and returns the socket's path.
func statusServer(t *testing.T, st control.Status) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ctl.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/status" {
			http.NotFound(w, r)
			return
		}
		_ = json.NewEncoder(w).Encode(st)
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return path
}

// meshctl status exits 1 when it lists problems, in both output formats,
// and 0 when it lists none: checks and scripts act on the exit status.
func TestStatusExitsOneWithProblems(t *testing.T) {
	healthy := statusServer(t, control.Status{Node: "h1"})
	sick := statusServer(t, control.Status{Node: "h1", Problems: []string{"dataplane: boom", "no peer reached yet"}})
	for _, c := range []struct {
		sock string
		args []string
		code int
	}{
		{healthy, []string{"status"}, 0},
		{healthy, []string{"-o", "json", "status"}, 0},
		{sick, []string{"status"}, 1},
		{sick, []string{"-o", "json", "status"}, 1},
	} {
		var out, errb bytes.Buffer
		code := run(append([]string{"--socket", c.sock}, c.args...), &out, &errb)
		if code != c.code {
			t.Errorf("%v: exit %d, want %d (stderr %q)", c.args, code, c.code, errb.String())
		}
		if out.Len() == 0 {
			t.Errorf("%v: printed no status", c.args)
		}
		if errb.Len() > 0 {
			// Scripts read `-o json status 2>&1` as one document.
			t.Errorf("%v: stderr %q, want nothing (the status lists the problems)", c.args, errb.String())
		}
	}
}

func TestVersionFlag(t *testing.T) {
	var out, errb bytes.Buffer
	// No daemon is asked: --version works where meshnetd is not running.
	if code := run([]string{"--socket", filepath.Join(t.TempDir(), "none.sock"), "--version"}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	if !strings.HasPrefix(out.String(), "meshctl ") || strings.TrimSpace(out.String()) == "meshctl" {
		t.Fatalf("--version printed %q", out.String())
	}
}
