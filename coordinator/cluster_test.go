package coordinator

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
)

// TestClusterFailover runs three coordinators, submits through a follower
// (forwarded to the leader), kills the leader in the middle of a running
// job, and checks that the new leader has every acknowledged submission,
// the job's ledger and checkpoint, and goes on accepting its progress.
func TestClusterFailover(t *testing.T) {
	etcd := startEtcd(t)
	const cluster = "failover"
	tc := startCluster(t, 3, etcd, cluster)
	leader := tc.leader()
	via := tc.follower(leader)
	fc := tc.client(tc.urls()[via]) // only the follower: every /v1 call is forwarded
	fw := tc.workerClient(tc.urls()[via])
	ctx := context.Background()
	registerWorker(t, etcd, cluster, "w1")
	registerWorker(t, etcd, cluster, "w2")

	sub, err := fc.Submit(ctx, smallSpec(t, "running", 1, 2, 4, 50))
	if err != nil {
		t.Fatal(err)
	}
	j := waitJob(t, fc, sub.ID, "the job to run on w1 and w2", func(j Job) bool { return j.Status == StatusRunning && len(j.Members) == 2 })
	gen := j.Generation
	for s := int64(1); s <= 12; s++ {
		if _, err := fw.Progress(ctx, sub.ID, ProgressReport{Generation: gen, Step: s, Loss: 4, Worker: j.Members[0]}); err != nil {
			t.Fatal(err)
		}
	}
	for rank := range 2 {
		if _, err := fw.ReportShard(ctx, sub.ID, testShardReport(gen, 10, rank, 2, 5*rank, 5*rank+5)); err != nil {
			t.Fatal(err)
		}
	}
	acked := []string{sub.ID}
	for i := range 4 {
		s, err := fc.Submit(ctx, smallSpec(t, fmt.Sprintf("queued-%d", i), 1, 1, 4, 10))
		if err != nil {
			t.Fatal(err)
		}
		acked = append(acked, s.ID)
	}
	before, err := fc.Job(ctx, sub.ID)
	if err != nil {
		t.Fatal(err)
	}

	tc.kill(leader)
	newLeader := tc.leader()
	c := tc.client() // all three addresses, the dead one included
	w := tc.workerClient()
	jobs, err := c.Jobs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, j := range jobs {
		ids = append(ids, j.ID)
	}
	if fmt.Sprint(ids) != fmt.Sprint(acked) {
		t.Fatalf("after failover jobs %v, acknowledged %v", ids, acked)
	}
	after, err := c.Job(ctx, sub.ID)
	if err != nil {
		t.Fatal(err)
	}
	if after.Ledger != before.Ledger || after.Generation != gen || after.Checkpoint == nil || after.Checkpoint.Step != 10 || after.Status != StatusRunning {
		t.Fatalf("job changed in failover:\nbefore %+v gen %d\nafter  %+v gen %d ckpt %+v", before.Ledger, gen, after.Ledger, after.Generation, after.Checkpoint)
	}
	if got := tc.coords[newLeader].FSM().Jobs(); len(got) != len(acked) {
		t.Errorf("new leader's FSM has %d jobs", len(got))
	}
	// The same generation goes on through the new leader.
	if _, err := w.Progress(ctx, sub.ID, ProgressReport{Generation: gen, Step: 13, Loss: 3.9, Worker: j.Members[0]}); err != nil {
		t.Fatalf("progress after failover: %v", err)
	}
	resp, err := etcd.Get(ctx, AssignmentKey(cluster, sub.ID))
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("assignment: %v", err)
	}
	var a Assignment
	if err := json.Unmarshal(resp.Kvs[0].Value, &a); err != nil || a.Generation != gen || len(a.Members) != 2 {
		t.Errorf("assignment after failover: %+v, %v", a, err)
	}
}
