// Package shard cuts the flat parameter vector into one contiguous range
// per data-parallel rank and keeps the AdamW state for that range only.
//
// The ranges are the ring all-reduce's reduce-scatter segments (package
// allreduce uses Layout directly), so after a reduce-scatter rank r holds
// the summed gradient of exactly Range(r), updates it with its own
// Optimizer, and the all-gather hands the new values to everyone. Remap
// says how to rebuild those ranges when a checkpoint written by N workers
// is resumed by N' workers.
package shard
