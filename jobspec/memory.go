package jobspec

import (
	"fmt"
	"math"

	"github.com/modcoord/modcoord/mod"
)

// MemoryEstimate is what one worker holds for a job, by term, in bytes.
// Terms are float64 because a hostile spec's sizes overflow int64 (batch ×
// seq_len × vocab alone reaches 2^60 values).
//
// It follows what the code allocates (mod.Model.alloc, layer.alloc,
// allocScratch, mod.Parallel, shard.Optimizer, checkpoint.AsyncWriter),
// all of it fp32:
//
//   - Params: the full parameter vector, P values (every rank keeps a
//     full copy; the all-gather refreshes it each step).
//   - Grads: one full gradient per mod.Parallel replica plus the combined
//     one, (1 + R)·P, R = min(cores, the worker's sequences).
//   - Optimizer: AdamW's two moments over the rank's shard, 2·⌈P/N⌉; in
//     DiLoCo (sync.mode diloco) over the whole vector, 2·P, since inner
//     steps are local and every worker updates every parameter.
//   - Outer (DiLoCo only): the global parameters of the round's start and
//     the outer-gradient buffer the ring reduces (2·P), and the outer
//     momentum of the rank's shard (⌈P/N⌉).
//   - Checkpoint: the async writer's snapshot of the shard (params and both
//     moments, 3·⌈P/N⌉) and the full vector a restore reads (P).
//   - Activations: what forward keeps for backward and backward's scratch,
//     for the worker's b = batch/N sequences (see activationsPerSequence).
//   - Logits: vocab × tokens, b·T·V (backward overwrites them in place).
//   - Overhead: 10% of the above plus 64 MiB for what is not modelled per
//     value: the Go runtime, goroutine stacks, ring buffers, OpenBLAS.
//
// Not included: the corpus, which the spec does not size (mod.LoadDataset
// caps it at 4 GiB).
type MemoryEstimate struct {
	Workers    int // N: the worker count the estimate is for
	Replicas   int // R: model replicas on one worker (one per core)
	LocalBatch int // b: sequences per worker per step

	Params, Grads, Optimizer, Outer, Checkpoint float64
	Activations, Logits, Overhead               float64
}

const (
	bytesPerValue = 4 // fp32, int32
	// matmulPlanBytes is the size of one of mod's planned products, rounded
	// up; a layer keeps several per sequence and head.
	matmulPlanBytes = 224
	// allocSlack covers the Go allocator's size classes: activations are
	// many buffers, each rounded up a little.
	allocSlack = 1.03
	// replicaFixedBytes is a replica's bookkeeping that does not grow with
	// its batch: the model and layer structs, per-layer plans, a goroutine.
	replicaFixedBytes = 32 << 10
	overheadFraction  = 0.10
	overheadFixed     = 64 << 20
)

// EstimateWorkerMemory estimates the memory one of workers workers needs
// for s, with cores cores each (≤ 0: DefaultWorkerCores). s must have a
// valid model (mod.Config.Validate) and workers ≥ 1; the result is for
// the defaulted spec. It only does arithmetic, O(layers), whatever the
// sizes, so the coordinator may run it on any submission.
func EstimateWorkerMemory(s Spec, workers, cores int) MemoryEstimate {
	if cores <= 0 {
		cores = DefaultWorkerCores
	}
	workers = max(workers, 1)
	s = s.WithDefaults()
	c := s.Model
	b := max(s.Batch/workers, 1)
	e := MemoryEstimate{Workers: workers, Replicas: min(cores, b), LocalBatch: b}
	P := paramCount(c)
	shard := math.Ceil(P / float64(workers))
	T, V := float64(c.SeqLen), float64(c.Vocab)

	e.Params = P * bytesPerValue
	e.Grads = float64(1+e.Replicas) * P * bytesPerValue
	e.Optimizer = 2 * shard * bytesPerValue
	if s.Sync.IsDiLoCo() {
		e.Optimizer = 2 * P * bytesPerValue
		e.Outer = (2*P + shard) * bytesPerValue
	}
	e.Checkpoint = (3*shard + P) * bytesPerValue
	e.Activations = (float64(b)*activationsPerSequence(c) + float64(e.Replicas)*perReplica(c)) * bytesPerValue
	e.Logits = float64(b) * T * V * bytesPerValue
	e.Overhead = overheadFraction*e.sum() + overheadFixed
	return e
}

// Total is the sum of all terms, in bytes.
func (e MemoryEstimate) Total() float64 { return e.sum() + e.Overhead }

func (e MemoryEstimate) sum() float64 {
	return e.Params + e.Grads + e.Optimizer + e.Outer + e.Checkpoint + e.Activations + e.Logits
}

