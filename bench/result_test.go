package bench

import (
	"bytes"
	"encoding/xml"
	"errors"
	"strings"
	"testing"
)

func TestCompareChecksTargetOnRatio(t *testing.T) {
	for _, tc := range []struct {
		name       string
		mesh, peer Figure
		target     *Target
		wantRatio  float64
		wantMet    string // "yes", "no", "" (nil)
	}{
		{"higher met", Val(9.6), Val(10), AtLeast(0.95, ""), 0.96, "yes"},
		{"higher missed", Val(9), Val(10), AtLeast(0.95, ""), 0.9, "no"},
		{"lower met", Val(0.8), Val(1), AtMost(1, ""), 0.8, "yes"},
		{"lower missed", Val(1.2), Val(1), AtMost(1, ""), 1.2, "no"},
		{"no target", Val(1), Val(2), nil, 0.5, ""},
		{"peer unavailable", Val(1), Unavailable(errors.New("x")), AtLeast(1, ""), 0, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := Compare("g", "m", "u", Higher, tc.mesh, "peer", tc.peer, tc.target)
			if tc.wantRatio == 0 {
				if r.Ratio != nil || r.Met != nil {
					t.Fatalf("ratio %v met %v, want none", r.Ratio, r.Met)
				}
				return
			}
			if r.Ratio == nil || abs(*r.Ratio-tc.wantRatio) > 1e-9 {
				t.Fatalf("ratio %v, want %v", r.Ratio, tc.wantRatio)
			}
			got := ""
			if r.Met != nil {
				got = map[bool]string{true: "yes", false: "no"}[*r.Met]
			}
			if got != tc.wantMet {
				t.Fatalf("met %q, want %q", got, tc.wantMet)
			}
		})
	}
}

func TestShortfall(t *testing.T) {
	r := Compare("g", "m", "u", Higher, Val(8), "p", Val(10), AtLeast(0.95, ""))
	if got := r.Shortfall(); got != "missed by 16%" {
		t.Fatalf("Shortfall() = %q", got)
	}
}

func TestTableAndChart(t *testing.T) {
	rows := []Row{
		Compare("throughput", "TCP 1 stream", "Gbit/s", Higher, Val(9.5), "swarm", Val(10), AtLeast(0.95, "≥ 0.95×")),
		Compare("dns", "q/s <&>", "q/s", Higher, Unavailable(errors.New("no dnsperf")), "docker", Val(4e4), AtLeast(2, "≥ 2×")),
		Alone("control plane", "rounds", "rounds", Lower, Val(4), ptr(0.7), AtMost(2, "≤ 2×")),
	}
	var tb bytes.Buffer
	if err := WriteTable(&tb, rows); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"9.50 Gbit/s", "swarm 10.0 Gbit/s", "0.95", "yes", "unavailable", "[control plane]"} {
		if !strings.Contains(tb.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, tb.String())
		}
	}
	var svg bytes.Buffer
	if err := WriteSVG(&svg, "t <1>", rows); err != nil {
		t.Fatal(err)
	}
	d := xml.NewDecoder(&svg)
	for {
		if _, err := d.Token(); err != nil {
			if err.Error() == "EOF" {
				break
			}
			t.Fatalf("chart is not well-formed XML: %v", err)
		}
	}
}

func TestFormatValue(t *testing.T) {
	for v, want := range map[float64]string{0: "0 s", 0.0183: "0.0183 s", 1.06: "1.06 s", 41800: "41800 s", 12.34: "12.3 s"} {
		if got := FormatValue(v, "s"); got != want {
			t.Errorf("FormatValue(%v) = %q, want %q", v, got, want)
		}
	}
}

func abs(x float64) float64 {
	if x < 0 {
		return -x
	}
	return x
}

func TestCompareRoundsPairsRounds(t *testing.T) {
	// Round 2 of the peer failed: its ratio is left out, not paired with another round.
	mesh := map[int]float64{1: 9, 2: 8, 3: 11, 4: 10}
	peer := map[int]float64{1: 10, 3: 10, 4: 10}
	r := CompareRounds("g", "m", "Gbit/s", Higher, mesh, nil, "peer", peer, nil, AtLeast(1, "≥ 1×"))
	if r.Rounds != 3 || *r.Ratio != 1.0 || *r.RatioMin != 0.9 || *r.RatioMax != 1.1 {
		t.Fatalf("rounds %d ratio %v (%v–%v); want 3 rounds, 1.0 (0.9–1.1)", r.Rounds, *r.Ratio, *r.RatioMin, *r.RatioMax)
	}
	if *r.Meshnet != 9.5 || *r.Peer != 10 {
		t.Fatalf("figures %v, %v; want the medians 9.5, 10", *r.Meshnet, *r.Peer)
	}
	if r.Met == nil || !*r.Met {
		t.Fatalf("target ≥ 1 on a median ratio of 1.0: met %v", r.Met)
	}
	if got := ratioCell(r); got != "1.00 (0.90–1.10)" {
		t.Fatalf("ratio cell %q", got)
	}
	r = CompareRounds("g", "m", "s/GB", Lower, mesh, nil, "peer", nil, errors.New("no swarm"), AtMost(1, ""))
	if r.Ratio != nil || r.Met != nil || r.PeerErr != "no swarm" {
		t.Fatalf("peer unavailable: ratio %v met %v err %q", r.Ratio, r.Met, r.PeerErr)
	}
}

func TestParseBusyCPU(t *testing.T) {
	stat := "cpu  100 20 300 5000 40 5 6 7 0 0\ncpu0 50 10 150 2500 20 2 3 3 0 0\n"
	got, err := parseBusyCPU(stat)
	if err != nil || got != 4.38 { // (100+20+300+5+6+7)/100, idle and iowait left out
		t.Fatalf("parseBusyCPU = %v, %v; want 4.38", got, err)
	}
	if _, err := parseBusyCPU("intr 1 2 3\n"); err == nil {
		t.Fatal("a stat without a cpu line parsed")
	}
}
