package bench

import (
	"fmt"
	"io"
	"math"
	"strings"
	"text/tabwriter"
)

// WriteTable prints the rows as an aligned table, one block per group, with the columns
// metric, meshnet, peer, ratio, target, met.
func WriteTable(w io.Writer, rows []Row) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "METRIC\tMESHNET\tPEER\tRATIO\tTARGET\tMET?")
	group := ""
	for _, r := range rows {
		if r.Group != group {
			group = r.Group
			fmt.Fprintf(tw, "[%s]\t\t\t\t\t\n", group)
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s\n", r.Metric, meshCell(r), peerCell(r), ratioCell(r), targetCell(r), metCell(r))
	}
	return tw.Flush()
}

// WriteNotes prints, under the table, why figures are unavailable (each reason once) and
// each row's note, with the shortfall of a missed target.
func WriteNotes(w io.Writer, rows []Row) {
	seen := map[string]bool{}
	for _, r := range rows {
		for _, u := range [][2]string{{"meshnet (" + r.Group + ")", r.MeshnetErr}, {r.PeerName, r.PeerErr}} {
			if u[1] == "" || seen[u[0]+u[1]] {
				continue
			}
			seen[u[0]+u[1]] = true
			fmt.Fprintf(w, "- unavailable, %s: %s\n", u[0], u[1])
		}
	}
	for _, r := range rows {
		var parts []string
		if s := r.Shortfall(); s != "" {
			parts = append(parts, s)
		}
		if r.Note != "" {
			parts = append(parts, r.Note)
		}
		if len(parts) > 0 {
			fmt.Fprintf(w, "- %s / %s: %s\n", r.Group, r.Metric, strings.Join(parts, "; "))
		}
	}
}

// WriteMarkdown prints the rows as a Markdown table.
func WriteMarkdown(w io.Writer, rows []Row) {
	fmt.Fprintln(w, "| group | metric | meshnet | peer | ratio | target | met? |")
	fmt.Fprintln(w, "|---|---|---:|---:|---:|---|---|")
	for _, r := range rows {
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s |\n", r.Group, mdEscape(r.Metric),
			meshCell(r), peerCell(r), ratioCell(r), targetCell(r), metCell(r))
	}
}

// mdEscape keeps "<service>" from being read as an HTML tag by Markdown renderers.
func mdEscape(s string) string {
	return strings.NewReplacer("<", "&lt;", ">", "&gt;", "|", `\|`).Replace(s)
}

func meshCell(r Row) string {
	if r.Meshnet == nil {
		return "unavailable"
	}
	return FormatValue(*r.Meshnet, r.Unit)
}

func peerCell(r Row) string {
	switch {
	case r.PeerName == "":
		return "—"
	case r.Peer == nil:
		return r.PeerName + ": unavailable"
	}
	return r.PeerName + " " + FormatValue(*r.Peer, r.Unit)
}

func ratioCell(r Row) string {
	if r.Ratio == nil {
		return "—"
	}
	if r.RatioMin != nil && r.RatioMax != nil && r.Rounds > 1 {
		return fmt.Sprintf("%.2f (%.2f–%.2f)", *r.Ratio, *r.RatioMin, *r.RatioMax)
	}
	return fmt.Sprintf("%.2f", *r.Ratio)
}

func targetCell(r Row) string {
	if r.Target == nil {
		return "—"
	}
	return r.Target.Text
}

func metCell(r Row) string {
	switch {
	case r.Target == nil:
		return ""
	case r.Met == nil:
		return "n/a"
	case *r.Met:
		return "yes"
	}
	return "NO"
}

// FormatValue prints a figure with 3 significant digits and its unit.
func FormatValue(v float64, unit string) string {
	var s string
	switch a := math.Abs(v); {
	case a == 0:
		s = "0"
	case a >= 100:
		s = fmt.Sprintf("%.0f", v)
	case a >= 10:
		s = fmt.Sprintf("%.1f", v)
	case a >= 1:
		s = fmt.Sprintf("%.2f", v)
	default:
		s = fmt.Sprintf("%.3g", v)
	}
	return s + " " + unit
}
