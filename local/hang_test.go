package local

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modcoord/modcoord/coordinator"
	"github.com/modcoord/modcoord/train"
)

// msgLog is a slog handler that keeps the messages it sees, by worker.
type msgLog struct {
	mu   sync.Mutex
	msgs []string // "worker: message"
	attr []slog.Attr
}

func (h *msgLog) Enabled(context.Context, slog.Level) bool { return true }
func (h *msgLog) WithGroup(string) slog.Handler            { return h }
func (h *msgLog) WithAttrs(as []slog.Attr) slog.Handler {
	return &msgLogView{h: h, attr: as}
}
func (h *msgLog) Handle(_ context.Context, r slog.Record) error { return h.add(nil, r) }

func (h *msgLog) add(attrs []slog.Attr, r slog.Record) error {
	w := ""
	for _, a := range attrs {
		if a.Key == "worker" {
			w = a.Value.String()
		}
	}
	h.mu.Lock()
	h.msgs = append(h.msgs, w+": "+r.Message)
	h.mu.Unlock()
	return nil
}

func (h *msgLog) has(msg string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Contains(h.msgs, msg)
}

type msgLogView struct {
	h    *msgLog
	attr []slog.Attr
}

func (v *msgLogView) Enabled(context.Context, slog.Level) bool { return true }
func (v *msgLogView) WithGroup(string) slog.Handler            { return v }
func (v *msgLogView) WithAttrs(as []slog.Attr) slog.Handler {
	return &msgLogView{h: v.h, attr: append(slices.Clone(v.attr), as...)}
}
func (v *msgLogView) Handle(_ context.Context, r slog.Record) error { return v.h.add(v.attr, r) }

// TestHangWorkerIsEvicted: a worker whose training goroutine stops (it
// blocks inside a step, as on a wedged disk) while its process, and so its
// etcd lease keep-alive, runs on, is taken out of the cluster within the
// stated bound (hang timeout + a check period, then the coordinator's
// debounce), and the job completes without it.
func TestHangWorkerIsEvicted(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const (
		steps, every = 60, 10
		victim       = "worker-1" // batch 8: of three workers, worker-0 and worker-1 train
		hangStep     = 25
		ring         = 2 * time.Second
		hang         = 4 * time.Second // > ring deadline + a step
		debounce     = 500 * time.Millisecond
	)
	// The bound: the watchdog notices within hang + hang/8, the lease is
	// revoked at once, a generation forms one debounce later; 3 s of
	// slack for the raft apply and the test's 100 ms polling on a loaded
	// machine (-race on shared cores).
	bound := hang + hang/8 + debounce + 3*time.Second
	var hangAt atomic.Int64
	release := make(chan struct{})
	onStep := func(w, _ string, _ uint64, _ int, res train.StepResult) {
		if w == victim && res.Step == hangStep && hangAt.CompareAndSwap(0, time.Now().UnixNano()) {
			<-release // stuck; the process (and its lease keep-alive) lives on
		}
	}
	logs := &msgLog{}
	_, raw := testSpec(t, steps, 3, every)
	c, err := Start(ctx, Options{Dir: t.TempDir(), DataRoot: dataRoot(t), Workers: 3, LeaseTTL: time.Second,
		RingDeadline: ring, HangTimeout: hang, OnStep: onStep, Log: slog.New(logs)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	defer close(release) // before Close: the stuck run must end for the worker to stop
	// Under load (-race on shared cores) the first election may flap:
	// retry the submission (it is idempotent) until the test's deadline.
	var sub coordinator.SubmitResult
	for {
		if sub, err = c.Client.Submit(ctx, raw); err == nil || ctx.Err() != nil {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	waitJob(t, ctx, c, sub.ID, func(j coordinator.Job) bool { return hangAt.Load() != 0 || ended(j) })
	if hangAt.Load() == 0 {
		t.Fatal("the job ended before the hang")
	}
	at := time.Unix(0, hangAt.Load())
	j := waitJob(t, ctx, c, sub.ID, func(j coordinator.Job) bool {
		return ended(j) || (j.Status == coordinator.StatusRunning && len(j.Members) > 0 && !slices.Contains(j.Members, victim))
	})
	evicted := time.Since(at)
	if ended(j) {
		t.Fatalf("the job ended (%s: %s) without a generation that leaves out the hung %s", j.Status, j.Reason, victim)
	}
	if evicted > bound {
		t.Errorf("the hung worker was evicted %s after it stopped, want at most %s", evicted.Round(time.Millisecond), bound)
	}
	if !logs.has(victim + ": no progress; leaving the cluster until this generation's run ends") {
		t.Errorf("no watchdog eviction logged by %s; what evicted it? (a hang must keep the lease alive)", victim)
	}
	t.Logf("%s stuck at step %d; generation %d of %v formed %s later (bound %s)", victim, hangStep, j.Generation, j.Members,
		evicted.Round(time.Millisecond), bound)
	j = waitJob(t, ctx, c, sub.ID, ended)
	if j.Status != coordinator.StatusCompleted || j.Ledger.StepsDone != steps {
		t.Fatalf("job %s at %d/%d steps: %s", j.Status, j.Ledger.StepsDone, steps, j.Reason)
	}
	if slices.Contains(j.Members, victim) {
		t.Errorf("the hung %s is a member of the final generation %v", victim, j.Members)
	}
}

// TestHangSlowWorkerIsReportedNotEvicted: a worker that is merely slow
// (every step it takes 150 ms more than its peers) keeps making progress,
// so the watchdog leaves it alone; the leader names it a straggler in the
// job's status, and the job completes in one generation.
func TestHangSlowWorkerIsReportedNotEvicted(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const (
		steps = 80
		slow  = "worker-1"
		extra = 150 * time.Millisecond
	)
	onStep := func(w, _ string, _ uint64, _ int, _ train.StepResult) {
		if w == slow {
			time.Sleep(extra)
		}
	}
	logs := &msgLog{}
	_, raw := testSpec(t, steps, 2, 1000)
	c, err := Start(ctx, Options{Dir: t.TempDir(), DataRoot: dataRoot(t), Workers: 2, LeaseTTL: time.Second,
		RingDeadline: 2 * time.Second, HangTimeout: 6 * time.Second, OnStep: onStep, Log: slog.New(logs)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var sub coordinator.SubmitResult
	for {
		if sub, err = c.Client.Submit(ctx, raw); err == nil || ctx.Err() != nil {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	var named []coordinator.Straggler
	j := waitJob(t, ctx, c, sub.ID, func(j coordinator.Job) bool {
		if len(j.Stragglers) > 0 && named == nil {
			named = j.Stragglers
		}
		return ended(j)
	})
	if j.Status != coordinator.StatusCompleted || j.Ledger.StepsDone != steps {
		t.Fatalf("job %s at %d/%d steps: %s", j.Status, j.Ledger.StepsDone, steps, j.Reason)
	}
	if len(named) != 1 || named[0].Worker != slow {
		t.Errorf("stragglers named while it ran: %+v, want %s", named, slow)
	} else {
		t.Logf("straggler %s: %.3f s/step, %.1f× its peer's %.3f s", slow, named[0].ComputeS, named[0].Ratio, named[0].PeersS)
	}
	if logs.has(slow + ": no progress; leaving the cluster until this generation's run ends") {
		t.Errorf("the slow %s was evicted as hung", slow)
	}
	if j.Ledger.FLOPsSpent != j.Ledger.FLOPsUsed {
		t.Errorf("steps were redone (ledger %+v): a generation broke", j.Ledger)
	}
}
