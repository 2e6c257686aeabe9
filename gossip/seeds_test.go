package gossip

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"
)

// scriptedSeeds is a SeedResolver whose answer the test changes, and which
// records what it was asked.
type scriptedSeeds struct {
	mu     sync.Mutex
	calls  int
	joins  [][]string
	answer func(call int) ([]string, error)
}

func (s *scriptedSeeds) Seeds(ctx context.Context, join []string) ([]string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls++
	s.joins = append(s.joins, slices.Clone(join))
	return s.answer(s.calls)
}

func (s *scriptedSeeds) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls
}

// A node whose only seed is a name joins through what the resolver says the
// name stands for, asking again on every attempt: first nothing resolves,
// then the name stands for a seed that is down and one that is up.
func TestClusterJoinsThroughSeedResolver(t *testing.T) {
	checkGoroutineLeaks(t)
	first := startNode(t, testConfig(t, 0), false)
	down := testIP() + ":1" // nothing listens there
	seeds := &scriptedSeeds{answer: func(call int) ([]string, error) {
		if call < 3 {
			return nil, errors.New("lookup seeds.example: no such host")
		}
		return []string{down, first.addr()}, nil
	}}
	cfg := testConfig(t, 1)
	cfg.Join = []string{"seeds.example"}
	cfg.Seeds = seeds
	second := startNode(t, cfg, false)
	nodes := []*testNode{first, second}
	stopTogether(t, nodes)
	eventually(t, converge, "joined through the resolved seeds", func() error { return expectMembers(nodes, allAlive(nodes)) })
	if n := seeds.count(); n < 3 {
		t.Fatalf("the resolver was asked %d times; want once per attempt, at least 3", n)
	}
	seeds.mu.Lock()
	defer seeds.mu.Unlock()
	for _, j := range seeds.joins {
		if !slices.Equal(j, cfg.Join) {
			t.Fatalf("the resolver was asked for %v, want the join list %v", j, cfg.Join)
		}
	}
}

// Seeds that resolve to nothing are retried at the fast pace, not after a
// whole rejoin interval: a host that boots before DNS knows its seeds must
// not wait long once it does.
func TestClusterRetriesUnresolvedSeedsSoon(t *testing.T) {
	seeds := &scriptedSeeds{answer: func(int) ([]string, error) { return nil, fmt.Errorf("no such host") }}
	cfg := testConfig(t, 0)
	cfg.Join = []string{"seeds.example"}
	cfg.Seeds = seeds
	cfg.RejoinInterval = time.Hour
	startNode(t, cfg, false)
	eventually(t, converge, "retried", func() error {
		if c := seeds.count(); c < 3 {
			return fmt.Errorf("asked %d times", c)
		}
		return nil
	})
}
