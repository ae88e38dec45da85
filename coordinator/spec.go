package coordinator

import "github.com/modcoord/modcoord/jobspec"

// The job spec lives in package jobspec. These aliases keep the
// coordinator's callers compiling unchanged while they move over; new code
// uses jobspec directly.
type (
	// JobSpec is jobspec.Spec.
	JobSpec = jobspec.Spec
	// Plan is jobspec.Plan.
	Plan = jobspec.Plan
)

// Bounds and defaults, from jobspec.
const (
	MaxSpecBytes           = jobspec.MaxSpecBytes
	MaxBatch               = jobspec.MaxBatch
	MaxWorkers             = jobspec.MaxWorkers
	MaxKeepCheckpoints     = jobspec.MaxKeepCheckpoints
	MaxSteps               = jobspec.MaxSteps
	DefaultCheckpointEvery = jobspec.DefaultCheckpointEvery
	DefaultKeepCheckpoints = jobspec.DefaultKeepCheckpoints
	DefaultEvalEvery       = jobspec.DefaultEvalEvery
)

// ParseSpec is jobspec.Parse under the default limits (a client-side
// check; the coordinator's API parses under its configured SpecLimits).
func ParseSpec(data []byte) (JobSpec, error) { return jobspec.Parse(data, jobspec.Limits{}) }

// FieldErrors is jobspec.FieldErrors.
func FieldErrors(err error) []string { return jobspec.FieldErrors(err) }
