package coordinator

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func memoryCmd(job string, gen uint64, worker string, world int, ranges ...HeldRange) Command {
	return Command{Type: CmdMemoryReport, Job: job, Memory: &MemoryReport{Generation: gen, Worker: worker, World: world, Ranges: ranges}}
}

func held(rank int, steps ...int64) HeldRange { return HeldRange{Rank: rank, Steps: steps} }

// memoryJob is a job in generation 1 with members a, b, c, d (ranks 0..3)
// whose checkpoint of step 10 is committed.
func memoryJob(t *testing.T) *FSM {
	t.Helper()
	f := NewFSM()
	spec, plan := testSpec(t, 1, 4)
	mustApply(t, f, submitCmd(spec, plan))
	mustApply(t, f, genCmd("job-000001", 1, 4, "a", "b", "c", "d"))
	for r := range 4 {
		c := shardCmd("job-000001", 1, 10, r, r*100, (r+1)*100)
		c.Shard.Shard = testShard(r, 4, r*100, (r+1)*100)
		mustApply(t, f, c)
	}
	mustApply(t, f, commitCmd("job-000001", 1, 10))
	return f
}

// TestInMemoryReportRefusesMalformed: a memory report names only what the
// protocol produces (its own range and its left neighbour's, at one or two
// steps of this generation); anything else is refused before it is stored.
func TestInMemoryReportRefusesMalformed(t *testing.T) {
	for _, tc := range []struct {
		name string
		cmd  Command
		want error
	}{
		{"old generation", memoryCmd("job-000001", 0, "b", 4, held(1, 12)), ErrStale},
		{"not a member", memoryCmd("job-000001", 1, "x", 4, held(1, 12)), ErrStale},
		{"wrong world", memoryCmd("job-000001", 1, "b", 3, held(1, 12)), ErrInvalid},
		{"no ranges", memoryCmd("job-000001", 1, "b", 4), ErrInvalid},
		{"three ranges", memoryCmd("job-000001", 1, "b", 4, held(1, 12), held(0, 12), held(2, 12)), ErrInvalid},
		{"a range it cannot hold", memoryCmd("job-000001", 1, "b", 4, held(2, 12)), ErrInvalid},
		{"a range twice", memoryCmd("job-000001", 1, "b", 4, held(1, 12), held(1, 11)), ErrInvalid},
		{"three steps", memoryCmd("job-000001", 1, "b", 4, held(1, 10, 11, 12)), ErrInvalid},
		{"no steps", memoryCmd("job-000001", 1, "b", 4, held(1)), ErrInvalid},
		{"step twice", memoryCmd("job-000001", 1, "b", 4, held(1, 12, 12)), ErrInvalid},
		{"step past the job", memoryCmd("job-000001", 1, "b", 4, held(1, 101)), ErrInvalid},
		{"negative step", memoryCmd("job-000001", 1, "b", 4, held(1, -1)), ErrInvalid},
		{"rank 0 holds the last rank's range", memoryCmd("job-000001", 1, "a", 4, held(0, 12), held(3, 11, 12)), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := memoryJob(t)
			_, err := apply(f, tc.cmd)
			if !errors.Is(err, tc.want) || (tc.want == nil && err != nil) {
				t.Fatalf("error %v, want %v", err, tc.want)
			}
			j, _ := f.Job("job-000001")
			if stored := len(j.Memory) == 1; stored != (tc.want == nil) {
				t.Fatalf("stored %v after error %v", j.Memory, err)
			}
		})
	}
}

