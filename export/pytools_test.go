package export_test

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/modcoord/modcoord/mod"
)

// TestReadCheckpointOnTrainerCheckpoint runs tools/read_checkpoint.py on a
// checkpoint that the trainer committed, whose config records the layout
// as a list of mod.Tensor, and checks every named tensor.
func TestReadCheckpointOnTrainerCheckpoint(t *testing.T) {
	py := python(t, "import json", "python3")
	_, stepDir := trainedCheckpoint(t, tinyModel())
	_, ck, params := exportCheckpoint(t, stepDir)
	out := runPy(t, py, nil, "tools/read_checkpoint.py", "--json", filepath.Join(stepDir, "MANIFEST.json"))
	var got struct {
		Step  int64 `json:"step"`
		Named map[string]struct {
			Shape []int     `json:"shape"`
			Sum   float64   `json:"sum"`
			First []float64 `json:"first"`
		} `json:"named"`
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("%v in %.300s", err, out)
	}
	layout := mod.NewLayout(ck.Config.Model)
	if got.Step != ck.Manifest.Step || len(got.Named) != len(layout.Tensors) {
		t.Fatalf("python reader: step %d, %d named tensors; want step %d, %d", got.Step, len(got.Named), ck.Manifest.Step, len(layout.Tensors))
	}
	for _, lt := range layout.Tensors {
		values := params[lt.Offset : lt.Offset+lt.Size()]
		var sum float64 // index order, float64, as the reader sums
		for _, v := range values {
			sum += float64(v)
		}
		g := got.Named[lt.Name]
		if !slices.Equal(g.Shape, lt.Shape) || g.Sum != sum || len(g.First) == 0 || g.First[0] != float64(values[0]) {
			t.Errorf("%s: python shape %v sum %v first %v; Go %v %v %v", lt.Name, g.Shape, g.Sum, g.First, lt.Shape, sum, values[0])
		}
	}
}

// docSnippet is one ```python block of docs/checkpoints.md, how to point
// it at the test's files, and what it must print when check is appended.
type docSnippet struct {
	needs string // import the python must manage
	check string // appended Python that prints one JSON object
}

// TestDocSnippets runs the Python blocks of docs/checkpoints.md, in order,
// on a checkpoint the trainer wrote and on its export, so that the page
// shows code that runs against the real format. The example paths in the
// page are replaced with the test's.
func TestDocSnippets(t *testing.T) {
	doc, err := os.ReadFile("../docs/checkpoints.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile("(?s)```python\n(.*?)```").FindAllStringSubmatch(string(doc), -1)
	snippets := []docSnippet{
		{needs: "import numpy", check: `print(json.dumps({"n": len(params), "m": len(adam_m), "v": len(adam_v), "job": meta["job"], "tensors": len(config["layout"])}))`},
		{needs: "import numpy", check: `print(json.dumps({k: [list(v.shape), float(v.reshape(-1)[0]), float(v.astype(np.float64).sum())] for k, v in weights.items()}))`},
		{needs: "import torch", check: `import json; print(json.dumps({"shape": list(logits.shape), "next": next_byte}))`},
	}
	if len(blocks) != len(snippets) {
		t.Fatalf("docs/checkpoints.md has %d python blocks; this test knows %d: give a new block its check here", len(blocks), len(snippets))
	}
	_, stepDir := trainedCheckpoint(t, tinyModel())
	exportDir, ck, params := exportCheckpoint(t, stepDir)
	layout := mod.NewLayout(ck.Config.Model)
	replace := strings.NewReplacer(
		`"/ckpt/train/step-0000001200-gen-0"`, `"`+stepDir+`"`,
		`"/tmp/tiny-export"`, `"`+exportDir+`"`,
	)
	for i, s := range snippets {
		py := python(t, s.needs, strings.TrimPrefix(s.needs, "import "))
		code := replace.Replace(blocks[i][1])
		if code == blocks[i][1] {
			t.Fatalf("python block %d names none of the example paths this test replaces:\n%s", i+1, code)
		}
		var env []string
		if i < 2 && runPyOK(py, "import safetensors") != nil {
			standin, err := filepath.Abs("testdata/standin")
			if err != nil {
				t.Fatal(err)
			}
			env = append(env, "PYTHONPATH="+standin)
			t.Logf("block %d: the safetensors package is missing; using the stand-in in %s", i+1, standin)
		}
		out := runPy(t, py, env, "-c", code+"\n"+s.check+"\n")
		switch i {
		case 0:
			var got struct {
				N, M, V, Tensors int
				Job              string
			}
			if err := json.Unmarshal(out, &got); err != nil {
				t.Fatalf("block 1: %v in %s", err, out)
			}
			if got.N != len(params) || got.M != len(params) || got.V != len(params) || got.Job != "train" || got.Tensors != len(layout.Tensors) {
				t.Errorf("block 1 read %+v; want %d values per tensor, job train, %d layout tensors", got, len(params), len(layout.Tensors))
			}
		case 1:
			var got map[string][3]any
			if err := json.Unmarshal(out, &got); err != nil {
				t.Fatalf("block 2: %v in %.300s", err, out)
			}
			if len(got) != len(layout.Tensors) {
				t.Errorf("block 2 named %d tensors, layout has %d", len(got), len(layout.Tensors))
			}
			for _, lt := range layout.Tensors {
				values := params[lt.Offset : lt.Offset+lt.Size()]
				var sum float64
				for _, v := range values {
					sum += float64(v)
				}
				g := got[lt.Name]
				shape, _ := json.Marshal(g[0])
				want, _ := json.Marshal(lt.Shape)
				first, _ := g[1].(float64)
				pySum, _ := g[2].(float64)
				// numpy sums pairwise, Go in index order: close, not equal.
				if string(shape) != string(want) || first != float64(values[0]) || math.Abs(pySum-sum) > 1e-6*(1+math.Abs(sum)) {
					t.Errorf("block 2 %s: %v, want shape %v first %v sum %v", lt.Name, g, lt.Shape, values[0], sum)
				}
			}
		case 2:
			var got struct {
				Shape []int
				Next  int
			}
			if err := json.Unmarshal(out, &got); err != nil {
				t.Fatalf("block 3: %v in %s", err, out)
			}
			if !slices.Equal(got.Shape, []int{1, 6, ck.Config.Model.Vocab}) || got.Next < 0 || got.Next >= ck.Config.Model.Vocab {
				t.Errorf("block 3 printed %+v", got)
			}
		}
	}
}
