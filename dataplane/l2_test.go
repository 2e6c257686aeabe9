package dataplane

import (
	"errors"
	"net"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshnet/meshnet/internal/rawframe"
	"github.com/vishvananda/netns"
)

// TestContainersReceiveOnlyTheirOwn is issue 15 in two namespaces-as-hosts:
// containers A and B on host 1, C on host 2, one vxlan network. A captures
// on its interface while B talks to C and sees nothing of it (not even B's
// ARP for C). Then A forges: frames with C's MAC and address, with its own
// MAC and C's address, and ARP replies claiming C's address. None reaches B
// or C, the bridge's entry for C's MAC stays on the vxlan port, B keeps
// talking to C, and the drops are counted in table bridge meshnet. A frame
// A sends honestly, built the same way, does arrive: the forged ones were
// dropped for what they claim, not for how they were made. The same holds
// with the bridge bypass on (bypass.go): what it hands past the bridge is
// only a container's own IPv4.
func TestContainersReceiveOnlyTheirOwn(t *testing.T) {
	requireRoot(t)
	for _, bypass := range []BypassMode{BypassOff, BypassOn} {
		t.Run(map[BypassMode]string{BypassOff: "bridged", BypassOn: "bridge bypass"}[bypass], func(t *testing.T) {
			testContainersReceiveOnlyTheirOwn(t, Options{BridgeBypass: bypass})
		})
	}
}

func testContainersReceiveOnlyTheirOwn(t *testing.T, opts Options) {
	h1ns, h2ns, h1, h2 := twoHosts(t)
	endpoint, remote := testLocalEndpoint, testRemoteEndpoint
	eA := endpoint("a0a0a0a0a0a0a0", "02:42:00:00:00:0a", "10.42.0.10/24")
	eB := endpoint("b0b0b0b0b0b0b0", "02:42:00:00:00:0b", "10.42.0.11/24")
	eC := endpoint("c0c0c0c0c0c0c0", "02:42:00:00:00:0c", "10.42.0.12/24")
	network := func(locals []LocalEndpoint, remotes ...RemoteEndpoint) Network {
		return Network{VNI: 42, Subnet: netip.MustParsePrefix("10.42.0.0/24"), Gateway: netip.MustParseAddr("10.42.0.1"),
			Locals: locals, Remotes: remotes}
	}
	members := []netip.Addr{netip.MustParseAddr("198.18.0.1"), netip.MustParseAddr("198.18.0.2")}
	st1 := State{Underlay: UnderlayInfo{Addr: members[0]}, VXLANPort: 4790, Members: members,
		Networks: []Network{network([]LocalEndpoint{eA, eB}, remote(eC, "198.18.0.2"))}}
	st2 := State{Underlay: UnderlayInfo{Addr: members[1]}, VXLANPort: 4790, Members: members,
		Networks: []Network{network([]LocalEndpoint{eC}, remote(eA, "198.18.0.1"), remote(eB, "198.18.0.1"))}}
	d1, d2 := newTestDataplaneWith(t, h1ns, opts), newTestDataplaneWith(t, h2ns, opts)
	apply(t, d1, st1)
	apply(t, d2, st2)
	cA := moveIntoContainer(t, h1, eA, "10.42.0.1")
	cB := moveIntoContainer(t, h1, eB, "10.42.0.1")
	cC := moveIntoContainer(t, h2, eC, "10.42.0.1")
	apply(t, d1, st1)
	apply(t, d2, st2)
	checkKernel(t, hostNS{ns: h1ns, h: h1}, st1, 1500, "")

	ipA, ipB, ipC := eA.Addr.Addr(), eB.Addr.Addr(), eC.Addr.Addr()
	srvC := serveIn(t, cC, "10.42.0.12:0")
	srvB := serveIn(t, cB, "10.42.0.11:0")
	expectReach(t, cA, srvB, "10.42.0.10") // local neighbours still talk
	expectPing(t, cA, "10.42.0.1")         // and reach their gateway
	if t.Failed() {
		t.FailNow()
	}

	t.Run("sniff", func(t *testing.T) {
		stop := sniff(t, cA, "eth0")
		for range 5 {
			expectReach(t, cB, srvC, "10.42.0.11")
		}
		expectPing(t, cB, ipC.String())
		// B to a MAC no bridge knows (a container that just left): not
		// flooded to A.
		gone := mustMAC("02:42:00:00:00:99")
		if err := inNS(cB, func() error {
			c, err := rawframe.Open("eth0")
			if err != nil {
				return err
			}
			defer c.Close()
			return c.Send(rawframe.ICMPEcho(eB.MAC, gone, ipB, netip.MustParseAddr("10.42.0.99"), 0x5a00, 1))
		}); err != nil {
			t.Fatalf("send from B: %v", err)
		}
		for _, f := range stop() {
			if !f.Outgoing && (f.Involves(eC.MAC, ipC) || f.Involves(gone, netip.Addr{}) || f.Dst.String() == eB.MAC.String()) {
				t.Errorf("A captured traffic between B and others: %v", f)
			}
		}
	})

	t.Run("spoof", func(t *testing.T) {
		atB, atC := sniff(t, cB, "eth0"), sniff(t, cC, "eth0")
		gwMAC := bridgeMAC(members[0], 42)
		const (
			idForgedMAC = 0x5a01 // C's MAC and address
			idForgedIP  = 0x5a02 // A's MAC, C's address
			idHonest    = 0x5a03 // A's own MAC and address, to C
		)
		forged := [][]byte{
			rawframe.ICMPEcho(eC.MAC, eB.MAC, ipC, ipB, idForgedMAC, 1),
			rawframe.ICMPEcho(eC.MAC, gwMAC, ipC, netip.MustParseAddr("198.18.0.1"), idForgedMAC, 2),
			rawframe.ICMPEcho(eA.MAC, eB.MAC, ipC, ipB, idForgedIP, 1),
			// ARP poisoning: "C's address is at A's MAC", to B and to all.
			rawframe.ARP(eA.MAC, eB.MAC, rawframe.ARPReply, eA.MAC, ipC, eB.MAC, ipB),
			rawframe.ARP(eA.MAC, rawframe.Broadcast, rawframe.ARPRequest, eA.MAC, ipC, make(net.HardwareAddr, 6), ipB),
			// An ARP whose sender MAC is C's from A's own source MAC.
			rawframe.ARP(eA.MAC, eB.MAC, rawframe.ARPReply, eC.MAC, ipA, eB.MAC, ipB),
		}
		honest := rawframe.ICMPEcho(eA.MAC, eC.MAC, ipA, ipC, idHonest, 1)
		if err := inNS(cA, func() error {
			c, err := rawframe.Open("eth0")
			if err != nil {
				return err
			}
			defer c.Close()
			for range 5 {
				for _, f := range append(forged, honest) {
					if err := c.Send(f); err != nil {
						return err
					}
				}
			}
			return nil
		}); err != nil {
			t.Fatalf("send from A: %v", err)
		}
		// B keeps talking to C meanwhile and after.
		expectReach(t, cB, srvC, "10.42.0.11")
		expectPing(t, cB, ipC.String())
		gotB, gotC := atB(), atC()

		honestSeen := false
		for _, f := range gotC {
			if f.ICMPID == idHonest && f.SrcIP == ipA {
				honestSeen = true
			}
			if f.ICMPID == idForgedMAC || f.ICMPID == idForgedIP {
				t.Errorf("C received a forged frame: %v", f)
			}
		}
		if !honestSeen {
			t.Error("C never received A's honest echo: the forged frames prove nothing")
		}
		for _, f := range gotB {
			forgedARP := f.EtherType == rawframe.EtherARP && f.Src.String() == eA.MAC.String() &&
				(f.SrcIP == ipC || f.ARPSrcHW.String() == eC.MAC.String())
			if f.ICMPID == idForgedMAC || f.ICMPID == idForgedIP || forgedARP {
				t.Errorf("B received a forged frame: %v", f)
			}
		}
		out := mustRunIn(t, cB, "ip", "neigh", "show", ipC.String())
		if strings.Contains(out, eA.MAC.String()) {
			t.Errorf("B's neighbour entry for C points at A: %s", out)
		}
		out = mustRunIn(t, h1ns, "bridge", "fdb", "show", "br", "mnbr42")
		if !regexp.MustCompile(regexp.QuoteMeta(eC.MAC.String()) + ` dev mnvx42 master mnbr42 static`).MatchString(out) {
			t.Errorf("C's MAC is no longer a static entry on the vxlan port:\n%s", out)
		}
		counters := l2Counters(t, h1ns)
		for _, rule := range []string{
			"from container: source MAC not its own",
			"from container: IPv4 source not its own",
			"from container: ARP sender address not its own",
			"from container: ARP sender MAC not its own",
		} {
			if counters[rule] == 0 {
				t.Errorf("rule %q dropped nothing; counters %v", rule, counters)
			}
		}
	})
}

