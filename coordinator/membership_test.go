package coordinator

import (
	"context"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

func TestPickMembers(t *testing.T) {
	spec := func(minW, maxW, batch int) JobSpec { return JobSpec{MinWorkers: minW, MaxWorkers: maxW, Batch: batch} }
	tests := []struct {
		live []string
		spec JobSpec
		want []string
	}{
		{[]string{"b", "a"}, spec(1, 4, 32), []string{"a", "b"}},
		{[]string{"c", "b", "a"}, spec(1, 4, 32), []string{"a", "b"}}, // 3 does not divide 32
		{[]string{"c", "b", "a"}, spec(1, 3, 6), []string{"a", "b", "c"}},
		{[]string{"e", "d", "c", "b", "a"}, spec(1, 4, 32), []string{"a", "b", "c", "d"}}, // capped
		{[]string{"a"}, spec(2, 4, 32), nil},
		{nil, spec(1, 1, 1), nil},
	}
	for _, tt := range tests {
		if got := pickMembers(tt.live, tt.spec); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("pickMembers(%v, min %d max %d batch %d) = %v, want %v", tt.live, tt.spec.MinWorkers, tt.spec.MaxWorkers, tt.spec.Batch, got, tt.want)
		}
	}
}

func TestParsePeers(t *testing.T) {
	peers, err := ParsePeers("a=127.0.0.1:7000=127.0.0.1:7070, b=h:7001=https://h:7071/")
	want := []Peer{{"a", "127.0.0.1:7000", "https://127.0.0.1:7070"}, {"b", "h:7001", "https://h:7071"}}
	if err != nil || !reflect.DeepEqual(peers, want) {
		t.Errorf("ParsePeers = %v, %v", peers, err)
	}
	for _, bad := range []string{"", "a=1", "a=1=2,a=3=4", "=1=2"} {
		if _, err := ParsePeers(bad); err == nil {
			t.Errorf("ParsePeers(%q) accepted", bad)
		}
	}
}

// latestAssignments collects the newest assignment per job from WatchAssignments.
type latestAssignments struct {
	mu sync.Mutex
	m  map[string]Assignment
}

func watchLatest(ctx context.Context, cli *clientv3.Client, cluster string) *latestAssignments {
	l := &latestAssignments{m: map[string]Assignment{}}
	ch := WatchAssignments(ctx, cli, cluster)
	go func() {
		for a := range ch {
			l.mu.Lock()
			l.m[a.Job] = a
			l.mu.Unlock()
		}
	}()
	return l
}

func (l *latestAssignments) get(job string) Assignment {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.m[job]
}

