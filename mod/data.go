package mod

import (
	"fmt"
	"os"
)

// Data is what training and evaluation read: a training stream drawn by
// the batch rule and a validation stream cut into fixed windows. Dataset
// (bytes in memory) and corpus.Corpus (token shards) implement it and draw
// bit-identical batches from the same byte-level text.
type Data interface {
	// CheckSeqLen reports whether both streams can hold one window.
	CheckSeqLen(seqLen int) error
	// Batch fills samples lo..hi−1 of the global training batch of a step.
	Batch(seed uint64, step int64, lo, hi, seqLen int, tokens, targets []int32)
	// ValWindows is the number of validation windows of seqLen+1 tokens.
	ValWindows(seqLen int) int
	// ValBatch fills validation windows lo..hi−1.
	ValBatch(lo, hi, seqLen int, tokens, targets []int32)
}

// Dataset is a byte-tokenised corpus split into train (the first 90%) and
// validation (the last 10%). Byte-level tokens (vocabulary 256) make any
// file a valid corpus.
type Dataset struct {
	Train, Val []byte
}

// maxCorpusBytes bounds what is read into memory.
const maxCorpusBytes = 4 << 30

// LoadDataset reads a corpus file.
func LoadDataset(path string) (*Dataset, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("load corpus: %w (give a text file with --data)", err)
	}
	if st.Size() > maxCorpusBytes {
		return nil, fmt.Errorf("load corpus %s: %d bytes is over the %d-byte limit; split the file", path, st.Size(), maxCorpusBytes)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("load corpus: %w", err)
	}
	return NewDataset(b)
}

// NewDataset splits text into train and validation.
func NewDataset(text []byte) (*Dataset, error) {
	split := len(text) - len(text)/10
	d := &Dataset{Train: text[:split], Val: text[split:]}
	if len(d.Val) < 2 {
		return nil, fmt.Errorf("corpus of %d bytes is too small: its last 10%% must hold at least 2 bytes", len(text))
	}
	return d, nil
}

// CheckSeqLen reports whether both splits can hold one training window.
func (d *Dataset) CheckSeqLen(seqLen int) error {
	if len(d.Train) < seqLen+2 || len(d.Val) < seqLen+1 {
		return fmt.Errorf("corpus too small for seq_len %d: train has %d bytes and validation %d; each needs at least seq_len+1 (lower model.seq_len or use a larger file)", seqLen, len(d.Train), len(d.Val))
	}
	return nil
}

// Batch fills tokens and targets ([(hi−lo)·T] each) with samples lo..hi−1
// of the global training batch of a step. Sample i starts at an offset that
// is a pure function of (seed, step, i); a worker takes its slice [lo,hi)
// of the global batch, so the global batch is the same whatever the number
// of workers.
func (d *Dataset) Batch(seed uint64, step int64, lo, hi, seqLen int, tokens, targets []int32) {
	span := uint64(len(d.Train) - seqLen - 1)
	for i := lo; i < hi; i++ {
		off := int(mix64(seed^mix64(uint64(step)^mix64(uint64(i)+0x5eed))) % span)
		row := (i - lo) * seqLen
		for j := 0; j < seqLen; j++ {
			tokens[row+j] = int32(d.Train[off+j])
			targets[row+j] = int32(d.Train[off+j+1])
		}
	}
}

// ValWindows is how many non-overlapping windows of seqLen+1 bytes the
// validation split holds; window w starts at byte w·seqLen.
func (d *Dataset) ValWindows(seqLen int) int { return (len(d.Val) - 1) / seqLen }

// ValBatch fills tokens and targets with validation windows lo..hi−1.
func (d *Dataset) ValBatch(lo, hi, seqLen int, tokens, targets []int32) {
	for w := lo; w < hi; w++ {
		off, row := w*seqLen, (w-lo)*seqLen
		for j := 0; j < seqLen; j++ {
			tokens[row+j] = int32(d.Val[off+j])
			targets[row+j] = int32(d.Val[off+j+1])
		}
	}
}
