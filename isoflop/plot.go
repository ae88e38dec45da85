package isoflop

import (
	"fmt"
	"image/color"
	"io"
	"math"
	"slices"
	"strconv"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// Plot geometry, in pixels at PlotDPI: the PNG is PanelWidthPx per budget
// wide and PanelHeightPx high. Tests check the decoded size against these.
const (
	PanelWidthPx  = 380
	PanelHeightPx = 340
	PlotDPI       = 96
)

// PlotSize is the pixel size of isoflop.png with one panel per budget.
func PlotSize(panels int) (w, h int) { return PanelWidthPx * panels, PanelHeightPx }

// seriesColors gives each variant the same colour in every panel (its
// marker comes from shapeFor).
var seriesColors = []color.Color{
	color.RGBA{R: 0x22, G: 0x22, B: 0x22, A: 0xff}, // dense: black
	color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 0xff},
	color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff},
	color.RGBA{R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff},
	color.RGBA{R: 0x94, G: 0x67, B: 0xbd, A: 0xff},
	color.RGBA{R: 0xff, G: 0x7f, B: 0x0e, A: 0xff},
}

// WritePlot draws the isoFLOP figure as PNG: validation loss against
// parameters (log scale), one panel per budget, one series per variant;
// each point is the mean over seeds, with a bar of ± one standard
// deviation where there are several.
func WritePlot(w io.Writer, results []Result) error {
	best := Best(results)
	groups := Groups(results)
	if len(best) == 0 {
		return fmt.Errorf("plot: no finished run to draw")
	}
	var variants []string
	for _, r := range results {
		if !slices.Contains(variants, r.Variant) {
			variants = append(variants, r.Variant)
		}
	}
	variants = sortedKeys(setOf(variants))

	row := make([]*plot.Plot, len(best))
	for i, bb := range best {
		p := plot.New()
		p.Title.Text = fmt.Sprintf("%.3g training FLOPs", bb.Budget)
		p.X.Label.Text = "parameters"
		p.Y.Label.Text = "validation loss (nats/byte)"
		p.X.Scale = plot.LogScale{}
		p.X.Tick.Marker = paramTicks{}
		p.Add(plotter.NewGrid())
		p.Legend.Top = true
		for j, v := range variants {
			var pts errorPoints
			for _, g := range groups {
				if g.Budget == bb.Budget && g.Variant == v {
					pts = append(pts, errorPoint{XY: plotter.XY{X: float64(g.Run.Params), Y: g.ValLoss.Mean}, std: g.ValLoss.Std})
				}
			}
			if len(pts) == 0 {
				continue
			}
			slices.SortFunc(pts, func(a, b errorPoint) int {
				switch {
				case a.X < b.X:
					return -1
				case a.X > b.X:
					return 1
				}
				return 0
			})
			line, points, err := plotter.NewLinePoints(pts)
			if err != nil {
				return fmt.Errorf("plot %s at %.3g: %w", v, bb.Budget, err)
			}
			c := seriesColors[j%len(seriesColors)]
			line.Color = c
			line.Width = vg.Points(1.2)
			points.Color = c
			points.Shape = shapeFor(j)
			points.Radius = vg.Points(2.5)
			p.Add(line, points)
			if pts.spread() {
				bars, err := plotter.NewYErrorBars(pts)
				if err != nil {
					return fmt.Errorf("plot %s at %.3g: %w", v, bb.Budget, err)
				}
				bars.Color = c
				bars.Width = vg.Points(0.8)
				bars.CapWidth = vg.Points(4)
				p.Add(bars)
			}
			if i == 0 {
				p.Legend.Add(v, line, points)
			}
		}
		// Headroom above the highest point keeps the legend off the data.
		if i == 0 {
			p.Y.Max += 0.4 * (p.Y.Max - p.Y.Min)
		}
		row[i] = p
	}

	pw, ph := PlotSize(len(row))
	img := vgimg.NewWith(vgimg.UseWH(vg.Length(pw)*vg.Inch/PlotDPI, vg.Length(ph)*vg.Inch/PlotDPI), vgimg.UseDPI(PlotDPI))
	dc := draw.New(img)
	tiles := draw.Tiles{Rows: 1, Cols: len(row), PadX: vg.Millimeter * 2, PadTop: vg.Millimeter, PadBottom: vg.Millimeter, PadLeft: vg.Millimeter, PadRight: vg.Millimeter}
	canvases := plot.Align([][]*plot.Plot{row}, tiles, dc)
	for i, p := range row {
		p.Draw(canvases[0][i])
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(w); err != nil {
		return fmt.Errorf("plot: encode png: %w", err)
	}
	return nil
}

func shapeFor(i int) draw.GlyphDrawer {
	shapes := []draw.GlyphDrawer{draw.CircleGlyph{}, draw.TriangleGlyph{}, draw.SquareGlyph{}, draw.PlusGlyph{}}
	return shapes[i%len(shapes)]
}

func setOf(xs []string) map[string]struct{} {
	m := make(map[string]struct{}, len(xs))
	for _, x := range xs {
		m[x] = struct{}{}
	}
	return m
}

// paramTicks labels a log axis of parameter counts at 1, 2 and 5 times a
// power of ten ("20k", "500k"): plot.LogTicks labels only powers of ten,
// and a family spanning less than a decade would get no label at all.
type paramTicks struct{}

func (paramTicks) Ticks(lo, hi float64) []plot.Tick {
	var ticks []plot.Tick
	for exp := math.Floor(math.Log10(lo)); math.Pow(10, exp) <= hi; exp++ {
		base := math.Pow(10, exp)
		for m := 1.0; m < 10; m++ {
			v := m * base
			if v < lo || v > hi {
				continue
			}
			t := plot.Tick{Value: v}
			if m == 1 || m == 2 || m == 5 {
				t.Label = siCount(v)
			}
			ticks = append(ticks, t)
		}
	}
	return ticks
}

// siCount writes a count compactly: 20000 as "20k", 1500000 as "1.5M".
func siCount(v float64) string {
	switch {
	case v >= 1e6:
		return strconv.FormatFloat(v/1e6, 'g', 3, 64) + "M"
	case v >= 1e3:
		return strconv.FormatFloat(v/1e3, 'g', 3, 64) + "k"
	}
	return strconv.FormatFloat(v, 'g', 3, 64)
}

// errorPoints are a series' (params, mean loss) points with the standard
// deviation over seeds, for plotter.NewYErrorBars.
type errorPoint struct {
	plotter.XY
	std float64
}

type errorPoints []errorPoint

func (e errorPoints) Len() int                        { return len(e) }
func (e errorPoints) XY(i int) (float64, float64)     { return e[i].X, e[i].Y }
func (e errorPoints) YError(i int) (float64, float64) { return e[i].std, e[i].std }

// spread reports whether any point has a standard deviation to draw.
func (e errorPoints) spread() bool {
	for _, p := range e {
		if p.std > 0 {
			return true
		}
	}
	return false
}