// String is the breakdown, for error messages and logs.
func (e MemoryEstimate) String() string {
	optimizer := fmt.Sprintf("optimizer shard %s", formatBytes(e.Optimizer))
	if e.Outer > 0 {
		optimizer = fmt.Sprintf("inner optimizer %s + DiLoCo outer state %s", formatBytes(e.Optimizer), formatBytes(e.Outer))
	}
	return fmt.Sprintf("params %s + gradients %s (%d replicas) + %s + checkpoint %s + activations %s (%d sequences) + logits %s + overhead %s",
		formatBytes(e.Params), formatBytes(e.Grads), e.Replicas, optimizer, formatBytes(e.Checkpoint),
		formatBytes(e.Activations), e.LocalBatch, formatBytes(e.Logits), formatBytes(e.Overhead))
}

// paramCount is mod.NewLayout(c).Total in float64, without building the
// layout (a test checks they agree).
func paramCount(c mod.Config) float64 {
	D, V, T := float64(c.DModel), float64(c.Vocab), float64(c.SeqLen)
	F, P := float64(c.MLPHidden), float64(c.PredictorHidden)
	n := V*D + D + D*V // tok_emb, ln_f, lm_head
	if c.Positions == mod.PositionsLearned {
		n += T * D
	}
	perLayer := 2*D + 4*D*D + 2*D*F // ln1, wqkv, wo, ln2, w1, w2
	n += float64(c.Layers) * perLayer
	for l := range c.Layers {
		if !c.IsRouted(l) {
			continue
		}
		n += D // router
		if c.Decision == mod.DecisionPredictor {
			n += D*P + 2*P + 1
		}
	}
	return n
}

// activationsPerSequence counts the 4-byte values one sequence costs in
// forward and backward, logits aside. A layer processes s tokens of each
// sequence: T when dense, k = ⌊capacity·T⌋ when routed.
func activationsPerSequence(c mod.Config) float64 {
	D, T, F := float64(c.DModel), float64(c.SeqLen), float64(c.MLPHidden)
	H, P, k := float64(c.Heads), float64(c.PredictorHidden), float64(c.TopK())
	// The model: tokens and targets (and the trainer's copies), the
	// embeddings, final norm, two residual-gradient buffers, the final
	// norm's gradient (5·T·D) and its 1/rms.
	n := 4*T + 5*T*D + T
	// The scratch backward shares across layers: 15 [T,D] buffers, two
	// [T,F], the attention-probability gradient [H,T,T], dz and the
	// predictor's [T,P].
	n += 15*T*D + 2*T*F + H*T*T + T + T*P
	for l := range c.Layers {
		n += T * D // the layer's output (the residual stream)
		s := T
		if c.IsRouted(l) {
			s = k
			// Router logits and targets [T]; selected positions and weights
			// [k]; per-sequence counts (8-byte ints); the selected inputs [k,D].
			n += 2*T + 2*k + 2 + k*D
			if c.Decision == mod.DecisionPredictor {
				n += 3*T*P + T
			}
		}
		// Kept for backward: ln1 output, qkv (3), q/k/v head-major (3), the
		// attention output per head, merged, block output, xs+a, ln2
		// output, MLP output: 13·s·D; the MLP's pre- and post-GELU and tanh
		// (3·s·F); two 1/rms and the positions (3·s); probabilities H·s².
		n += 13*s*D + 3*s*F + 3*s + H*s*s
		// Six planned products per (sequence, head): scores, A·V and four
		// in backward, each a ~220-byte plan (mod's matmul struct).
		n += 6 * H * matmulPlanBytes / bytesPerValue
	}
	return n * allocSlack
}

// perReplica counts the 4-byte values each replica holds whatever its
// batch: the RoPE tables, each routed layer's top-k sort buffer, and the
// replica's structs, plans and goroutine stack (replicaFixedBytes).
func perReplica(c mod.Config) float64 {
	T := float64(c.SeqLen)
	n := float64(len(c.RoutedLayers))*T + replicaFixedBytes/bytesPerValue
	if c.Positions == mod.PositionsRoPE {
		n += T * float64(c.HeadDim())
	}
	return n
}

// formatBytes prints a size in binary units, with the raw count when it
// is small, so an error names both a readable and an exact size.
func formatBytes(b float64) string {
	const unit = 1024
	if b < unit {
		return fmt.Sprintf("%.0f B", b)
	}
	units := []string{"KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB"}
	v, i := b/unit, 0
	for v >= unit && i < len(units)-1 {
		v /= unit
		i++
	}
	return fmt.Sprintf("%.1f %s", v, units[i])
}
