package jobspec

// Bounds on what a spec may ask for. They keep a hostile or mistaken spec
// from costing the coordinator memory or CPU; mod.Config.Validate bounds
// the model's shape and numbers, and Limits the memory a worker may need.
const (
	// MaxSpecBytes is the largest spec document accepted, in bytes.
	MaxSpecBytes = 1 << 20
	// MaxBatch is the largest global batch, in sequences per step.
	MaxBatch = 1 << 20
	// MaxWorkers is the largest max_workers.
	MaxWorkers = 1024
	// MaxKeepCheckpoints is the largest keep_checkpoints.
	MaxKeepCheckpoints = 1000
	// MaxSteps is the most steps a budget may buy. Steps are int64 in the
	// ledger, and no real job runs a trillion steps.
	MaxSteps = 1_000_000_000_000
	// MaxDataPathBytes is the longest data path (PATH_MAX on Linux).
	MaxDataPathBytes = 4096
	// MaxDataBytes is the largest corpus a worker reads, the cap
	// mod.LoadDataset applies too: workers hold the whole corpus in memory.
	MaxDataBytes = 4 << 30
	// MaxShardFiles bounds each of shards.train and shards.val.
	MaxShardFiles = 100_000
	// MaxEvalWindows bounds eval_windows: each evaluation runs that many
	// forward windows, on every eval_every'th step.
	MaxEvalWindows = 1 << 20
	// maxFLOPCountWork bounds batch × layers × heads: mod.Config.TrainFLOPs
	// loops that many times, and the coordinator runs it on every submission.
	maxFLOPCountWork = 1 << 26
)

// Defaults for Limits fields left at zero.
const (
	// DefaultWorkerMemoryBytes fits a worker on an ordinary 16 GiB node
	// with room for the corpus, the runtime and the page cache.
	DefaultWorkerMemoryBytes = 8 << 30
	// DefaultWorkerCores is the core count a worker is assumed to have:
	// mod.Parallel keeps one full gradient per core (see EstimateWorkerMemory).
	DefaultWorkerCores = 8
)

// Limits are the deployment-specific bounds that Validate enforces. The
// zero value means the defaults, so callers only set what they change.
type Limits struct {
	// WorkerMemoryBytes is the most memory one worker may need for a job,
	// by EstimateWorkerMemory at min_workers workers.
	WorkerMemoryBytes int64
	// WorkerCores is the number of cores (GOMAXPROCS) a worker trains on,
	// which sets how many gradient copies it keeps.
	WorkerCores int
}

// WithDefaults fills fields left at zero (or below it).
func (l Limits) WithDefaults() Limits {
	if l.WorkerMemoryBytes <= 0 {
		l.WorkerMemoryBytes = DefaultWorkerMemoryBytes
	}
	if l.WorkerCores <= 0 {
		l.WorkerCores = DefaultWorkerCores
	}
	return l
}
