package jobspec

import (
	"errors"

	"fmt"
	"github.com/modcoord/modcoord/corpus"
	"github.com/modcoord/modcoord/tokenizer"
	"path/filepath"
	"strings"
)

// CheckDataPath checks the form of a spec's data path, without touching
// the file system: it must be a non-empty path relative to a worker's data
// root, with no ".." component, no NUL byte, at most MaxDataPathBytes.
// Submit runs it (the coordinator has no data root); OpenData runs it
// again before any open.
func CheckDataPath(rel string) error {
	if rel == "" {
		return errors.New("data: required; give the training text's (or a prepared corpus directory's) path relative to the workers' data root, e.g. tinyshakespeare.txt, or list token files under shards")
	}
	return checkRelPath("data", rel, "the workers' data root", "tinyshakespeare.txt")
}

// checkRelPath checks the form of a path relative to a root directory,
// naming field and the root in errors.
func checkRelPath(field, rel, root, example string) error {
	shown := truncate(rel, 200)
	switch {
	case rel == "":
		return fmt.Errorf("%s: required; give a path relative to %s, e.g. %s", field, root, example)
	case strings.ContainsRune(rel, 0):
		return fmt.Errorf("%s: %q contains a NUL byte; give a plain relative path", field, shown)
	case len(rel) > MaxDataPathBytes:
		return fmt.Errorf("%s: a %d-byte path is longer than the %d allowed", field, len(rel), MaxDataPathBytes)
	case filepath.IsAbs(rel):
		return fmt.Errorf("%s: %q is absolute; give a path relative to %s, e.g. %q", field, shown, root, truncate(strings.TrimLeft(rel, "/"), 200))
	}
	for part := range strings.SplitSeq(filepath.ToSlash(rel), "/") {
		if part == ".." {
			return fmt.Errorf("%s: %q has a \"..\" component; give a path inside %s, without \"..\"", field, shown, root)
		}
	}
	return nil
}

// checkData checks data and shards: exactly one is given, every path is
// relative and inside the root, the format is known.
func (s Spec) checkData() []error {
	if s.Shards == nil {
		if err := CheckDataPath(s.Data); err != nil {
			return []error{err}
		}
		return nil
	}
	var errs []error
	if s.Data != "" {
		errs = append(errs, errors.New("data: give either data (a text file or a prepared directory) or shards (token files), not both"))
	}
	for _, l := range []struct {
		field string
		paths []string
	}{{"shards.train", s.Shards.Train}, {"shards.val", s.Shards.Val}} {
		switch {
		case len(l.paths) == 0:
			errs = append(errs, fmt.Errorf("%s: required; list at least one token file relative to the workers' data root", l.field))
			continue
		case len(l.paths) > MaxShardFiles:
			errs = append(errs, fmt.Errorf("%s: %d files are more than the %d allowed; use larger shards", l.field, len(l.paths), MaxShardFiles))
			continue
		}
		for i, p := range l.paths {
			if err := checkRelPath(fmt.Sprintf("%s[%d]", l.field, i), p, "the workers' data root", "fineweb/train_000001.bin"); err != nil {
				errs = append(errs, err)
				break
			}
		}
	}
	if _, err := shardFormat(s.Shards.Format); err != nil {
		errs = append(errs, fmt.Errorf("shards.format: %q is not a token file format; use auto (the default), llmc or nanogpt", truncate(s.Shards.Format, 40)))
	}
	return errs
}

// checkTokenizer checks that the tokenizer is known and that the model's
// vocabulary covers it.
func (s Spec) checkTokenizer() error {
	tok, err := tokenizer.New(s.Tokenizer)
	if err != nil {
		return fmt.Errorf("tokenizer: %q is not a tokenizer; use %s", truncate(s.Tokenizer, 40), strings.Join(tokenizer.Names(), " or "))
	}
	// A byte-level model may use a smaller vocabulary for text that needs
	// fewer byte values (the corpus is checked when a worker opens it);
	// gpt2's ids span its whole vocabulary.
	if tok.Name() != tokenizer.ByteName && s.Model.Vocab < tok.VocabSize() {
		return fmt.Errorf("tokenizer: %s has %d tokens but model.vocab is %d; set model.vocab to at least %d (e.g. 50304, a multiple of 64)", tok.Name(), tok.VocabSize(), s.Model.Vocab, tok.VocabSize())
	}
	return nil
}

func shardFormat(name string) (corpus.Format, error) {
	if name == "" {
		return corpus.Auto, nil
	}
	return corpus.ParseFormat(name)
}
