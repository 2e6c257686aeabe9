package bench

import (
	"slices"
	"time"
)

// Median returns the median of xs (the mean of the middle two for an even count).
func Median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// Max returns the largest of xs.
func Max(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	return slices.Max(xs)
}

// Seconds converts durations to seconds.
func Seconds(ds []time.Duration) []float64 {
	out := make([]float64, len(ds))
	for i, d := range ds {
		out[i] = d.Seconds()
	}
	return out
}

func sortStrings(s []string) { slices.Sort(s) }

// inRound is a figure measured in a numbered round (Throughput, Latency, DNSFigures).
type inRound interface{ round() int }

func (t Throughput) round() int { return t.Round }
func (l Latency) round() int    { return l.Round }
func (f DNSFigures) round() int { return f.Round }

// perRound maps each item's round to val of it, leaving out values that are not positive
// (a failed run measures nothing).
func perRound[T inRound](items []T, val func(T) float64) map[int]float64 {
	out := map[int]float64{}
	for _, it := range items {
		if v := val(it); v > 0 {
			out[it.round()] = v
		}
	}
	return out
}
