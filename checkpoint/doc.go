// Package checkpoint is the storage core of modcoord's distributed
// checkpoints: it writes, reads, verifies, loads and prunes the shard files
// and manifests of the two-phase commit. It does not decide when to
// checkpoint (the job spec does) or what is committed (the coordinator's
// raft log does).
//
// Each worker owns the range [lo,hi) of the flat float32 parameter vector of
// length M and writes one shard file per checkpoint holding its parameters
// and AdamW moments. Shard files are safetensors files (tensors "params",
// "adam_m", "adam_v", dtype F32, shape [hi-lo]) so that Python can load them
// with the safetensors package; their __metadata__ names the job, step,
// generation, rank, world size, range, M and the sha256 of the tensor data.
// After all N shards are durable the raft leader commits a Manifest that
// lists every shard with its size and checksums.
//
// Storage is a directory, on local disk or a shared volume:
//
//	<root>/<job>/step-<step>-gen-<generation>/rank-<r>-of-<n>.safetensors
//	<root>/<job>/step-<step>-gen-<generation>/MANIFEST.json
//
// The generation is part of the directory so that re-checkpointing a step
// after a rollback never overwrites the files of an earlier commit. A
// MANIFEST.json is written only after the raft commit, so its presence
// marks a committed step; the raft log remains the source of truth.
//
// DirStore is a concrete type, not an interface: with one implementation an
// interface would only guess at what object storage needs. A small interface
// in the style of hashicorp/raft's SnapshotStore appears together with the
// second implementation, extracted from the methods both really share.
//
// Every file is written atomically (temp file in the same directory, fsync,
// rename, fsync of the directory), so a crash leaves the old file, the new
// file or a stray temp file, never a partly written name. Shards are
// written with direct I/O through a small pipeline while a second
// goroutine computes the sha256, which keeps a checkpoint write close to
// the disk's sequential bandwidth (see BenchWrite). Everything read
// back is validated; a damaged file gives an error that names the file, the
// problem and the fix, never a panic.
//
// The main entry points: DirStore.WriteShard or AsyncWriter.Snapshot
// (every worker, phase one); ShardInfo.Validate and Manifest.Validate (the
// coordinator's state machine, on each report and at the commit);
// DirStore.WriteManifest and DirStore.Prune (the worker whose report
// completed the commit); DirStore.NewestValid and DirStore.LoadRange
// (every worker on restore, also with a different world size).
//
// See docs/checkpoints.md for the format, the commit protocol and how to
// read checkpoints from Python.
package checkpoint