// sniff captures on ifname inside ns until the returned function is called,
// which returns what was captured.
func sniff(t *testing.T, ns netns.NsHandle, ifname string) func() []rawframe.Frame {
	t.Helper()
	var c *rawframe.Conn
	if err := inNS(ns, func() (err error) {
		c, err = rawframe.Open(ifname)
		return err
	}); err != nil {
		t.Fatalf("capture on %s: %v", ifname, err)
	}
	var (
		mu     sync.Mutex
		frames []rawframe.Frame
		done   = make(chan struct{})
		exited = make(chan struct{})
	)
	go func() {
		defer close(exited)
		for {
			select {
			case <-done:
				return
			default:
			}
			f, _, err := c.Recv(100 * time.Millisecond)
			if errors.Is(err, rawframe.ErrTimeout) {
				continue
			}
			if err != nil {
				t.Errorf("capture on %s: %v", ifname, err)
				return
			}
			mu.Lock()
			frames = append(frames, f)
			mu.Unlock()
		}
	}()
	var once sync.Once
	stop := func() []rawframe.Frame {
		once.Do(func() {
			// Frames in flight arrive within the next receive timeout.
			time.Sleep(200 * time.Millisecond)
			close(done)
			<-exited
			c.Close()
		})
		mu.Lock()
		defer mu.Unlock()
		return frames
	}
	t.Cleanup(func() { stop() })
	return stop
}

// l2Counters reads the packet counters of table bridge meshnet's rules,
// by comment.
func l2Counters(t *testing.T, ns netns.NsHandle) map[string]int {
	t.Helper()
	out := mustRunIn(t, ns, "nft", "list", "table", "bridge", "meshnet")
	re := regexp.MustCompile(`counter packets (\d+) bytes \d+ drop comment "meshnet: ([^"]+)"`)
	m := map[string]int{}
	for _, s := range re.FindAllStringSubmatch(out, -1) {
		n, _ := strconv.Atoi(s[1])
		m[s[2]] = n
	}
	if len(m) == 0 {
		t.Fatalf("no counters in table bridge meshnet:\n%s", out)
	}
	return m
}
