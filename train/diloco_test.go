package train

import (
	"context"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/modcoord/modcoord/allreduce"
	"github.com/modcoord/modcoord/checkpoint"
	"github.com/modcoord/modcoord/jobspec"
	"github.com/modcoord/modcoord/mod"
)

func dilocoData(t *testing.T) mod.Data {
	t.Helper()
	ds, err := mod.LoadDataset("../data/tinyshakespeare.txt")
	if err != nil {
		t.Fatal(err)
	}
	return ds
}

func dilocoConfig(world, rank int, sync *jobspec.Sync) TrainerConfig {
	return TrainerConfig{Model: mod.Config{DModel: 32, Layers: 2, Heads: 2, SeqLen: 32, Capacity: 0.25, Seed: 5},
		Optim: mod.DefaultOptim(), GlobalBatch: 4, TotalSteps: 8, World: world, Rank: rank, Seed: 11, Sync: sync}
}

func sameParams(t *testing.T, what string, got, want []float32) {
	t.Helper()
	for i := range want {
		if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
			t.Fatalf("%s: parameter %d = %v, want %v", what, i, got[i], want[i])
		}
	}
}

// TestDiLoCoOneWorkerEqualsPlainTraining: with one worker, outer lr 1 and
// momentum 0, each outer step lands exactly on the worker's parameters, so
// DiLoCo is plain training bit for bit, at every step; and with outer lr
// 0.5 it is not (the outer step really runs).
func TestDiLoCoOneWorkerEqualsPlainTraining(t *testing.T) {
	ctx := context.Background()
	ds := dilocoData(t)
	plain, err := NewTrainer(dilocoConfig(1, 0, nil), ds, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	for _, nesterov := range []bool{true, false} {
		s := jobspec.Sync{Mode: jobspec.SyncDiLoCo, InnerSteps: 3, OuterLR: 1, OuterMomentum: 0, Nesterov: nesterov, Compress: jobspec.CompressNone}
		dl, err := NewTrainer(dilocoConfig(1, 0, &s), ds, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer dl.Close()
		half := s
		half.OuterLR = 0.5
		off, err := NewTrainer(dilocoConfig(1, 0, &half), ds, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer off.Close()
		if nesterov {
			for range 8 {
				if _, err := plain.Step(ctx); err != nil {
					t.Fatal(err)
				}
			}
		}
		var outers int
		for range 8 {
			res, err := dl.Step(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := off.Step(ctx); err != nil {
				t.Fatal(err)
			}
			if res.Outer {
				outers++
			}
		}
		if outers != 3 { // after steps 3, 6 and the last, 8
			t.Errorf("%d outer steps in 8 steps of rounds of 3, want 3", outers)
		}
		sameParams(t, "diloco vs plain", dl.Model().Params(), plain.Model().Params())
		differ := 0
		for i, p := range off.Model().Params() {
			if p != plain.Model().Params()[i] {
				differ++
			}
		}
		if differ == 0 {
			t.Error("outer lr 0.5 gives plain training's parameters too: the outer step does nothing")
		}
	}
}

// dilocoRings builds world trainers joined by in-memory rings.
func dilocoRings(t *testing.T, world int, gen uint64, sync *jobspec.Sync, ds mod.Data) []*Trainer {
	t.Helper()
	mt := allreduce.NewMemTransport(1 << 20)
	trs := make([]*Trainer, world)
	for r := range trs {
		ring, err := allreduce.NewRing(mt, allreduce.Config{Job: "dl", Generation: gen, Rank: r, World: world, Deadline: 20 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ring.Close() })
		if trs[r], err = NewTrainer(dilocoConfig(world, r, sync), ds, ring); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(trs[r].Close)
	}
	return trs
}

// stepAll runs n steps on every rank at once.
func stepAll(t *testing.T, trs []*Trainer, n int) []StepResult {
	t.Helper()
	res := make([]StepResult, len(trs))
	errs := make(chan error, len(trs))
	for r, tr := range trs {
		go func() {
			for range n {
				var err error
				if res[r], err = tr.Step(context.Background()); err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for range trs {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	return res
}

// restoreAll restores every rank from m and checks that each resumed at
// step want with its inner optimizer state.
func restoreAll(t *testing.T, trs []*Trainer, store *checkpoint.DirStore, m *checkpoint.Manifest, want int64) {
	t.Helper()
	for _, tr := range trs {
		if err := tr.Restore(context.Background(), store, m, false); err != nil {
			t.Fatal(err)
		}
		if !tr.InnerStateRestored() || tr.StepsDone() != want {
			t.Fatalf("restored at step %d, inner state restored %v; want step %d with inner state", tr.StepsDone(), tr.InnerStateRestored(), want)
		}
	}
}

// checkpointAll writes every rank's shard and inner state and commits.
func checkpointAll(t *testing.T, trs []*Trainer, store *checkpoint.DirStore, gen uint64) *checkpoint.Manifest {
	t.Helper()
	ctx := context.Background()
	var infos []checkpoint.ShardInfo
	var meta checkpoint.ShardMeta
	for _, tr := range trs {
		var err error
		if meta, err = tr.ShardMeta("dl", gen); err != nil {
			t.Fatal(err)
		}
		if err := tr.SaveRankState(store, "dl", gen); err != nil {
			t.Fatal(err)
		}
		info, err := store.WriteShard(ctx, meta, tr.ShardState())
		if err != nil {
			t.Fatal(err)
		}
		infos = append(infos, info)
	}
	m, err := checkpoint.NewManifest("dl", meta.Step, gen, meta.Total, meta.Config, infos)
	if err != nil {
		t.Fatal(err)
	}
	if err := store.WriteManifest(ctx, m); err != nil {
		t.Fatal(err)
	}
	return m
}

// TestDiLoCoResumeBitIdentical: two workers (float32 and int8 outer
// gradients) train two rounds, checkpoint at the outer boundary and train
// two more; two fresh workers restored from the checkpoint in a new
// generation train the same two rounds to the same bits. All ranks hold
// the same global parameters after every outer step.
func TestDiLoCoResumeBitIdentical(t *testing.T) {
	ds := dilocoData(t)
	for _, compress := range []string{jobspec.CompressNone, jobspec.CompressInt8} {
		t.Run(compress, func(t *testing.T) {
			s := jobspec.DefaultDiLoCo(2)
			s.Compress = compress
			store, err := checkpoint.NewDirStore(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			first := dilocoRings(t, 2, 1, &s, ds)
			res := stepAll(t, first, 4)
			if !res[0].Outer || res[0].Loss != res[1].Loss {
				t.Fatalf("step 4 ends a round: results %+v and %+v", res[0], res[1])
			}
			sameParams(t, "ranks after an outer step", first[1].Model().Params(), first[0].Model().Params())
			m := checkpointAll(t, first, store, 1)
			stepAll(t, first, 4)
			sameParams(t, "ranks at the end", first[1].Model().Params(), first[0].Model().Params())

			second := dilocoRings(t, 2, 2, &s, ds)
			restoreAll(t, second, store, m, 4)
			stepAll(t, second, 4)
			for r := range second {
				sameParams(t, "resumed run", second[r].Model().Params(), first[r].Model().Params())
				for i, v := range second[r].OuterOptimizer().M {
					if math.Float32bits(v) != math.Float32bits(first[r].OuterOptimizer().M[i]) {
						t.Fatalf("rank %d outer momentum %d differs after resume", r, i)
					}
				}
			}
			if st := first[0].OuterStats(); st.Steps != 4 {
				t.Errorf("%d outer steps in 8 steps of rounds of 2, want 4", st.Steps)
			}
		})
	}
}

// TestDiLoCoRestoreRejectsOtherMode: a checkpoint of an every-step job
// does not resume as DiLoCo (its optimizer slots mean something else).
func TestDiLoCoRestoreRejectsOtherMode(t *testing.T) {
	ds := dilocoData(t)
	store, _ := checkpoint.NewDirStore(t.TempDir())
	plain := dilocoRings(t, 1, 1, nil, ds)
	stepAll(t, plain, 2)
	m := checkpointAll(t, plain, store, 1)
	s := jobspec.DefaultDiLoCo(2)
	dl := dilocoRings(t, 1, 2, &s, ds)
	if err := dl[0].Restore(context.Background(), store, m, false); err == nil {
		t.Fatal("an every-step checkpoint restored into a DiLoCo trainer")
	}
}

// TestDiLoCoInnerStateRejectsDamage: a damaged inner-state file (cut
// short, a payload byte flipped, another rank's header) fails the restore
// with an error naming the problem, and leaves the moments at zero.
func TestDiLoCoInnerStateRejectsDamage(t *testing.T) {
	ds := dilocoData(t)
	s := jobspec.DefaultDiLoCo(2)
	for _, tt := range []struct {
		name   string
		damage func(b []byte) []byte
		want   string
	}{
		{"cut short", func(b []byte) []byte { return b[:len(b)-1] }, "bytes, a model of"},
		{"payload flipped", func(b []byte) []byte { b[len(b)-1] ^= 1; return b }, "checksum mismatch"},
		{"other rank", func(b []byte) []byte { b[8] = 7; return b }, "written by rank 7"},
		{"bad magic", func(b []byte) []byte { b[0] = 'X'; return b }, "not an inner-state file"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			store, err := checkpoint.NewDirStore(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			first := dilocoRings(t, 1, 1, &s, ds)
			stepAll(t, first, 2)
			m := checkpointAll(t, first, store, 1)
			path := filepath.Join(store.StepDir(m.Job, m.Step, m.Generation), InnerStateFile(0, 1))
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, tt.damage(b), 0o644); err != nil {
				t.Fatal(err)
			}
			second := dilocoRings(t, 1, 2, &s, ds)
			err = second[0].Restore(context.Background(), store, m, false)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("restore from a damaged inner state: %v, want %q", err, tt.want)
			}
			for i, v := range second[0].opt.M {
				if v != 0 || second[0].opt.V[i] != 0 {
					t.Fatalf("moment %d = %v, %v after a failed restore, want 0", i, v, second[0].opt.V[i])
				}
			}
		})
	}
}

// TestDiLoCoRestoreOffBoundaryStartsRoundThere: a checkpoint whose step
// is not a boundary of the resumed run's rounds (inner_steps 2 then 3)
// starts the round from the restored global parameters, so the outer step
// at step 3 moves from them toward the worker's local parameters.
func TestDiLoCoRestoreOffBoundaryStartsRoundThere(t *testing.T) {
	ds := dilocoData(t)
	two := jobspec.Sync{Mode: jobspec.SyncDiLoCo, InnerSteps: 2, OuterLR: 0.5, Compress: jobspec.CompressNone}
	store, err := checkpoint.NewDirStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	first := dilocoRings(t, 1, 1, &two, ds)
	stepAll(t, first, 2)
	m := checkpointAll(t, first, store, 1)
	global := slices.Clone(first[0].Model().Params())
	stepAll(t, first, 1) // step 3 is an inner step of rounds of 2
	local := first[0].Model().Params()

	three := two
	three.InnerSteps = 3
	second := dilocoRings(t, 1, 2, &three, ds)
	if err := second[0].Restore(context.Background(), store, m, false); err != nil {
		t.Fatal(err)
	}
	if res := stepAll(t, second, 1); !res[0].Outer {
		t.Fatalf("step 3 of rounds of 3: %+v, want an outer step", res[0])
	}
	want := make([]float32, len(global))
	for i, g := range global {
		d := float64(g) - float64(local[i])
		want[i] = float32(float64(g) - 0.5*d)
	}
	sameParams(t, "outer step after an off-boundary restore", second[0].Model().Params(), want)
}

// TestDiLoCoWarmupEqualsEveryStep: a warm-up that covers the whole job is
// synchronous training, bit for bit: two DiLoCo ranks whose every step is
// a warm-up step hold every-step's parameters and report its losses and
// gradient norms after every step.
func TestDiLoCoWarmupEqualsEveryStep(t *testing.T) {
	ds := dilocoData(t)
	s := jobspec.DefaultDiLoCo(2)
	s.WarmupSteps = 8
	every := dilocoRings(t, 2, 1, nil, ds)
	warm := dilocoRings(t, 2, 1, &s, ds)
	for step := 1; step <= 8; step++ {
		want, got := stepAll(t, every, 1), stepAll(t, warm, 1)
		for r := range got {
			if got[r].Outer || got[r].Loss != want[r].Loss || got[r].SumSquares != want[r].SumSquares || got[r].LR != want[r].LR {
				t.Fatalf("step %d rank %d: warm-up %+v, every-step %+v", step, r, got[r], want[r])
			}
			sameParams(t, "warm-up vs every-step", warm[r].Model().Params(), every[r].Model().Params())
		}
	}
	if st := warm[0].OuterStats(); st.Steps != 0 {
		t.Errorf("%d outer steps during the warm-up, want 0", st.Steps)
	}
}

// TestDiLoCoWarmupThenRounds: after a warm-up of 4 steps the ranks hold
// every-step's parameters; the rounds of 2 that follow end with outer
// steps at steps 6 and 8 only, leave every rank on the same global
// parameters, and those differ from every-step's (the rounds really run).
func TestDiLoCoWarmupThenRounds(t *testing.T) {
	ds := dilocoData(t)
	s := jobspec.DefaultDiLoCo(2)
	s.WarmupSteps = 4
	every := dilocoRings(t, 2, 1, nil, ds)
	warm := dilocoRings(t, 2, 1, &s, ds)
	stepAll(t, every, 4)
	stepAll(t, warm, 4)
	sameParams(t, "after the warm-up", warm[1].Model().Params(), every[1].Model().Params())
	var outer []int
	for step := 5; step <= 8; step++ {
		if res := stepAll(t, warm, 1); res[0].Outer {
			outer = append(outer, step)
		}
	}
	if !slices.Equal(outer, []int{6, 8}) {
		t.Fatalf("outer steps at %v, want [6 8]", outer)
	}
	stepAll(t, every, 4)
	sameParams(t, "ranks after the rounds", warm[1].Model().Params(), warm[0].Model().Params())
	differ := 0
	for i, p := range warm[0].Model().Params() {
		if p != every[0].Model().Params()[i] {
			differ++
		}
	}
	if differ == 0 {
		t.Error("rounds after the warm-up gave every-step's parameters: no round ran")
	}
}

// TestDiLoCoWarmupResumeBitIdentical: a checkpoint in the middle of the
// warm-up (step 2 of 4) resumes into the rest of the warm-up and the
// rounds after it to the same bits as the run that went on.
func TestDiLoCoWarmupResumeBitIdentical(t *testing.T) {
	ds := dilocoData(t)
	s := jobspec.DefaultDiLoCo(2)
	s.WarmupSteps = 4
	store, err := checkpoint.NewDirStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	first := dilocoRings(t, 2, 1, &s, ds)
	stepAll(t, first, 2)
	m := checkpointAll(t, first, store, 1)
	stepAll(t, first, 6)
	second := dilocoRings(t, 2, 2, &s, ds)
	restoreAll(t, second, store, m, 2)
	stepAll(t, second, 6)
	for r := range second {
		sameParams(t, "resumed run", second[r].Model().Params(), first[r].Model().Params())
	}
	if st := second[0].OuterStats(); st.Steps != 2 {
		t.Errorf("%d outer steps after the resume, want 2 (steps 6 and 8)", st.Steps)
	}
}

// TestDiLoCoFirstRoundStartsAfterWarmup: the first round's outer step
// moves from the parameters the warm-up ended on. One worker with outer
// lr 0.5 and no momentum: the warm-up (4 steps) and the round's inner
// steps (5, 6) are plain training, so after step 6 the parameters are
// θ4 − 0.5·(θ4 − θ6), θ4 and θ6 being plain training's.
func TestDiLoCoFirstRoundStartsAfterWarmup(t *testing.T) {
	ds := dilocoData(t)
	s := jobspec.Sync{Mode: jobspec.SyncDiLoCo, InnerSteps: 2, OuterLR: 0.5, Compress: jobspec.CompressNone, WarmupSteps: 4}
	plain := dilocoRings(t, 1, 1, nil, ds)
	warm := dilocoRings(t, 1, 1, &s, ds)
	stepAll(t, plain, 4)
	global := slices.Clone(plain[0].Model().Params())
	stepAll(t, plain, 2)
	local := plain[0].Model().Params()
	stepAll(t, warm, 4)
	if res := stepAll(t, warm, 2); !res[0].Outer {
		t.Fatalf("step 6: %+v, want the first outer step", res[0])
	}
	want := make([]float32, len(global))
	for i, g := range global {
		want[i] = float32(float64(g) - 0.5*(float64(g)-float64(local[i])))
	}
	sameParams(t, "first outer step after the warm-up", warm[0].Model().Params(), want)
}
