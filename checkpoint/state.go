package checkpoint

import "fmt"

// State is one worker's part of the training state: its range of the
// parameters and of AdamW's first and second moments. All three have the
// range's length.
type State struct {
	Params []float32
	AdamM  []float32
	AdamV  []float32
}

// tensors returns the slices in data order (see tensorNames).
func (s State) tensors() [3][]float32 { return [3][]float32{s.Params, s.AdamM, s.AdamV} }

// checkLen reports a slice whose length is not n.
func (s State) checkLen(n int) error {
	for i, t := range s.tensors() {
		if len(t) != n {
			return fmt.Errorf("%s has %d elements, the range needs %d", tensorNames()[i], len(t), n)
		}
	}
	return nil
}
