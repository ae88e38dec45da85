package mod

import "fmt"

// EvalLoss is the mean cross-entropy (nats per token) of m on validation
// windows [0, windows) of d, top-k routing. windows ≤ 0 means all of them.
// It runs whole batches of m.Batch() windows; a final partial batch is
// padded with repeats of the last window and only the real ones counted.
func EvalLoss[F Float](m *Model[F], d *Dataset, windows int) (float64, error) {
	T, B, V := m.cfg.SeqLen, m.batch, m.cfg.Vocab
	total := d.ValWindows(T)
	if windows <= 0 || windows > total {
		windows = total
	}
	if windows == 0 {
		return 0, fmt.Errorf("evaluate: validation split has no window of %d tokens", T+1)
	}
	tokens, targets := make([]int32, B*T), make([]int32, B*T)
	var sum float64
	var count int
	for lo := 0; lo < windows; lo += B {
		hi := min(lo+B, windows)
		d.ValBatch(lo, hi, T, tokens, targets)
		for r := hi - lo; r < B; r++ { // pad
			copy(tokens[r*T:(r+1)*T], tokens[(hi-lo-1)*T:(hi-lo)*T])
			copy(targets[r*T:(r+1)*T], targets[(hi-lo-1)*T:(hi-lo)*T])
		}
		if _, err := m.Forward(tokens, nil); err != nil {
			return 0, fmt.Errorf("evaluate windows %d..%d: %w", lo, hi, err)
		}
		for i := 0; i < (hi-lo)*T; i++ {
			sum += crossEntropy(m.logits[i*V:(i+1)*V], targets[i])
			count++
		}
	}
	return sum / float64(count), nil
}
