package corpus

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/modcoord/modcoord/tokenizer"
)

// Corpus is a training stream and a validation stream of token ids, with
// the methods mod.Dataset has: Batch, ValBatch, ValWindows, CheckSeqLen.
type Corpus struct {
	train, val source
	tok        string // tokenizer name, "" if unknown
	vocab      int    // vocabulary size, 0 if unknown
}

// Options names the shard files of a corpus.
type Options struct {
	Train []string // training shards, concatenated in this order
	Val   []string // validation shards, concatenated in this order
	// Format of every shard; Auto tells llm.c from nanoGPT by the magic.
	Format Format
	// Tokenizer and VocabSize, when known, are reported by the Corpus;
	// they are not checked here (see CheckVocab).
	Tokenizer string
	VocabSize int
}

// Open maps the shards. The caller must Close the corpus.
func Open(o Options) (*Corpus, error) {
	if len(o.Train) == 0 || len(o.Val) == 0 {
		return nil, fmt.Errorf("open corpus: %d training and %d validation shards given; both need at least one (prepare the corpus, or pass validation shards)", len(o.Train), len(o.Val))
	}
	train, err := OpenStream(o.Train, o.Format)
	if err != nil {
		return nil, fmt.Errorf("open corpus training stream: %w", err)
	}
	val, err := OpenStream(o.Val, o.Format)
	if err != nil {
		_ = train.Close()
		return nil, fmt.Errorf("open corpus validation stream: %w", err)
	}
	return &Corpus{train: train, val: val, tok: o.Tokenizer, vocab: o.VocabSize}, nil
}

// OpenDir opens a directory of shards. With a manifest (written by
// Prepare) it opens the shards the manifest lists and knows the tokenizer.
// Without one it follows llm.c's naming: training shards are the *.bin
// files whose name contains "train", validation shards those containing
// "val", each in sorted order.
func OpenDir(dir string) (*Corpus, error) {
	m, err := readManifest(dir)
	if err == nil {
		o := Options{Format: LLMC, Tokenizer: m.Tokenizer, VocabSize: m.VocabSize}
		for _, n := range m.Train {
			o.Train = append(o.Train, filepath.Join(dir, n))
		}
		for _, n := range m.Val {
			o.Val = append(o.Val, filepath.Join(dir, n))
		}
		return Open(o)
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	names, err := filepath.Glob(filepath.Join(dir, "*.bin"))
	if err != nil {
		return nil, fmt.Errorf("open corpus %s: %w", dir, err)
	}
	sort.Strings(names)
	var o Options
	for _, n := range names {
		switch base := filepath.Base(n); {
		case strings.Contains(base, "train"):
			o.Train = append(o.Train, n)
		case strings.Contains(base, "val"):
			o.Val = append(o.Val, n)
		}
	}
	if len(o.Train) == 0 || len(o.Val) == 0 {
		return nil, fmt.Errorf("open corpus %s: no %s and %d training, %d validation *.bin shards (run prepare on the text, or name shards *train*.bin and *val*.bin)", dir, manifestName, len(o.Train), len(o.Val))
	}
	return Open(o)
}

// FromText is a byte-level corpus held in memory, split as mod.NewDataset
// splits it: the first len−len/10 bytes train, the rest validate. It draws
// exactly the batches mod.Dataset draws from the same text.
func FromText(text []byte) (*Corpus, error) {
	split := len(text) - len(text)/10
	if len(text)-split < 2 {
		return nil, fmt.Errorf("corpus of %d bytes is too small: its last 10%% must hold at least 2 bytes", len(text))
	}
	return &Corpus{train: bytesSource(text[:split]), val: bytesSource(text[split:]), tok: tokenizer.ByteName, vocab: 256}, nil
}

// TrainLen and ValLen are the streams' lengths in tokens.
func (c *Corpus) TrainLen() int { return c.train.Len() }
func (c *Corpus) ValLen() int   { return c.val.Len() }

// Tokenizer is the name of the tokenizer the corpus was made with, or ""
// if it is not known (shards carry no tokenizer name).
func (c *Corpus) Tokenizer() string { return c.tok }

// VocabSize is the tokenizer's vocabulary, or 0 if it is not known.
func (c *Corpus) VocabSize() int { return c.vocab }

// CheckVocab reports a token >= vocab anywhere in the corpus, naming the
// shard. Each shard is scanned once, on the first call, and its largest
// token kept; later calls cost nothing. The scan reads every page once,
// sequentially (about a second per GB from disk), which is cheaper and
// safer than trusting a sidecar that could go stale. Do not call it
// concurrently with itself.
func (c *Corpus) CheckVocab(vocab int) error {
	if vocab < 1 {
		return fmt.Errorf("check vocab: model vocabulary %d must be positive", vocab)
	}
	if err := c.train.checkVocab(vocab); err != nil {
		return err
	}
	return c.val.checkVocab(vocab)
}

// Close unmaps the shards. The corpus must not be used afterwards.
func (c *Corpus) Close() error {
	return errors.Join(c.train.Close(), c.val.Close())
}
