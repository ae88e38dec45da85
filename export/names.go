package export

import (
	"fmt"
	"strconv"
	"strings"
)

// layerNames maps the per-layer tensor names of mod.Layout (after the
// "layer<i>." prefix) to the exported ones (after "layers.<i>.").
var layerNames = map[string]string{
	"ln1":     "attn_norm.weight",
	"wqkv":    "attn.wqkv",
	"wo":      "attn.wo",
	"ln2":     "mlp_norm.weight",
	"w1":      "mlp.w1",
	"w2":      "mlp.w2",
	"router":  "router",
	"pred_w1": "predictor.w1",
	"pred_b1": "predictor.b1",
	"pred_w2": "predictor.w2",
	"pred_b2": "predictor.b2",
}

// globalNames maps mod.Layout's tensors outside the layers.
var globalNames = map[string]string{
	"tok_emb": "tok_emb.weight",
	"pos_emb": "pos_emb.weight",
	"ln_f":    "norm_f.weight",
	"lm_head": "lm_head",
}

// Name returns the exported name of the mod.Layout tensor modName. A name
// it does not know is an error rather than passed through, so that a tensor
// added to mod gets its exported name (and its place in the PyTorch
// loader) on purpose.
func Name(modName string) (string, error) {
	if n, ok := globalNames[modName]; ok {
		return n, nil
	}
	rest, ok := strings.CutPrefix(modName, "layer")
	if !ok {
		return "", fmt.Errorf("tensor %q has no exported name", modName)
	}
	idx, leaf, ok := strings.Cut(rest, ".")
	if !ok {
		return "", fmt.Errorf("tensor %q has no exported name", modName)
	}
	i, err := strconv.Atoi(idx)
	if err != nil || i < 0 || strconv.Itoa(i) != idx {
		return "", fmt.Errorf("tensor %q: layer index %q is not a decimal number", modName, idx)
	}
	n, ok := layerNames[leaf]
	if !ok {
		return "", fmt.Errorf("tensor %q has no exported name", modName)
	}
	return fmt.Sprintf("layers.%d.%s", i, n), nil
}
