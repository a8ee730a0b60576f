package benchkit

import (
	"fmt"
	"html"
	"math"
	"strings"
)

// Bar is one bar of a BarChart: a ratio to the chart's baseline (1 =
// equal, above 1 = better) and the text printed beside it.
type Bar struct {
	Series string
	Ratio  float64
	Text   string
}

// BarGroup is one measurement (a table row) with one bar per series.
type BarGroup struct {
	Label string
	Bars  []Bar
}

// BarChart is a horizontal grouped bar chart of ratios on a log scale,
// rendered as a self-contained SVG: no fonts or scripts to fetch, so it
// shows the same in a browser, an editor or a repository's file view.
type BarChart struct {
	Title string
	// Series names the bars of every group, in order; their colours
	// follow that order.
	Series []string
	Groups []BarGroup
	// Note is printed under the chart (what the ratio means).
	Note string
}

var chartColours = []string{"#8c8c8c", "#4e79a7", "#f28e2b", "#59a14f", "#e15759"}

// SVG renders the chart.
func (c BarChart) SVG() string {
	const (
		labelW   = 300.0
		plotW    = 420.0
		textW    = 190.0
		barH     = 13.0
		groupGap = 10.0
		top      = 56.0
	)
	// The scale spans the ratios seen, at least 0.5× to 2×, in powers of
	// two so that equal factors look equal either way.
	lo, hi := 0.5, 2.0
	for _, g := range c.Groups {
		for _, b := range g.Bars {
			if b.Ratio > 0 && !math.IsInf(b.Ratio, 0) {
				lo = math.Min(lo, b.Ratio)
				hi = math.Max(hi, b.Ratio)
			}
		}
	}
	l0 := math.Floor(math.Log2(lo))
	l1 := math.Ceil(math.Log2(hi))
	x := func(r float64) float64 {
		r = math.Min(math.Max(r, math.Exp2(l0)), math.Exp2(l1))
		return labelW + (math.Log2(r)-l0)/(l1-l0)*plotW
	}
	height := top + 30
	for _, g := range c.Groups {
		height += float64(len(g.Bars))*barH + groupGap
	}
	height += 40
	width := labelW + plotW + textW

	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" viewBox="0 0 %.0f %.0f" font-family="sans-serif" font-size="11">`+"\n",
		width, height, width, height)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&b, `<text x="10" y="20" font-size="14" font-weight="bold">%s</text>`+"\n", html.EscapeString(c.Title))
	// Legend.
	lx := 10.0
	for i, s := range c.Series {
		fmt.Fprintf(&b, `<rect x="%.0f" y="30" width="10" height="10" fill="%s"/><text x="%.0f" y="39">%s</text>`+"\n",
			lx, chartColours[i%len(chartColours)], lx+14, html.EscapeString(s))
		lx += 24 + 7*float64(len(s))
	}
	// Grid: one line per power of two, the baseline bold.
	plotBottom := height - 40
	for e := l0; e <= l1; e++ {
		gx := x(math.Exp2(e))
		w, col := 1.0, "#dddddd"
		if e == 0 {
			w, col = 1.5, "#333333"
		}
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.0f" x2="%.1f" y2="%.0f" stroke="%s" stroke-width="%.1f"/>`+"\n", gx, top-6, gx, plotBottom, col, w)
		fmt.Fprintf(&b, `<text x="%.1f" y="%.0f" text-anchor="middle" fill="#555">%s×</text>`+"\n", gx, plotBottom+14, ratioLabel(math.Exp2(e)))
	}
	y := top
	for _, g := range c.Groups {
		gh := float64(len(g.Bars)) * barH
		fmt.Fprintf(&b, `<text x="%.0f" y="%.1f" text-anchor="end">%s</text>`+"\n", labelW-8, y+gh/2+4, html.EscapeString(g.Label))
		for _, bar := range g.Bars {
			col := chartColours[0]
			for i, s := range c.Series {
				if s == bar.Series {
					col = chartColours[i%len(chartColours)]
				}
			}
			// +Inf (the baseline never finished) is drawn to the edge.
			if bar.Ratio > 0 && !math.IsNaN(bar.Ratio) {
				x0, x1 := x(1), x(bar.Ratio)
				if x1 < x0 {
					x0, x1 = x1, x0
				}
				fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"/>`+"\n", x0, y+1, math.Max(x1-x0, 1), barH-2, col)
			}
			fmt.Fprintf(&b, `<text x="%.0f" y="%.1f" fill="#333">%s</text>`+"\n", labelW+plotW+6, y+barH-3, html.EscapeString(bar.Text))
			y += barH
		}
		y += groupGap
	}
	fmt.Fprintf(&b, `<text x="10" y="%.0f" fill="#555">%s</text>`+"\n", height-10, html.EscapeString(c.Note))
	b.WriteString("</svg>\n")
	return b.String()
}

func ratioLabel(r float64) string {
	if r >= 1 {
		return fmt.Sprintf("%g", r)
	}
	return fmt.Sprintf("1/%g", 1/r)
}