func TestMembershipGenerations(t *testing.T) {
	etcd := startEtcd(t)
	const cluster = "members"
	tc := startCluster(t, 1, etcd, cluster)
	tc.leader()
	c, w := tc.client(), tc.workerClient()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	assignments := watchLatest(ctx, etcd, cluster)

	a := registerWorker(t, etcd, cluster, "w-a")
	b := registerWorker(t, etcd, cluster, "w-b")
	// w-c's lease is kept alive by hand, so the test can let it expire.
	lease, err := etcd.Grant(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := etcd.Put(ctx, WorkersPrefix(cluster)+"w-c", `{"id":"w-c","host":"h"}`, clientv3.WithLease(lease.ID)); err != nil {
		t.Fatal(err)
	}
	kaCtx, stopKeepAlive := context.WithCancel(ctx)
	ka, err := etcd.KeepAlive(kaCtx, lease.ID)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for range ka {
		}
	}()

	sub, err := c.Submit(ctx, smallSpec(t, "members", 1, 3, 6, 100))
	if err != nil {
		t.Fatal(err)
	}
	members := func(want ...string) func(Job) bool {
		return func(j Job) bool { return j.Status == StatusRunning && slices.Equal(j.Members, want) }
	}
	j := waitJob(t, c, sub.ID, "a generation of a, b and c", members("w-a", "w-b", "w-c"))
	waitFor(t, 10*time.Second, "the assignment of a, b and c", func() bool {
		as := assignments.get(sub.ID)
		return as.Generation == j.Generation && as.Rank("w-c") == 2 && as.Checkpoint == nil && as.StartStep == 0 && as.TotalSteps == 100
	})

	// Progress to step 12 with a checkpoint at 10, then c expires: the
	// next generation resumes from step 10 and steps 11-12 are redone.
	for s := int64(1); s <= 12; s++ {
		if _, err := w.Progress(ctx, sub.ID, ProgressReport{Generation: j.Generation, Step: s, Loss: 2, Worker: "w-a"}); err != nil {
			t.Fatal(err)
		}
	}
	for rank := range 3 {
		res, err := w.ReportShard(ctx, sub.ID, testShardReport(j.Generation, 10, rank, 3, rank*10, rank*10+10))
		if err != nil || res.Committed != (rank == 2) {
			t.Fatalf("shard %d: committed %v, %v", rank, res.Committed, err)
		}
	}
	// An alert on checkpoints falling behind compares these two series.
	m := scrape(t, tc.coords[0].OpsURL())
	if got := m[`modcoord_job_checkpoint_committed_step{job="`+sub.ID+`"}`]; got != 10 {
		t.Errorf("modcoord_job_checkpoint_committed_step = %v after the commit at step 10", got)
	}
	if got := m[`modcoord_job_steps_done{job="`+sub.ID+`"}`]; got != 12 {
		t.Errorf("modcoord_job_steps_done = %v after progress to step 12", got)
	}
	stopKeepAlive()
	j = waitJob(t, c, sub.ID, "a generation without expired c", members("w-a", "w-b"))
	if j.StartStep != 10 || j.Ledger.StepsDone != 10 || j.Ledger.FLOPsSpent != 12*j.Ledger.FLOPsPerStep {
		t.Errorf("resumed generation: start %d, ledger %+v", j.StartStep, j.Ledger)
	}
	waitFor(t, 10*time.Second, "the assignment of a and b from step 10", func() bool {
		as := assignments.get(sub.ID)
		return as.Generation == j.Generation && slices.Equal(as.Members, []string{"w-a", "w-b"}) &&
			as.StartStep == 10 && as.Checkpoint != nil && as.Checkpoint.Step == 10 && len(as.Checkpoint.Shards) == 3
	})

	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	waitJob(t, c, sub.ID, "a generation of a alone", members("w-a"))
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	j = waitJob(t, c, sub.ID, "the job to wait", func(j Job) bool { return j.Status == StatusWaiting })
	if j.Reason != "waiting: 0 of 1 required workers alive" || len(j.Members) != 0 {
		t.Errorf("waiting job: reason %q, members %v", j.Reason, j.Members)
	}
	waitFor(t, 10*time.Second, "an empty assignment", func() bool {
		as := assignments.get(sub.ID)
		return as.Generation == j.Generation && as.Status == StatusWaiting && len(as.Members) == 0
	})

	registerWorker(t, etcd, cluster, "w-d")
	waitJob(t, c, sub.ID, "a generation of a newcomer", members("w-d"))
}

func TestRegisterWaitsForPreviousHolder(t *testing.T) {
	etcd := startEtcd(t)
	first := registerWorker(t, etcd, "dup", "w")
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		r, err := Register(ctx, etcd, "dup", WorkerInfo{ID: "w"}, time.Second)
		if err == nil {
			r.Close()
		}
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("second registration of the same id did not wait: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	first.Close()
	if err := <-done; err != nil {
		t.Fatalf("second registration after the first left: %v", err)
	}
	if _, err := Register(context.Background(), etcd, "dup", WorkerInfo{ID: "bad.id"}, 0); err == nil {
		t.Error("a worker id with a dot was accepted")
	}
}
