package gossip

import (
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

// A killed node goes alive → suspect → dead on the nodes that probe it.
func TestClusterKilledNodeIsSuspectBeforeDead(t *testing.T) {
	checkGoroutineLeaks(t)
	nodes := startCluster(t, 3, false)
	eventually(t, converge, "membership", func() error { return expectMembers(nodes, allAlive(nodes)) })
	victim, others := nodes[2], nodes[:2]

	var mu sync.Mutex
	seen := map[string]map[MemberState]bool{}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, n := range others {
		states := map[MemberState]bool{}
		seen[n.name] = states
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				st := n.store.Snapshot().Members[victim.name].State
				mu.Lock()
				states[st] = true
				mu.Unlock()
				select {
				case <-stop:
					return
				case <-time.After(5 * time.Millisecond):
				}
			}
		}()
	}
	victim.kill()
	eventually(t, converge, "victim dead", func() error {
		return expectMembers(others, map[string]MemberState{victim.name: StateDead})
	})
	close(stop)
	wg.Wait()
	suspected := 0
	for _, n := range others {
		if seen[n.name][StateSuspect] {
			suspected++
		}
	}
	if suspected == 0 {
		t.Fatalf("no node reported %s suspect before dead: %v", victim.name, seen)
	}
}

// A suspect that answers a ping is alive again at once: memberlist takes
// its refutation without an event, and the suspicion would otherwise last
// the whole window (a daemon restarted within it was listed suspect 25 s).
func TestSuspicionEndsWhenThePeerAnswers(t *testing.T) {
	checkGoroutineLeaks(t)
	nodes := startCluster(t, 2, false)
	eventually(t, converge, "membership", func() error { return expectMembers(nodes, allAlive(nodes)) })
	a, b := nodes[0], nodes[1]
	window := suspicionWindow(a.c.mlConfig, 2)
	began := time.Now()
	a.c.noteLogLine("Suspect " + b.name + " has failed, no acks received")
	if got := a.store.Snapshot().Members[b.name].State; got != StateSuspect {
		t.Fatalf("after the log line, %s sees %s as %s, want suspect", a.name, b.name, got)
	}
	eventually(t, window, "suspicion ended", func() error {
		return expectMembers([]*testNode{a}, map[string]MemberState{b.name: StateAlive})
	})
	// Two probe intervals: the first ping goes out one interval in.
	if took := time.Since(began); took > 2*a.c.mlConfig.ProbeInterval+a.c.mlConfig.ProbeTimeout {
		t.Errorf("suspicion ended after %s, want within two probe intervals (%s each): the ping did not end it", took, a.c.mlConfig.ProbeInterval)
	}
	if log := a.log.String(); !strings.Contains(log, "peer no longer suspect") {
		t.Errorf("%s's log does not say why the suspicion ended:\n%s", a.name, log)
	}
}

// A suspicion memberlist never rules on, of a node that does not answer
// pings, lapses back to alive once memberlist would have declared the node
// dead. The suspect is a peer memberlist does not know, at an address
// nothing answers on, so that neither a verdict nor an answer ends it.
func TestSuspicionLapses(t *testing.T) {
	checkGoroutineLeaks(t)
	nodes := startCluster(t, 1, false)
	a := nodes[0]
	const ghost = "ghost"
	a.c.mu.Lock()
	a.c.peers[ghost] = peer{addr: "127.0.0.1:9", ip: net.IPv4(127, 0, 0, 1), port: 9, state: StateAlive}
	a.c.mu.Unlock()
	a.store.SetMember(Member{Name: ghost, Addr: "127.0.0.1", State: StateAlive})
	window := suspicionWindow(a.c.mlConfig, 2)
	began := time.Now()
	a.c.noteLogLine("Suspect " + ghost + " has failed, no acks received")
	eventually(t, window+5*time.Second, "suspicion lapsed", func() error {
		return expectMembers([]*testNode{a}, map[string]MemberState{ghost: StateAlive})
	})
	if took := time.Since(began); took < window {
		t.Errorf("a suspect that answers nothing was alive again after %s, before the window (%s)", took, window)
	}
}

func TestSuspicionWindow(t *testing.T) {
	mc := memberlist.DefaultLANConfig() // probe 1 s, mult 4, max mult 6
	for n, want := range map[int]time.Duration{3: 25 * time.Second, 100: 49 * time.Second} {
		if got := suspicionWindow(mc, n); got != want {
			t.Errorf("window for %d nodes = %s, want %s", n, got, want)
		}
	}
}

// Close stops the suspicion timers: a closed node writes nothing more to its
// store (it used to turn the suspect back to alive a window later).
func TestSuspicionTimersStopAtClose(t *testing.T) {
	checkGoroutineLeaks(t)
	nodes := startCluster(t, 2, false)
	eventually(t, converge, "membership", func() error { return expectMembers(nodes, allAlive(nodes)) })
	a, b := nodes[0], nodes[1]
	a.c.noteLogLine("Suspect " + b.name + " has failed, no acks received")
	window := suspicionWindow(a.c.mlConfig, 2)
	if err := a.c.Close(); err != nil {
		t.Fatal(err)
	}
	a.c.mu.Lock()
	pending := len(a.c.suspectTimers)
	a.c.mu.Unlock()
	if pending != 0 {
		t.Errorf("%d suspicion timers pending after Close", pending)
	}
	time.Sleep(window + 200*time.Millisecond) // past the moment the timer would have fired
	if got := a.store.Snapshot().Members[b.name].State; got != StateSuspect {
		t.Errorf("after Close and the window (%s), %s sees %s as %s: a timer wrote to the store", window, a.name, b.name, got)
	}
}
