package bench

import (
	"bytes"
	"fmt"
	"image/color"
	"math"
	"path/filepath"
	"strconv"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgsvg"
)

// Plot file names in the output directory.
const (
	CostPlot        = "cost.svg"
	UtilizationPlot = "utilization.svg"
	ForecastPlot    = "forecast.svg"
)

// lineStyle returns the i-th line style: a colour and, past the palette's
// seven colours, a dash pattern, so nine regions stay distinguishable.
func lineStyle(i int) draw.LineStyle {
	return draw.LineStyle{Color: plotutil.Color(i), Width: vg.Points(1.2), Dashes: plotutil.Dashes(i / len(plotutil.DefaultColors))}
}

// hourTicks marks a time axis in hours every 3, 6 or 12 hours, whichever
// gives at most ten marks, with minor marks in between.
type hourTicks struct{}

// Ticks implements plot.Ticker.
func (hourTicks) Ticks(lo, hi float64) []plot.Tick {
	step := 3.0
	for (hi-lo)/step > 10 {
		step *= 2
	}
	var ticks []plot.Tick
	for v := math.Ceil(lo/step*2) * step / 2; v <= hi; v += step / 2 {
		t := plot.Tick{Value: v}
		if math.Mod(v, step) == 0 {
			t.Label = strconv.FormatFloat(v, 'f', -1, 64)
		}
		ticks = append(ticks, t)
	}
	return ticks
}

// writePlots writes every SVG of the report into dir.
func writePlots(dir string, r *Report) error {
	if err := writeCostPlot(filepath.Join(dir, CostPlot), r); err != nil {
		return fmt.Errorf("%s: %w", CostPlot, err)
	}
	if err := writeUtilizationPlot(filepath.Join(dir, UtilizationPlot), r); err != nil {
		return fmt.Errorf("%s: %w", UtilizationPlot, err)
	}
	if len(r.Forecasts) > 0 {
		if err := writeForecastPlot(filepath.Join(dir, ForecastPlot), r); err != nil {
			return fmt.Errorf("%s: %w", ForecastPlot, err)
		}
	}
	return nil
}

// writeCostPlot draws each scheduler's cumulative cost over the run, and
// the LP bound's.
func writeCostPlot(path string, r *Report) error {
	p := plot.New()
	p.Title.Text = "Cumulative cost (allocations + penalty for unplaced work)"
	p.X.Label.Text = "Hours since the start of the run"
	p.X.Tick.Marker = hourTicks{}
	p.Y.Label.Text = "US dollars"
	p.Legend.Top, p.Legend.Left = true, true
	p.Add(plotter.NewGrid())
	for i, ev := range r.Evaluations {
		tl := ev.Timeline
		pts := make(plotter.XYs, 0, len(tl.CostUSD)+1)
		pts = append(pts, plotter.XY{X: 0, Y: 0})
		sum := 0.0
		for b, c := range tl.CostUSD {
			sum += c
			pts = append(pts, plotter.XY{X: float64(b+1) * tl.Interval.Hours(), Y: sum})
		}
		l, err := plotter.NewLine(pts)
		if err != nil {
			return err
		}
		l.LineStyle = lineStyle(i)
		p.Add(l)
		p.Legend.Add(ev.Result.Name, l)
	}
	if len(r.Bound.Buckets) > 0 && len(r.Evaluations) > 0 {
		origin := r.Evaluations[0].Timeline.Start
		pts := plotter.XYs{{X: r.Bound.Buckets[0].Start.Sub(origin).Hours(), Y: 0}}
		sum := 0.0
		for _, b := range r.Bound.Buckets {
			sum += b.CostUSD
			pts = append(pts, plotter.XY{X: b.Start.Add(r.Bound.Bucket).Sub(origin).Hours(), Y: sum})
		}
		l, err := plotter.NewLine(pts)
		if err != nil {
			return err
		}
		l.LineStyle = draw.LineStyle{Color: color.Black, Width: vg.Points(1.5), Dashes: []vg.Length{vg.Points(4), vg.Points(3)}}
		p.Add(l)
		p.Legend.Add("LP lower bound", l)
	}
	return savePlot(p, path, 8*vg.Inch, 5*vg.Inch)
}

// writeUtilizationPlot draws one panel per region: each scheduler's
// utilization of the region over the run, in hourly means, against the
// time of day (UTC).
func writeUtilizationPlot(path string, r *Report) error {
	var plots []*plot.Plot
	for ri, region := range r.Run.Regions {
		p := plot.New()
		p.Title.Text = fmt.Sprintf("%s ($%.2f/h)", region, r.Run.PricesPerHour[region])
		p.X.Label.Text = "Time of day (hours, UTC)"
		p.X.Tick.Marker = hourTicks{}
		p.Y.Label.Text = "Utilization (%)"
		p.Y.Min, p.Y.Max = 0, 100
		p.Add(plotter.NewGrid())
		for i, ev := range r.Evaluations {
			tl := ev.Timeline
			day0 := tl.Start.Truncate(24 * time.Hour)
			series := tl.Utilization[region]
			per := max(1, int(time.Hour/tl.Interval)) // buckets per hourly mean
			var pts plotter.XYs
			for b := 0; b < len(series); b += per {
				end := min(len(series), b+per)
				sum := 0.0
				for _, u := range series[b:end] {
					sum += u
				}
				mid := tl.Start.Add(tl.Interval * time.Duration(b+end) / 2)
				pts = append(pts, plotter.XY{X: mid.Sub(day0).Hours(), Y: 100 * sum / float64(end-b)})
			}
			l, err := plotter.NewLine(pts)
			if err != nil {
				return err
			}
			l.LineStyle = lineStyle(i)
			p.Add(l)
			if ri == 0 {
				p.Legend.Add(ev.Result.Name, l)
			}
		}
		p.Legend.Top, p.Legend.Left = false, true
		plots = append(plots, p)
	}
	return writeTiles(path, plots)
}

