package checkpoint

import (
	"bytes"
	"context"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// pythonReader is the dependency-free Python reader shipped in tools/.
const pythonReader = "../tools/read_checkpoint.py"

// runPython runs the reader with args; it skips the test where there is no
// python3, since the format check outside Go needs one.
func runPython(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	py, lookErr := exec.LookPath("python3")
	if lookErr != nil {
		t.Skip("python3 not installed; the Python reader is not exercised")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, py, append([]string{pythonReader}, args...)...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err = cmd.Run()
	return out.String(), errOut.String(), err
}

type pySummary struct {
	Shape []int     `json:"shape"`
	Len   int       `json:"len"`
	Sum   float64   `json:"sum"`
	First []float64 `json:"first"`
}

// check compares a Python summary with the Go values it describes; sums
// are float64 in index order on both sides, so they agree exactly.
func (s pySummary) check(t *testing.T, what string, shape []int, values []float32) {
	t.Helper()
	var sum float64
	for _, v := range values {
		sum += float64(v)
	}
	if s.Len != len(values) || s.Sum != sum || !equalInts(s.Shape, shape) {
		t.Errorf("%s: python says shape %v len %d sum %v; Go has shape %v len %d sum %v", what, s.Shape, s.Len, s.Sum, shape, len(values), sum)
	}
	for i, f := range s.First {
		if f != float64(values[i]) {
			t.Errorf("%s[%d]: python %v, Go %v", what, i, f, values[i])
		}
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestPythonReadsCheckpoints proves the format is readable outside Go: the
// Python reader must see the same metadata, shapes and values.
func TestPythonReadsCheckpoints(t *testing.T) {
	// The layout as train.CheckpointConfig records it: a list of mod.Tensor.
	const layoutConfig = `{"model":"tiny","layout":[
		{"name":"tok_emb","shape":[10,20],"offset":0,"decay":true},
		{"name":"layer0.wqkv","shape":[20,30],"offset":200,"decay":true},
		{"name":"ln_f","shape":[200],"offset":800,"decay":false}]}`
	store := newTestStore(t)
	flat := flatState(1000)
	ctx := context.Background()
	var infos []ShardInfo
	ranges := [][2]int{{0, 333}, {333, 700}, {700, 1000}}
	for r, rg := range ranges {
		meta := ShardMeta{Job: "py", Step: 77, Generation: 4, Rank: r, World: 3, Lo: rg[0], Hi: rg[1], Total: 1000, Config: json.RawMessage(layoutConfig)}
		info, err := store.WriteShard(ctx, meta, subState(flat, rg[0], rg[1]))
		if err != nil {
			t.Fatal(err)
		}
		infos = append(infos, info)
	}
	m, err := NewManifest("py", 77, 4, 1000, json.RawMessage(layoutConfig), infos)
	if err != nil {
		t.Fatal(err)
	}
	if err := store.WriteManifest(ctx, m); err != nil {
		t.Fatal(err)
	}
	dir := store.StepDir("py", 77, 4)

	// Python starts slowly; the subtests run in parallel and do not share files.
	t.Run("shard", func(t *testing.T) {
		t.Parallel()
		out, errOut, err := runPython(t, "--json", filepath.Join(dir, infos[1].File))
		if err != nil {
			t.Fatalf("python reader failed: %v\n%s", err, errOut)
		}
		var got struct {
			Metadata map[string]string    `json:"metadata"`
			Tensors  map[string]pySummary `json:"tensors"`
		}
		if err := json.Unmarshal([]byte(out), &got); err != nil {
			t.Fatalf("%v in %s", err, out)
		}
		for k, v := range map[string]string{"job": "py", "step": "77", "generation": "4", "rank": "1", "world": "3", "lo": "333", "hi": "700", "total": "1000", "data_sha256": infos[1].DataSHA256} {
			if got.Metadata[k] != v {
				t.Errorf("python metadata %s = %q, want %q", k, got.Metadata[k], v)
			}
		}
		want := subState(flat, 333, 700)
		for i, name := range tensorNames() {
			got.Tensors[name].check(t, name, []int{367}, want.tensors()[i])
		}
	})

	t.Run("manifest with named tensors", func(t *testing.T) {
		t.Parallel()
		out, errOut, err := runPython(t, "--json", filepath.Join(dir, ManifestFile))
		if err != nil {
			t.Fatalf("python reader failed: %v\n%s", err, errOut)
		}
		var got struct {
			Step   int64                `json:"step"`
			Params pySummary            `json:"params"`
			Named  map[string]pySummary `json:"named"`
		}
		if err := json.Unmarshal([]byte(out), &got); err != nil {
			t.Fatalf("%v in %s", err, out)
		}
		if got.Step != 77 {
			t.Errorf("step %d", got.Step)
		}
		got.Params.check(t, "params", []int{1000}, flat.Params)
		got.Named["tok_emb"].check(t, "tok_emb", []int{10, 20}, flat.Params[0:200])
		got.Named["layer0.wqkv"].check(t, "layer0.wqkv", []int{20, 30}, flat.Params[200:800])
		got.Named["ln_f"].check(t, "ln_f", []int{200}, flat.Params[800:1000])
	})

	t.Run("corrupt shard is refused", func(t *testing.T) {
		t.Parallel()
		path := filepath.Join(t.TempDir(), "copy.safetensors")
		mustWrite(t, path, mustRead(t, filepath.Join(dir, infos[2].File)))
		flipByte(t, path, -1)
		_, errOut, err := runPython(t, path)
		if err == nil || !strings.Contains(errOut, "sha256") {
			t.Fatalf("python reader accepted a corrupt shard: %v %s", err, errOut)
		}
	})
}
