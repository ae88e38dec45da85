// Package mod is the Mixture-of-Depths transformer (Raposo et al. 2024):
// its config, byte-level data, flat parameter layout, forward and
// hand-written backward passes, AdamW, analytic FLOP count, causal routing
// for sampling and the KV-cache decoder.
//
// Every parameter lives in one flat vector (Layout names the views), so
// shard/ can cut it into ranges and checkpoint/ can store it as is. The
// code is generic over float32 (training) and float64 (gradient checks).
// Matrix products go through gorgonia.org/tensor's BLAS: OpenBLAS with cgo.
package mod
