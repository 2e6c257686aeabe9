package dataplane

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netns"
)

// TestVIP balances a service VIP on two Docker-like hosts (FORWARD policy
// DROP, br_netfilter on): a client on host 1, one replica beside it and one
// on host 2. New connections alternate between the replicas, each replica
// sees the client's own address (no SNAT), an established connection keeps
// its replica when the replica set changes, a VIP without replicas refuses
// at once, and nothing is left once the VIP is gone.
func TestVIP(t *testing.T) {
	requireRoot(t)
	h1ns, h2ns, h1, h2 := twoHosts(t)
	dockerHosts(t, h1ns, h2ns)

	endpoint, remote := testLocalEndpoint, testRemoteEndpoint
	c1 := endpoint("v1v1v1v1v1v1v1", "02:42:00:00:00:11", "10.42.0.11/24") // client, host 1
	r1 := endpoint("v2v2v2v2v2v2v2", "02:42:00:00:00:21", "10.42.0.21/24") // replica, host 1
	r2 := endpoint("v3v3v3v3v3v3v3", "02:42:00:00:00:22", "10.42.0.22/24") // replica, host 2
	vip := netip.MustParseAddr("10.42.0.200")
	members := []netip.Addr{netip.MustParseAddr("198.18.0.1"), netip.MustParseAddr("198.18.0.2")}
	states := func(backends ...LocalEndpoint) (State, State) {
		v := VIP{Addr: vip, Service: "api"}
		for _, b := range backends {
			v.Backends = append(v.Backends, b.Addr.Addr())
		}
		st1 := State{Underlay: UnderlayInfo{Addr: members[0]}, VXLANPort: 4790, Members: members,
			Networks:     []Network{testNet42([]LocalEndpoint{c1, r1}, remote(r2, "198.18.0.2"))},
			ServiceAddrs: []netip.Addr{vip}, VIPs: []VIP{v}}
		st2 := State{Underlay: UnderlayInfo{Addr: members[1]}, VXLANPort: 4790, Members: members,
			Networks:     []Network{testNet42([]LocalEndpoint{r2}, remote(c1, "198.18.0.1"), remote(r1, "198.18.0.1"))},
			ServiceAddrs: []netip.Addr{vip}, VIPs: []VIP{v}}
		return st1, st2
	}
	d1, d2 := newTestDataplane(t, h1ns), newTestDataplane(t, h2ns)
	st1, st2 := states(r1, r2)
	apply(t, d1, st1)
	apply(t, d2, st2)
	cns := moveIntoContainer(t, h1, c1, "10.42.0.1")
	r1ns := moveIntoContainer(t, h1, r1, "10.42.0.1")
	r2ns := moveIntoContainer(t, h2, r2, "10.42.0.1")
	apply(t, d1, st1)
	apply(t, d2, st2)
	if len(d1.changes)+len(d2.changes) != 0 {
		t.Errorf("re-apply changed %q %q", d1.changes, d2.changes)
	}
	serveWho(t, r1ns, "r1")
	serveWho(t, r2ns, "r2")
	target := net.JoinHostPort(vip.String(), "8080")

	// The first connections wait for ARP; then round robin, exactly.
	waitVIP(t, cns, target)
	expectEvenSpread(t, cns, target, "10.42.0.11")

	// An established connection to r2 outlives r2's removal from the VIP:
	// its choice is in conntrack, not in the rules.
	held, heldWho := holdOpen(t, cns, target, "r2")
	st1, st2 = states(r1)
	apply(t, d1, st1)
	apply(t, d2, st2)
	for range 6 {
		if who, _, err := askWho(cns, target); err != nil || who != "r1" {
			t.Errorf("after r2 left the VIP a new connection went to %q (%v), want r1", who, err)
		}
	}
	if _, err := fmt.Fprintln(held, "again"); err != nil {
		t.Errorf("established connection to %s broken by the change: %v", heldWho, err)
	} else if line, err := readLine(held); err != nil || line != "r2" {
		t.Errorf("established connection to %s answered %q, %v", heldWho, line, err)
	}
	held.Close()

	// No replica: refused at once (not a timeout, not a host socket).
	st1, st2 = states()
	apply(t, d1, st1)
	if _, _, err := askWho(cns, target); err == nil || !strings.Contains(err.Error(), "refused") {
		t.Errorf("VIP without replicas: %v, want connection refused", err)
	}

	// Gone: no table left.
	st1.VIPs, st1.ServiceAddrs = nil, nil
	apply(t, d1, st1)
	if out := mustRunIn(t, h1ns, "nft", "list", "tables"); strings.Contains(out, vipTableName) {
		t.Errorf("table left after the last VIP went:\n%s", out)
	}
	_ = h2
}

