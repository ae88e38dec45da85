package jobspec

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"sort"

	"github.com/modcoord/modcoord/corpus"
	"github.com/modcoord/modcoord/tokenizer"
)

// maxManifestBytes bounds a corpus directory's manifest.json.
const maxManifestBytes = 64 << 20

// OpenCorpus opens the spec's data under the data root root, with every
// check a worker makes before training:
//
//   - a text file (Data) is read whole, at most MaxDataBytes, and trained
//     on as bytes: corpus.FromText, bit-identical to mod.NewDataset. Its
//     tokenizer must be byte.
//   - a directory (Data) is a prepared corpus: its manifest.json, or else
//     llm.c's *train*.bin / *val*.bin naming, names the shards.
//   - Shards lists token files.
//
// Every file, the manifest included, is opened through OpenData's rules:
// inside the root (no symlink out of it), a regular file, non-blocking.
// A corpus whose recorded tokenizer differs from the spec's, or with a
// token outside model.vocab, or too short for model.seq_len, is refused
// with an error naming the field to fix. The caller closes the corpus.
func (s Spec) OpenCorpus(root string) (*corpus.Corpus, error) {
	c, err := s.openCorpus(root)
	if err != nil {
		return nil, err
	}
	if err := s.checkCorpus(c, true); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

func (s Spec) checkCorpus(c *corpus.Corpus, full bool) error {
	tokName := s.Tokenizer
	if tokName == "" {
		tokName = DefaultTokenizer
	}
	if t := c.Tokenizer(); t != "" && t != tokName {
		return fmt.Errorf("tokenizer: the spec says %s but the corpus %s was prepared with %s; set tokenizer: %s (and a model.vocab that covers it) or prepare the data with --tokenizer %s", tokName, s.dataName(), t, t, tokName)
	}
	if !full {
		return nil
	}
	if err := c.CheckVocab(s.Model.Vocab); err != nil {
		return fmt.Errorf("model.vocab: %w", err)
	}
	if err := c.CheckSeqLen(s.Model.SeqLen); err != nil {
		return fmt.Errorf("model.seq_len: %w", err)
	}
	return nil
}

func (s Spec) dataName() string {
	if s.Shards != nil {
		return "in shards"
	}
	return fmt.Sprintf("%q", truncate(s.Data, 200))
}

func (s Spec) openCorpus(root string) (*corpus.Corpus, error) {
	if root == "" {
		root = "."
	}
	if s.Shards != nil {
		format, err := shardFormat(s.Shards.Format)
		if err != nil {
			return nil, fmt.Errorf("shards.format: %w", err)
		}
		return openShards(root, "", s.Shards.Train, s.Shards.Val, corpus.Options{Format: format})
	}
	if err := CheckDataPath(s.Data); err != nil {
		return nil, err
	}
	r, err := os.OpenRoot(root)
	if err != nil {
		return nil, &DataError{Path: s.Data, Reason: "cannot be opened: this worker's data root is not usable (see its log)", Err: err}
	}
	st, err := r.Stat(s.Data)
	r.Close()
	if err == nil && st.IsDir() {
		return openCorpusDir(root, s.Data)
	}
	f, err := OpenData(root, s.Data)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if s.Tokenizer != "" && s.Tokenizer != tokenizer.ByteName {
		return nil, fmt.Errorf("tokenizer: data %q is a text file, which trains byte-level; prepare it with `modcoord prepare --tokenizer %s` and give the prepared directory as data, or use tokenizer: byte", truncate(s.Data, 200), s.Tokenizer)
	}
	b, err := ReadFileLimited(f, MaxDataBytes)
	if err != nil {
		return nil, fmt.Errorf("data %q: %w", truncate(s.Data, 200), err)
	}
	c, err := corpus.FromText(b)
	if err != nil {
		return nil, fmt.Errorf("data %q: %w", truncate(s.Data, 200), err)
	}
	return c, nil
}

// openCorpusDir opens a prepared corpus directory dir under root.
func openCorpusDir(root, dir string) (*corpus.Corpus, error) {
	mf, err := OpenData(root, path.Join(dir, corpus.ManifestName))
	if err == nil {
		defer mf.Close()
		b, err := ReadFileLimited(mf, maxManifestBytes)
		if err != nil {
			return nil, &DataError{Path: dir, Reason: "has an unreadable " + corpus.ManifestName, Err: err}
		}
		m, err := corpus.ParseManifest(b, path.Join(dir, corpus.ManifestName))
		if err != nil {
			return nil, &DataError{Path: dir, Reason: "has a bad " + corpus.ManifestName + " (re-run prepare)", Err: err}
		}
		return openShards(root, dir, m.Train, m.Val, corpus.Options{Format: corpus.LLMC, Tokenizer: m.Tokenizer, VocabSize: m.VocabSize})
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	// No manifest: llm.c's naming.
	r, err := os.OpenRoot(root)
	if err != nil {
		return nil, &DataError{Path: dir, Reason: "cannot be opened: this worker's data root is not usable (see its log)", Err: err}
	}
	defer r.Close()
	entries, err := fs.ReadDir(r.FS(), path.Clean(dir))
	if err != nil {
		return nil, &DataError{Path: dir, Reason: "cannot be listed", Err: err}
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	train, val := corpus.SplitShardNames(names)
	if len(train) == 0 || len(val) == 0 {
		return nil, &DataError{Path: dir, Reason: fmt.Sprintf("is a directory with no %s and %d training, %d validation *.bin shards; run `modcoord prepare` on the text, or name shards *train*.bin and *val*.bin", corpus.ManifestName, len(train), len(val)), Err: fs.ErrNotExist}
	}
	return openShards(root, dir, train, val, corpus.Options{})
}

// openShards opens every shard under root (dir joined to each name, dir
// may be ""), each by OpenData's rules, and maps them.
func openShards(root, dir string, train, val []string, o corpus.Options) (*corpus.Corpus, error) {
	var opened []*os.File
	defer func() {
		for _, f := range opened {
			f.Close()
		}
	}()
	open := func(names []string) ([]corpus.File, error) {
		var out []corpus.File
		for _, n := range names {
			rel := n
			if dir != "" {
				rel = path.Join(dir, n)
			}
			f, err := OpenData(root, rel)
			if err != nil {
				return nil, err
			}
			opened = append(opened, f)
			out = append(out, corpus.File{F: f, Name: rel})
		}
		return out, nil
	}
	tf, err := open(train)
	if err != nil {
		return nil, err
	}
	vf, err := open(val)
	if err != nil {
		return nil, err
	}
	c, err := corpus.OpenFiles(tf, vf, o)
	if err != nil {
		// corpus's messages name the files as given: relative to the root.
		return nil, &quietError{msg: "data: " + err.Error(), err: err}
	}
	return c, nil
}
