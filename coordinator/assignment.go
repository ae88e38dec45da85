package coordinator

import (
	"context"
	"crypto/x509"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/modcoord/modcoord/checkpoint"
	"github.com/modcoord/modcoord/pki"
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
	// Memory, when set, says to resume StartStep from the previous
	// generation's workers' memory instead of from Checkpoint.
	Memory *MemoryResume `json:"memory,omitempty"`
	Spec   JobSpec       `json:"spec"`
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
		Memory:     j.ResumeMemory.Clone(),
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
// With signer the value is signed (EncodeAssignment), and a value already
// there that does not verify under signer's CA counts as absent: a forged
// assignment with a huge generation must not lock the job's key.
func publishAssignment(ctx context.Context, cli *clientv3.Client, cluster string, a Assignment, signer *pki.Credentials) (bool, error) {
	key := AssignmentKey(cluster, a.Job)
	val, err := EncodeAssignment(key, a, signer)
	if err != nil {
		return false, err
	}
	var trust *x509.CertPool
	if signer != nil {
		trust = signer.CAs
	}
	for range 5 {
		resp, err := cli.Get(ctx, key)
		if err != nil {
			return false, fmt.Errorf("read assignment of job %s: %w", a.Job, err)
		}
		cmp := clientv3.Compare(clientv3.CreateRevision(key), "=", 0)
		if len(resp.Kvs) > 0 {
			kv := resp.Kvs[0]
			if old, err := DecodeAssignment(key, kv.Value, trust, time.Time{}); err == nil && !supersedes(a, old) {
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
//
// It checks no signature: a worker of a cluster with certificates uses
// WatchAssignmentsWith and the cluster CA.
func WatchAssignments(ctx context.Context, cli *clientv3.Client, cluster string) <-chan Assignment {
	return WatchAssignmentsWith(ctx, cli, cluster, WatchOptions{})
}

// WatchOptions tune WatchAssignmentsWith.
type WatchOptions struct {
	// Trust is the cluster CA. When set, only assignments signed by a
	// coordinator certificate of this CA are passed on (DecodeAssignment);
	// anything else in etcd (forged, unsigned, signed by a worker) is
	// logged and dropped.
	Trust *x509.CertPool
	// Log hears dropped assignments (default slog.Default()).
	Log *slog.Logger
}

// WatchAssignmentsWith is WatchAssignments, verifying signatures when
// o.Trust is set.
func WatchAssignmentsWith(ctx context.Context, cli *clientv3.Client, cluster string, o WatchOptions) <-chan Assignment {
	out := make(chan Assignment, 16)
	log := o.Log
	if log == nil {
		log = slog.Default()
	}
	log = log.With("cluster", cluster)
	emit := func(kv *mvccpb.KeyValue) {
		a, err := DecodeAssignment(string(kv.Key), kv.Value, o.Trust, time.Time{})
		if err != nil {
			log.Warn("ignoring an assignment that does not verify", "key", truncate(string(kv.Key), 200), "err", err)
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
