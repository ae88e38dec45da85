//go:build ignore

// oddrun traces one isoFLOP run over time, for the odd run of issue 19
// (MoD C=0.125 at 16x2x2 trained worse at 3e12 than at 1e12): every
// -every steps it prints the mean cross-entropy and causal-decision loss
// (BCE) since the last line, and from the last batch the routed layer's
// router logits (mean, std, share > 0), the mean router weight σ(z) of
// the selected tokens, the router vector's norm and the gradient norm;
// with more than one routed layer, also the overlap: the share of a routed
// layer's selected tokens that the routed layer before it selected too
// (C when the two choose independently, 1 when they choose the same).
//
//	go run docs/results/isoflop-seeds/oddrun.go -budget 3e12 -shape 16x2x2 -variant mod-c0.125 -seed 1
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"math"
	"os"

	"github.com/modcoord/modcoord/isoflop"
	"github.com/modcoord/modcoord/mod"
	"github.com/modcoord/modcoord/train"
)

func main() {
	budget := flag.Float64("budget", 3e12, "training FLOPs")
	shape := flag.String("shape", "16x2x2", "d_model x layers x heads")
	variant := flag.String("variant", "mod-c0.125", "isoflop variant")
	seed := flag.Int("seed", 1, "seed")
	every := flag.Int("every", 500, "steps per line")
	data := flag.String("data", "data/tinyshakespeare.txt", "corpus")
	flag.Parse()
	ss, err := isoflop.ParseShapes(*shape)
	if err != nil {
		log.Fatal(err)
	}
	v, err := isoflop.ParseVariant(*variant)
	if err != nil {
		log.Fatal(err)
	}
	runs, _, err := isoflop.Plan([]float64{*budget}, ss, []isoflop.Variant{v}, *seed, 128, 16)
	if err != nil {
		log.Fatal(err)
	}
	spec := runs[len(runs)-1] // the last seed is the one asked for
	ds, err := mod.LoadDataset(*data)
	if err != nil {
		log.Fatal(err)
	}
	sched := isoflop.DefaultSchedule()
	tr, err := train.NewTrainer(train.TrainerConfig{
		Model: spec.Model, Optim: sched.For(spec.Steps), GlobalBatch: spec.Batch,
		TotalSteps: int64(spec.Steps), Seed: uint64(spec.Seed), World: 1,
	}, ds, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer tr.Close()
	cfg := tr.Model().Config()
	layout := tr.Model().Layout()
	fmt.Printf("# %s: %s, %d steps\n", spec.ID(), cfg, spec.Steps)
	fmt.Println("step\tlr\tce\tbce\tgrad_norm\tz_mean\tz_std\tz_pos\tsel_w\tall_w\trouter_norm\toverlap_prev\tlayer")
	var ce, bce float64
	var n int
	for s := 0; s < spec.Steps; s++ {
		r, err := tr.Step(context.Background())
		if err != nil {
			log.Fatal(err)
		}
		ce += r.Loss
		if cfg.AuxLossWeight > 0 {
			bce += (r.Total - r.Loss) / cfg.AuxLossWeight
		}
		n++
		if (s+1)%*every != 0 && s+1 != spec.Steps {
			continue
		}
		for li, l := range cfg.RoutedLayers {
			var sum, sq, pos, selW, allW float64
			var cnt, sel, both int
			for _, m := range tr.Model().Replicas() {
				z := m.RouterLogits(l)
				for _, v := range z {
					x := float64(v)
					sum, sq = sum+x, sq+x*x
					allW += 1 / (1 + math.Exp(-x))
					if x > 0 {
						pos++
					}
					cnt++
				}
				T := cfg.SeqLen
				for b := 0; b < m.Batch(); b++ {
					prev := map[int32]bool{}
					if li > 0 {
						for _, p := range m.SelectedIn(cfg.RoutedLayers[li-1], b) {
							prev[p] = true
						}
					}
					for _, p := range m.SelectedIn(l, b) {
						selW += 1 / (1 + math.Exp(-float64(z[b*T+int(p)])))
						sel++
						if prev[p] {
							both++
						}
					}
				}
			}
			mean := sum / float64(cnt)
			var rn float64
			if t, ok := layout.Lookup(fmt.Sprintf("layer%d.router", l)); ok {
				for _, w := range tr.Model().Params()[t.Offset : t.Offset+t.Size()] {
					rn += float64(w) * float64(w)
				}
			}
			overlap := math.NaN()
			if li > 0 {
				overlap = float64(both) / float64(sel)
			}
			fmt.Printf("%d\t%.2e\t%.4f\t%.4f\t%.3f\t%.3f\t%.3f\t%.3f\t%.3f\t%.3f\t%.3f\t%.3f\tL%d\n",
				r.Step, r.LR, ce/float64(n), bce/float64(n), r.GradNorm, mean, math.Sqrt(sq/float64(cnt)-mean*mean),
				pos/float64(cnt), selW/float64(sel), allW/float64(cnt), math.Sqrt(rn), overlap, l)
		}
		ce, bce, n = 0, 0, 0
	}
	rep, err := mod.EvaluateRouting(cfg, tr.Model().Params(), ds, 0, 16)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("# val loss top-k %.4f causal %.4f; decision precision %.3f recall %.3f F1 %.3f accuracy %.3f (floor %.3f); routed %.3f\n",
		rep.ValLossTopK, rep.ValLossCausal, rep.DecisionPrecision, rep.DecisionRecall, rep.DecisionF1, rep.DecisionAccuracy, rep.AccuracyFloor, rep.RoutedFraction)
	os.Exit(0)
}
