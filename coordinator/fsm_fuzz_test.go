package coordinator

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/raft"

	"github.com/modcoord/modcoord/checkpoint"
)

// Fuzz targets for what enters the state machine: raft log entries
// (FuzzFSMApply) and snapshots (FuzzFSMRestore). Run one with
//
//	go test ./coordinator -run '^$' -fuzz '^FuzzFSMApply$' -fuzztime 1000000x -parallel 2
//
// The raft log and snapshots come only from coordinators, so this is
// defense in depth: whatever bytes arrive, Apply and Restore must answer
// with an error or a state that keeps the FSM's invariants, never a panic
// (a panic in Apply stops the replica, and every replica applies the same
// entry).

// maxFSMAlloc bounds what one fuzz iteration may allocate beyond a fixed
// multiple of its input: the states are small, so anything near this is
// an amplification.
const maxFSMAlloc = 16 << 20

// fuzzStates are FSMs with a job in each interesting state, as snapshots
// (restoring one is a deep copy). Built once: the fuzz function runs
// millions of times.
var fuzzStates [][]byte

func buildFuzzStates(t testing.TB) [][]byte {
	if fuzzStates != nil {
		return fuzzStates
	}
	spec, plan := testSpec(t, 1, 2)
	must := func(f *FSM, cs ...Command) *FSM {
		for _, c := range cs {
			if _, err := apply(f, c); err != nil {
				t.Fatalf("build fuzz state: %s: %v", c.Type, err)
			}
		}
		return f
	}
	const id = "job-000001"
	submit := submitCmd(spec, plan)
	submit.Submit.RequestID = "req-1"
	running := func() *FSM { return must(NewFSM(), submit, genCmd(id, 1, 2, "a", "b")) }
	committed := func() *FSM {
		return must(running(), progressCmd(id, 1, 10, "a"),
			shardCmd(id, 1, 10, 0, 0, 50), shardCmd(id, 1, 10, 1, 50, 100), commitCmd(id, 1, 10),
			progressCmd(id, 1, 20, "a"),
			shardCmd(id, 1, 20, 0, 0, 50), shardCmd(id, 1, 20, 1, 50, 100), commitCmd(id, 1, 20),
			progressCmd(id, 1, 30, "a"),
			shardCmd(id, 1, 30, 0, 0, 50), shardCmd(id, 1, 30, 1, 50, 100), commitCmd(id, 1, 30),
			progressCmd(id, 1, 35, "a"))
	}
	states := []*FSM{
		NewFSM(),
		must(NewFSM(), submit),                   // queued
		must(NewFSM(), submit, genCmd(id, 1, 0)), // waiting
		running(),                                // running, generation 1 of a and b
		must(running(), shardCmd(id, 1, 10, 1, 50, 100)), // a checkpoint pending
		committed(),                              // three commits, one dropped
		must(committed(), genCmd(id, 2, 1, "b")), // resumed from step 30 by b alone
		must(running(), // completed: the final checkpoint committed, then complete
			shardCmd(id, 1, plan.Steps, 0, 0, 50), shardCmd(id, 1, plan.Steps, 1, 50, 100), commitCmd(id, 1, plan.Steps),
			Command{Type: CmdComplete, Job: id, Complete: &CompleteReport{Generation: 1, Step: plan.Steps}}),
		must(running(), Command{Type: CmdCancel, Job: id, Cancel: &CancelRequest{Reason: "enough"}}),
		must(running(), Command{Type: CmdFail, Job: id, Fail: &FailReport{Reason: "diverged"}}),
		must(running(), submitCmd(spec, plan)),                               // a second job queued behind
		must(running(), memoryCmd(id, 1, "a", 2, held(0, 4, 5), held(1, 5))), // a stopped, holding its state
	}
	for _, f := range states {
		checkFSMInvariants(t, f)
		fuzzStates = append(fuzzStates, snapshotBytes(t, f))
	}
	return fuzzStates
}

