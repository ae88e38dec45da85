package train

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/modcoord/modcoord/checkpoint"
	"github.com/modcoord/modcoord/jobspec"
	"github.com/modcoord/modcoord/mod"
	"github.com/modcoord/modcoord/tokenizer"
)

// CheckpointConfig is what a checkpoint records about the run, in the
// manifest's and every shard's metadata: enough to rebuild the model and
// to name every tensor of the flat vector.
type CheckpointConfig struct {
	Model      mod.Config      `json:"model"`
	Optim      mod.OptimConfig `json:"optim"`
	Batch      int             `json:"batch"`
	Seed       uint64          `json:"seed"`
	TotalSteps int64           `json:"total_steps"`
	Layout     []mod.Tensor    `json:"layout"`
	// Tokenizer names the vocabulary the model was trained on ("" in
	// checkpoints written before it was recorded: byte).
	Tokenizer string `json:"tokenizer,omitempty"`
	// Sync is the job's DiLoCo setting (nil: every step). A DiLoCo
	// checkpoint's shard holds the outer momentum where AdamW's first
	// moment would be, zeros for the second, and each rank's inner AdamW
	// state in a file of its own (diloco_state.go).
	Sync *jobspec.Sync `json:"sync,omitempty"`
}

// TokenizerName is the checkpoint's tokenizer, byte when none is recorded.
func (c CheckpointConfig) TokenizerName() string {
	if c.Tokenizer == "" {
		return tokenizer.ByteName
	}
	return c.Tokenizer
}

// CheckpointConfig describes this trainer's run.
func (t *Trainer) CheckpointConfig() CheckpointConfig {
	return CheckpointConfig{
		Model: t.cfg.Model, Optim: t.cfg.Optim, Batch: t.cfg.GlobalBatch, Seed: t.cfg.Seed,
		TotalSteps: t.cfg.TotalSteps, Layout: t.model.Layout().Tensors, Tokenizer: t.cfg.Tokenizer,
		Sync: t.dilocoSync(),
	}
}

// dilocoSync is the sync setting a checkpoint records: nil when syncing
// every step.
func (t *Trainer) dilocoSync() *jobspec.Sync {
	if t.dl == nil {
		return nil
	}
	s := t.dl.sync
	return &s
}

// ShardMeta is what this rank's shard of a checkpoint at the current step
// says about itself. Every checkpoint is made from it, so it is also where
// a non-finite state is refused (CheckFinite): no checkpoint is written
// of a diverged run.
func (t *Trainer) ShardMeta(job string, generation uint64) (checkpoint.ShardMeta, error) {
	if err := t.CheckFinite(); err != nil {
		return checkpoint.ShardMeta{}, fmt.Errorf("checkpoint: %w", err)
	}
	cfg, err := json.Marshal(t.CheckpointConfig())
	if err != nil {
		return checkpoint.ShardMeta{}, fmt.Errorf("encode checkpoint config: %w", err)
	}
	lo, hi := t.ownRange()
	return checkpoint.ShardMeta{
		Job: job, Step: t.step, Generation: generation, Rank: t.cfg.Rank, World: t.cfg.World,
		Lo: lo, Hi: hi, Total: t.layout.Total, Config: cfg,
	}, nil
}

// ShardState is this rank's range of the parameters and its AdamW moments.
// The slices alias the live state: snapshot them before training on.
func (t *Trainer) ShardState() checkpoint.State {
	if d := t.dl; d != nil {
		return checkpoint.State{Params: t.model.Params()[d.outer.Lo:d.outer.Hi], AdamM: d.outer.M, AdamV: d.zeros}
	}
	return checkpoint.State{Params: t.model.Params()[t.opt.Lo:t.opt.Hi], AdamM: t.opt.M, AdamV: t.opt.V}
}

// ownRange is the range of the vector this rank owns in checkpoints and
// the ring: AdamW's when syncing every step, the outer optimizer's in
// DiLoCo (where AdamW covers everything).
func (t *Trainer) ownRange() (lo, hi int) {
	if t.dl != nil {
		return t.dl.outer.Lo, t.dl.outer.Hi
	}
	return t.opt.Lo, t.opt.Hi
}

