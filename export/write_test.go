package export_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/modcoord/modcoord/export"
	"github.com/modcoord/modcoord/mod"
)

func TestWriteRefusesToReplace(t *testing.T) {
	cfg := tinyModel()
	params := make([]float32, mod.NewLayout(cfg).Total)
	ecfg := export.NewConfig(cfg, "byte", export.Source{})
	for _, tc := range []struct {
		name  string
		setup func(out string)
		ok    bool
	}{
		{"absent", func(string) {}, true},
		{"empty directory", func(out string) { os.Mkdir(out, 0o755) }, true},
		{"parent missing", func(out string) {}, true},
		{"non-empty directory", func(out string) { os.Mkdir(out, 0o755); os.WriteFile(filepath.Join(out, "x"), nil, 0o644) }, false},
		{"a file", func(out string) { os.WriteFile(out, []byte("x"), 0o644) }, false},
	} {
		parent := t.TempDir()
		out := filepath.Join(parent, "out")
		if tc.name == "parent missing" {
			out = filepath.Join(parent, "a", "b", "out")
		}
		tc.setup(out)
		_, err := export.Write(context.Background(), out, ecfg, params)
		if (err == nil) != tc.ok {
			t.Errorf("%s: error %v", tc.name, err)
		}
		if err != nil && !strings.Contains(err.Error(), out) {
			t.Errorf("%s: error %q does not name %s", tc.name, err, out)
		}
		// Neither outcome leaves the temporary directory behind.
		entries, _ := os.ReadDir(filepath.Dir(out))
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), ".tmp-") {
				t.Errorf("%s: left %s behind", tc.name, e.Name())
			}
		}
	}
}

func TestExportedFiles(t *testing.T) {
	root, stepDir := trainedCheckpoint(t, tinyModel())
	dir, ck, params := exportCheckpoint(t, root) // a store root works as well as a step dir
	if ck.Dir != stepDir {
		t.Fatalf("opened %s, want %s", ck.Dir, stepDir)
	}
	raw, err := os.ReadFile(filepath.Join(dir, export.ConfigFile))
	if err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	if err := json.Unmarshal(raw, &cfg); err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]any{
		"format": "modcoord.export", "format_version": 1.0, "vocab": 256.0, "d_model": 32.0, "heads": 4.0,
		"layers": 4.0, "seq_len": 32.0, "mlp_hidden": 64.0, "capacity": 0.25, "top_k": 8.0, "decision": "aux-loss",
		"positions": "rope", "rope_theta": 10000.0, "norm_eps": 1e-5, "tokenizer": "byte", "activation": "gelu_tanh",
		"norm": "rmsnorm", "tied_embeddings": false,
	} {
		if cfg[k] != want {
			t.Errorf("config.json %s = %v, want %v", k, cfg[k], want)
		}
	}
	b, err := os.ReadFile(filepath.Join(dir, export.WeightsFile))
	if err != nil {
		t.Fatal(err)
	}
	meta, entries, values := parseSafetensors(t, b)
	if meta["format"] != export.FormatName || meta["format_version"] != "1" {
		t.Errorf("metadata %v", meta)
	}
	layout := mod.NewLayout(ck.Config.Model)
	if len(entries) != len(layout.Tensors) {
		t.Errorf("%d tensors, layout has %d", len(entries), len(layout.Tensors))
	}
	for _, lt := range layout.Tensors {
		name, _ := export.Name(lt.Name)
		if !slices.Equal(entries[name].Shape, lt.Shape) || !slices.Equal(values[name], params[lt.Offset:lt.Offset+lt.Size()]) {
			t.Errorf("%s (%s): shape %v, want %v, or values differ", name, lt.Name, entries[name].Shape, lt.Shape)
		}
	}
}

func TestTokenizerOf(t *testing.T) {
	for _, tc := range []struct {
		config, want string
		bad          bool
	}{
		{config: ``, want: "byte"},
		{config: `{"model":{}}`, want: "byte"},
		{config: `{"tokenizer":null}`, want: "byte"},
		{config: `{"tokenizer":"gpt2"}`, want: "gpt2"},
		{config: `{"tokenizer":{"name":"gpt2","vocab":50257}}`, want: "gpt2"},
		{config: `{"tokenizer":""}`, bad: true},
		{config: `{"tokenizer":3}`, bad: true},
		{config: `{"tokenizer":{}}`, bad: true},
		{config: `not json`, bad: true},
	} {
		got, err := export.TokenizerOf([]byte(tc.config))
		if (err != nil) != tc.bad || (!tc.bad && got != tc.want) {
			t.Errorf("TokenizerOf(%s) = %q, %v; want %q (error %v)", tc.config, got, err, tc.want, tc.bad)
		}
	}
}