// TestInMemoryDecision: with d (rank 3) lost, the newest step at which
// every range is held by a live worker is chosen, d's range coming from
// its replica on a (rank 0); the raft log records it, the generation
// starts there, and a decision naming a holder that did not report the
// step is refused. Without a holder of some range the state is gone and
// nothing is decided (the checkpoint is used).
func TestInMemoryDecision(t *testing.T) {
	f := memoryJob(t)
	// b completed step 13, the others only 12 (the loss cut step 13 short).
	for _, c := range []Command{
		memoryCmd("job-000001", 1, "a", 4, held(0, 11, 12), held(3, 11, 12)),
		memoryCmd("job-000001", 1, "b", 4, held(1, 12, 13), held(0, 12, 13)),
		memoryCmd("job-000001", 1, "c", 4, held(2, 11, 12), held(1, 11, 12)),
	} {
		mustApply(t, f, c)
	}
	j, _ := f.Job("job-000001")
	live := map[string]bool{"a": true, "b": true, "c": true}
	m := decideMemory(j, live)
	if m == nil || m.Step != 12 || m.From != 1 || strings.Join(m.Members, ",") != "a,b,c,d" {
		t.Fatalf("decision %+v, want step 12 of generation 1", m)
	}
	if want := []int{0, 1, 2, 0}; !equalInts(m.Holders, want) {
		t.Fatalf("holders %v, want %v (owners, and a for d's range)", m.Holders, want)
	}
	if gone := decideMemory(j, map[string]bool{"b": true, "c": true}); gone != nil {
		t.Fatalf("with a and d lost, d's range is gone, yet decided %+v", gone)
	}

	bad := m.Clone()
	bad.Holders[3] = 3 // d, which reported nothing
	c := genCmd("job-000001", 2, 3, "a", "b")
	c.StartGeneration.Memory = bad
	if _, err := apply(f, c); !errors.Is(err, ErrInvalid) {
		t.Fatalf("a holder that reported nothing: error %v, want invalid", err)
	}
	tooOld := m.Clone()
	tooOld.Step = 9 // before the committed checkpoint of step 10
	c.StartGeneration.Memory = tooOld
	if _, err := apply(f, c); !errors.Is(err, ErrInvalid) {
		t.Fatalf("a step before the checkpoint: error %v, want invalid", err)
	}

	refusesMisplacedHolders(t, f, c, m)

	c.StartGeneration.Memory = m
	mustApply(t, f, c)
	j, _ = f.Job("job-000001")
	if j.StartStep != 12 || j.Ledger.StepsDone != 12 || j.ResumeMemory == nil || j.ResumeMemory.Step != 12 || len(j.Memory) != 0 {
		t.Fatalf("after the decision: start %d, done %d, resume %+v, reports %v", j.StartStep, j.Ledger.StepsDone, j.ResumeMemory, j.Memory)
	}
	if a := assignmentFor(j); a.Memory == nil || a.Memory.Step != 12 || a.StartStep != 12 {
		t.Fatalf("assignment %+v does not carry the decision", a)
	}
	// The next generation without reports resumes from the checkpoint.
	mustApply(t, f, genCmd("job-000001", 3, 2, "a", "b"))
	j, _ = f.Job("job-000001")
	if j.StartStep != 10 || j.ResumeMemory != nil {
		t.Fatalf("a generation without memory starts at %d with %+v, want the checkpoint's step 10", j.StartStep, j.ResumeMemory)
	}
}