// Restore loads a committed checkpoint: all the parameters (every rank
// computes with the full vector) and this rank's moments, from whichever
// old shards cover its range — the world size may differ from the one that
// wrote it. The trainer continues after the checkpoint's step.
func (t *Trainer) Restore(ctx context.Context, store *checkpoint.DirStore, m *checkpoint.Manifest, verified bool) error {
	var ck CheckpointConfig
	if err := json.Unmarshal(m.Config, &ck); err != nil {
		return fmt.Errorf("restore step %d: checkpoint config: %w", m.Step, err)
	}
	if m.Total != t.layout.Total || !slices.EqualFunc(ck.Layout, t.model.Layout().Tensors, sameTensor) {
		return fmt.Errorf("restore step %d: the checkpoint's model (%d parameters, %s) differs from this job's (%d, %s)", m.Step, m.Total, ck.Model, t.layout.Total, t.cfg.Model)
	}
	if got, want := ck.Sync.ModeName(), t.dilocoSync().ModeName(); got != want {
		return fmt.Errorf("restore step %d: the checkpoint was trained with sync %s, this job uses %s", m.Step, got, want)
	}
	opts := checkpoint.LoadOptions{SkipChecksums: verified}
	if err := store.LoadRange(ctx, m, 0, m.Total, checkpoint.State{Params: t.model.Params()}, opts); err != nil {
		return fmt.Errorf("restore parameters of step %d: %w", m.Step, err)
	}
	if t.dl != nil {
		return t.restoreDiLoCo(ctx, store, m, opts)
	}
	if err := store.LoadRange(ctx, m, t.opt.Lo, t.opt.Hi, checkpoint.State{AdamM: t.opt.M, AdamV: t.opt.V}, opts); err != nil {
		return fmt.Errorf("restore optimizer state of step %d: %w", m.Step, err)
	}
	t.step = m.Step
	return nil
}

func sameTensor(a, b mod.Tensor) bool {
	return a.Name == b.Name && a.Offset == b.Offset && slices.Equal(a.Shape, b.Shape)
}

// SaveLocal writes a complete single-rank checkpoint of a World-1 trainer
// under root (job "train"), commits it by writing its manifest, and
// returns the step directory.
func (t *Trainer) SaveLocal(ctx context.Context, root string) (string, error) {
	if t.cfg.World != 1 {
		return "", errors.New("save: only a single-process trainer commits its own checkpoint; workers report to the coordinator")
	}
	store, err := checkpoint.NewDirStore(root)
	if err != nil {
		return "", err
	}
	meta, err := t.ShardMeta(localJob, 0)
	if err != nil {
		return "", err
	}
	info, err := store.WriteShard(ctx, meta, t.ShardState())
	if err != nil {
		return "", err
	}
	m, err := checkpoint.NewManifest(localJob, t.step, 0, t.layout.Total, meta.Config, []checkpoint.ShardInfo{info})
	if err != nil {
		return "", err
	}
	if err := store.WriteManifest(ctx, m); err != nil {
		return "", err
	}
	return store.StepDir(localJob, t.step, 0), nil
}

// PruneLocal keeps the newest keep committed checkpoints that SaveLocal
// wrote under root and deletes older ones (never the newest).
func PruneLocal(ctx context.Context, root string, keep int) error {
	manifests, _, err := findManifests(filepath.Join(root, localJob))
	if err != nil {
		return err
	}
	store, err := checkpoint.NewDirStore(root)
	if err != nil {
		return err
	}
	_, err = store.Prune(ctx, localJob, manifests, keep)
	return err
}

// localJob names the checkpoints `modcoord train` writes.
const localJob = "train"

// Opened is a committed checkpoint found on disk and verified.
type Opened struct {
	Store    *checkpoint.DirStore
	Manifest *checkpoint.Manifest
	Config   CheckpointConfig
	Dir      string               // the step directory
	Skipped  []checkpoint.Skipped // newer committed steps that failed verification
}

// OpenCheckpoint finds and verifies a checkpoint. path is a step directory
// (holding MANIFEST.json), a job directory, or a store root holding one
// job; in the last two cases the newest committed step that verifies is
// used, and newer damaged ones are reported in Skipped.
func OpenCheckpoint(ctx context.Context, path string) (*Opened, error) {
	manifests, root, err := findManifests(path)
	if err != nil {
		return nil, err
	}
	store, err := checkpoint.NewDirStore(root)
	if err != nil {
		return nil, err
	}
	m, skipped, err := store.NewestValid(ctx, manifests)
	if err != nil {
		return nil, fmt.Errorf("checkpoint %s: %w", path, err)
	}
	var ck CheckpointConfig
	if err := json.Unmarshal(m.Config, &ck); err != nil {
		return nil, fmt.Errorf("checkpoint %s: config: %w", path, err)
	}
	ck.Model = ck.Model.WithDefaults()
	if err := ck.Model.Validate(); err != nil {
		return nil, fmt.Errorf("checkpoint %s: %w", path, err)
	}
	if l := mod.NewLayout(ck.Model); l.Total != m.Total {
		return nil, fmt.Errorf("checkpoint %s: its model needs %d parameters but it holds %d", path, l.Total, m.Total)
	}
	return &Opened{Store: store, Manifest: m, Config: ck, Dir: store.StepDir(m.Job, m.Step, m.Generation), Skipped: skipped}, nil
}

// LoadParams reads an opened checkpoint's full parameter vector.
func (o *Opened) LoadParams(ctx context.Context) ([]float32, error) {
	params := make([]float32, o.Manifest.Total)
	// OpenCheckpoint's NewestValid just hashed every shard.
	if err := o.Store.LoadRange(ctx, o.Manifest, 0, o.Manifest.Total, checkpoint.State{Params: params}, checkpoint.LoadOptions{SkipChecksums: true}); err != nil {
		return nil, fmt.Errorf("checkpoint %s: %w", o.Dir, err)
	}
	return params, nil
}