func snapshotBytes(t testing.TB, f *FSM) []byte {
	s, err := f.Snapshot()
	if err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	return bytes.Clone(s.(fsmSnapshot))
}

func restoredFSM(t testing.TB, snap []byte) *FSM {
	f := NewFSM()
	if err := f.Restore(io.NopCloser(bytes.NewReader(snap))); err != nil {
		t.Fatalf("restore: %v", err)
	}
	return f
}

// fuzzCommandSeeds are valid commands for the fuzz states' job, one JSON
// object per line, as raft log entries carry them.
func fuzzCommandSeeds(t testing.TB) []string {
	spec, plan := testSpec(t, 1, 2)
	const id = "job-000001"
	cs := []Command{
		submitCmd(spec, plan),
		genCmd(id, 1, 2, "a", "b"),
		genCmd(id, 2, 1, "a"),
		genCmd(id, 2, 0),
		progressCmd(id, 1, 5, "a"),
		progressCmd(id, 1, 40, "b"),
		shardCmd(id, 1, 10, 0, 0, 50),
		shardCmd(id, 1, 10, 1, 50, 100),
		shardCmd(id, 1, 40, 0, 0, 0),
		commitCmd(id, 1, 10),
		commitCmd(id, 1, 30),
		{Type: CmdComplete, Job: id, Complete: &CompleteReport{Generation: 1, Step: plan.Steps}},
		{Type: CmdCancel, Job: id, Cancel: &CancelRequest{Reason: strings.Repeat("é", 300)}},
		{Type: CmdFail, Job: id, Fail: &FailReport{Generation: 1, Reason: "x"}},
		memoryCmd(id, 1, "b", 2, held(1, 4, 5), held(0, 5)),
		func() Command {
			c := genCmd(id, 2, 1, "a")
			c.StartGeneration.Memory = &MemoryResume{From: 1, Step: 5, Members: []string{"a", "b"}, Holders: []int{0, 0}}
			return c
		}(),
	}
	var out []string
	for _, c := range cs {
		c.At = t0
		b, err := json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, string(b))
	}
	return out
}

// FuzzFSMApply applies up to 8 raft log entries (the input's lines) to a
// state machine in one of the fuzz states. Whatever they hold:
//   - Apply returns an error wrapping one of the FSM's errors, or the
//     result type of the command;
//   - a command answered with an error leaves the state as it was;
//   - the state keeps its invariants (checkFSMInvariants);
//   - another replica applying the same entries reaches the same state,
//     and a snapshot of it restores to the same state.
func FuzzFSMApply(f *testing.F) {
	states := buildFuzzStates(f)
	seeds := fuzzCommandSeeds(f)
	for i := range states {
		for _, s := range seeds {
			f.Add(uint8(i), []byte(s))
		}
	}
	f.Add(uint8(5), []byte(seeds[6]+"\n"+seeds[7]+"\n"+seeds[9]))
	f.Add(uint8(3), []byte(`{"type":"progress","job":"job-000001","progress":{}}`))
	f.Add(uint8(3), []byte(`{"type":"cancel","job":"job-000001","cancel":{},"fail":{"reason":"x"}}`))
	f.Add(uint8(0), []byte(`{"type":"submit","submit":{"spec":{"min_workers":0},"plan":{"steps":1,"flops_per_step":1}}}`))
	f.Add(uint8(0), []byte(``))
	f.Add(uint8(0), []byte(`null`))
	f.Add(uint8(0), []byte(`[`))

	f.Fuzz(func(t *testing.T, which uint8, data []byte) {
		snap := states[int(which)%len(states)]
		fsm, twin := restoredFSM(t, snap), restoredFSM(t, snap)
		entries := bytes.SplitN(data, []byte("\n"), 8)

		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		for i, e := range entries {
			prev := snapshotBytes(t, fsm)
			res := fsm.Apply(&raft.Log{Index: uint64(i + 1), Data: e})
			if err, ok := res.(error); ok {
				if !errors.Is(err, ErrInvalid) && !errors.Is(err, ErrNotFound) && !errors.Is(err, ErrConflict) && !errors.Is(err, ErrStale) {
					t.Fatalf("entry %d: error wraps none of the FSM's errors: %v", i, err)
				}
				if now := snapshotBytes(t, fsm); !bytes.Equal(prev, now) {
					t.Fatalf("entry %d failed (%v) but changed the state:\nbefore %s\nafter  %s", i, err, prev, now)
				}
			} else {
				checkApplyResult(t, e, res)
			}
			checkFSMInvariants(t, fsm)
			twin.Apply(&raft.Log{Index: uint64(i + 1), Data: e})
		}
		runtime.ReadMemStats(&after)
		if got := after.TotalAlloc - before.TotalAlloc; got > maxFSMAlloc+64*uint64(len(data)) {
			t.Fatalf("applying %d bytes allocated %d bytes", len(data), got)
		}

		fsm.mu.RLock()
		defer fsm.mu.RUnlock()
		if !reflect.DeepEqual(fsm.state, twin.state) {
			t.Fatalf("two replicas applying the same entries diverged")
		}
		again := restoredFSM(t, snapshotBytes(t, fsm))
		if !reflect.DeepEqual(fsm.state, again.state) {
			t.Fatalf("a snapshot does not restore the state it was taken of:\n%#v\n%#v", fsm.state, again.state)
		}
	})
}

