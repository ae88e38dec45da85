package mod

import "fmt"

// EvalLoss is the mean cross-entropy (nats per token) of p on validation
// windows [0, windows) of d, with top-k routing. windows ≤ 0 means all of
// them. It runs whole batches; a final partial batch is padded with repeats
// of its last window and only the real windows are counted.
func EvalLoss[F Float](p *Parallel[F], d Data, windows int) (float64, error) {
	windows, err := EvalWindows(d, p.cfg.SeqLen, windows)
	if err != nil {
		return 0, err
	}
	sum, count, err := EvalSum(p, d, 0, windows)
	if err != nil {
		return 0, err
	}
	return sum / float64(count), nil
}

// EvalWindows is how many validation windows an evaluation of windows
// (≤ 0: all) uses: at most what d holds. It is an error if d holds none.
func EvalWindows(d Data, seqLen, windows int) (int, error) {
	total := d.ValWindows(seqLen)
	if windows <= 0 || windows > total {
		windows = total
	}
	if windows <= 0 {
		return 0, fmt.Errorf("evaluate: validation split has no window of %d tokens", seqLen+1)
	}
	return windows, nil
}

// EvalSum is the summed cross-entropy of p over validation windows
// [lo, hi) of d and the number of tokens it sums, in batches of p's batch
// size starting at lo, summed in window order. EvalLoss is EvalSum over
// [0, windows) divided by the count; a data-parallel evaluation gives each
// rank a range and adds the sums.
func EvalSum[F Float](p *Parallel[F], d Data, lo, hi int) (sum float64, count int, err error) {
	T, B := p.cfg.SeqLen, p.batch
	if lo < 0 || hi > d.ValWindows(T) || lo > hi {
		return 0, 0, fmt.Errorf("evaluate: windows %d..%d outside the %d the validation split holds", lo, hi, d.ValWindows(T))
	}
	tokens, targets := make([]int32, B*T), make([]int32, B*T)
	ce := make([]float64, B*T)
	for from := lo; from < hi; from += B {
		to := min(from+B, hi)
		d.ValBatch(from, to, T, tokens, targets)
		for r := to - from; r < B; r++ { // pad
			copy(tokens[r*T:(r+1)*T], tokens[(to-from-1)*T:(to-from)*T])
			copy(targets[r*T:(r+1)*T], targets[(to-from-1)*T:(to-from)*T])
		}
		if _, err := p.Forward(tokens, nil); err != nil {
			return 0, 0, fmt.Errorf("evaluate windows %d..%d: %w", from, to, err)
		}
		p.RowCE(targets, ce)
		for _, v := range ce[:(to-from)*T] {
			sum += v
			count++
		}
	}
	return sum, count, nil
}
