package bench

import (
	"strings"
	"testing"
)

func TestSummarizePerf(t *testing.T) {
	out := `# Samples: 10K of event 'cpu-clock'
#
    10.00%  [k] _copy_from_iter
     6.00%  [k] nft_do_chain
     4.00%  [k] br_nf_pre_routing
     3.00%  [k] vxlan_xmit_one
     1.00%  [.] golang.org/x/crypto/chacha20poly1305.chacha20Poly1305Seal.abi0
`
	got := summarizePerf(out)
	for _, want := range []string{"netfilter/conntrack 10.0%", "copies 10.0%", "vxlan/udp tunnel 3.0%", "crypto 1.0%", " 10.0% _copy_from_iter"} {
		if !strings.Contains(got, want) {
			t.Errorf("summary lacks %q:\n%s", want, got)
		}
	}
}
