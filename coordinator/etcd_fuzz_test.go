package coordinator

import (
	"context"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/modcoord/modcoord/jobspec"
)

// Fuzz targets for the values the coordinator and workers read from etcd:
// worker registrations (watchWorkers) and assignments (WatchAssignments,
// publishAssignment's read of the value it may overwrite). etcd is
// writable by every worker, so these values are not trusted. The targets
// run the real code over a fake etcd client: no server, millions of runs.

// fakeEtcd serves one listing and one batch of watch events, then ends
// the watch when the test's context is canceled. Txn records puts.
type fakeEtcd struct {
	clientv3.KV
	clientv3.Watcher
	kvs    []*mvccpb.KeyValue
	events []*clientv3.Event
	puts   []string
}

func (e *fakeEtcd) Get(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	return &clientv3.GetResponse{Header: &pb.ResponseHeader{Revision: 7}, Kvs: e.kvs}, nil
}

func (e *fakeEtcd) Watch(ctx context.Context, key string, opts ...clientv3.OpOption) clientv3.WatchChan {
	ch := make(chan clientv3.WatchResponse, 1)
	ch <- clientv3.WatchResponse{Header: &pb.ResponseHeader{Revision: 8}, Events: e.events}
	go func() {
		<-ctx.Done()
		close(ch)
	}()
	return ch
}

func (e *fakeEtcd) Txn(ctx context.Context) clientv3.Txn { return &fakeTxn{e: e} }

type fakeTxn struct {
	e   *fakeEtcd
	ops []clientv3.Op
}

func (t *fakeTxn) If(...clientv3.Cmp) clientv3.Txn      { return t }
func (t *fakeTxn) Then(ops ...clientv3.Op) clientv3.Txn { t.ops = ops; return t }
func (t *fakeTxn) Else(...clientv3.Op) clientv3.Txn     { return t }
func (t *fakeTxn) Commit() (*clientv3.TxnResponse, error) {
	for _, op := range t.ops {
		if op.IsPut() {
			t.e.puts = append(t.e.puts, string(op.ValueBytes()))
		}
	}
	return &clientv3.TxnResponse{Succeeded: true, Header: &pb.ResponseHeader{Revision: 9}}, nil
}

func (e *fakeEtcd) client() *clientv3.Client { return &clientv3.Client{KV: e, Watcher: e} }

// FuzzWorkerRegistration lists one registration, then watches the same
// key put with a second value and deleted. Every worker the coordinator
// then counts as live must have a registration it could have made: an id
// that Register accepts, equal to its key.
func FuzzWorkerRegistration(f *testing.F) {
	good, _ := json.Marshal(WorkerInfo{ID: "w-1", Host: "node-3", StartedAt: t0})
	f.Add("w-1", good, []byte(`{"id":"w-1"}`))
	f.Add("w-2", good, good)
	f.Add("a/b", []byte(`{"id":"a/b"}`), []byte(`{"id":"a/b","started_at":"x"}`))
	f.Add("w.>", []byte(`{"id":"w.>"}`), []byte(`null`))
	f.Add("", []byte(`{"id":""}`), []byte(`{`))
	f.Add("w-1", []byte(`{"id":"w-1","host":"`+strings.Repeat("h", 1000)+`"}`), []byte(`[]`))

	f.Fuzz(func(t *testing.T, id string, listed, put []byte) {
		const cluster = "c"
		key := []byte(WorkersPrefix(cluster) + id)
		e := &fakeEtcd{
			kvs: []*mvccpb.KeyValue{{Key: key, Value: listed, ModRevision: 5}},
			events: []*clientv3.Event{
				{Type: clientv3.EventTypePut, Kv: &mvccpb.KeyValue{Key: key, Value: put, ModRevision: 8}},
				{Type: clientv3.EventTypeDelete, Kv: &mvccpb.KeyValue{Key: key, ModRevision: 8}},
			},
		}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		var views []map[string]WorkerInfo
		watchWorkers(ctx, e.client(), cluster, testLogger(), func(m map[string]WorkerInfo) {
			views = append(views, m)
			if len(views) == 3 {
				cancel()
			}
		})
		if len(views) != 3 {
			t.Fatalf("%d views of the worker set, want 3 (list, put, delete)", len(views))
		}
		if len(views[2]) != 0 {
			t.Fatalf("a deleted registration is still live: %v", views[2])
		}
		for i, m := range views[:2] {
			val := [][]byte{listed, put}[i]
			for wid, w := range m {
				if wid != id || w.ID != id {
					t.Fatalf("key %q value %q: live worker %q (%+v)", key, val, wid, w)
				}
				if err := checkEtcdName("worker id", wid); err != nil {
					t.Fatalf("key %q value %q: live worker with an id Register refuses: %v", key, val, err)
				}
			}
		}
	})
}