// checkApplyResult checks a successful Apply's result type against the
// command it applied.
func checkApplyResult(t *testing.T, entry []byte, res any) {
	t.Helper()
	var c Command
	if err := json.Unmarshal(entry, &c); err != nil {
		t.Fatalf("Apply accepted an entry that does not decode: %v", err)
	}
	var ok bool
	switch c.Type {
	case CmdSubmit:
		_, ok = res.(SubmitResult)
	case CmdReportShard:
		_, ok = res.(ShardResult)
	case CmdCommitCheckpoint:
		_, ok = res.(CommitResult)
	default:
		ok = res == nil
	}
	if !ok {
		t.Fatalf("%s answered %T", c.Type, res)
	}
}

// checkFSMInvariants checks what the FSM's commands, the controller and
// the API rely on.
func checkFSMInvariants(t testing.TB, f *FSM) {
	t.Helper()
	f.mu.RLock()
	defer f.mu.RUnlock()
	if err := fsmInvariants(&f.state); err != nil {
		t.Fatalf("invariant broken: %v", err)
	}
}

func fsmInvariants(s *fsmState) error {
	if len(s.Order) != len(s.Jobs) {
		return fmt.Errorf("%d jobs in the queue, %d in the state", len(s.Order), len(s.Jobs))
	}
	if uint64(len(s.Jobs)) > s.Seq {
		return fmt.Errorf("%d jobs but sequence %d", len(s.Jobs), s.Seq)
	}
	seen := map[string]bool{}
	active := 0
	for _, id := range s.Order {
		j := s.Jobs[id]
		switch {
		case j == nil:
			return fmt.Errorf("job %s queued but missing", id)
		case seen[id]:
			return fmt.Errorf("job %s queued twice", id)
		case j.ID != id:
			return fmt.Errorf("job %s recorded as %s", id, j.ID)
		}
		seen[id] = true
		if j.Status.Active() {
			active++
		}
		if !j.Status.Terminal() && !j.Status.Active() && j.Status != StatusQueued {
			return fmt.Errorf("job %s has status %q", id, j.Status)
		}
		if err := jobInvariants(j); err != nil {
			return fmt.Errorf("job %s (%s): %w", id, j.Status, err)
		}
	}
	if active > 1 {
		return fmt.Errorf("%d active jobs", active)
	}
	for key, id := range s.Requests {
		if j := s.Jobs[id]; j == nil || j.RequestID != key {
			return fmt.Errorf("request %q names job %s, which does not have it", key, id)
		}
	}
	return nil
}

