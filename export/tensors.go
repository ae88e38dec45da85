package export

import (
	"fmt"

	"github.com/modcoord/modcoord/mod"
)

// Tensors cuts the flat parameter vector of cfg into named tensors, in
// mod.Layout's order, under their exported names. The tensors alias params.
func Tensors(cfg mod.Config, params []float32) ([]Tensor, error) {
	if cfg.RandomRouting() && len(cfg.RoutedLayers) > 0 {
		// The PyTorch loader routes by the router's logits; a random-routing
		// control exported as is would load as a different model.
		return nil, fmt.Errorf("export: model routing %q is a training control (isoflop's random-c variants); only %q routing can be exported", cfg.Routing, mod.RoutingLearned)
	}
	layout := mod.NewLayout(cfg)
	if len(params) != layout.Total {
		return nil, fmt.Errorf("parameter vector has %d values, the model (%s) needs %d", len(params), cfg, layout.Total)
	}
	out := make([]Tensor, 0, len(layout.Tensors))
	for _, t := range layout.Tensors {
		name, err := Name(t.Name)
		if err != nil {
			return nil, err
		}
		out = append(out, Tensor{Name: name, Shape: t.Shape, Data: params[t.Offset : t.Offset+t.Size()]})
	}
	return out, nil
}
