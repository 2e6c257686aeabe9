package sdnotify

import (
	"net"
	"path/filepath"
	"testing"
)

func TestNotify(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	if sent, err := Notify(Ready); sent || err != nil {
		t.Fatalf("without NOTIFY_SOCKET: sent %v, %v", sent, err)
	}

	path := filepath.Join(t.TempDir(), "notify.sock")
	ln, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	t.Setenv("NOTIFY_SOCKET", path)
	for _, msg := range []string{Ready, Stopping} {
		if sent, err := Notify(msg); !sent || err != nil {
			t.Fatalf("%s: sent %v, %v", msg, sent, err)
		}
		buf := make([]byte, 64)
		n, err := ln.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		if got := string(buf[:n]); got != msg {
			t.Errorf("systemd got %q, want %q", got, msg)
		}
	}

	t.Setenv("NOTIFY_SOCKET", filepath.Join(t.TempDir(), "gone.sock"))
	if _, err := Notify(Ready); err == nil {
		t.Error("a socket that is not there should be an error")
	}
}
