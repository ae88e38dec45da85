package corpus

import "fmt"

// mix64 is splitmix64's finaliser, copied from package mod (rng.go) so
// that a byte corpus here draws exactly the windows mod.Dataset draws.
func mix64(z uint64) uint64 {
	z += 0x9e3779b97f4a7c15
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// TrainOffset is where sample i of a step's global batch starts in the
// training stream: a pure function of (seed, step, i) and the stream's
// length, so any split of the batch across workers, and any resume, reads
// the same windows. span is trainLen − seqLen − 1.
func TrainOffset(seed uint64, step int64, i int, span uint64) int {
	return int(mix64(seed^mix64(uint64(step)^mix64(uint64(i)+0x5eed))) % span)
}

// CheckSeqLen reports whether both streams can hold one window: training
// needs seqLen+2 tokens (so that span ≥ 1), validation seqLen+1. Batch
// and ValBatch assume it passed.
func (c *Corpus) CheckSeqLen(seqLen int) error {
	if seqLen < 1 {
		return fmt.Errorf("seq_len %d: must be at least 1", seqLen)
	}
	if c.train.Len() < seqLen+2 || c.val.Len() < seqLen+1 {
		return fmt.Errorf("corpus too small for seq_len %d: train has %d tokens and validation %d; each needs at least seq_len+1 (lower model.seq_len or use a larger corpus)", seqLen, c.train.Len(), c.val.Len())
	}
	return nil
}

// Batch fills tokens and targets ([(hi−lo)·seqLen] each) with samples
// lo..hi−1 of the global training batch of a step. Sample i is the window
// at TrainOffset(seed, step, i, trainLen−seqLen−1) of the training stream
// (shards concatenated in order); targets are the tokens one position on.
// A worker takes its slice [lo,hi), so the global batch is the same
// whatever the number of workers. CheckSeqLen(seqLen) must have passed.
// Batch only reads, so it is safe to call from many goroutines.
func (c *Corpus) Batch(seed uint64, step int64, lo, hi, seqLen int, tokens, targets []int32) {
	span := uint64(c.train.Len() - seqLen - 1)
	for i := lo; i < hi; i++ {
		off := TrainOffset(seed, step, i, span)
		row := (i - lo) * seqLen
		readWindow(c.train, off, seqLen, tokens[row:row+seqLen], targets[row:row+seqLen])
	}
}

// ValWindows is how many non-overlapping windows of seqLen+1 tokens the
// validation stream holds; window w starts at token w·seqLen.
func (c *Corpus) ValWindows(seqLen int) int { return (c.val.Len() - 1) / seqLen }

// ValBatch fills tokens and targets with validation windows lo..hi−1.
func (c *Corpus) ValBatch(lo, hi, seqLen int, tokens, targets []int32) {
	for w := lo; w < hi; w++ {
		row := (w - lo) * seqLen
		readWindow(c.val, w*seqLen, seqLen, tokens[row:row+seqLen], targets[row:row+seqLen])
	}
}

// readWindow reads seqLen+1 tokens at off: the first seqLen are the inputs,
// the last seqLen the targets. The overlap is copied rather than read
// twice.
func readWindow(s source, off, seqLen int, tokens, targets []int32) {
	s.read(off, tokens)
	copy(targets, tokens[1:])
	s.read(off+seqLen, targets[seqLen-1:])
}
