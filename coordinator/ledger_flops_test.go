package coordinator

import "testing"

// TestDiLoCoLedgerFLOPsAt: the ledger charges an outer step at the end of
// every round and after a short last round, none during a warm-up, and
// nothing extra when syncing every step.
func TestDiLoCoLedgerFLOPsAt(t *testing.T) {
	dl := Ledger{FLOPsPerStep: 100, OuterFLOPs: 7, InnerSteps: 10, TotalSteps: 25}
	every := Ledger{FLOPsPerStep: 100, TotalSteps: 25}
	warm := Ledger{FLOPsPerStep: 100, OuterFLOPs: 7, InnerSteps: 10, WarmupSteps: 20, TotalSteps: 45}
	for _, tt := range []struct {
		l     Ledger
		steps int64
		want  float64
	}{
		{every, 0, 0}, {every, 25, 2500},
		{dl, 0, 0}, {dl, 9, 900}, {dl, 10, 1007}, {dl, 19, 1907}, {dl, 20, 2014}, {dl, 25, 2521},
		// The warm-up's steps sync every step: no outer step until 30.
		{warm, 10, 1000}, {warm, 20, 2000}, {warm, 29, 2900}, {warm, 30, 3007}, {warm, 40, 4014}, {warm, 45, 4521},
	} {
		if got := tt.l.FLOPsAt(tt.steps); got != tt.want {
			t.Errorf("%+v: FLOPsAt(%d) = %v, want %v", tt.l, tt.steps, got, tt.want)
		}
	}
}
