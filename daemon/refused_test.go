package daemon

import (
	"strings"
	"testing"

	"github.com/meshnet/meshnet/gossip"
)

// A record in the store that the typed view refuses (here an endpoint
// address in the a.b.c.d/len form, which no reader takes) is counted in
// meshctl status with its reason, beside what Merge refused.
func TestRefusedRecordsCountViewRejections(t *testing.T) {
	s := gossip.NewStore(gossip.StoreConfig{Self: "h1"})
	if _, err := s.Put(gossip.KindEndpoint, "ep", gossip.EndpointInfo{Subnet: "10.42.0.0/16", Addr: "10.42.0.5/16", MAC: "02:42:0a:2a:00:05"}); err != nil {
		t.Fatal(err)
	}
	got := refusedRecords(gossip.Rejections{Total: 2, ByReason: map[string]uint64{"bad signature": 2}}, s.Snapshot().View())
	if got.Total != 3 || got.ByReason["bad signature"] != 2 || len(got.ByReason) != 2 {
		t.Fatalf("refused %+v", got)
	}
	for reason, n := range got.ByReason {
		if reason != "bad signature" && (n != 1 || !strings.Contains(reason, "endpoint") || !strings.Contains(reason, "address")) {
			t.Errorf("reason %q counted %d", reason, n)
		}
	}
}
