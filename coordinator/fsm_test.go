package coordinator

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/modcoord/modcoord/jobspec"
)

var t0 = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

// testSpec is a small valid spec with the given workers and checkpointing.
func testSpec(t testing.TB, minW, maxW int) (JobSpec, Plan) {
	t.Helper()
	spec, err := ParseSpec(readValidSpec(t))
	if err != nil {
		t.Fatal(err)
	}
	spec.MinWorkers, spec.MaxWorkers = minW, maxW
	spec.CheckpointEvery, spec.KeepCheckpoints = 10, 2
	plan, err := spec.Plan(jobspec.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	plan.Steps = 100 // keep step arithmetic readable
	return spec, plan
}

// apply runs one command through the FSM as raft would.
func apply(f *FSM, c Command) (any, error) {
	if c.At.IsZero() {
		c.At = t0
	}
	b, err := json.Marshal(c)
	if err != nil {
		panic(err)
	}
	res := f.Apply(&raft.Log{Index: 1, Data: b})
	if err, ok := res.(error); ok {
		return nil, err
	}
	return res, nil
}

func mustApply(t *testing.T, f *FSM, c Command) any {
	t.Helper()
	res, err := apply(f, c)
	if err != nil {
		t.Fatalf("apply %s: %v", c.Type, err)
	}
	return res
}

func submitCmd(spec JobSpec, plan Plan) Command {
	return Command{Type: CmdSubmit, Submit: &SubmitCommand{Spec: spec, Plan: plan}}
}

func genCmd(job string, gen uint64, live int, members ...string) Command {
	return Command{Type: CmdStartGeneration, Job: job, StartGeneration: &StartGenerationCommand{Generation: gen, Members: members, Live: live}}
}

func progressCmd(job string, gen uint64, step int64, worker string) Command {
	return Command{Type: CmdProgress, Job: job, Progress: &ProgressReport{Generation: gen, Step: step, Loss: 5 - float64(step)/100, Tokens: 4096, WallS: 0.5, Worker: worker}}
}

func shardCmd(job string, gen uint64, step int64, rank, lo, hi int) Command {
	r := testShardReport(gen, step, rank, 2, lo, hi)
	return Command{Type: CmdReportShard, Job: job, Shard: &r}
}

func commitCmd(job string, gen uint64, step int64) Command {
	return Command{Type: CmdCommitCheckpoint, Job: job, Commit: &CommitCheckpoint{Generation: gen, Step: step}}
}

// checkpointAt reports both shards of a two-worker generation and commits.
func checkpointAt(t *testing.T, f *FSM, job string, gen uint64, step int64) CommitResult {
	t.Helper()
	if r := mustApply(t, f, shardCmd(job, gen, step, 1, 50, 100)).(ShardResult); r.Complete {
		t.Fatal("one of two shards completed the checkpoint")
	}
	if r := mustApply(t, f, shardCmd(job, gen, step, 0, 0, 50)).(ShardResult); !r.Complete {
		t.Fatal("both shards did not complete the checkpoint")
	}
	return mustApply(t, f, commitCmd(job, gen, step)).(CommitResult)
}

// finalCheckpoint commits the one-rank checkpoint of step 100 (the last
// step of testSpec's plan) in generation gen with the single member "a".
func finalCheckpoint(t *testing.T, f *FSM, job string, gen uint64) {
	t.Helper()
	r := testShardReport(gen, 100, 0, 1, 0, 100)
	mustApply(t, f, Command{Type: CmdReportShard, Job: job, Shard: &r})
	mustApply(t, f, commitCmd(job, gen, 100))
}

// runningJob is a job in generation 1 with workers a and b.
func runningJob(t *testing.T) (*FSM, string) {
	t.Helper()
	f := NewFSM()
	spec, plan := testSpec(t, 1, 2)
	id := mustApply(t, f, submitCmd(spec, plan)).(SubmitResult).ID
	mustApply(t, f, genCmd(id, 1, 2, "a", "b"))
	return f, id
}

func TestFSMLifecycleAndLedger(t *testing.T) {
	f, id := runningJob(t)
	j, _ := f.Job(id)
	if j.Status != StatusRunning || !reflect.DeepEqual(j.Members, []string{"a", "b"}) || j.Generation != 1 {
		t.Fatalf("after start: %+v", j)
	}
	fps := j.Ledger.FLOPsPerStep
	for s := int64(1); s <= 25; s++ {
		mustApply(t, f, progressCmd(id, 1, s, "a"))
	}
	checkpointAt(t, f, id, 1, 10)
	checkpointAt(t, f, id, 1, 20)

	// b dies: generation 2 resumes from step 20, and steps 21..25 are redone.
	mustApply(t, f, genCmd(id, 2, 1, "a"))
	j, _ = f.Job(id)
	if j.StartStep != 20 || j.Ledger.StepsDone != 20 || j.ResumeFrom == nil || j.ResumeFrom.Step != 20 {
		t.Fatalf("after failover: start %d done %d resume %+v", j.StartStep, j.Ledger.StepsDone, j.ResumeFrom)
	}
	for s := int64(21); s <= 100; s++ {
		mustApply(t, f, progressCmd(id, 2, s, "a"))
	}
	finalCheckpoint(t, f, id, 2)
	mustApply(t, f, Command{Type: CmdComplete, Job: id, Complete: &CompleteReport{Generation: 2, Step: 100}})

	j, _ = f.Job(id)
	want := Ledger{BudgetFLOPs: j.Spec.BudgetFLOPs, FLOPsPerStep: fps, TotalSteps: 100, StepsDone: 100,
		FLOPsUsed: 100 * fps, FLOPsSpent: 105 * fps}
	if j.Ledger != want {
		t.Errorf("ledger = %+v\nwant     %+v", j.Ledger, want)
	}
	if j.Status != StatusCompleted || len(j.Recent) != RecentProgress {
		t.Errorf("status %s, %d recent points", j.Status, len(j.Recent))
	}
}

func TestFSMRetention(t *testing.T) {
	f, id := runningJob(t) // keep_checkpoints 2
	mustApply(t, f, progressCmd(id, 1, 30, "a"))
	var dropped [][]int64
	for _, step := range []int64{10, 20, 30} {
		r := checkpointAt(t, f, id, 1, step)
		var steps []int64
		for _, m := range r.Dropped {
			steps = append(steps, m.Step)
		}
		dropped = append(dropped, steps)
	}
	if want := [][]int64{nil, nil, {10}}; !reflect.DeepEqual(dropped, want) {
		t.Errorf("dropped per commit = %v, want %v", dropped, want)
	}
	j, _ := f.Job(id)
	if len(j.Retained) != 2 || j.Retained[0].Step != 20 || j.Checkpoint.Step != 30 || j.Checkpoint.Total != 100 {
		t.Errorf("retained %+v, last %+v", j.Retained, j.Checkpoint)
	}
	// Committing again (a retry) changes nothing and reports the same drop.
	r := mustApply(t, f, commitCmd(id, 1, 30)).(CommitResult)
	if len(r.Dropped) != 1 || r.Dropped[0].Step != 10 {
		t.Errorf("retried commit: %+v", r)
	}
}

func TestFSMRejectsImpossibleTransitions(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T, f *FSM, id string) // from a running job, generation 1, members a b
		cmd   func(id string) Command
		want  error
	}{
		{"progress for old generation", func(t *testing.T, f *FSM, id string) { mustApply(t, f, genCmd(id, 2, 2, "a", "b")) },
			func(id string) Command { return progressCmd(id, 1, 1, "a") }, ErrStale},
		{"step going backwards", func(t *testing.T, f *FSM, id string) { mustApply(t, f, progressCmd(id, 1, 5, "a")) },
			func(id string) Command { return progressCmd(id, 1, 4, "a") }, ErrStale},
		{"step past the budget", nil, func(id string) Command { return progressCmd(id, 1, 101, "a") }, ErrInvalid},
		{"progress from a non-member", nil, func(id string) Command { return progressCmd(id, 1, 1, "z") }, ErrStale},
		{"progress for unknown job", nil, func(string) Command { return progressCmd("job-999999", 1, 1, "a") }, ErrNotFound},
		{"generation skipping ahead", nil, func(id string) Command { return genCmd(id, 5, 2, "a") }, ErrStale},
		{"generation repeating", nil, func(id string) Command { return genCmd(id, 1, 2, "a") }, ErrStale},
		{"more members than max_workers", nil, func(id string) Command { return genCmd(id, 2, 3, "a", "b", "c") }, ErrInvalid},
		{"members not live", nil, func(id string) Command { return genCmd(id, 2, 1, "a", "b") }, ErrInvalid},
		{"repeated member", nil, func(id string) Command { return genCmd(id, 2, 2, "a", "a") }, ErrInvalid},
		{"shard for a non-checkpoint step", nil, func(id string) Command { return shardCmd(id, 1, 15, 0, 0, 50) }, ErrInvalid},
		{"shard for an older step than pending", func(t *testing.T, f *FSM, id string) { mustApply(t, f, shardCmd(id, 1, 20, 0, 0, 50)) },
			func(id string) Command { return shardCmd(id, 1, 10, 1, 50, 100) }, ErrStale},
		{"shard at or before the committed step", func(t *testing.T, f *FSM, id string) { checkpointAt(t, f, id, 1, 10) },
			func(id string) Command { return shardCmd(id, 1, 10, 0, 0, 50) }, ErrStale},
		{"shard for old generation", func(t *testing.T, f *FSM, id string) { mustApply(t, f, genCmd(id, 2, 2, "a", "b")) },
			func(id string) Command { return shardCmd(id, 1, 10, 0, 0, 50) }, ErrStale},
		{"shard rank outside the world", nil, func(id string) Command { return shardCmd(id, 1, 10, 2, 0, 50) }, ErrInvalid},
		{"shard with a bad checksum", nil, func(id string) Command {
			c := shardCmd(id, 1, 10, 0, 0, 50)
			c.Shard.Shard.DataSHA256 = "xyz"
			return c
		}, ErrInvalid},
		{"commit with a shard missing", func(t *testing.T, f *FSM, id string) { mustApply(t, f, shardCmd(id, 1, 10, 0, 0, 50)) },
			func(id string) Command { return commitCmd(id, 1, 10) }, ErrConflict},
		{"commit with a gap between shards", func(t *testing.T, f *FSM, id string) {
			mustApply(t, f, shardCmd(id, 1, 10, 0, 0, 50))
			mustApply(t, f, shardCmd(id, 1, 10, 1, 60, 100))
		}, func(id string) Command { return commitCmd(id, 1, 10) }, ErrInvalid},
		{"commit with nothing pending", nil, func(id string) Command { return commitCmd(id, 1, 10) }, ErrStale},
		{"complete before the last step", nil, func(id string) Command {
			return Command{Type: CmdComplete, Job: id, Complete: &CompleteReport{Generation: 1, Step: 99}}
		}, ErrInvalid},
		{"progress after cancel", func(t *testing.T, f *FSM, id string) {
			mustApply(t, f, Command{Type: CmdCancel, Job: id, Cancel: &CancelRequest{}})
		}, func(id string) Command { return progressCmd(id, 1, 1, "a") }, ErrConflict},
		{"fail after cancel", func(t *testing.T, f *FSM, id string) {
			mustApply(t, f, Command{Type: CmdCancel, Job: id, Cancel: &CancelRequest{}})
		}, func(id string) Command { return Command{Type: CmdFail, Job: id, Fail: &FailReport{Reason: "x"}} }, ErrConflict},
		{"fail from an old generation", nil, func(id string) Command {
			return Command{Type: CmdFail, Job: id, Fail: &FailReport{Generation: 7, Reason: "x"}}
		}, ErrStale},
		{"payload of another type", nil, func(id string) Command {
			return Command{Type: CmdCancel, Job: id, Fail: &FailReport{Reason: "x"}}
		}, ErrInvalid},
		{"unknown type", nil, func(id string) Command { return Command{Type: "explode", Job: id} }, ErrInvalid},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f, id := runningJob(t)
			if tc.setup != nil {
				tc.setup(t, f, id)
			}
			before, _ := f.Snapshot()
			_, err := apply(f, tc.cmd(id))
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			after, _ := f.Snapshot()
			if !bytes.Equal(before.(fsmSnapshot), after.(fsmSnapshot)) {
				t.Error("a rejected command changed the state")
			}
		})
	}
	f := NewFSM()
	if res := f.Apply(&raft.Log{Data: []byte("{not json")}); !errors.Is(res.(error), ErrInvalid) {
		t.Errorf("garbage log entry: %v", res)
	}
}

