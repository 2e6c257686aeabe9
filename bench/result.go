package bench

import (
	"fmt"
	"math"
	"slices"
)

// Better says which direction of a figure is good.
type Better string

const (
	Higher Better = "higher"
	Lower  Better = "lower"
)

// Target is a goal on the ratio meshnet/peer (or, without a peer, on meshnet's figure).
type Target struct {
	// Op is ">=" or "<=".
	Op string `json:"op"`
	// Value is the bound on the ratio.
	Value float64 `json:"value"`
	// Text is how the report shows it, e.g. "≥ 0.95× swarm".
	Text string `json:"text"`
}

// Row is one line of the report: meshnet's figure beside its peer's.
type Row struct {
	Group    string `json:"group"`
	Metric   string `json:"metric"`
	Unit     string `json:"unit"`
	Better   Better `json:"better"`
	PeerName string `json:"peer_name,omitempty"`
	// Meshnet and Peer are the figures; nil when unavailable (see the *Err fields) or, for
	// Peer, when there is no peer to compare with.
	Meshnet    *float64 `json:"meshnet,omitempty"`
	Peer       *float64 `json:"peer,omitempty"`
	MeshnetErr string   `json:"meshnet_unavailable,omitempty"`
	PeerErr    string   `json:"peer_unavailable,omitempty"`
	// Ratio is Meshnet/Peer when both exist; for a row without a peer, the figure the
	// target is checked against (e.g. rounds over the epidemic bound).
	Ratio *float64 `json:"ratio,omitempty"`
	// RatioMin and RatioMax bound the per-round ratios Ratio is the median of (rows built
	// by CompareRounds), over Rounds rounds.
	RatioMin *float64 `json:"ratio_min,omitempty"`
	RatioMax *float64 `json:"ratio_max,omitempty"`
	Rounds   int      `json:"rounds,omitempty"`
	Target   *Target  `json:"target,omitempty"`
	// Met is nil when there is no target or no ratio to check.
	Met *bool `json:"met,omitempty"`
	// Note says what the reader needs to judge the figure: sample counts, spread, conditions
	// that differ from the group's, and for a missed target by how much and why.
	Note string `json:"note,omitempty"`
}

// Figure is a measured value or the reason there is none.
type Figure struct {
	Value float64
	Err   error
}

// Val returns a measured figure.
func Val(v float64) Figure { return Figure{Value: v} }

// Unavailable returns a figure that could not be measured.
func Unavailable(err error) Figure { return Figure{Err: err} }

// Compare builds a row from meshnet's and the peer's figures and checks the target on
// their ratio.
func Compare(group, metric, unit string, better Better, mesh Figure, peerName string, peer Figure, t *Target) Row {
	r := Row{Group: group, Metric: metric, Unit: unit, Better: better, PeerName: peerName, Target: t}
	setFig(&r.Meshnet, &r.MeshnetErr, mesh)
	setFig(&r.Peer, &r.PeerErr, peer)
	if r.Meshnet != nil && r.Peer != nil && *r.Peer != 0 {
		r.Ratio = ptr(*r.Meshnet / *r.Peer)
	}
	r.check()
	return r
}

// CompareRounds builds a row from figures measured in rounds (round number → value), meshnet's
// and its peer's interleaved in each round: each side's figure is its median over rounds,
// and the ratio is the median of the rounds' own ratios, over the rounds both measured, with
// their min and max. A pair measured minutes apart shares the machine's load of those
// minutes; the ratio of two medians mixes rounds that did not. meshErr and peerErr, when set,
// say why that side has no figures.
func CompareRounds(group, metric, unit string, better Better, mesh map[int]float64, meshErr error, peerName string, peer map[int]float64, peerErr error, t *Target) Row {
	side := func(v map[int]float64, err error) Figure {
		if err != nil {
			return Unavailable(err)
		}
		return Val(Median(values(v)))
	}
	r := Compare(group, metric, unit, better, side(mesh, meshErr), peerName, side(peer, peerErr), t)
	if r.Meshnet == nil || r.Peer == nil {
		return r
	}
	var ratios []float64
	for round, m := range mesh {
		if p, ok := peer[round]; ok && p != 0 {
			ratios = append(ratios, m/p)
		}
	}
	if len(ratios) == 0 {
		return r
	}
	r.Ratio = ptr(Median(ratios))
	r.RatioMin, r.RatioMax = ptr(slices.Min(ratios)), ptr(slices.Max(ratios))
	r.Rounds = len(ratios)
	r.Met = nil
	r.check()
	return r
}

func values(m map[int]float64) []float64 {
	out := make([]float64, 0, len(m))
	for _, v := range m {
		out = append(out, v)
	}
	return out
}

// Alone builds a row without a peer; ratio (may be nil) is what the target is checked on.
func Alone(group, metric, unit string, better Better, mesh Figure, ratio *float64, t *Target) Row {
	r := Row{Group: group, Metric: metric, Unit: unit, Better: better, Target: t, Ratio: ratio}
	setFig(&r.Meshnet, &r.MeshnetErr, mesh)
	r.check()
	return r
}

func setFig(v **float64, e *string, f Figure) {
	if f.Err != nil {
		*e = f.Err.Error()
		return
	}
	if math.IsNaN(f.Value) || math.IsInf(f.Value, 0) {
		*e = fmt.Sprintf("not a number (%v)", f.Value)
		return
	}
	*v = ptr(f.Value)
}

func (r *Row) check() {
	if r.Target == nil || r.Ratio == nil {
		return
	}
	met := *r.Ratio >= r.Target.Value
	if r.Target.Op == "<=" {
		met = *r.Ratio <= r.Target.Value
	}
	r.Met = &met
}

// Shortfall says by how much a missed target was missed, as a percentage of the bound.
func (r Row) Shortfall() string {
	if r.Met == nil || *r.Met || r.Ratio == nil || r.Target.Value == 0 {
		return ""
	}
	return fmt.Sprintf("missed by %.0f%%", 100*math.Abs(*r.Ratio-r.Target.Value)/r.Target.Value)
}

// AtLeast and AtMost make targets on a ratio.
func AtLeast(v float64, text string) *Target { return &Target{Op: ">=", Value: v, Text: text} }
func AtMost(v float64, text string) *Target  { return &Target{Op: "<=", Value: v, Text: text} }

func ptr[T any](v T) *T { return &v }
