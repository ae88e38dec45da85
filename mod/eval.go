package mod

import "fmt"

// EvalLoss is the mean cross-entropy (nats per token) of p on validation
// windows [0, windows) of d, with top-k routing. windows ≤ 0 means all of
// them. It runs whole batches; a final partial batch is padded with repeats
// of its last window and only the real windows are counted.
func EvalLoss[F Float](p *Parallel[F], d *Dataset, windows int) (float64, error) {
	T, B := p.cfg.SeqLen, p.batch
	total := d.ValWindows(T)
	if windows <= 0 || windows > total {
		windows = total
	}
	if windows == 0 {
		return 0, fmt.Errorf("evaluate: validation split has no window of %d tokens", T+1)
	}
	tokens, targets := make([]int32, B*T), make([]int32, B*T)
	ce := make([]float64, B*T)
	var sum float64
	var count int
	for lo := 0; lo < windows; lo += B {
		hi := min(lo+B, windows)
		d.ValBatch(lo, hi, T, tokens, targets)
		for r := hi - lo; r < B; r++ { // pad
			copy(tokens[r*T:(r+1)*T], tokens[(hi-lo-1)*T:(hi-lo)*T])
			copy(targets[r*T:(r+1)*T], targets[(hi-lo-1)*T:(hi-lo)*T])
		}
		if _, err := p.Forward(tokens, nil); err != nil {
			return 0, fmt.Errorf("evaluate windows %d..%d: %w", lo, hi, err)
		}
		p.RowCE(targets, ce)
		for _, v := range ce[:(hi-lo)*T] {
			sum += v
			count++
		}
	}
	return sum / float64(count), nil
}