func TestFSMQueueAndWaiting(t *testing.T) {
	f := NewFSM()
	spec, plan := testSpec(t, 2, 4)
	first := mustApply(t, f, submitCmd(spec, plan)).(SubmitResult).ID
	second := mustApply(t, f, submitCmd(spec, plan)).(SubmitResult).ID

	if _, err := apply(f, genCmd(second, 1, 4, "a", "b")); !errors.Is(err, ErrConflict) {
		t.Errorf("second job started before the first: %v", err)
	}
	if _, err := apply(f, genCmd(first, 1, 1, "a")); !errors.Is(err, ErrInvalid) {
		t.Errorf("generation below min_workers accepted: %v", err)
	}
	mustApply(t, f, genCmd(first, 1, 1)) // one live, two needed: wait
	j, _ := f.Job(first)
	if j.Status != StatusWaiting || j.Reason != "waiting: 1 of 2 required workers alive" {
		t.Errorf("status %s, reason %q", j.Status, j.Reason)
	}
	q, _ := f.Job(second)
	if q.Status != StatusQueued || q.Reason != "queued: 1 job(s) ahead" {
		t.Errorf("second: %s %q", q.Status, q.Reason)
	}
	if next, _ := f.NextJob(1); next.ID != first {
		t.Errorf("next job %s, want %s", next.ID, first)
	}
	mustApply(t, f, Command{Type: CmdCancel, Job: first, Cancel: &CancelRequest{Reason: "test"}})
	mustApply(t, f, Command{Type: CmdCancel, Job: first, Cancel: &CancelRequest{}}) // twice is fine
	if next, _ := f.NextJob(3); next.ID != second {
		t.Errorf("after cancel next job %s, want %s", next.ID, second)
	}
	mustApply(t, f, genCmd(second, 1, 3, "a", "b"))
}

