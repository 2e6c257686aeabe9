package metrics

import (
	"strings"
	"testing"

	gometrics "github.com/armon/go-metrics"
	compat "github.com/hashicorp/go-metrics/compat"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// memberlist reports through go-metrics' global (its compat package, which
// is armon's by default): once the sink is installed, what it reports there
// reaches the meshnet_gossip_ metrics, and other keys are dropped.
func TestGossipSinkReceivesMemberlistCounts(t *testing.T) {
	InstallGossipSink()
	before := sink.udpSentBytes.Load()
	beforePackets := sink.udpSentPackets.Load()
	compat.IncrCounterWithLabels([]string{"memberlist", "udp", "sent"}, 300, nil)
	gometrics.IncrCounterWithLabels([]string{"memberlist", "udp", "sent"}, 200, nil)
	compat.IncrCounterWithLabels([]string{"memberlist", "msg", "suspect"}, 1, nil)
	compat.IncrCounter([]string{"somebody", "else"}, 5)
	if got := sink.udpSentBytes.Load() - before; got != 500 {
		t.Fatalf("UDP bytes sent: %d more, want 500", got)
	}
	if got := sink.udpSentPackets.Load() - beforePackets; got != 2 {
		t.Fatalf("UDP packets sent: %d more, want 2", got)
	}
	if n := testutil.CollectAndCount(gossipCollector{sink}); n != 10 {
		t.Fatalf("%d gossip series, want 10", n)
	}
	if err := testutil.CollectAndCompare(gossipCollector{sink}, strings.NewReader(`
# HELP meshnet_gossip_membership_messages_total Membership messages handled by type (alive, suspect, dead).
# TYPE meshnet_gossip_membership_messages_total counter
meshnet_gossip_membership_messages_total{type="alive"} `+itoa(sink.alive.Load())+`
meshnet_gossip_membership_messages_total{type="dead"} `+itoa(sink.dead.Load())+`
meshnet_gossip_membership_messages_total{type="suspect"} `+itoa(sink.suspect.Load())+`
`), "meshnet_gossip_membership_messages_total"); err != nil {
		t.Fatal(err)
	}
	if sink.suspect.Load() == 0 {
		t.Fatal("the suspect message was not counted")
	}
}

func itoa(n uint64) string {
	var b [20]byte
	i := len(b) - 1
	for {
		b[i] = byte('0' + n%10)
		n /= 10
		if n == 0 {
			return string(b[i:])
		}
		i--
	}
}
