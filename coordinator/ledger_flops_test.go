package coordinator

import "testing"

// TestDiLoCoLedgerFLOPsAt: the ledger charges an outer step at the end of
// every round and after a short last round, and nothing extra when
// syncing every step.
func TestDiLoCoLedgerFLOPsAt(t *testing.T) {
	dl := Ledger{FLOPsPerStep: 100, OuterFLOPs: 7, InnerSteps: 10, TotalSteps: 25}
	every := Ledger{FLOPsPerStep: 100, TotalSteps: 25}
	for _, tt := range []struct {
		l     Ledger
		steps int64
		want  float64
	}{
		{every, 0, 0}, {every, 25, 2500},
		{dl, 0, 0}, {dl, 9, 900}, {dl, 10, 1007}, {dl, 19, 1907}, {dl, 20, 2014}, {dl, 25, 2521},
	} {
		if got := tt.l.FLOPsAt(tt.steps); got != tt.want {
			t.Errorf("%+v: FLOPsAt(%d) = %v, want %v", tt.l, tt.steps, got, tt.want)
		}
	}
}