func TestFSMSubmitIdempotent(t *testing.T) {
	f := NewFSM()
	spec, plan := testSpec(t, 1, 1)
	c := submitCmd(spec, plan)
	c.Submit.RequestID = "req-1"
	a := mustApply(t, f, c).(SubmitResult)
	b := mustApply(t, f, c).(SubmitResult)
	if a != b || len(f.Jobs()) != 1 {
		t.Errorf("retried submission made a second job: %+v %+v", a, b)
	}
	plan.Steps = 0
	if _, err := apply(f, submitCmd(spec, plan)); !errors.Is(err, ErrInvalid) {
		t.Errorf("zero-step plan accepted: %v", err)
	}
}

type memSink struct {
	bytes.Buffer
	canceled bool
}

func (s *memSink) ID() string    { return "mem" }
func (s *memSink) Cancel() error { s.canceled = true; return nil }
func (s *memSink) Close() error  { return nil }

func TestFSMSnapshotRestore(t *testing.T) {
	f, id := runningJob(t)
	mustApply(t, f, progressCmd(id, 1, 12, "a"))
	checkpointAt(t, f, id, 1, 10)
	mustApply(t, f, shardCmd(id, 1, 20, 0, 0, 50)) // pending
	spec, plan := testSpec(t, 1, 2)
	c := submitCmd(spec, plan)
	c.Submit.RequestID = "r"
	mustApply(t, f, c)

	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var sink memSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	g := NewFSM()
	if err := g.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(f.Jobs(), g.Jobs()) {
		t.Errorf("restored jobs differ:\n%+v\n%+v", f.Jobs(), g.Jobs())
	}
	// The restored FSM goes on as the original would, idempotency keys included.
	for _, m := range []*FSM{f, g} {
		mustApply(t, m, progressCmd(id, 1, 13, "a"))
		if got := mustApply(t, m, c).(SubmitResult); got.ID != "job-000002" {
			t.Errorf("resubmission got %s", got.ID)
		}
	}
	if !reflect.DeepEqual(f.Jobs(), g.Jobs()) {
		t.Error("original and restored FSM diverged")
	}
	if err := g.Restore(io.NopCloser(strings.NewReader("garbage"))); err == nil {
		t.Error("garbage snapshot restored")
	}
}