// findManifests returns the committed manifests under path, newest first,
// and the store root they belong to.
func findManifests(path string) ([]*checkpoint.Manifest, string, error) {
	read := func(dir string) (*checkpoint.Manifest, error) {
		return checkpoint.ReadManifestFile(filepath.Join(dir, checkpoint.ManifestFile))
	}
	if m, err := read(path); err == nil {
		return []*checkpoint.Manifest{m}, filepath.Dir(filepath.Dir(path)), nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, "", fmt.Errorf("checkpoint %s: %w", path, err)
	}
	// A job directory, or a root with exactly one job directory.
	root, job := filepath.Dir(path), filepath.Base(path)
	store, err := checkpoint.NewDirStore(root)
	if err != nil {
		return nil, "", err
	}
	steps, err := store.Steps(job)
	if err != nil || len(steps) == 0 {
		entries, rerr := os.ReadDir(path)
		if rerr != nil {
			return nil, "", fmt.Errorf("checkpoint %s: %w", path, rerr)
		}
		var jobs []string
		for _, e := range entries {
			if e.IsDir() {
				jobs = append(jobs, e.Name())
			}
		}
		if len(jobs) != 1 {
			return nil, "", fmt.Errorf("checkpoint %s: not a step directory (no %s) and not a store with exactly one job (found %d); pass the step directory", path, checkpoint.ManifestFile, len(jobs))
		}
		return findManifests(filepath.Join(path, jobs[0]))
	}
	var out []*checkpoint.Manifest
	for i := len(steps) - 1; i >= 0; i-- {
		if !steps[i].HasManifest {
			continue // never committed
		}
		m, err := read(steps[i].Path)
		if err != nil {
			continue // unreadable manifest: NewestValid cannot use it either
		}
		out = append(out, m)
	}
	if len(out) == 0 {
		return nil, "", fmt.Errorf("checkpoint %s: no committed step (no %s in any step directory)", path, checkpoint.ManifestFile)
	}
	return out, root, nil
}

// InitFrom starts a new run from an opened checkpoint: it loads all the
// parameters and, with optimizer, this rank's range of the AdamW moments
// (otherwise they stay zero). The step count stays where it is (0 for a
// new trainer): the new run's schedule and budget count its own steps.
// The checkpoint's model must be the trainer's, up to model.seed (unused
// when weights are loaded), and its tokenizer the same.
func (t *Trainer) InitFrom(ctx context.Context, o *Opened, optimizer bool) error {
	if err := SameModel(o.Config.Model, t.cfg.Model); err != nil {
		return fmt.Errorf("init_from.checkpoint %s: %w", o.Dir, err)
	}
	if got, want := o.Config.TokenizerName(), tokenizerName(t.cfg.Tokenizer); got != want {
		return fmt.Errorf("init_from.checkpoint %s: it was trained with tokenizer %s but this job uses %s; set tokenizer: %s", o.Dir, got, want, got)
	}
	if o.Manifest.Total != t.layout.Total {
		return fmt.Errorf("init_from.checkpoint %s: it holds %d parameters, this model has %d", o.Dir, o.Manifest.Total, t.layout.Total)
	}
	opts := checkpoint.LoadOptions{SkipChecksums: true} // OpenCheckpoint verified it
	if err := o.Store.LoadRange(ctx, o.Manifest, 0, o.Manifest.Total, checkpoint.State{Params: t.model.Params()}, opts); err != nil {
		return fmt.Errorf("init_from.checkpoint %s: parameters: %w", o.Dir, err)
	}
	if optimizer && o.Config.Sync.IsDiLoCo() {
		return fmt.Errorf("init_from.checkpoint %s: it was trained with DiLoCo, so it holds outer momentum rather than AdamW moments; set init_from.optimizer: false", o.Dir)
	}
	if optimizer {
		if err := o.Store.LoadRange(ctx, o.Manifest, t.opt.Lo, t.opt.Hi, checkpoint.State{AdamM: t.opt.M, AdamV: t.opt.V}, opts); err != nil {
			return fmt.Errorf("init_from.checkpoint %s: optimizer state: %w", o.Dir, err)
		}
	}
	return nil
}

// SameModel reports how two model configs differ, ignoring the weight-init
// seed; nil if they describe the same model.
func SameModel(ck, spec mod.Config) error {
	a, b := ck.WithDefaults(), spec.WithDefaults()
	a.Seed, b.Seed = 0, 0
	ja, errA := json.Marshal(a)
	jb, errB := json.Marshal(b)
	if errA != nil || errB != nil || string(ja) != string(jb) {
		return fmt.Errorf("its model (%s) differs from the spec's model (%s); the model fields must match the checkpoint's", a, b)
	}
	return nil
}

func tokenizerName(n string) string {
	if n == "" {
		return tokenizer.ByteName
	}
	return n
}
