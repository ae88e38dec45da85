package corpus

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// manifestName is the file Prepare writes next to its shards.
const manifestName = "manifest.json"

// Manifest records what Prepare made, so that a corpus directory says
// which tokenizer its ids belong to. Shards are listed by base name,
// relative to the directory, in stream order; shard files not listed
// (left over from an earlier run) are ignored.
type Manifest struct {
	Tokenizer   string   `json:"tokenizer"`
	VocabSize   int      `json:"vocab_size"`
	Train       []string `json:"train"`
	Val         []string `json:"val"`
	TrainTokens int64    `json:"train_tokens"`
	ValTokens   int64    `json:"val_tokens"`
}

func readManifest(dir string) (*Manifest, error) {
	path := filepath.Join(dir, manifestName)
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read corpus manifest: %w", err)
	}
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("corpus manifest %s: %w (re-run prepare)", path, err)
	}
	for _, n := range append(append([]string{}, m.Train...), m.Val...) {
		// Names are plain file names: a manifest must not point outside
		// its directory.
		if n == "" || n != filepath.Base(n) || strings.HasPrefix(n, ".") {
			return nil, fmt.Errorf("corpus manifest %s: shard name %q is not a plain file name (re-run prepare)", path, n)
		}
	}
	return &m, nil
}

func writeManifest(dir string, m *Manifest) error {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return fmt.Errorf("encode corpus manifest: %w", err)
	}
	return writeFileAtomic(filepath.Join(dir, manifestName), append(b, '\n'))
}
