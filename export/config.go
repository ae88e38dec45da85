package export

import (
	"encoding/json"
	"fmt"

	"github.com/modcoord/modcoord/mod"
)

// Format identification written into config.json and the safetensors
// metadata; the PyTorch loader refuses other versions.
const (
	FormatName    = "modcoord.export"
	FormatVersion = 1
)

// DefaultTokenizer is what a checkpoint that records no tokenizer was
// trained on: mod's byte-level data.
const DefaultTokenizer = "byte"

// Config is config.json: everything needed to rebuild the architecture
// outside Go. The model fields are mod.Config's, under the same JSON
// names as in job specs and checkpoints; the rest spells out what mod
// hard-wires, so that a loader need not know mod's defaults.
type Config struct {
	Format        string `json:"format"`
	FormatVersion int    `json:"format_version"`
	mod.Config
	// HeadDim is d_model / heads; TopK is floor(capacity·seq_len), the
	// tokens per sequence a routed layer processes under top-k routing.
	HeadDim int `json:"head_dim"`
	TopK    int `json:"top_k"`
	// Fixed by mod today; written so that a change shows up as a new value
	// rather than as silently different numbers.
	Activation     string `json:"activation"` // GELU, tanh approximation
	Norm           string `json:"norm"`       // RMSNorm with a gain, no bias, pre-norm
	TiedEmbeddings bool   `json:"tied_embeddings"`
	Tokenizer      string `json:"tokenizer"`
	Source         Source `json:"source"`
}

// Source says which checkpoint an export came from.
type Source struct {
	Checkpoint string `json:"checkpoint"` // the step directory
	Job        string `json:"job"`
	Step       int64  `json:"step"`
	Generation uint64 `json:"generation"`
}

// NewConfig describes model cfg (already defaulted and validated).
func NewConfig(cfg mod.Config, tokenizer string, src Source) Config {
	return Config{
		Format: FormatName, FormatVersion: FormatVersion, Config: cfg,
		HeadDim: cfg.HeadDim(), TopK: cfg.TopK(),
		Activation: "gelu_tanh", Norm: "rmsnorm", TiedEmbeddings: false,
		Tokenizer: tokenizer, Source: src,
	}
}

// TokenizerOf reads the optional "tokenizer" field of a checkpoint's
// config JSON: a name, or an object with a "name". Checkpoints written
// before tokenizers existed have none and were trained on bytes.
func TokenizerOf(checkpointConfig []byte) (string, error) {
	var c struct {
		Tokenizer json.RawMessage `json:"tokenizer"`
	}
	if len(checkpointConfig) == 0 {
		return DefaultTokenizer, nil
	}
	if err := json.Unmarshal(checkpointConfig, &c); err != nil {
		return "", fmt.Errorf("checkpoint config: %w", err)
	}
	if len(c.Tokenizer) == 0 || string(c.Tokenizer) == "null" {
		return DefaultTokenizer, nil
	}
	var name string
	if err := json.Unmarshal(c.Tokenizer, &name); err != nil {
		var obj struct {
			Name string `json:"name"`
		}
		if err := json.Unmarshal(c.Tokenizer, &obj); err != nil || obj.Name == "" {
			return "", fmt.Errorf("checkpoint config: tokenizer is %s, want a name or an object with a name", c.Tokenizer)
		}
		name = obj.Name
	}
	if name == "" {
		return "", fmt.Errorf("checkpoint config: tokenizer name is empty")
	}
	return name, nil
}
