package coordinator

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"

	"github.com/modcoord/modcoord/checkpoint"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Assignment tells workers what to do for one job, at
// /modcoord/<cluster>/assignments/<job>. The raft leader writes it after
// every generation change and when the job ends; a new leader rewrites it
// from raft state. Generations only grow: a stale leader cannot overwrite a
// newer assignment.
type Assignment struct {
	Job        string    `json:"job"`
	Generation uint64    `json:"generation"`
	Status     JobStatus `json:"status"`
	// Members are worker ids in rank order. Empty while the job waits for
	// workers or after it ended.
	Members    []string `json:"members"`
	StartStep  int64    `json:"start_step"`
	TotalSteps int64    `json:"total_steps"`
	// Checkpoint is the committed checkpoint to resume from (StartStep);
	// nil means start from fresh weights.
	Checkpoint *checkpoint.Manifest `json:"checkpoint"`
	Spec       JobSpec              `json:"spec"`
	// Canceled is true when the job was canceled or failed: stop and
	// never resume it.
	Canceled bool `json:"canceled"`
}

// Rank is worker's rank in the generation, or -1 if it is not a member.
func (a Assignment) Rank(worker string) int { return slices.Index(a.Members, worker) }

// assignmentFor is the assignment the job's raft state implies.
func assignmentFor(j Job) Assignment {
	a := Assignment{
		Job:        j.ID,
		Generation: j.Generation,
		Status:     j.Status,
		StartStep:  j.StartStep,
		TotalSteps: j.Ledger.TotalSteps,
		Checkpoint: j.ResumeFrom.Clone(),
		Spec:       j.Spec,
		Canceled:   j.Status == StatusCanceled || j.Status == StatusFailed,
	}
	if j.Status == StatusRunning {
		a.Members = slices.Clone(j.Members)
	}
	return a
}

// publishAssignment writes a to etcd unless what is there is as new or
// newer: a higher generation, or the same generation with the same status
// or an ended one. It reports whether it wrote.
func publishAssignment(ctx context.Context, cli *clientv3.Client, cluster string, a Assignment) (bool, error) {
	key := AssignmentKey(cluster, a.Job)
	val, err := json.Marshal(a)
	if err != nil {
		return false, fmt.Errorf("encode assignment for job %s: %w", a.Job, err)
	}
	for range 5 {
		resp, err := cli.Get(ctx, key)
		if err != nil {
			return false, fmt.Errorf("read assignment of job %s: %w", a.Job, err)
		}
		cmp := clientv3.Compare(clientv3.CreateRevision(key), "=", 0)
		if len(resp.Kvs) > 0 {
			kv := resp.Kvs[0]
			var old Assignment
			if json.Unmarshal(kv.Value, &old) == nil && !supersedes(a, old) {
				return false, nil
			}
			cmp = clientv3.Compare(clientv3.ModRevision(key), "=", kv.ModRevision)
		}
		tx, err := cli.Txn(ctx).If(cmp).Then(clientv3.OpPut(key, string(val))).Commit()
		if err != nil {
			return false, fmt.Errorf("write assignment of job %s: %w", a.Job, err)
		}
		if tx.Succeeded {
			return true, nil
		}
	}
	return false, fmt.Errorf("write assignment of job %s: the key kept changing under us", a.Job)
}

// supersedes reports whether assignment a should replace old.
func supersedes(a, old Assignment) bool {
	switch {
	case a.Generation != old.Generation:
		return a.Generation > old.Generation
	case old.Status.Terminal():
		return false
	default:
		return a.Status != old.Status
	}
}

// WatchAssignments streams every job's assignment in the cluster: first
// the current ones, then each new one as the leader writes it (and all of
// them again if the watch had to be restarted). A worker acts on those it
// is a member of (Assignment.Rank). The channel closes when ctx is done.
func WatchAssignments(ctx context.Context, cli *clientv3.Client, cluster string) <-chan Assignment {
	out := make(chan Assignment, 16)
	log := slog.Default().With("cluster", cluster)
	emit := func(kv *mvccpb.KeyValue) {
		var a Assignment
		if err := json.Unmarshal(kv.Value, &a); err != nil {
			log.Warn("ignoring malformed assignment", "key", string(kv.Key), "err", err)
			return
		}
		select {
		case out <- a:
		case <-ctx.Done():
		}
	}
	go func() {
		defer close(out)
		mirrorPrefix(ctx, cli, AssignmentsPrefix(cluster), log,
			func(kvs []*mvccpb.KeyValue) {
				for _, kv := range kvs {
					emit(kv)
				}
			},
			func(ev *clientv3.Event) {
				if ev.Type == clientv3.EventTypePut {
					emit(ev.Kv)
				}
			})
	}()
	return out
}