// writeForecastPlot draws one panel per region: the actual demand, the
// forecast made one horizon earlier and the region's own capacity.
func writeForecastPlot(path string, r *Report) error {
	var plots []*plot.Plot
	for i, f := range r.Forecasts {
		p := plot.New()
		p.Title.Text = fmt.Sprintf("%s (horizon MAPE %.1f%%)", f.Region, f.Error.MAPE)
		p.X.Label.Text = "Hours since start"
		p.X.Tick.Marker = hourTicks{}
		p.Y.Label.Text = "Demand (nodes)"
		p.Add(plotter.NewGrid())
		actual := make(plotter.XYs, len(f.Actual))
		fc := make(plotter.XYs, len(f.Forecast))
		top := f.CapacityNodes
		for b := range f.Actual {
			x := (float64(b) + 0.5) * f.Interval.Hours()
			actual[b] = plotter.XY{X: x, Y: f.Actual[b]}
			fc[b] = plotter.XY{X: x, Y: f.Forecast[b]}
			top = math.Max(top, math.Max(f.Actual[b], f.Forecast[b]))
		}
		la, err := plotter.NewLine(actual)
		if err != nil {
			return err
		}
		la.LineStyle = draw.LineStyle{Color: plotutil.Color(0), Width: vg.Points(1)}
		lf, err := plotter.NewLine(fc)
		if err != nil {
			return err
		}
		lf.LineStyle = draw.LineStyle{Color: plotutil.Color(1), Width: vg.Points(1), Dashes: []vg.Length{vg.Points(3), vg.Points(2)}}
		cp := plotter.XYs{{X: 0, Y: f.CapacityNodes}, {X: float64(len(f.Actual)) * f.Interval.Hours(), Y: f.CapacityNodes}}
		lc, err := plotter.NewLine(cp)
		if err != nil {
			return err
		}
		lc.LineStyle = draw.LineStyle{Color: color.Gray{Y: 0x60}, Width: vg.Points(0.8), Dashes: []vg.Length{vg.Points(1), vg.Points(2)}}
		p.Add(la, lf, lc)
		if i == 0 {
			p.Legend.Add("actual", la)
			p.Legend.Add(fmt.Sprintf("forecast %d buckets ahead", f.HorizonSteps), lf)
			p.Legend.Add("own capacity", lc)
			p.Legend.Top = true
		}
		p.Y.Min, p.Y.Max = 0, top*1.1
		plots = append(plots, p)
	}
	return writeTiles(path, plots)
}

// writeTiles draws plots as a grid of panels, three to a row, into an SVG.
func writeTiles(path string, ps []*plot.Plot) error {
	n := len(ps)
	if n == 0 {
		return fmt.Errorf("nothing to plot")
	}
	cols := min(3, n)
	rows := (n + cols - 1) / cols
	plots := make([][]*plot.Plot, rows)
	for i := range plots {
		plots[i] = make([]*plot.Plot, cols)
	}
	for i, p := range ps {
		plots[i/cols][i%cols] = p
	}
	width, height := vg.Length(cols)*4*vg.Inch, vg.Length(rows)*3*vg.Inch
	c := vgsvg.New(width, height)
	dc := draw.New(c)
	tiles := draw.Tiles{Rows: rows, Cols: cols, PadX: vg.Millimeter * 4, PadY: vg.Millimeter * 4,
		PadTop: vg.Millimeter * 2, PadBottom: vg.Millimeter * 2, PadLeft: vg.Millimeter * 2, PadRight: vg.Millimeter * 2}
	canvases := plot.Align(plots, tiles, dc)
	for i := range plots {
		for j, p := range plots[i] {
			if p != nil {
				p.Draw(canvases[i][j])
			}
		}
	}
	var buf bytes.Buffer
	if _, err := c.WriteTo(&buf); err != nil {
		return err
	}
	return writeFileAtomic(path, buf.Bytes())
}

// savePlot renders p as SVG and writes it whole or not at all.
func savePlot(p *plot.Plot, path string, w, h vg.Length) error {
	wt, err := p.WriterTo(w, h, "svg")
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	if _, err := wt.WriteTo(&buf); err != nil {
		return err
	}
	return writeFileAtomic(path, buf.Bytes())
}