// FuzzAssignment decodes arbitrary assignment values as a worker's
// WatchAssignments does and uses them as the worker's agent does (rank,
// spec check), and lets publishAssignment read them as the value it may
// replace: it must replace what does not decode or is superseded, and
// keep what is as new.
func FuzzAssignment(f *testing.F) {
	spec, _ := testSpec(f, 1, 2)
	states := buildFuzzStates(f)
	for i := range states {
		fsm := restoredFSM(f, states[i])
		for _, j := range fsm.Jobs() {
			b, err := json.Marshal(assignmentFor(j))
			if err != nil {
				f.Fatal(err)
			}
			f.Add(b, uint64(j.Generation), uint8(i))
		}
	}
	f.Add([]byte(`{"job":"job-000001","generation":1,"members":["a","a",""],"checkpoint":{"shards":null},"spec":{"batch":-1}}`), uint64(1), uint8(3))
	f.Add([]byte(`{"job":"x","generation":18446744073709551615,"status":"completed"}`), uint64(0), uint8(0))
	f.Add([]byte(`null`), uint64(1), uint8(1))
	f.Add([]byte(`{`), uint64(1), uint8(1))

	f.Fuzz(func(t *testing.T, value []byte, gen uint64, status uint8) {
		const cluster = "c"
		key := []byte(AssignmentKey(cluster, "job-000001"))

		// The worker's side.
		// The listing holds the value, the watch then a marker assignment.
		marker, _ := json.Marshal(Assignment{Job: "marker"})
		e := &fakeEtcd{
			kvs: []*mvccpb.KeyValue{{Key: key, Value: value}},
			events: []*clientv3.Event{{Type: clientv3.EventTypePut,
				Kv: &mvccpb.KeyValue{Key: []byte(AssignmentKey(cluster, "marker")), Value: marker}}},
		}
		ctx, cancel := context.WithCancel(context.Background())
		var got []Assignment
		for a := range WatchAssignments(ctx, e.client(), cluster) {
			if a.Job == "marker" && a.Generation == 0 && a.Spec.Name == "" {
				cancel()
				continue
			}
			got = append(got, a)
		}
		cancel()
		// What a worker without a trust pool accepts: any value that decodes
		// and names the job of its key.
		old, derr := DecodeAssignment(string(key), value, nil, time.Now())
		decodes := derr == nil
		if len(got) > 1 || decodes != (len(got) == 1) {
			t.Fatalf("value %q (decodes: %v) emitted %d assignments", value, decodes, len(got))
		}
		if len(got) == 1 {
			a := got[0]
			if !reflect.DeepEqual(a, old) {
				t.Fatalf("emitted %+v, the value decodes to %+v", a, old)
			}
			for _, m := range a.Members {
				if r := a.Rank(m); r < 0 || r >= len(a.Members) || a.Members[r] != m {
					t.Fatalf("rank of %q is %d among %v", m, r, a.Members)
				}
			}
			_ = a.Spec.Validate(jobspec.Limits{}) // the worker's check of an assigned spec
			if a.Checkpoint != nil {
				_ = a.Checkpoint.Validate()
			}
		}

		// The coordinator's side: publishing over the value.
		statuses := []JobStatus{StatusWaiting, StatusRunning, StatusCompleted, StatusCanceled, StatusFailed}
		a := Assignment{Job: "job-000001", Generation: gen, Status: statuses[int(status)%len(statuses)], Spec: spec, TotalSteps: 100}
		if a.Status == StatusRunning {
			a.Members = []string{"a", "b"}
		}
		a.Canceled = a.Status == StatusCanceled || a.Status == StatusFailed
		pub := &fakeEtcd{kvs: []*mvccpb.KeyValue{{Key: key, Value: value, ModRevision: 3}}}
		wrote, err := publishAssignment(context.Background(), pub.client(), cluster, a, nil) // unsigned: what this target checks is the ordering
		if err != nil {
			t.Fatalf("publish over %q: %v", value, err)
		}
		if want := !decodes || supersedes(a, old); wrote != want {
			t.Fatalf("publish %+v over %q: wrote %v, want %v", a, value, wrote, want)
		}
		if wrote {
			var back Assignment
			if len(pub.puts) != 1 || json.Unmarshal([]byte(pub.puts[0]), &back) != nil || !reflect.DeepEqual(back, a) {
				t.Fatalf("published %q, not %+v", pub.puts, a)
			}
		}
		// supersedes orders assignments: never both ways, except between two
		// live statuses of one generation, which no leader writes (a
		// generation starts waiting or running and only ends after).
		sameLive := a.Generation == old.Generation && !a.Status.Terminal() && !old.Status.Terminal()
		if decodes && !sameLive && supersedes(a, old) && supersedes(old, a) {
			t.Fatalf("%+v and %+v supersede each other", a, old)
		}
	})
}
