// Command forger is a test-only helper for the e2e suite (TestForgedRecords):
// a node that holds the cluster's gossip key but no other node's node key.
// It joins the cluster over memberlist and hands every member, as gossip
// messages and in its push/pull state, records it has no right to write:
// an endpoint in another node's name (signed with its own key), a removal
// of that live node, a record at version 2^64-1, and a node record in that
// node's name that claims its address with the forger's key (what a host
// restarted there with a wiped state folder would send). Then it stays
// until killed. It is never built into meshnet's binaries.
package main

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"math"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/meshnet/meshnet/gossip"
)

func main() {
	var (
		name    = flag.String("name", "forger", "this node's memberlist name")
		bind    = flag.String("bind", "", "address to bind and advertise")
		join    = flag.String("join", "", "a member's address (host or host:port)")
		keyFile = flag.String("key-file", "", "the cluster's gossip key (base64)")
		label   = flag.String("cluster", "meshnet", "the cluster label")
		victim  = flag.String("victim", "", "the node whose name the forged records use")
		subnet  = flag.String("subnet", "10.42.0.0/24", "subnet of the forged endpoint")
		addr    = flag.String("addr", "10.42.0.250", "address of the forged endpoint")
		rounds  = flag.Int("rounds", 3, "how many times to send every record to every member")
	)
	flag.Parse()
	if err := run(*name, *bind, *join, *keyFile, *label, *victim, *subnet, *addr, *rounds); err != nil {
		fmt.Fprintf(os.Stderr, "forger: %v\n", err)
		os.Exit(1)
	}
}

func run(name, bind, join, keyFile, label, victim, subnet, addr string, rounds int) error {
	raw, err := os.ReadFile(keyFile)
	if err != nil {
		return err
	}
	gk, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(raw)))
	if err != nil {
		return fmt.Errorf("gossip key: %w", err)
	}
	_, own, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	now := uint64(time.Now().UnixNano())
	ep, _ := json.Marshal(gossip.EndpointInfo{Subnet: subnet, Addr: addr, MAC: "02:42:0a:2a:00:fa", Container: "forged", Healthy: true})
	wrap, _ := json.Marshal(gossip.EndpointInfo{Subnet: subnet, Addr: addr, MAC: "02:42:0a:2a:00:fb", Container: "wrap", Healthy: true})
	rm, _ := json.Marshal(gossip.Removal{UpTo: now - 1, At: time.Now().UTC(), By: name})
	recs := []gossip.Record{
		// Another node's endpoint, signed with the forger's own key.
		gossip.Sign(gossip.Record{Key: gossip.Key{Kind: gossip.KindEndpoint, Owner: victim, ID: "forged-endpoint"}, Version: now, Value: ep}, own),
		// A removal of that node while it is alive.
		gossip.Sign(gossip.Record{Key: gossip.Key{Kind: gossip.KindRemoval, Owner: name, ID: victim}, Version: now, Value: rm}, own),
		// A record no later write could ever beat.
		gossip.Sign(gossip.Record{Key: gossip.Key{Kind: gossip.KindEndpoint, Owner: name, ID: "wrap"}, Version: math.MaxUint64, Value: wrap}, own),
	}
	state, err := gossip.EncodeState(recs)
	if err != nil {
		return err
	}
	ring, err := memberlist.NewKeyring([][]byte{gk}, gk)
	if err != nil {
		return err
	}
	mc := memberlist.DefaultLANConfig()
	mc.Name = name
	mc.BindAddr, mc.AdvertiseAddr = bind, bind
	mc.Label = label
	mc.Keyring = ring
	mc.Delegate = &forgedState{state: state}
	mc.Logger = log.New(io.Discard, "", 0)
	ml, err := memberlist.Create(mc)
	if err != nil {
		return err
	}
	if _, _, err := net.SplitHostPort(join); err != nil {
		join = net.JoinHostPort(join, "7946")
	}
	if _, err := ml.Join([]string{join}); err != nil {
		return fmt.Errorf("join %s: %w", join, err)
	}
	time.Sleep(2 * time.Second) // the members list fills in
	// A node record in the victim's name that claims the victim's own
	// address, with the forger's key: what a wiped host restarted at that
	// address would send. Peers take a new key for a live name only when
	// memberlist's member at that address advertises it; the victim does
	// not.
	for _, m := range ml.Members() {
		if m.Name != victim {
			continue
		}
		node, _ := json.Marshal(gossip.NodeInfo{Addr: m.Addr.String(), GossipPort: int(m.Port),
			NodeKey: base64.StdEncoding.EncodeToString(own.Public().(ed25519.PublicKey)), Started: time.Now().UTC()})
		recs = append(recs, gossip.Sign(gossip.Record{Key: gossip.Key{Kind: gossip.KindNode, Owner: victim}, Version: uint64(time.Now().UnixNano()), Value: node}, own))
	}
	if state, err = gossip.EncodeState(recs); err != nil {
		return err
	}
	mc.Delegate.(*forgedState).set(state)
	for i := 0; i < rounds; i++ {
		for _, m := range ml.Members() {
			if m.Name == name {
				continue
			}
			for _, r := range recs {
				buf, _ := json.Marshal(r)
				if err := ml.SendReliable(m, append([]byte{'r'}, buf...)); err != nil {
					fmt.Fprintf(os.Stderr, "forger: send to %s: %v\n", m.Name, err)
				}
			}
		}
		time.Sleep(time.Second)
	}
	fmt.Println("forger: sent", len(recs), "records", rounds, "times to", ml.NumMembers()-1, "members")
	select {} // push/pull keeps offering the forged state until killed
}

// forgedState is a memberlist delegate whose push/pull state is the forged
// records.
type forgedState struct {
	mu    sync.Mutex
	state []byte
}

func (s *forgedState) set(state []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.state = state
}

func (s *forgedState) NodeMeta(int) []byte             { return nil }
func (s *forgedState) NotifyMsg([]byte)                {}
func (s *forgedState) GetBroadcasts(int, int) [][]byte { return nil }
func (s *forgedState) LocalState(bool) []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state
}
func (s *forgedState) MergeRemoteState(buf []byte, _ bool) {}
