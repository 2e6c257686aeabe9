package bench

import (
	"fmt"
	"html"
	"io"
	"math"
	"strings"
)

// WriteSVG draws one horizontal bar per row that has a ratio: the ratio meshnet/peer (or the
// row's checked figure), a line at 1.0 (parity with the peer), a tick at the target, green
// where the target is met, red where missed, grey without a target. Standalone SVG, standard
// library only, readable in any browser.
func WriteSVG(w io.Writer, title string, rows []Row) error {
	var bars []Row
	maxR := 2.0
	for _, r := range rows {
		if r.Ratio != nil {
			bars = append(bars, r)
			maxR = math.Max(maxR, *r.Ratio)
		}
	}
	maxR = math.Min(math.Ceil(maxR), 10) // a runaway ratio is clipped, its label says the value
	const (
		plotW = 460
		rowH  = 22
		top   = 56
	)
	// Labels are right-aligned against the plot; about 6.5 px per character at 12 px.
	labelW := 200
	for _, r := range bars {
		labelW = max(labelW, int(6.5*float64(len([]rune(barLabel(r)))))+16)
	}
	height := top + rowH*len(bars) + 40
	width := labelW + plotW + 90
	x := func(v float64) float64 { return float64(labelW) + plotW*math.Min(v, maxR)/maxR }
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">`+"\n", width, height)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&b, `<text x="10" y="20" font-size="15" font-weight="bold">%s</text>`+"\n", html.EscapeString(title))
	fmt.Fprintf(&b, `<text x="10" y="40" fill="#555">ratio meshnet / peer (bar), target (black tick); green met, red missed, grey no target</text>`+"\n")
	for v := 0.0; v <= maxR; v += 0.5 {
		stroke := "#eee"
		if v == 1 {
			stroke = "#888"
		}
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="%s"/>`+"\n", x(v), top-4, x(v), top+rowH*len(bars), stroke)
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle" fill="#555">%.1f</text>`+"\n", x(v), top+rowH*len(bars)+16, v)
	}
	for i, r := range bars {
		y := top + i*rowH
		color := "#9e9e9e"
		if r.Met != nil {
			color = "#2e7d32"
			if !*r.Met {
				color = "#c62828"
			}
		}
		fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="end">%s</text>`+"\n", labelW-8, y+14, html.EscapeString(barLabel(r)))
		fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%.1f" height="%d" fill="%s"/>`+"\n", labelW, y+3, x(*r.Ratio)-float64(labelW), rowH-6, color)
		fmt.Fprintf(&b, `<text x="%.1f" y="%d">%.2f</text>`+"\n", x(*r.Ratio)+4, y+14, *r.Ratio)
		if r.Target != nil {
			tx := x(r.Target.Value)
			fmt.Fprintf(&b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="black" stroke-width="2"/>`+"\n", tx, y+1, tx, y+rowH-1)
		}
	}
	b.WriteString("</svg>\n")
	_, err := io.WriteString(w, b.String())
	return err
}

func barLabel(r Row) string {
	label := r.Group + ": " + r.Metric
	if r.PeerName != "" {
		label += " vs " + r.PeerName
	}
	if r.Better == Lower {
		label += " (lower is better)"
	}
	return label
}