// TestFSMLedgerRedoneNeverNegative: a new generation resumes from the last
// committed checkpoint, which may be ahead of rank 0's last applied
// progress report (reports are coalesced, and die with rank 0). The steps
// up to the checkpoint were run, so they count as spent; the redone count
// (flops_spent − flops_used) / flops_per_step is what was run past the
// checkpoint, never negative. It read −6 in the chaos suite once.
func TestFSMLedgerRedoneNeverNegative(t *testing.T) {
	cases := []struct {
		name         string
		lastProgress int64 // rank 0's last applied report in generation 1
		checkpoint   int64 // committed in generation 1
		wantRedone   int64
	}{
		{"progress past the checkpoint", 25, 20, 5},
		{"progress at the checkpoint", 20, 20, 0},
		{"progress behind the checkpoint", 14, 20, 0},
		{"no progress applied at all", 0, 10, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f, id := runningJob(t)
			for s := int64(1); s <= tc.lastProgress; s++ {
				mustApply(t, f, progressCmd(id, 1, s, "a"))
			}
			checkpointAt(t, f, id, 1, tc.checkpoint)
			mustApply(t, f, genCmd(id, 2, 1, "a"))
			for s := tc.checkpoint + 1; s <= 100; s++ {
				mustApply(t, f, progressCmd(id, 2, s, "a"))
			}
			finalCheckpoint(t, f, id, 2)
			mustApply(t, f, Command{Type: CmdComplete, Job: id, Complete: &CompleteReport{Generation: 2, Step: 100}})
			j, _ := f.Job(id)
			l := j.Ledger
			if got := (l.FLOPsSpent - l.FLOPsUsed) / l.FLOPsPerStep; got != float64(tc.wantRedone) {
				t.Errorf("redone steps %v, want %d (ledger %+v)", got, tc.wantRedone, l)
			}
		})
	}
}