func jobInvariants(j *Job) error {
	l, sp := j.Ledger, j.Spec
	switch {
	case sp.MinWorkers < 1 || sp.MaxWorkers < sp.MinWorkers || sp.Batch < 1 || sp.CheckpointEvery < 1 || sp.KeepCheckpoints < 1:
		return fmt.Errorf("spec workers %d..%d batch %d checkpoint every %d keep %d", sp.MinWorkers, sp.MaxWorkers, sp.Batch, sp.CheckpointEvery, sp.KeepCheckpoints)
	case l.TotalSteps < 1 || !(l.FLOPsPerStep > 0):
		return fmt.Errorf("ledger of %d steps at %g FLOPs", l.TotalSteps, l.FLOPsPerStep)
	case j.StartStep < 0 || j.StartStep > l.StepsDone || l.StepsDone > l.TotalSteps:
		return fmt.Errorf("started at %d, %d of %d steps done", j.StartStep, l.StepsDone, l.TotalSteps)
	case len(j.Recent) > RecentProgress:
		return fmt.Errorf("%d progress points", len(j.Recent))
	case j.Status.Terminal() && j.Pending != nil:
		return errors.New("a pending checkpoint after the end")
	case j.Status == StatusWaiting && len(j.Members) != 0:
		return fmt.Errorf("waiting with %d members", len(j.Members))
	}
	if j.Status == StatusRunning {
		n := len(j.Members)
		if n < sp.MinWorkers || n > sp.MaxWorkers || sp.Batch%n != 0 {
			return fmt.Errorf("%d members for workers %d..%d batch %d", n, sp.MinWorkers, sp.MaxWorkers, sp.Batch)
		}
		seen := map[string]bool{}
		for _, m := range j.Members {
			if m == "" || seen[m] {
				return fmt.Errorf("member %q empty or repeated", m)
			}
			seen[m] = true
		}
	}
	if p := j.Pending; p != nil {
		if j.Status != StatusRunning || p.World != len(j.Members) || p.Job != j.ID || p.Generation != j.Generation {
			return fmt.Errorf("pending checkpoint of world %d generation %d for %d members of generation %d", p.World, p.Generation, len(j.Members), j.Generation)
		}
		if p.Step <= j.StartStep || p.Step > l.TotalSteps {
			return fmt.Errorf("pending checkpoint at step %d, started at %d", p.Step, j.StartStep)
		}
		if len(p.Shards) > p.World || !slices.IsSortedFunc(p.Shards, func(a, b checkpoint.ShardInfo) int { return a.Rank - b.Rank }) {
			return fmt.Errorf("pending shards %v for world %d", p.Shards, p.World)
		}
		for i, sh := range p.Shards {
			if sh.Rank < 0 || sh.Rank >= p.World || (i > 0 && p.Shards[i-1].Rank == sh.Rank) {
				return fmt.Errorf("pending shard of rank %d for world %d", sh.Rank, p.World)
			}
			if err := sh.Validate(); err != nil {
				return fmt.Errorf("pending shard: %w", err)
			}
		}
	}
	if c := j.Checkpoint; c != nil {
		if err := c.Validate(); err != nil {
			return fmt.Errorf("committed checkpoint: %w", err)
		}
		if c.Step > l.TotalSteps || c.Job != j.ID {
			return fmt.Errorf("checkpoint of job %s at step %d of %d", c.Job, c.Step, l.TotalSteps)
		}
		if n := len(j.Retained); n == 0 || n > sp.KeepCheckpoints || !reflect.DeepEqual(j.Retained[n-1], *c) {
			return fmt.Errorf("%d retained checkpoints (keep %d), the last not the committed one", n, sp.KeepCheckpoints)
		}
	} else if len(j.Retained) != 0 || len(j.Dropped) != 0 {
		return fmt.Errorf("no checkpoint but %d retained, %d dropped", len(j.Retained), len(j.Dropped))
	}
	if r := j.ResumeFrom; r != nil && (r.Step != j.StartStep || r.Validate() != nil) {
		return fmt.Errorf("resumes from a checkpoint at step %d, started at %d", r.Step, j.StartStep)
	}
	return nil
}

