package ipam

import (
	"context"
	"net/netip"
	"testing"
)

// BenchmarkRequestAddress measures in-process allocations on one node that
// owns its blocks, keeping about 200 addresses held (each iteration
// allocates one and releases the oldest, so the table stays the size of a
// busy host). "disk" persists every change with write+fsync+rename+fsync;
// "memory" replaces the file write, to show the allocator's own cost.
func BenchmarkRequestAddress(b *testing.B) {
	for _, mode := range []string{"disk", "memory"} {
		b.Run(mode, func(b *testing.B) {
			net := newFakeNet(1, true)
			nd := net.addNode(b, "n1", b.TempDir(), testConfig())
			a := nd.ipamOf()
			if mode == "memory" {
				a.mu.Lock()
				a.writeFile = func(string, []byte) error { return nil }
				a.mu.Unlock()
			}
			pool, err := a.RequestPool(netip.MustParsePrefix("10.42.0.0/16"), nil)
			if err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			var held []netip.Addr
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				p, err := a.RequestAddress(ctx, pool, netip.Addr{}, false)
				if err != nil {
					b.Fatal(err)
				}
				held = append(held, p.Addr())
				if len(held) > 200 {
					if err := a.ReleaseAddress(pool, held[0]); err != nil {
						b.Fatal(err)
					}
					held = held[1:]
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "allocs/s")
		})
	}
}
