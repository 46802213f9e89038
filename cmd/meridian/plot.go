package main

import (
	"fmt"
	"image/color"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/text"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"

	"github.com/meridian-mesh/meridian/placement"
)

// maxPlotBars caps the chart: past a few dozen bars the names cannot be read.
const maxPlotBars = 40

var (
	winnerColor = color.RGBA{R: 0xd9, G: 0x5f, B: 0x02, A: 0xff} // orange
	otherColor  = color.RGBA{R: 0x1b, G: 0x6f, B: 0xa8, A: 0xff} // blue
)

// writeScorePlot writes a bar chart of the ranked nodes' scores, best
// first, with the chosen node highlighted, as SVG or PNG by the extension
// of path. The file is written whole or not at all.
func writeScorePlot(path string, r *scoreReport) error {
	var rows []nodeRow
	rejected := 0
	for _, n := range r.Nodes {
		if n.Score != nil {
			rows = append(rows, n)
		} else {
			rejected++
		}
	}
	if len(rows) == 0 {
		return fmt.Errorf("--plot: no node can take the demand, so there is nothing to chart")
	}
	total := len(rows)
	if len(rows) > maxPlotBars {
		rows = rows[:maxPlotBars]
	}

	p := plot.New()
	p.Title.Text = "Node efficiency comparison"
	if total > len(rows) {
		p.Title.Text += fmt.Sprintf(" (best %d of %d feasible nodes)", len(rows), total)
	}
	p.Title.Padding = vg.Points(8)
	p.Title.TextStyle.Font.Size = vg.Points(14)
	if r.Weighted != nil {
		p.Y.Label.Text = "Score (weighted model)"
	} else {
		p.Y.Label.Text = "Cost efficiency E = C·D/c"
	}
	p.X.Label.Text = fmt.Sprintf("Node, by score (demand D = %s tasks/h", placement.FormatNumber(r.Demand.Compute))
	if rejected > 0 {
		p.X.Label.Text += fmt.Sprintf("; %d rejected node(s) not shown", rejected)
	}
	p.X.Label.Text += ")"
	grid := plotter.NewGrid()
	grid.Vertical.Width = 0
	p.Add(grid)
	p.Legend.Top = true

	names := make([]string, len(rows))
	labels := plotter.XYLabels{XYs: make(plotter.XYs, len(rows)), Labels: make([]string, len(rows))}
	barWidth := vg.Points(34)
	minScore := 0.0
	for i, n := range rows {
		names[i] = n.Name
		bar, err := plotter.NewBarChart(plotter.Values{*n.Score}, barWidth)
		if err != nil {
			return fmt.Errorf("--plot: node %q: %w", n.Name, err)
		}
		bar.XMin = float64(i)
		bar.LineStyle.Width = 0
		bar.Color = otherColor
		if n.Decision == placement.OutcomeChosen {
			bar.Color = winnerColor
			p.Legend.Add("chosen", bar)
		} else if i == 1 {
			p.Legend.Add("outranked", bar)
		}
		p.Add(bar)
		labels.XYs[i] = plotter.XY{X: float64(i), Y: *n.Score}
		labels.Labels[i] = placement.FormatNumber(*n.Score)
		minScore = min(minScore, *n.Score)
	}
	valueLabels, err := plotter.NewLabels(labels)
	if err != nil {
		return fmt.Errorf("--plot: %w", err)
	}
	for i := range valueLabels.TextStyle {
		valueLabels.TextStyle[i].XAlign = draw.XCenter
		valueLabels.TextStyle[i].YAlign = draw.YBottom
	}
	valueLabels.Offset = vg.Point{Y: vg.Points(3)}
	p.Add(valueLabels)
	p.NominalX(names...)
	// One unit per bar; half a unit of margin keeps the end bars whole.
	p.X.Min, p.X.Max = -0.5, float64(len(rows))-0.5
	if len(rows) > 8 {
		p.X.Tick.Label.Rotation = 0.6
		p.X.Tick.Label.XAlign = draw.XRight
		p.X.Tick.Label.YAlign = draw.YCenter
	}
	// Bars grow from zero: keep zero in view, with headroom for the value
	// labels and the legend above the tallest bar.
	p.Y.Min = minScore
	p.Y.Max = max(p.Y.Max, 0) + (max(p.Y.Max, 0)-minScore)*0.3
	p.Y.Tick.Marker = niceTicks{}
	for _, ts := range []*text.Style{&p.Title.TextStyle, &p.X.Label.TextStyle, &p.Y.Label.TextStyle,
		&p.X.Tick.Label, &p.Y.Tick.Label, &p.Legend.TextStyle} {
		ts.Font.Variant = "Sans"
	}
	for i := range valueLabels.TextStyle {
		valueLabels.TextStyle[i].Font.Variant = "Sans"
	}

	width := max(5*vg.Inch, vg.Length(len(rows))*0.75*vg.Inch+1.5*vg.Inch)
	height := 3.75 * vg.Inch
	var wt io.WriterTo
	switch ext := strings.ToLower(filepath.Ext(path)); ext {
	case ".png":
		// Twice the default resolution, so the chart stays sharp on screens
		// and in documents.
		c := vgimg.NewWith(vgimg.UseWH(width, height), vgimg.UseDPI(192))
		p.Draw(draw.New(c))
		wt = vgimg.PngCanvas{Canvas: c}
	default:
		var err error
		if wt, err = p.WriterTo(width, height, strings.TrimPrefix(ext, ".")); err != nil {
			return fmt.Errorf("--plot: render %s: %w", path, err)
		}
	}
	return writeFileAtomic(path, wt)
}

// writeFileAtomic writes through a temporary file in the same directory
// and renames it into place, so a failed write never leaves half a chart.
func writeFileAtomic(path string, wt io.WriterTo) (err error) {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("--plot: %w", err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if _, err := wt.WriteTo(tmp); err != nil {
		return fmt.Errorf("--plot: write %s: %w", path, err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		return fmt.Errorf("--plot: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("--plot: write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("--plot: %w", err)
	}
	return nil
}

// niceTicks labels an axis at about five round values (1, 2 or 5 times a
// power of ten apart), written as the tables write numbers; the default
// ticker labels only two or three values on short ranges.
type niceTicks struct{}

// Ticks implements plot.Ticker.
func (niceTicks) Ticks(lo, hi float64) []plot.Tick {
	span := hi - lo
	if !(span > 0) || math.IsInf(span, 0) {
		return []plot.Tick{{Value: lo, Label: placement.FormatNumber(lo)}}
	}
	raw := span / 5
	step := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*step >= raw {
			step *= m
			break
		}
	}
	var ticks []plot.Tick
	for v := math.Ceil(lo/step) * step; v <= hi+step*1e-9; v += step {
		if math.Abs(v) < step*1e-9 {
			v = 0
		}
		ticks = append(ticks, plot.Tick{Value: v, Label: placement.FormatNumber(v)})
	}
	return ticks
}
