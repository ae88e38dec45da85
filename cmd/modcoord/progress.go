package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/modcoord/modcoord/coordinator"
)

// progressBar draws a job's progress: one line redrawn in place on a
// terminal, a line per change otherwise (logs, CI).
type progressBar struct {
	w        io.Writer
	tty      bool
	last     string
	lastStep int64
	rate     float64 // steps per second, smoothed
	at       time.Time
}

func newProgressBar(w io.Writer) *progressBar {
	tty := false
	if f, ok := w.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			tty = true
		}
	}
	return &progressBar{w: w, tty: tty}
}

func (p *progressBar) draw(j coordinator.Job) {
	l := j.Ledger
	now := time.Now()
	if !p.at.IsZero() && l.StepsDone > p.lastStep {
		r := float64(l.StepsDone-p.lastStep) / now.Sub(p.at).Seconds()
		if p.rate == 0 {
			p.rate = r
		}
		p.rate = 0.7*p.rate + 0.3*r
	}
	if l.StepsDone != p.lastStep || p.at.IsZero() {
		p.lastStep, p.at = l.StepsDone, now
	}
	line := progressLine(j, p.rate)
	if line == p.last {
		return
	}
	p.last = line
	if p.tty {
		fmt.Fprintf(p.w, "\r\033[K%s", line)
	} else {
		fmt.Fprintln(p.w, line)
	}
}

func (p *progressBar) done() {
	if p.tty && p.last != "" {
		fmt.Fprintln(p.w)
	}
}

// progressLine is step/total with a bar, loss, tokens/s, budget used, ETA,
// generation and workers, and the status.
func progressLine(j coordinator.Job, stepsPerS float64) string {
	l := j.Ledger
	frac := 0.0
	if l.TotalSteps > 0 {
		frac = float64(l.StepsDone) / float64(l.TotalSteps)
	}
	const width = 24
	fill := int(frac * width)
	bar := strings.Repeat("=", fill) + strings.Repeat(" ", width-fill)
	s := fmt.Sprintf("%s step %d/%d [%s] %3.0f%%", j.ID, l.StepsDone, l.TotalSteps, bar, 100*frac)
	if n := len(j.Recent); n > 0 {
		last := j.Recent[n-1]
		s += fmt.Sprintf("  loss %.4f", last.Loss)
		var tok, sec float64
		for _, pt := range j.Recent[max(0, n-10):] {
			tok += float64(pt.Tokens)
			sec += pt.WallS
		}
		if sec > 0 {
			s += fmt.Sprintf("  %.0f tok/s", tok/sec)
		}
	}
	if l.BudgetFLOPs > 0 {
		s += fmt.Sprintf("  budget %.1f%%", 100*l.FLOPsUsed/l.BudgetFLOPs)
	}
	if stepsPerS > 0 && l.StepsDone < l.TotalSteps {
		eta := time.Duration(float64(l.TotalSteps-l.StepsDone) / stepsPerS * float64(time.Second))
		s += fmt.Sprintf("  ETA %s", eta.Round(time.Second))
	}
	s += fmt.Sprintf("  gen %d, %d workers  ", j.Generation, len(j.Members))
	// The coordinator's reasons start with the status ("waiting: 1 of 2 …").
	if j.Reason != "" && j.Status != coordinator.StatusRunning {
		return s + j.Reason
	}
	return s + string(j.Status)
}
