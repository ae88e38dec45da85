// Command jobplan writes a job spec whose FLOP budget buys exactly -steps
// steps: it reads a spec without budget_flops on stdin, computes the
// model's FLOPs per step with the coordinator's own planner, and prints the
// spec with budget_flops = (steps + 0.5) × FLOPs per step appended. Used by
// .ci/kube-e2e-test.sh, which checks that the job ends at that exact step.
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"

	"github.com/modcoord/modcoord/jobspec"
)

func main() {
	steps := flag.Int64("steps", 0, "steps the budget must buy")
	flag.Parse()
	if *steps <= 0 {
		fmt.Fprintln(os.Stderr, "jobplan: -steps must be positive")
		os.Exit(2)
	}
	body, err := io.ReadAll(os.Stdin)
	if err != nil {
		fail(err)
	}
	plan := func(budget float64) jobspec.Plan {
		spec, err := jobspec.Parse(withBudget(body, budget), jobspec.Limits{})
		if err != nil {
			fail(err)
		}
		p, err := spec.Plan(jobspec.Limits{})
		if err != nil {
			fail(err)
		}
		return p
	}
	fps := plan(1e18).FLOPsPerStep
	budget := (float64(*steps) + 0.5) * fps
	if got := plan(budget).Steps; got != *steps {
		fail(fmt.Errorf("budget %g buys %d steps, want %d", budget, got, *steps))
	}
	os.Stdout.Write(withBudget(body, budget))
}

func withBudget(body []byte, budget float64) []byte {
	out := append([]byte{}, body...)
	if len(out) > 0 && out[len(out)-1] != '\n' {
		out = append(out, '\n')
	}
	return append(out, "budget_flops: "+strconv.FormatFloat(budget, 'g', -1, 64)+"\n"...)
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "jobplan:", err)
	os.Exit(1)
}
