// Package shard cuts the flat parameter vector into one contiguous range
// per data-parallel rank and keeps the AdamW state for that range only.
//
// The ranges are the ring all-reduce's reduce-scatter segments (package
// allreduce uses Layout directly), so after a reduce-scatter rank r holds
// the summed gradient of exactly Range(r), updates it with its own
// Optimizer, and the all-gather hands the new values to everyone.
// DiLoCo's outer optimizer (OuterOptimizer) is sharded the same way.
//
// A checkpoint written by N workers resumes on N' workers without any
// remapping step: each new rank reads its own Range from whichever old
// shards overlap it (checkpoint.DirStore.LoadRange).
package shard
