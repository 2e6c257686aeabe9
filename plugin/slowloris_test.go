package plugin

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// shortTimeouts shortens the server's timeouts for one test.
func shortTimeouts(t *testing.T) {
	saved := []time.Duration{readHeaderTimeout, readTimeout, writeTimeout, idleTimeout}
	readHeaderTimeout, readTimeout, writeTimeout, idleTimeout = 300*time.Millisecond, 600*time.Millisecond, 2*time.Second, 600*time.Millisecond
	t.Cleanup(func() {
		readHeaderTimeout, readTimeout, writeTimeout, idleTimeout = saved[0], saved[1], saved[2], saved[3]
	})
}

// closedWithin reports whether the server closes conn within d (reading
// whatever it sends first, such as a 408 reply).
func closedWithin(conn net.Conn, d time.Duration) bool {
	conn.SetReadDeadline(time.Now().Add(d))
	_, err := io.Copy(io.Discard, conn)
	return err == nil // EOF: closed by the server; a timeout is an error
}

// Slow clients (slowloris) cannot hold the plugin socket: a client that
// never finishes its headers, one that trickles its body and one that
// idles are cut off, and the engine's calls are served meanwhile.
func TestServeCutsOffSlowClients(t *testing.T) {
	shortTimeouts(t)
	path := filepath.Join(t.TempDir(), "meshnet.sock")
	_, h := newTestHandler()
	startServe(t, path, h)

	dial := func() net.Conn {
		c, err := net.Dial("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	var slow []net.Conn
	for i := 0; i < 50; i++ { // half-sent headers
		c := dial()
		io.WriteString(c, "POST /Plugin.Activate HTTP/1.1\r\nHost: x\r\n")
		slow = append(slow, c)
	}
	trickle := dial() // complete headers, a body that never comes
	io.WriteString(trickle, "POST /NetworkDriver.CreateNetwork HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{")
	idle := dial() // one call, then silence on a kept-alive connection
	io.WriteString(idle, "POST /Plugin.Activate HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
	if resp, err := http.ReadResponse(bufio.NewReader(idle), nil); err != nil || resp.StatusCode != 200 {
		t.Fatalf("the idle client's call: %v", err)
	}

	// Served while the slow ones hang on.
	resp, err := unixClient(path).Post("http://plugin/Plugin.Activate", ContentType, strings.NewReader(""))
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("a call while slow clients hold connections: %v", err)
	}
	resp.Body.Close()

	for i, c := range slow {
		if !closedWithin(c, 3*time.Second) {
			t.Fatalf("slow header client %d still connected after the header timeout", i)
		}
	}
	if !closedWithin(trickle, 3*time.Second) {
		t.Fatal("a client trickling its body still connected after the read timeout")
	}
	if !closedWithin(idle, 3*time.Second) {
		t.Fatal("an idle keep-alive connection still open after the idle timeout")
	}
}