// expectEvenSpread opens 20 connections to the VIP at target from ns: 10
// must land on each of the replicas r1 and r2 (round robin), each seeing
// the client's own address.
func expectEvenSpread(t *testing.T, ns netns.NsHandle, target, client string) {
	t.Helper()
	counts := map[string]int{}
	for range 20 {
		who, src, err := askWho(ns, target)
		if err != nil {
			t.Fatalf("connect to the VIP: %v", err)
		}
		if src != client {
			t.Errorf("replica %s saw the client as %s, want its own address %s", who, src, client)
		}
		counts[who]++
	}
	if counts["r1"] != 10 || counts["r2"] != 10 {
		t.Errorf("20 connections landed %v, want 10 on each replica", counts)
	}
}

// serveWho answers each line a client sends with name, after a first
// line "name client-address".
func serveWho(t *testing.T, ns netns.NsHandle, name string) {
	t.Helper()
	var l net.Listener
	if err := inNS(ns, func() (err error) {
		l, err = net.Listen("tcp", ":8080")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				fmt.Fprintf(c, "%s %s\n", name, c.RemoteAddr().(*net.TCPAddr).IP)
				buf := make([]byte, 64)
				for {
					if _, err := c.Read(buf); err != nil {
						return
					}
					fmt.Fprintln(c, name)
				}
			}()
		}
	}()
}

func dialIn(ns netns.NsHandle, addr string) (net.Conn, error) {
	var c net.Conn
	err := inNS(ns, func() (err error) {
		c, err = net.DialTimeout("tcp", addr, 2*time.Second)
		return err
	})
	return c, err
}

func readLine(c net.Conn) (string, error) {
	_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
	var b []byte
	one := make([]byte, 1)
	for {
		if _, err := c.Read(one); err != nil {
			return string(b), err
		}
		if one[0] == '\n' {
			return string(b), nil
		}
		b = append(b, one[0])
	}
}

// askWho opens one connection and returns the replica's name and the
// client address it saw.
func askWho(ns netns.NsHandle, addr string) (who, src string, err error) {
	c, err := dialIn(ns, addr)
	if err != nil {
		return "", "", err
	}
	defer c.Close()
	line, err := readLine(c)
	if err != nil {
		return "", "", err
	}
	who, src, _ = strings.Cut(line, " ")
	return who, src, nil
}

func waitVIP(t *testing.T, ns netns.NsHandle, addr string) {
	t.Helper()
	deadline := time.Now().Add(reachDeadline)
	for {
		_, _, err := askWho(ns, addr)
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("VIP %s never answered: %v", addr, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// holdOpen opens connections until one lands on want and keeps it open.
func holdOpen(t *testing.T, ns netns.NsHandle, addr, want string) (net.Conn, string) {
	t.Helper()
	for range 10 {
		c, err := dialIn(ns, addr)
		if err != nil {
			t.Fatal(err)
		}
		line, err := readLine(c)
		if err == nil && strings.HasPrefix(line, want+" ") {
			return c, want
		}
		c.Close()
	}
	t.Fatalf("no connection landed on %s", want)
	return nil, ""
}
