package control

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

// Slow clients (slowloris) cannot hold the control socket: one that never
// finishes its headers, one that trickles its body and one that idles are
// cut off, and meshctl is served meanwhile.
func TestServeCutsOffSlowClients(t *testing.T) {
	saved := timeouts
	timeouts.readHeader, timeouts.read, timeouts.idle = 300*time.Millisecond, 600*time.Millisecond, 600*time.Millisecond
	t.Cleanup(func() { timeouts = saved })
	sock := serve(t, &fakeBackend{})

	dial := func() net.Conn {
		c, err := net.Dial("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	var slow []net.Conn
	for i := 0; i < 50; i++ {
		c := dial()
		io.WriteString(c, "GET /v1/peers HTTP/1.1\r\nHost: x\r\n")
		slow = append(slow, c)
	}
	trickle := dial()
	io.WriteString(trickle, "POST /v1/rmpeer HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{")
	idle := dial()
	io.WriteString(idle, "GET /v1/version HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp, err := http.ReadResponse(bufio.NewReader(idle), nil); err != nil || resp.StatusCode != 200 {
		t.Fatalf("the idle client's call: %v", err)
	}
	if _, err := NewClient(sock).Peers(t.Context()); err != nil {
		t.Fatalf("meshctl while slow clients hold connections: %v", err)
	}
	closed := func(c net.Conn) bool {
		c.SetReadDeadline(time.Now().Add(3 * time.Second))
		_, err := io.Copy(io.Discard, c)
		return err == nil
	}
	for i, c := range slow {
		if !closed(c) {
			t.Fatalf("slow header client %d still connected after the header timeout", i)
		}
	}
	if !closed(trickle) {
		t.Fatal("a client trickling its body still connected after the read timeout")
	}
	if !closed(idle) {
		t.Fatal("an idle keep-alive connection still open after the idle timeout")
	}
}
