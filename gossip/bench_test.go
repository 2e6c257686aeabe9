package gossip

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

// BenchmarkConvergence25 measures how long a record put on one of 25
// in-process nodes takes to reach all of them, with memberlist's production
// LAN timers (gossip every 200 ms, push/pull every 30 s), over loopback. It
// is a measurement, not a test: run it with
//
//	go test ./gossip/ -run XXX -bench BenchmarkConvergence25 -benchtime 10x
//
// and read median_ms and worst_ms (ns/op is the mean).
func BenchmarkConvergence25(b *testing.B) {
	const size = 25
	setup := time.Now()
	nodes := make([]*testNode, size)
	for i := range nodes {
		cfg := testConfig(b, i)
		cfg.Memberlist = memberlist.DefaultLANConfig()
		cfg.RejoinInterval = DefaultConfig().RejoinInterval
		if i > 0 {
			cfg.Join = []string{nodes[0].addr()}
		}
		nodes[i] = startNode(b, cfg, false)
	}
	stopTogether(b, nodes)
	eventually(b, time.Minute, "membership of 25", func() error { return expectMembers(nodes, allAlive(nodes)) })
	b.Logf("25 nodes agree on membership %v after the first started", time.Since(setup).Round(time.Millisecond))

	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 0))
	var times []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		writer := nodes[rng.IntN(size)]
		id := fmt.Sprintf("bench-%d-%d", b.N, i)
		start := time.Now()
		if _, err := writer.store.Put(kindTest, id, i); err != nil {
			b.Fatal(err)
		}
		for expectRecord(nodes, kindTest, writer.name, id, true) != nil {
			if time.Since(start) > 2*time.Minute {
				b.Fatalf("record %s not everywhere after 2 minutes", id)
			}
			time.Sleep(time.Millisecond)
		}
		times = append(times, time.Since(start))
	}
	b.StopTimer()
	slices.Sort(times)
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	b.ReportMetric(ms(times[len(times)/2]), "median_ms")
	b.ReportMetric(ms(times[len(times)-1]), "worst_ms")
}
