package corpus

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
)

// File is a token file already opened by the caller, with the name to
// show in errors. A caller that must confine reads to a directory (a
// worker's data root) opens the files itself, through os.Root, and hands
// them over: nothing here resolves a path.
type File struct {
	F    *os.File
	Name string
}

// OpenShardFile maps an open token file. The mapping outlives the file,
// which the caller still closes.
func OpenShardFile(f File, format Format) (*Shard, error) {
	data, err := mapOpened(f.F, f.Name)
	if err != nil {
		return nil, err
	}
	off, n, err := tokenRange(f.Name, data, format)
	if err != nil {
		_ = unmapFile(data)
		return nil, err
	}
	return &Shard{path: f.Name, data: data, toks: data[off : off+2*n], n: n, max: -1}, nil
}

// OpenFiles is Open for files the caller opened: o.Train and o.Val are
// ignored and train and val give the shards, in stream order.
func OpenFiles(train, val []File, o Options) (*Corpus, error) {
	if len(train) == 0 || len(val) == 0 {
		return nil, fmt.Errorf("open corpus: %d training and %d validation shards given; both need at least one", len(train), len(val))
	}
	open := func(files []File) (*Stream, error) {
		s := &Stream{start: []int{0}}
		for _, f := range files {
			sh, err := OpenShardFile(f, o.Format)
			if err != nil {
				_ = s.Close()
				return nil, err
			}
			s.shards = append(s.shards, sh)
			s.start = append(s.start, s.start[len(s.start)-1]+sh.Len())
		}
		return s, nil
	}
	tr, err := open(train)
	if err != nil {
		return nil, fmt.Errorf("open corpus training stream: %w", err)
	}
	v, err := open(val)
	if err != nil {
		_ = tr.Close()
		return nil, fmt.Errorf("open corpus validation stream: %w", err)
	}
	return &Corpus{train: tr, val: v, tok: o.Tokenizer, vocab: o.VocabSize}, nil
}

// ManifestName is the file Prepare writes next to its shards.
const ManifestName = manifestName

// ParseManifest decodes a corpus directory's manifest.json (name is shown
// in errors) and checks that it names only plain files in its directory.
func ParseManifest(b []byte, name string) (*Manifest, error) {
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("corpus manifest %s: %w (re-run prepare)", name, err)
	}
	for _, n := range append(append([]string{}, m.Train...), m.Val...) {
		if n == "" || strings.ContainsAny(n, `/\`) || strings.HasPrefix(n, ".") {
			return nil, fmt.Errorf("corpus manifest %s: shard name %q is not a plain file name (re-run prepare)", name, n)
		}
	}
	if len(m.Train) == 0 || len(m.Val) == 0 {
		return nil, errors.New("corpus manifest " + name + ": lists no training or no validation shard (re-run prepare)")
	}
	return &m, nil
}

// SplitShardNames follows llm.c's naming for a directory without a
// manifest: of the sorted *.bin names, those containing "train" train and
// those containing "val" validate.
func SplitShardNames(sorted []string) (train, val []string) {
	for _, n := range sorted {
		if !strings.HasSuffix(n, ".bin") {
			continue
		}
		switch {
		case strings.Contains(n, "train"):
			train = append(train, n)
		case strings.Contains(n, "val"):
			val = append(val, n)
		}
	}
	return train, val
}