// refusesMisplacedHolders checks that start-generation command c is
// refused when decision m names a holder that is neither a range's owner
// nor its right neighbour, or too few holders.
func refusesMisplacedHolders(t *testing.T, f *FSM, c Command, m *MemoryResume) {
	t.Helper()
	farHolder := m.Clone()
	farHolder.Holders[0] = 2 // neither range 0's owner nor its right neighbour
	fewHolders := m.Clone()
	fewHolders.Holders = fewHolders.Holders[:3]
	for name, d := range map[string]*MemoryResume{"a holder two ranks away": farHolder, "three holders for four ranges": fewHolders} {
		c.StartGeneration.Memory = d
		if _, err := apply(f, c); !errors.Is(err, ErrInvalid) {
			t.Fatalf("%s: error %v, want invalid", name, err)
		}
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestInMemoryResumeMayCheckpointItsStartStep: a generation resumed from
// memory at a checkpoint step may write that step's checkpoint (the
// stopped generation may not have committed it; for the job's last step
// it must be), while one resumed from a checkpoint may not rewrite it.
func TestInMemoryResumeMayCheckpointItsStartStep(t *testing.T) {
	f := memoryJob(t)
	mustApply(t, f, memoryCmd("job-000001", 1, "a", 4, held(0, 19, 20), held(3, 19, 20)))
	mustApply(t, f, memoryCmd("job-000001", 1, "b", 4, held(1, 19, 20), held(0, 19, 20)))
	mustApply(t, f, memoryCmd("job-000001", 1, "c", 4, held(2, 19, 20), held(1, 19, 20)))
	j, _ := f.Job("job-000001")
	m := decideMemory(j, map[string]bool{"a": true, "b": true, "c": true})
	if m == nil || m.Step != 20 {
		t.Fatalf("decision %+v, want step 20", m)
	}
	c := genCmd("job-000001", 2, 3, "a", "b")
	refusesMisplacedHolders(t, f, c, m)

	c.StartGeneration.Memory = m
	mustApply(t, f, c)
	mustApply(t, f, shardCmd("job-000001", 2, 20, 0, 0, 50))
	mustApply(t, f, genCmd("job-000001", 3, 3, "a", "b")) // from the checkpoint of step 10
	if _, err := apply(f, shardCmd("job-000001", 3, 10, 0, 0, 50)); !errors.Is(err, ErrStale) {
		t.Fatalf("rewriting the checkpoint a generation resumed from: %v, want stale", err)
	}
}

// TestInMemorySurvivesWaiting: when a kill leaves fewer live workers than
// min_workers, the job waits with no members; the stopped generation's
// reports (including one that arrives during the wait) carry through it,
// and the generation that ends the wait resumes from their memory. The
// ledger's progress stands through the wait and nothing counts as redone.
func TestInMemorySurvivesWaiting(t *testing.T) {
	const job = "job-000001"
	f := memoryJob(t)
	for s := int64(11); s <= 13; s++ {
		mustApply(t, f, progressCmd(job, 1, s, "a"))
	}
	mustApply(t, f, memoryCmd(job, 1, "a", 4, held(0, 12, 13), held(3, 12, 13)))
	mustApply(t, f, memoryCmd(job, 1, "b", 4, held(1, 12, 13), held(0, 12, 13)))
	mustApply(t, f, genCmd(job, 2, 3)) // d died: the job waits
	j, _ := f.Job(job)
	if j.Status != StatusWaiting || j.MemorySource == nil || j.MemorySource.Generation != 1 || len(j.Memory) != 2 {
		t.Fatalf("waiting: status %s, source %+v, %d reports; want generation 1's two reports kept", j.Status, j.MemorySource, len(j.Memory))
	}
	if j.Ledger.StepsDone != 13 {
		t.Fatalf("steps done %d while waiting, want 13 (the progress stands until the next generation settles it)", j.Ledger.StepsDone)
	}
	// c's report arrives during the wait; reports naming the waiting
	// generation, or another worker's ranges, are still refused.
	mustApply(t, f, memoryCmd(job, 1, "c", 4, held(2, 12, 13), held(1, 12, 13)))
	if _, err := apply(f, memoryCmd(job, 2, "c", 4, held(2, 13))); !errors.Is(err, ErrStale) {
		t.Fatalf("a report for the waiting generation: %v, want stale", err)
	}
	if _, err := apply(f, memoryCmd(job, 1, "c", 4, held(3, 13))); !errors.Is(err, ErrInvalid) {
		t.Fatalf("a report of a range c cannot hold: %v, want invalid", err)
	}
	mustApply(t, f, genCmd(job, 3, 3)) // still waiting: nothing is lost
	j, _ = f.Job(job)
	m := decideMemory(j, map[string]bool{"a": true, "b": true, "c": true})
	if m == nil || m.From != 1 || m.Step != 13 || !equalInts(m.Holders, []int{0, 1, 2, 0}) {
		t.Fatalf("decision while waiting: %+v, want step 13 of generation 1 with a serving d's range", m)
	}
	c := genCmd(job, 4, 3, "a", "b") // c still serves its range: it is live
	c.StartGeneration.Memory = m
	mustApply(t, f, c)
	j, _ = f.Job(job)
	if j.StartStep != 13 || j.ResumeMemory == nil || j.MemorySource != nil || len(j.Memory) != 0 {
		t.Fatalf("after the wait: start %d, resume %+v, source %+v, %d reports", j.StartStep, j.ResumeMemory, j.MemorySource, len(j.Memory))
	}
	if redone := j.Ledger.FLOPsSpent - j.Ledger.FLOPsUsed; redone != 0 {
		t.Fatalf("redone FLOPs %g after a memory resume across a wait, want 0", redone)
	}

	// A wait that ends on the checkpoint instead (the memory is gone)
	// counts the steps since it as redone.
	f = memoryJob(t)
	for s := int64(11); s <= 13; s++ {
		mustApply(t, f, progressCmd(job, 1, s, "a"))
	}
	mustApply(t, f, genCmd(job, 2, 2))
	mustApply(t, f, genCmd(job, 3, 2, "x", "y"))
	j, _ = f.Job(job)
	if j.StartStep != 10 || j.Ledger.StepsDone != 10 || j.MemorySource != nil {
		t.Fatalf("from the checkpoint after a wait: start %d, done %d, source %+v", j.StartStep, j.Ledger.StepsDone, j.MemorySource)
	}
	if redone := j.Ledger.FLOPsSpent - j.Ledger.FLOPsUsed; redone != 3*j.Ledger.FLOPsPerStep {
		t.Fatalf("redone FLOPs %g, want 3 steps' %g", redone, 3*j.Ledger.FLOPsPerStep)
	}
}

// TestInMemoryIgnoresRestartedWorkers: a worker restarted under the same
// id holds nothing. The leader does not wait for its report, and a report
// its earlier process made is not used: the ranges come from replicas.
func TestInMemoryIgnoresRestartedWorkers(t *testing.T) {
	const job = "job-000001"
	f := memoryJob(t)
	j, _ := f.Job(job)
	formed := j.GenerationAt
	before, after := formed.Add(-time.Minute), formed.Add(time.Minute)
	report := func(w string, started time.Time, ranges ...HeldRange) {
		c := memoryCmd(job, 1, w, 4, ranges...)
		c.Memory.WorkerStartedAt = started
		mustApply(t, f, c)
	}
	report("a", before, held(0, 12), held(3, 12))
	report("b", before, held(1, 12), held(0, 12))
	report("c", before, held(2, 12), held(1, 12))
	j, _ = f.Job(job)
	live := map[string]WorkerInfo{
		"a": {ID: "a", StartedAt: before},
		"b": {ID: "b", StartedAt: after}, // restarted after reporting
		"c": {ID: "c", StartedAt: before},
		"d": {ID: "d", StartedAt: after}, // restarted before reporting
	}
	ctl := &controller{memoryWait: time.Hour, memWaits: map[string]memoryWait{}, wake: time.NewTimer(time.Hour), log: testLogger()}
	defer ctl.wake.Stop()
	if ctl.awaitReports(j, live) {
		t.Fatal("the leader waits for d, which restarted since the generation formed and holds nothing")
	}
	m := decideMemory(j, holdersAlive(j, live))
	if m == nil || !equalInts(m.Holders, []int{0, 2, 2, 0}) {
		t.Fatalf("decision %+v, want holders [0 2 2 0]: b's report is from its earlier process", m)
	}
	live["d"] = WorkerInfo{ID: "d", StartedAt: before} // alive all along, not reported yet
	if !ctl.awaitReports(j, live) {
		t.Fatal("the leader does not wait for d, a member that may still report")
	}
}