// FuzzFSMRestore restores arbitrary bytes as a snapshot. Restore must
// refuse them or leave a state that passes fsmState.check, on which every
// kind of command for every job applies without a panic and keeps it
// passing.
func FuzzFSMRestore(f *testing.F) {
	states := buildFuzzStates(f)
	for _, s := range states {
		f.Add(s)
	}
	f.Add([]byte(`{}`))
	f.Add([]byte(`null`))
	f.Add([]byte(`{"jobs":{"job-000001":null},"order":[]}`))
	f.Add([]byte(`{"jobs":{"x":{"id":"x","status":"running","members":["a"],"spec":{"min_workers":1,"max_workers":1,"batch":1}, "ledger":{"total_steps":10,"flops_per_step":1}}},"order":["x"]}`))
	f.Add([]byte(`{"jobs":{},"order":[],"requests":{"k":"job-000009"}}`))
	f.Add([]byte(`{"jobs":{},"order":["a","a"]}`))
	cmds := fuzzCommandSeeds(f)

	f.Fuzz(func(t *testing.T, data []byte) {
		fsm := NewFSM()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		err := fsm.Restore(io.NopCloser(bytes.NewReader(data)))
		runtime.ReadMemStats(&after)
		if got := after.TotalAlloc - before.TotalAlloc; got > maxFSMAlloc+64*uint64(len(data)) {
			t.Fatalf("restoring %d bytes allocated %d bytes", len(data), got)
		}
		if err != nil {
			if len(fsm.Jobs()) != 0 {
				t.Fatal("a refused snapshot changed the state")
			}
			return
		}
		// A restored state need not keep every invariant Apply keeps (an
		// older version may have written it), only what Apply relies on.
		checkRestored := func() {
			fsm.mu.RLock()
			defer fsm.mu.RUnlock()
			if err := fsm.state.check(); err != nil {
				t.Fatalf("restored state: %v", err)
			}
		}
		checkRestored()
		fsm.NextJob(0)
		fsm.NextJob(1 << 20)
		jobs := fsm.Jobs()
		if len(jobs) > 4 {
			jobs = jobs[:4]
		}
		for _, j := range jobs {
			for _, s := range cmds {
				var c Command
				if err := json.Unmarshal([]byte(s), &c); err != nil {
					t.Fatal(err)
				}
				if c.Type == CmdSubmit {
					c.Submit.RequestID = j.RequestID
				} else {
					c.Job = j.ID
				}
				if c.Progress != nil && len(j.Members) > 0 {
					c.Progress.Worker = j.Members[0]
				}
				for _, g := range []*uint64{genOf(&c)} {
					if g != nil && *g != 0 {
						*g = j.Generation + *g - 1
					}
				}
				_, _ = apply(fsm, c)
				checkRestored()
			}
		}
		snapshotBytes(t, fsm)
	})
}

// genOf points at a command's generation field, if it has one.
func genOf(c *Command) *uint64 {
	switch {
	case c.StartGeneration != nil:
		return &c.StartGeneration.Generation
	case c.Progress != nil:
		return &c.Progress.Generation
	case c.Shard != nil:
		return &c.Shard.Generation
	case c.Commit != nil:
		return &c.Commit.Generation
	case c.Complete != nil:
		return &c.Complete.Generation
	case c.Fail != nil:
		return &c.Fail.Generation
	}
	return nil
}
