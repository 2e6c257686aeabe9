package gossip

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"
)

// A second node under a name that is alive elsewhere (another address,
// another key) is refused on both sides: it learns whose name it is and
// where; the owner of the name logs it once and keeps everything; a third
// node still has the owner alive at its own address. Once the owner is
// gone, it comes back with its key from a new address and keeps its name.
func TestClusterDuplicateNameRefusedOnBothSides(t *testing.T) {
	checkGoroutineLeaks(t)
	cfg0, cfg1 := testConfig(t, 0), testConfig(t, 1)
	key0 := newNodeKey(t)
	owner := startSignedNode(t, cfg0, key0)
	cfg1.Join = []string{owner.addr()}
	other := startSignedNode(t, cfg1, newNodeKey(t))
	nodes := []*testNode{owner, other}
	eventually(t, converge, "membership", func() error { return expectMembers(nodes, allAlive(nodes)) })
	if _, err := owner.store.Put(KindEndpoint, "ep", endpoint("10.42.0.5")); err != nil {
		t.Fatal(err)
	}
	eventually(t, converge, "endpoint", func() error { return expectRecord(nodes, KindEndpoint, "n00", "ep", true) })
	ownerAddr := owner.addr()
	// Let the owner be in its cluster for longer than a newcomer is.
	time.Sleep(newcomerWindow + time.Second)

	dup := testConfig(t, 0) // name n00, another address
	dup.Join = []string{ownerAddr}
	second := startSignedNode(t, dup, newNodeKey(t))
	select {
	case err := <-second.c.Conflict():
		if !strings.Contains(err.Error(), ownerAddr) || !strings.Contains(err.Error(), "--node-name") {
			t.Errorf("the newcomer's error does not name %s and --node-name: %v", ownerAddr, err)
		}
	case err := <-second.store.Conflict():
		if !strings.Contains(err.Error(), "--node-name") {
			t.Errorf("the newcomer's error does not say --node-name: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the newcomer was not refused")
	}
	second.kill() // what the daemon does: no graceful leave

	select {
	case err := <-owner.c.Conflict():
		t.Fatalf("the owner of the name was told to leave: %v", err)
	case err := <-owner.store.Conflict():
		t.Fatalf("the owner of the name was told to leave: %v", err)
	default:
	}
	// The owner hears of the duplicate by memberlist's address conflict or
	// by the duplicate's node record under another key, whichever comes
	// first (under load the newcomer may be gone before memberlist tells).
	// That each reason is logged once, not per record, is
	// TestForgedRecordsAreRefusedAndLoggedOnce's.
	eventually(t, converge, "the owner's log line", func() error {
		log := owner.log.String()
		if countLines(log, "another node tries to join under this node's name")+countLines(log, "another node uses this name") == 0 {
			return fmt.Errorf("the owner did not log the duplicate")
		}
		return nil
	})
	// Nothing changes for the others, for a while.
	for range 6 {
		time.Sleep(500 * time.Millisecond)
		if err := expectMembers(nodes, allAlive(nodes)); err != nil {
			t.Fatal(err)
		}
		other.c.mu.Lock()
		p := other.c.peers["n00"]
		other.c.mu.Unlock()
		if p.addr != ownerAddr {
			t.Fatalf("n01 has n00 at %s, want %s", p.addr, ownerAddr)
		}
		if r, ok := other.store.Snapshot().Get(KindNode, "n00", ""); !ok || !strings.Contains(string(r.Value), EncodeNodeKey(owner.store.PublicKey())) {
			t.Fatalf("n01's node record of n00 changed: %s", r.Value)
		}
		if err := expectRecord(nodes, KindEndpoint, "n00", "ep", true); err != nil {
			t.Fatal(err)
		}
	}

	// The owner dies and comes back with its key from another address.
	owner.kill()
	eventually(t, converge, "n00 dead", func() error {
		if s := memberStates(other, "n00")["n00"]; s != StateDead {
			return fmt.Errorf("n00 is %s", s)
		}
		return nil
	})
	back := testConfig(t, 0)
	back.Join = []string{other.addr()}
	again := startSignedNode(t, back, key0)
	both := []*testNode{again, other}
	eventually(t, converge, "n00 back", func() error { return expectMembers(both, allAlive(both)) })
	eventually(t, converge, "n00's endpoint back", func() error { return expectRecord(both, KindEndpoint, "n00", "ep", true) })
	select {
	case err := <-again.c.Conflict():
		t.Fatalf("the restarted owner was refused: %v", err)
	case err := <-again.store.Conflict():
		t.Fatalf("the restarted owner was refused: %v", err)
	default:
	}
	if rej := other.store.Rejections(); rej.ByReason[rejectOtherKey] != 0 || rej.ByReason[rejectOwnName] != 0 {
		t.Errorf("n01 refused the restarted owner's records: %v", rej.ByReason)
	}
}

// A host whose state folder is wiped restarts under its name with a new
// node key, from the same address and port: at once (memberlist on the
// peer still has it alive; its refutation carries the new key in its
// metadata) or after the peer declared it dead; or from another address
// after its death (the peer's join state says the name is dead at the old
// address, so its old records are the host's own history). Either way the peer takes
// the new key, and the host takes back the endpoint its earlier run wrote,
// signed again with its new key; nobody is told to leave.
func TestClusterWipedStateRestartKeepsName(t *testing.T) {
	for _, tc := range []struct {
		name               string
		waitDead, moveAddr bool
	}{{"at once", false, false}, {"after death", true, false}, {"after death at another address", true, true}} {
		waitDead := tc.waitDead
		t.Run(tc.name, func(t *testing.T) {
			checkGoroutineLeaks(t)
			cfg0, cfg1 := testConfig(t, 0), testConfig(t, 1)
			owner := startSignedNode(t, cfg0, newNodeKey(t))
			cfg1.Join = []string{owner.addr()}
			other := startSignedNode(t, cfg1, newNodeKey(t))
			nodes := []*testNode{owner, other}
			eventually(t, converge, "membership", func() error { return expectMembers(nodes, allAlive(nodes)) })
			if _, err := owner.store.Put(KindEndpoint, "ep", endpoint("10.42.0.5")); err != nil {
				t.Fatal(err)
			}
			eventually(t, converge, "endpoint", func() error { return expectRecord(nodes, KindEndpoint, "n00", "ep", true) })
			host, port := owner.c.LocalAddr()
			owner.kill()
			if waitDead {
				eventually(t, converge, "n00 dead", func() error {
					if s := memberStates(other, "n00")["n00"]; s != StateDead {
						return fmt.Errorf("n00 is %s", s)
					}
					return nil
				})
			}
			again := cfg0
			again.BindAddr, again.BindPort = host, port
			if tc.moveAddr {
				again.BindAddr, again.BindPort = testIP(), 0
			}
			again.Join = []string{other.addr()}
			wiped := startSignedNode(t, again, newNodeKey(t))
			both := []*testNode{wiped, other}
			eventually(t, converge, "n00 back", func() error { return expectMembers(both, allAlive(both)) })
			eventually(t, converge, "the new key everywhere", func() error {
				if pin, _ := other.store.Pinned("n00"); !pin.Equal(wiped.store.PublicKey()) {
					return fmt.Errorf("n01 pins n00 to %s", EncodeNodeKey(pin))
				}
				for _, n := range both {
					r, ok := n.store.Snapshot().Get(KindEndpoint, "n00", "ep")
					if !ok || !bytes.Equal(r.Signer, wiped.store.PublicKey()) {
						return fmt.Errorf("%s: n00's endpoint %v, signed by %s", n.name, ok, EncodeNodeKey(r.Signer))
					}
				}
				return nil
			})
			for _, l := range strings.Split(other.log.String(), "\n") {
				if strings.Contains(l, "a node name moves") {
					t.Logf("n01: %s", l[strings.Index(l, "msg="):])
				}
			}
			select {
			case err := <-wiped.c.Conflict():
				t.Fatalf("the wiped host was refused: %v", err)
			case err := <-wiped.store.Conflict():
				t.Fatalf("the wiped host was refused: %v", err)
			default:
			}
		})
	}
}
