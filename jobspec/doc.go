// Package jobspec is the one home of modcoord's job spec: the document a
// user submits (a model, its data, a fixed FLOP budget), how it is parsed
// (YAML or JSON, strict, size-limited), its defaults, its validation and
// bounds, and what its budget buys (Plan), including the synchronisation
// mode (sync: every-step or DiLoCo, sync.go).
//
// The coordinator validates specs at submission without reading any data
// or building any model, so this package depends on no training code
// beyond the types it validates (mod.Config and mod.OptimConfig). Workers
// re-validate every spec they read from etcd with the same Validate, since
// etcd is writable by more than the coordinator, and open the spec's data
// with OpenData under their own data root.
//
// Every bound exists so that a hostile or mistaken spec is refused with an
// error that names the field, the value, the allowed range and the fix,
// instead of costing a coordinator CPU or a worker its memory:
//
//   - Validate(limits) checks syntax, ranges (non-finite numbers are always
//     refused) and the per-worker memory estimate (EstimateWorkerMemory)
//     against Limits.WorkerMemoryBytes.
//   - data is a path relative to a worker's data root: absolute paths, ".."
//     components, NUL bytes and empty paths are refused at submission;
//     OpenData refuses symlinks that leave the root and anything but a
//     regular file when a worker opens it.
package jobspec
