package coordinator

// FLOPsAt is the budget that steps completed steps consume: steps ×
// FLOPsPerStep plus, for a DiLoCo job, OuterFLOPs for each outer step
// taken by then (none in the first WarmupSteps steps, then one every
// InnerSteps steps, and one after the last step if it ends a short
// round), the same count jobspec.Plan bought the steps with.
func (l Ledger) FLOPsAt(steps int64) float64 {
	f := float64(steps) * l.FLOPsPerStep
	if l.InnerSteps < 1 || steps <= l.WarmupSteps {
		return f
	}
	after := steps - l.WarmupSteps
	rounds := after / l.InnerSteps
	if steps == l.TotalSteps && after%l.InnerSteps != 0 {
		rounds++
	}
	return f + float64(rounds)*l.OuterFLOPs
}

// innerSteps is a DiLoCo spec's round length, 0 for every-step sync.
func innerSteps(spec JobSpec) int64 {
	if spec.Sync.IsDiLoCo() {
		return spec.Sync.InnerSteps
	}
	return 0
}

// warmupSteps is a DiLoCo spec's every-step warm-up, 0 otherwise.
func warmupSteps(spec JobSpec) int64 {
	if spec.Sync.IsDiLoCo() {
		return spec.Sync.WarmupSteps
	}
	return 0
}
