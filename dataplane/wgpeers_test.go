package dataplane

import (
	"encoding/hex"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

func testKey(t *testing.T) wgtypes.Key {
	t.Helper()
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k.PublicKey()
}

// devicePeers plays the device: it applies peer changes as WireGuard does.
func devicePeers(have []wgtypes.Peer, changes []wgtypes.PeerConfig) []wgtypes.Peer {
	by := map[wgtypes.Key]int{}
	for i, p := range have {
		by[p.PublicKey] = i
	}
	for _, c := range changes {
		i, ok := by[c.PublicKey]
		if c.Remove {
			if ok {
				have = append(have[:i], have[i+1:]...)
				by = map[wgtypes.Key]int{}
				for j, p := range have {
					by[p.PublicKey] = j
				}
			}
			continue
		}
		if !ok {
			have = append(have, wgtypes.Peer{PublicKey: c.PublicKey})
			i = len(have) - 1
			by[c.PublicKey] = i
		}
		p := &have[i]
		if c.Endpoint != nil {
			p.Endpoint = c.Endpoint
		}
		if c.PersistentKeepaliveInterval != nil {
			p.PersistentKeepaliveInterval = *c.PersistentKeepaliveInterval
		}
		if c.ReplaceAllowedIPs {
			p.AllowedIPs = nil
		}
		p.AllowedIPs = append(p.AllowedIPs, c.AllowedIPs...)
	}
	return have
}

func TestPlanPeers(t *testing.T) {
	kA, kB := testKey(t), testKey(t)
	pfx := netip.MustParsePrefix
	want := WireGuardState{Peers: []WireGuardPeer{
		{PublicKey: kA.String(), Endpoint: netip.MustParseAddrPort("198.18.0.2:51820"), Keepalive: 25 * time.Second,
			AllowedIPs: []netip.Prefix{pfx("10.8.0.16/28")}},
		{PublicKey: kB.String(), Endpoint: netip.MustParseAddrPort("198.18.0.3:51820"),
			AllowedIPs: []netip.Prefix{pfx("10.8.0.32/28"), pfx("10.8.0.48/28")}},
	}}
	last := map[wgtypes.Key]netip.AddrPort{}
	record := func(changes []wgtypes.PeerConfig) {
		for _, c := range changes {
			if c.Endpoint != nil {
				last[c.PublicKey] = c.Endpoint.AddrPort()
			}
		}
	}

	// From nothing: both peers, with endpoints.
	changes, err := planPeers(want, nil, last, false)
	if err != nil || len(changes) != 2 || changes[0].Endpoint == nil || changes[1].Endpoint == nil {
		t.Fatalf("first plan: %v %+v", err, changes)
	}
	have := devicePeers(nil, changes)
	record(changes)
	if changes, _ := planPeers(want, have, last, false); len(changes) != 0 {
		t.Errorf("second plan changes %+v: a re-Apply must write nothing", changes)
	}

	// WireGuard followed A roaming to another address: not undone.
	for i := range have {
		if have[i].PublicKey == kA {
			have[i].Endpoint = &net.UDPAddr{IP: net.ParseIP("203.0.113.7"), Port: 40000}
		}
	}
	if changes, _ := planPeers(want, have, last, false); len(changes) != 0 {
		t.Errorf("plan after roaming changes %+v", changes)
	}

	// A publishes a new endpoint: the same peer, updated in place.
	moved := want.normalized()
	for i := range moved.Peers {
		if moved.Peers[i].PublicKey == kA.String() {
			moved.Peers[i].Endpoint = netip.MustParseAddrPort("198.18.0.22:51820")
		}
	}
	changes, _ = planPeers(moved, have, last, false)
	if len(changes) != 1 || changes[0].PublicKey != kA || changes[0].Remove || changes[0].Endpoint.String() != "198.18.0.22:51820" {
		t.Fatalf("plan after A moved: %+v", changes)
	}
	have = devicePeers(have, changes)
	record(changes)

	// B dies: removed; A untouched.
	gone := WireGuardState{Peers: []WireGuardPeer{moved.Peers[0]}}
	if gone.Peers[0].PublicKey != kA.String() {
		gone.Peers[0] = moved.Peers[1]
	}
	changes, _ = planPeers(gone, have, last, false)
	if len(changes) != 1 || changes[0].PublicKey != kB || !changes[0].Remove {
		t.Errorf("plan after B went: %+v", changes)
	}

	// A prefix wanted for two peers goes to the first only, and is reported.
	dup := WireGuardState{Peers: []WireGuardPeer{
		{PublicKey: kA.String(), AllowedIPs: []netip.Prefix{pfx("10.8.0.16/28")}},
		{PublicKey: kB.String(), AllowedIPs: []netip.Prefix{pfx("10.8.0.16/28")}},
	}}
	changes, err = planPeers(dup, nil, map[wgtypes.Key]netip.AddrPort{}, false)
	if err == nil || !strings.Contains(err.Error(), "10.8.0.16/28") {
		t.Errorf("duplicate prefix not reported: %v", err)
	}
	n := 0
	for _, c := range changes {
		n += len(c.AllowedIPs)
	}
	if n != 1 {
		t.Errorf("duplicate prefix given %d times", n)
	}
	if _, err := planPeers(WireGuardState{Peers: []WireGuardPeer{{PublicKey: "nope"}}}, nil, nil, false); err == nil {
		t.Error("a bad key was not reported")
	}
}

// TestPlanPeersHold: a restarted daemon whose store has not heard its cluster
// yet (State.HoldDeletes) wants fewer peers and prefixes than the kernel's
// device kept while it was down: nothing is removed, nothing shrinks, what is
// wanted is still added; once the hold ends the stale peer goes.
func TestPlanPeersHold(t *testing.T) {
	kA, kB := testKey(t), testKey(t)
	pfx := netip.MustParsePrefix
	full := WireGuardState{Peers: []WireGuardPeer{
		{PublicKey: kA.String(), Endpoint: netip.MustParseAddrPort("198.18.0.2:51820"),
			AllowedIPs: []netip.Prefix{pfx("10.8.0.16/28"), pfx("10.8.0.64/28")}},
		{PublicKey: kB.String(), Endpoint: netip.MustParseAddrPort("198.18.0.3:51820"),
			AllowedIPs: []netip.Prefix{pfx("10.8.0.32/28")}},
	}}
	changes, _ := planPeers(full, nil, map[wgtypes.Key]netip.AddrPort{}, false)
	have := devicePeers(nil, changes)
	// After the restart: lastEndpoint is empty, and only A is known, with one of its blocks
	// and a new one.
	partial := WireGuardState{Peers: []WireGuardPeer{
		{PublicKey: kA.String(), Endpoint: netip.MustParseAddrPort("198.18.0.2:51820"),
			AllowedIPs: []netip.Prefix{pfx("10.8.0.16/28"), pfx("10.8.0.80/28")}},
	}}
	changes, err := planPeers(partial, have, map[wgtypes.Key]netip.AddrPort{}, true)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range changes {
		if c.Remove {
			t.Errorf("held plan removes peer %s", shortKey(c.PublicKey.String()))
		}
	}
	have = devicePeers(have, changes)
	for _, p := range have {
		if p.PublicKey == kA {
			got := peerPrefixes(p.AllowedIPs)
			want := []netip.Prefix{pfx("10.8.0.16/28"), pfx("10.8.0.64/28"), pfx("10.8.0.80/28")}
			if !slices.Equal(got, want) {
				t.Errorf("held plan leaves A with %v; want what it had and the new block: %v", got, want)
			}
		}
	}
	changes, _ = planPeers(partial, have, map[wgtypes.Key]netip.AddrPort{kA: netip.MustParseAddrPort("198.18.0.2:51820")}, false)
	var removed []wgtypes.Key
	for _, c := range changes {
		if c.Remove {
			removed = append(removed, c.PublicKey)
		}
	}
	if len(removed) != 1 || removed[0] != kB {
		t.Errorf("after the hold: removed %v, want B only (%+v)", removed, changes)
	}
}

// TestPlanPeersAddOnly: a peer's prefixes are replaced (cleared and set
// again, an instant without a route) only when it loses one; a peer that
// gains a block, or only moves, is written without touching what it has.
func TestPlanPeersAddOnly(t *testing.T) {
	kA := testKey(t)
	pfx := netip.MustParsePrefix
	ep := netip.MustParseAddrPort("198.18.0.2:51820")
	state := func(ep netip.AddrPort, ps ...string) WireGuardState {
		var allowed []netip.Prefix
		for _, p := range ps {
			allowed = append(allowed, pfx(p))
		}
		return WireGuardState{Peers: []WireGuardPeer{{PublicKey: kA.String(), Endpoint: ep, AllowedIPs: allowed}}}
	}
	last := map[wgtypes.Key]netip.AddrPort{kA: ep}
	changes, _ := planPeers(state(ep, "10.8.0.16/28"), nil, last, false)
	have := devicePeers(nil, changes)

	for _, step := range []struct {
		what       string
		want       WireGuardState
		replace    bool
		written    []netip.Prefix
		afterwards []netip.Prefix
	}{
		{"gains a block", state(ep, "10.8.0.16/28", "10.8.0.32/28"), false,
			[]netip.Prefix{pfx("10.8.0.32/28")}, []netip.Prefix{pfx("10.8.0.16/28"), pfx("10.8.0.32/28")}},
		{"moves", state(netip.MustParseAddrPort("198.18.0.9:51820"), "10.8.0.16/28", "10.8.0.32/28"), false,
			nil, []netip.Prefix{pfx("10.8.0.16/28"), pfx("10.8.0.32/28")}},
		{"loses a block", state(netip.MustParseAddrPort("198.18.0.9:51820"), "10.8.0.32/28"), true,
			[]netip.Prefix{pfx("10.8.0.32/28")}, []netip.Prefix{pfx("10.8.0.32/28")}},
	} {
		changes, err := planPeers(step.want, have, last, false)
		if err != nil || len(changes) != 1 {
			t.Fatalf("%s: %v %+v", step.what, err, changes)
		}
		c := changes[0]
		if c.ReplaceAllowedIPs != step.replace || !slices.Equal(peerPrefixes(c.AllowedIPs), step.written) {
			t.Errorf("%s: written with replace=%v %v; want replace=%v %v", step.what, c.ReplaceAllowedIPs, peerPrefixes(c.AllowedIPs), step.replace, step.written)
		}
		if c.Endpoint != nil {
			last[kA] = c.Endpoint.AddrPort()
		}
		have = devicePeers(have, changes)
		if got := peerPrefixes(have[0].AllowedIPs); !slices.Equal(got, step.afterwards) {
			t.Errorf("%s: the device has %v, want %v", step.what, got, step.afterwards)
		}
	}
}

// TestAdoptEndpoints: a restarted daemon, finding the peers its previous run
// wrote on a kernel device it kept, writes nothing (a write replaces a peer's
// allowed prefixes: an instant without a route), not even to a peer that
// roamed meanwhile; an endpoint published afterwards is written.
func TestAdoptEndpoints(t *testing.T) {
	kA, kB := testKey(t), testKey(t)
	pfx := netip.MustParsePrefix
	want := WireGuardState{Peers: []WireGuardPeer{
		{PublicKey: kA.String(), Endpoint: netip.MustParseAddrPort("198.18.0.2:51820"), AllowedIPs: []netip.Prefix{pfx("10.8.0.16/28")}},
		{PublicKey: kB.String(), Endpoint: netip.MustParseAddrPort("198.18.0.3:51820"), AllowedIPs: []netip.Prefix{pfx("10.8.0.32/28")}},
	}}
	changes, _ := planPeers(want, nil, map[wgtypes.Key]netip.AddrPort{}, false)
	have := devicePeers(nil, changes)
	for i := range have {
		if have[i].PublicKey == kB { // B roamed while the daemon was down
			have[i].Endpoint = &net.UDPAddr{IP: net.ParseIP("203.0.113.9"), Port: 40000}
		}
	}
	last := map[wgtypes.Key]netip.AddrPort{} // a new process
	adoptEndpoints(want, have, last)
	if changes, _ := planPeers(want, have, last, true); len(changes) != 0 {
		t.Errorf("a restarted daemon rewrites the peers it kept: %+v", changes)
	}
	for i := range have {
		if have[i].PublicKey == kB && have[i].Endpoint.String() != "203.0.113.9:40000" {
			t.Errorf("B sent back from where it roamed to %v", have[i].Endpoint)
		}
	}
	// B publishes a new endpoint afterwards: written.
	moved := want.normalized()
	for i := range moved.Peers {
		if moved.Peers[i].PublicKey == kB.String() {
			moved.Peers[i].Endpoint = netip.MustParseAddrPort("198.18.0.33:51820")
		}
	}
	if changes, _ := planPeers(moved, have, last, false); len(changes) != 1 || changes[0].PublicKey != kB || changes[0].Endpoint == nil {
		t.Errorf("B's new endpoint after the adoption: %+v", changes)
	}
}

func TestUAPIRoundTrip(t *testing.T) {
	priv, _ := wgtypes.GeneratePrivateKey()
	k := testKey(t)
	ka := 25 * time.Second
	port := 51820
	cfg := wgtypes.Config{PrivateKey: &priv, ListenPort: &port, Peers: []wgtypes.PeerConfig{
		{PublicKey: k, Endpoint: &net.UDPAddr{IP: net.ParseIP("198.18.0.2"), Port: 51820}, PersistentKeepaliveInterval: &ka,
			ReplaceAllowedIPs: true, AllowedIPs: ipNets([]netip.Prefix{netip.MustParsePrefix("10.8.0.16/28")})},
		{PublicKey: priv.PublicKey(), Remove: true},
	}}
	set := uapiSet(cfg)
	for _, want := range []string{"listen_port=51820\n", "endpoint=198.18.0.2:51820\n", "persistent_keepalive_interval=25\n",
		"replace_allowed_ips=true\n", "allowed_ip=10.8.0.16/28\n", "remove=true\n"} {
		if !strings.Contains(set, want) {
			t.Errorf("IpcSet text lacks %q:\n%s", want, set)
		}
	}
	// What IpcGet answers for that device.
	get := "private_key=" + hex.EncodeToString(priv[:]) + "\nlisten_port=51820\n" +
		"public_key=" + hex.EncodeToString(k[:]) + "\nendpoint=198.18.0.2:51820\npersistent_keepalive_interval=25\n" +
		"allowed_ip=10.8.0.16/28\nlast_handshake_time_sec=1700000000\nlast_handshake_time_nsec=5\nrx_bytes=10\ntx_bytes=20\nerrno=0\n"
	gotPort, peers, err := uapiGet(get)
	if err != nil || gotPort != 51820 || len(peers) != 1 {
		t.Fatalf("uapiGet: port %d peers %+v err %v\n%s", gotPort, peers, err, get)
	}
	p := peers[0]
	if p.PublicKey != k || p.Endpoint.String() != "198.18.0.2:51820" || p.PersistentKeepaliveInterval != ka ||
		len(p.AllowedIPs) != 1 || p.AllowedIPs[0].String() != "10.8.0.16/28" || p.ReceiveBytes != 10 || p.TransmitBytes != 20 ||
		p.LastHandshakeTime.Unix() != 1700000000 {
		t.Errorf("parsed peer %+v", p)
	}
	if _, _, err := uapiGet("public_key=zz\n"); err == nil {
		t.Error("a malformed key was accepted")
	}
}

// TestPlanPeersOrder: a peer's AllowedIPs are a set. Wanted in another
// order than the device lists them (a dual-stack network's IPv6 block
// before its IPv4 one, an address held outside its host's blocks before
// them), an unchanged peer is still left alone: every write of a peer
// replaces its prefixes, an instant with no route through the device.
func TestPlanPeersOrder(t *testing.T) {
	k := testKey(t)
	pfx := netip.MustParsePrefix
	ep := netip.MustParseAddrPort("198.18.0.2:51820")
	want := WireGuardState{Peers: []WireGuardPeer{{PublicKey: k.String(), Endpoint: ep,
		AllowedIPs: []netip.Prefix{pfx("fd08::8000:0:0:0/65"), pfx("10.8.0.16/28"), pfx("10.8.0.5/32")}}}}
	changes, err := planPeers(want, nil, map[wgtypes.Key]netip.AddrPort{}, false)
	if err != nil || len(changes) != 1 {
		t.Fatalf("first plan: %v, %v", changes, err)
	}
	have := devicePeers(nil, changes)
	changes, err = planPeers(want, have, map[wgtypes.Key]netip.AddrPort{k: ep}, false)
	if err != nil || len(changes) != 0 {
		t.Errorf("second plan of the same state: %d changes (%v), %v; want none", len(changes), changes, err)
	}
}
