package harness

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// The image cache key depends on the suite (and on the embedded script and package list),
// and is stable: the same inputs must find the same cached image.
func TestVMImageKey(t *testing.T) {
	a, err := vmImageKey("bookworm")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := vmImageKey("bookworm")
	c, _ := vmImageKey("sid")
	if a != b || a == c || len(a) != 16 {
		t.Errorf("keys: bookworm %q and %q, sid %q; want equal, different, 16 hex digits", a, b, c)
	}
}

func TestGuestStage(t *testing.T) {
	dir := t.TempDir()
	g := &vmGuest{console: filepath.Join(dir, "console")}
	if got := g.stage(); got != "firmware" {
		t.Errorf("no console yet: stage %q, want firmware", got)
	}
	for _, step := range []struct{ line, want string }{
		{"[    0.000000] Linux version 6.1.0-57-cloud-amd64", "kernel"},
		{"[    2.1] Run /init as init process", "initramfs"},
		{"[   20.0] systemd[1]: Detected virtualization qemu.", "systemd"},
		{"MESHNET-GUEST: vm1 network up at 198.18.0.11/24", "network up"},
		{"[  OK  ] Started ssh.service - OpenBSD Secure Shell server.", "sshd"},
		{"MESHNET-GUEST: docker ready", "engine ready"},
	} {
		f, err := os.OpenFile(g.console, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		f.WriteString(step.line + "\n")
		f.Close()
		if got := g.stage(); got != step.want {
			t.Errorf("after %q: stage %q, want %q", step.line, got, step.want)
		}
	}
}

func TestVMGuestAddrs(t *testing.T) {
	if got := vmGuestAddr(3).String(); got != "198.18.0.13" {
		t.Errorf("guest 3 at %s, want 198.18.0.13", got)
	}
	if got := vmBridgeAddr().String(); got != "198.18.0.1" {
		t.Errorf("bridge at %s, want 198.18.0.1", got)
	}
}

func TestLinePrefixer(t *testing.T) {
	var out bytes.Buffer
	w := prefixWriter(&out, "vm: image: ")
	w.Write([]byte("I: one\nI: t"))
	w.Write([]byte("wo\npartial"))
	if got, want := out.String(), "vm: image: I: one\nvm: image: I: two\n"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}
