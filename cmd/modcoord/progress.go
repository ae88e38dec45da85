package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/modcoord/modcoord/coordinator"
)

// progress is one progress report, from a cluster job's status (watch,
// local) or from a step of `train`; progressText formats both the same
// way, so a user reads one kind of line whichever command trains.
type progress struct {
	label       string // the job id; empty for train
	step, total int64
	loss        float64 // training loss: smoothed (train) or rank 0's last (cluster)
	hasLoss     bool
	ema         bool    // loss is an exponential moving average
	val         float64 // last validation loss
	valStep     int64   // the step val was measured after; 0: none
	lr          float64 // 0: unknown (a cluster job does not report it)
	gradNorm    float64
	tokPerS     float64
	budgetFrac  float64 // fraction of the FLOP budget used; < 0: no budget
	eta         time.Duration
	elapsed     time.Duration // 0: not shown
	tail        string        // generation, workers and status for a cluster job
}

// progressText is step/total with a bar, loss, learning rate and gradient
// norm when known, tokens/s, budget used, ETA, elapsed time, and the tail.
func progressText(p progress) string {
	frac := 0.0
	if p.total > 0 {
		frac = min(float64(p.step)/float64(p.total), 1)
	}
	const width = 24
	fill := int(frac * width)
	var b strings.Builder
	if p.label != "" {
		b.WriteString(p.label + " ")
	}
	fmt.Fprintf(&b, "step %d/%d [%s%s] %3.0f%%", p.step, p.total, strings.Repeat("=", fill), strings.Repeat(" ", width-fill), 100*frac)
	if p.hasLoss {
		fmt.Fprintf(&b, "  train %.4f", p.loss)
		if p.ema {
			b.WriteString(" (ema)")
		}
	}
	if p.valStep > 0 {
		fmt.Fprintf(&b, "  val %.4f", p.val)
		if p.valStep != p.step {
			fmt.Fprintf(&b, " @%d", p.valStep)
		}
	}
	if p.lr > 0 {
		fmt.Fprintf(&b, "  lr %.2e  |g| %.2f", p.lr, p.gradNorm)
	}
	if p.tokPerS > 0 {
		fmt.Fprintf(&b, "  %.0f tok/s", p.tokPerS)
	}
	if p.budgetFrac >= 0 {
		fmt.Fprintf(&b, "  budget %.1f%%", 100*p.budgetFrac)
	}
	if p.eta > 0 && p.step < p.total {
		fmt.Fprintf(&b, "  ETA %s", p.eta.Round(time.Second))
	}
	if p.elapsed > 0 {
		fmt.Fprintf(&b, "  %s", p.elapsed.Round(time.Second))
	}
	if p.tail != "" {
		b.WriteString("  " + p.tail)
	}
	return b.String()
}

// rateMeter estimates steps per second, smoothed, for the ETA.
type rateMeter struct {
	lastStep int64
	at       time.Time
	rate     float64
}

// observe records that step was reached at now.
func (m *rateMeter) observe(step int64, now time.Time) {
	if !m.at.IsZero() && step > m.lastStep {
		r := float64(step-m.lastStep) / now.Sub(m.at).Seconds()
		if m.rate == 0 {
			m.rate = r
		}
		m.rate = 0.7*m.rate + 0.3*r
	}
	if step != m.lastStep || m.at.IsZero() {
		m.lastStep, m.at = step, now
	}
}

// eta is the time left to reach total at the current rate (0: unknown).
func (m *rateMeter) eta(step, total int64) time.Duration {
	if m.rate <= 0 || step >= total {
		return 0
	}
	return time.Duration(float64(total-step) / m.rate * float64(time.Second))
}

// progressLine is a cluster job's progress at stepsPerS steps per second.
func progressLine(j coordinator.Job, stepsPerS float64) string {
	l := j.Ledger
	p := progress{label: j.ID, step: l.StepsDone, total: l.TotalSteps, budgetFrac: -1}
	if n := len(j.Recent); n > 0 {
		p.loss, p.hasLoss = j.Recent[n-1].Loss, true
	}
	if v, ok := j.LastVal(); ok {
		p.val, p.valStep = v.Loss, v.Step
	}
	if n := len(j.Recent); n > 0 {
		var tok, sec float64
		for _, pt := range j.Recent[max(0, n-10):] {
			tok += float64(pt.Tokens)
			sec += pt.WallS
		}
		if sec > 0 {
			p.tokPerS = tok / sec
		}
	}
	if l.BudgetFLOPs > 0 {
		p.budgetFrac = l.FLOPsUsed / l.BudgetFLOPs
	}
	meter := rateMeter{rate: stepsPerS}
	p.eta = meter.eta(l.StepsDone, l.TotalSteps)
	p.tail = fmt.Sprintf("gen %d, %d workers  ", j.Generation, len(j.Members))
	// The coordinator's reasons start with the status ("waiting: 1 of 2 …").
	if j.Reason != "" && j.Status != coordinator.StatusRunning {
		p.tail += j.Reason
	} else {
		p.tail += string(j.Status)
	}
	return progressText(p)
}

// progressBar draws a job's progress: one line redrawn in place on a
// terminal, a line per change otherwise (logs, CI).
type progressBar struct {
	w     io.Writer
	tty   bool
	last  string
	meter rateMeter
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

func (p *progressBar) observe(j coordinator.Job) error {
	p.meter.observe(j.Ledger.StepsDone, time.Now())
	line := progressLine(j, p.meter.rate)
	if line == p.last {
		return nil
	}
	p.last = line
	if p.tty {
		fmt.Fprintf(p.w, "\r\033[K%s", line)
	} else {
		fmt.Fprintln(p.w, line)
	}
	return nil
}

func (p *progressBar) done() {
	if p.tty && p.last != "" {
		fmt.Fprintln(p.w)
		p.last = ""
	}
}
