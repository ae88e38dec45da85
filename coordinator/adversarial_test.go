package coordinator

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/modcoord/modcoord/pki"
)

// rawClient is an HTTPS client holding role's certificate, for requests
// the coordinator.Client would not send (forged headers, wrong routes).
func rawClient(t *testing.T, tc *testCluster, role pki.Role) *http.Client {
	t.Helper()
	conf, err := ClientTLS(testCreds(t, tc.pki, role))
	if err != nil {
		t.Fatal(err)
	}
	return tlsClient(conf)
}

func tlsClient(conf *tls.Config) *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = conf
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// call sends one request and returns the status and body; a transport
// error fails the test.
func call(t *testing.T, hc *http.Client, method, url, body string, hdr map[string]string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// adversarialJob starts a one-coordinator cluster with one live worker
// and a running job, so that a refused request is refused for its role,
// not because the job is missing.
func adversarialJob(t *testing.T, cluster string) (*testCluster, Job) {
	t.Helper()
	etcd := startEtcd(t)
	tc := startCluster(t, 1, etcd, cluster)
	tc.leader()
	registerWorker(t, etcd, cluster, "w1")
	c := tc.client()
	sub, err := c.Submit(context.Background(), smallSpec(t, "victim", 1, 1, 4, 50))
	if err != nil {
		t.Fatal(err)
	}
	return tc, waitJob(t, c, sub.ID, "the job to run", func(j Job) bool { return j.Status == StatusRunning })
}

// TestAdversarialUserCannotActAsWorker: a user's certificate can submit and
// read, but progress, shard reports, complete, fail and memory reports are
// the workers' and answer 403, leaving the job as it was.
func TestAdversarialUserCannotActAsWorker(t *testing.T) {
	tc, j := adversarialJob(t, "advuser")
	ctx := context.Background()
	u := tc.client()
	forbidden := func(what string, err error) {
		t.Helper()
		var apiErr *APIError
		if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusForbidden || !errors.Is(err, ErrForbidden) {
			t.Errorf("user %s: %v, want 403", what, err)
		}
	}
	_, err := u.Progress(ctx, j.ID, ProgressReport{Generation: j.Generation, Step: 50, Loss: 1, Worker: j.Members[0]})
	forbidden("progress", err)
	_, err = u.ReportShard(ctx, j.ID, testShardReport(j.Generation, 10, 0, 1, 0, 10))
	forbidden("shard report", err)
	_, err = u.Complete(ctx, j.ID, CompleteReport{Generation: j.Generation, Step: j.Ledger.TotalSteps})
	forbidden("complete", err)
	_, err = u.Fail(ctx, j.ID, FailReport{Generation: j.Generation, Reason: "because I can"})
	forbidden("fail", err)
	err = u.ReportMemory(ctx, j.ID, MemoryReport{Generation: j.Generation, Worker: j.Members[0], World: len(j.Members), Ranges: []HeldRange{{Rank: 0, Steps: []int64{1}}}})
	forbidden("memory report", err)

	after, err := u.Job(ctx, j.ID)
	if err != nil {
		t.Fatal(err)
	}
	if after.Status != StatusRunning || after.Ledger.StepsDone != 0 || after.Pending != nil || len(after.Memory) != 0 {
		t.Errorf("a user's refused requests changed the job: %s, %d steps, pending %+v, memory %+v", after.Status, after.Ledger.StepsDone, after.Pending, after.Memory)
	}
}

// TestAdversarialWorkerCannotActAsUser: a worker's certificate reports and
// reads, but cannot submit or cancel.
func TestAdversarialWorkerCannotActAsUser(t *testing.T) {
	tc, j := adversarialJob(t, "advworker")
	ctx := context.Background()
	w := tc.workerClient()
	var apiErr *APIError
	if _, err := w.Submit(ctx, smallSpec(t, "sneaky", 1, 1, 4, 10)); !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusForbidden {
		t.Errorf("worker submit: %v, want 403", err)
	}
	if _, err := w.Cancel(ctx, j.ID, "sabotage"); !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusForbidden {
		t.Errorf("worker cancel: %v, want 403", err)
	}
	// What a worker may do still works.
	if _, err := w.Progress(ctx, j.ID, ProgressReport{Generation: j.Generation, Step: 1, Loss: 2, Worker: j.Members[0]}); err != nil {
		t.Errorf("worker progress: %v", err)
	}
	jobs, err := w.Jobs(ctx)
	if err != nil || len(jobs) != 1 || jobs[0].Status != StatusRunning {
		t.Errorf("worker read: %d jobs, %v", len(jobs), err)
	}
}

// TestAdversarialTLSRefusesStrangers: without a client certificate, or
// with one from another CA, there is no TLS session at all.
func TestAdversarialTLSRefusesStrangers(t *testing.T) {
	tc := startCluster(t, 1, nil, "advtls")
	tc.leader()
	url := tc.urls()[0] + "/v1/jobs"
	real := testCreds(t, tc.pki, pki.RoleUser)

	noCert := tlsClient(&tls.Config{MinVersion: tls.VersionTLS13, RootCAs: real.CAs})
	other := testCreds(t, testPKI(t), pki.RoleUser) // a user of another cluster
	otherCA := tlsClient(&tls.Config{MinVersion: tls.VersionTLS13, RootCAs: real.CAs, Certificates: []tls.Certificate{other.Cert}})
	for name, hc := range map[string]*http.Client{"no client certificate": noCert, "a certificate from another CA": otherCA} {
		resp, err := hc.Get(url)
		if err == nil {
			resp.Body.Close()
			t.Errorf("%s: the API answered %d", name, resp.StatusCode)
		}
	}
	// The same request with the cluster's user certificate goes through.
	if code, body := call(t, rawClient(t, tc, pki.RoleUser), http.MethodGet, url, "", nil); code != http.StatusOK {
		t.Errorf("with the cluster's user certificate: %d %s", code, body)
	}
}

// TestAdversarialForgedForwardingHeader: the header that carries a
// forwarded caller's role is honoured only from a coordinator's
// certificate. A worker claiming to forward a user's submission, or a
// user claiming to forward a worker's progress, is refused; a coordinator
// cannot forward a role it may not hand out.
func TestAdversarialForgedForwardingHeader(t *testing.T) {
	tc, j := adversarialJob(t, "advfwd")
	base := tc.urls()[0]
	submitBody := string(smallSpec(t, "forged", 1, 1, 4, 10))
	progressBody := `{"generation":` + jsonUint(j.Generation) + `,"step":40,"loss":1,"worker":"` + j.Members[0] + `"}`
	asUser := map[string]string{forwardedRoleHeader: "user", forwardedForHeader: "user/admin", forwardedHeader: "c0"}
	asWorker := map[string]string{forwardedRoleHeader: "worker", forwardedForHeader: "worker/w1", forwardedHeader: "c0"}

	cases := []struct {
		name       string
		role       pki.Role
		path, body string
		hdr        map[string]string
		want       int
	}{
		{"worker forging a user's submission", pki.RoleWorker, "/v1/jobs", submitBody, asUser, http.StatusForbidden},
		{"worker forging only the role header", pki.RoleWorker, "/v1/jobs", submitBody, map[string]string{forwardedRoleHeader: "user"}, http.StatusForbidden},
		{"user forging a worker's progress", pki.RoleUser, "/v1/jobs/" + j.ID + "/progress", progressBody, asWorker, http.StatusForbidden},
		{"coordinator forwarding a coordinator role", pki.RoleCoordinator, "/v1/jobs", submitBody, map[string]string{forwardedRoleHeader: "coordinator"}, http.StatusForbidden},
		{"coordinator forwarding a bogus role", pki.RoleCoordinator, "/v1/jobs", submitBody, map[string]string{forwardedRoleHeader: "admin"}, http.StatusForbidden},
		{"coordinator not forwarding at all", pki.RoleCoordinator, "/v1/jobs", submitBody, nil, http.StatusForbidden},
		{"coordinator forwarding a worker's submission", pki.RoleCoordinator, "/v1/jobs", submitBody, asWorker, http.StatusForbidden},
	}
	for _, tt := range cases {
		code, body := call(t, rawClient(t, tc, tt.role), http.MethodPost, base+tt.path, tt.body, tt.hdr)
		if code != tt.want {
			t.Errorf("%s: %d %s, want %d", tt.name, code, body, tt.want)
		}
	}
	after, err := tc.client().Jobs(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(after) != 1 || after[0].Ledger.StepsDone != 0 {
		t.Fatalf("forged requests changed the state: %d jobs, %d steps", len(after), after[0].Ledger.StepsDone)
	}
	// The header does its job from a coordinator: a forwarded user may submit.
	if code, body := call(t, rawClient(t, tc, pki.RoleCoordinator), http.MethodPost, base+"/v1/jobs", submitBody, asUser); code != http.StatusCreated {
		t.Errorf("a coordinator forwarding a user's submission: %d %s", code, body)
	}
}

// TestAdversarialForwardKeepsRole: a request through a follower acts with
// the original caller's role at the leader, not the follower's: a user
// cannot post progress by going through a follower, a worker can.
func TestAdversarialForwardKeepsRole(t *testing.T) {
	etcd := startEtcd(t)
	const cluster = "advfwdrole"
	tc := startCluster(t, 3, etcd, cluster)
	via := tc.urls()[tc.follower(tc.leader())]
	registerWorker(t, etcd, cluster, "w1")
	ctx := context.Background()
	u, w := tc.client(via), tc.workerClient(via)
	sub, err := u.Submit(ctx, smallSpec(t, "fwd", 1, 1, 4, 50))
	if err != nil {
		t.Fatal(err)
	}
	j := waitJob(t, u, sub.ID, "the job to run", func(j Job) bool { return j.Status == StatusRunning })
	var apiErr *APIError
	if _, err := u.Progress(ctx, j.ID, ProgressReport{Generation: j.Generation, Step: 1, Loss: 1, Worker: "w1"}); !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusForbidden {
		t.Errorf("user progress via a follower: %v, want 403", err)
	}
	if _, err := w.Submit(ctx, smallSpec(t, "fwd2", 1, 1, 4, 50)); !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusForbidden {
		t.Errorf("worker submit via a follower: %v, want 403", err)
	}
	if _, err := w.Progress(ctx, j.ID, ProgressReport{Generation: j.Generation, Step: 1, Loss: 1, Worker: "w1"}); err != nil {
		t.Errorf("worker progress via a follower: %v", err)
	}
}

func jsonUint(v uint64) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// TestAdversarialProgressPastTheJob: the state machine refuses progress
// no honest worker sends: past the job's last step, at or before the
// generation's start step, or non-finite.
func TestAdversarialProgressPastTheJob(t *testing.T) {
	f, id := runningJob(t)
	if _, err := apply(f, progressCmd(id, 1, 101, "a")); !errors.Is(err, ErrInvalid) {
		t.Errorf("progress to step 101 of 100: %v", err)
	}
	if _, err := apply(f, progressCmd(id, 1, 1<<40, "a")); !errors.Is(err, ErrInvalid) {
		t.Errorf("progress to step 2^40 of 100: %v", err)
	}
	// A resumed generation cannot report the step it resumed from.
	for s := int64(1); s <= 12; s++ {
		mustApply(t, f, progressCmd(id, 1, s, "a"))
	}
	checkpointAt(t, f, id, 1, 10)
	mustApply(t, f, genCmd(id, 2, 2, "a", "b"))
	if _, err := apply(f, progressCmd(id, 2, 10, "a")); !errors.Is(err, ErrStale) {
		t.Errorf("progress at the start step: %v", err)
	}
	mustApply(t, f, progressCmd(id, 2, 11, "a"))
	if _, err := apply(f, progressCmd(id, 2, 10, "a")); err == nil {
		t.Error("progress going backwards accepted")
	}
	j, _ := f.Job(id)
	if j.Ledger.StepsDone != 11 {
		t.Errorf("steps done %d after refused reports, want 11", j.Ledger.StepsDone)
	}
}

// TestAdversarialCompleteNeedsFinalCheckpoint: "complete" is refused until
// the checkpoint of the last step is committed, even at the last step.
func TestAdversarialCompleteNeedsFinalCheckpoint(t *testing.T) {
	f, id := runningJob(t)
	for s := int64(1); s <= 20; s++ {
		mustApply(t, f, progressCmd(id, 1, s, "a"))
	}
	checkpointAt(t, f, id, 1, 10)
	done := Command{Type: CmdComplete, Job: id, Complete: &CompleteReport{Generation: 1, Step: 100}}
	// The report that completed a job after 855 of its steps: the last
	// step named, nothing behind it.
	if _, err := apply(f, done); !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), "checkpoint") {
		t.Errorf("complete with only step 10 committed: %v", err)
	}
	for s := int64(21); s <= 100; s++ {
		mustApply(t, f, progressCmd(id, 1, s, "a"))
	}
	if _, err := apply(f, done); !errors.Is(err, ErrConflict) {
		t.Errorf("complete at step 100 before its checkpoint: %v", err)
	}
	mustApply(t, f, shardCmd(id, 1, 100, 0, 0, 50)) // pending, not committed
	if _, err := apply(f, done); !errors.Is(err, ErrConflict) {
		t.Errorf("complete with the final checkpoint pending: %v", err)
	}
	mustApply(t, f, shardCmd(id, 1, 100, 1, 50, 100))
	mustApply(t, f, commitCmd(id, 1, 100))
	mustApply(t, f, done)
	if j, _ := f.Job(id); j.Status != StatusCompleted {
		t.Errorf("status %s after the final commit and complete", j.Status)
	}
}

// TestAdversarialQueueSkipsJobThatCannotStart: with one live worker, a job
// needing two waits and says why, and a job behind it needing one runs.
func TestAdversarialQueueSkipsJobThatCannotStart(t *testing.T) {
	etcd := startEtcd(t)
	const cluster = "advqueue"
	tc := startCluster(t, 1, etcd, cluster)
	tc.leader()
	registerWorker(t, etcd, cluster, "w1")
	c := tc.client()
	ctx := context.Background()
	big, err := c.Submit(ctx, smallSpec(t, "needs-two", 2, 2, 4, 50))
	if err != nil {
		t.Fatal(err)
	}
	small, err := c.Submit(ctx, smallSpec(t, "needs-one", 1, 1, 4, 50))
	if err != nil {
		t.Fatal(err)
	}
	waitJob(t, c, small.ID, "the job behind to run on the one worker", func(j Job) bool {
		return j.Status == StatusRunning && len(j.Members) == 1 && j.Members[0] == "w1"
	})
	b := waitJob(t, c, big.ID, "the two-worker job to wait with a reason", func(j Job) bool { return j.Status == StatusWaiting })
	if !strings.Contains(b.Reason, "1 of 2 required workers alive") {
		t.Errorf("waiting job's reason %q does not say why", b.Reason)
	}
	// A second worker does not preempt the running job: the waiting one
	// goes first when the running one ends.
	registerWorker(t, etcd, cluster, "w2")
	time.Sleep(time.Second)
	if j, _ := c.Job(ctx, small.ID); j.Status != StatusRunning {
		t.Errorf("running job was preempted: %s %q", j.Status, j.Reason)
	}
	if _, err := c.Cancel(ctx, small.ID, "done with it"); err != nil {
		t.Fatal(err)
	}
	waitJob(t, c, big.ID, "the two-worker job to run once the workers are free", func(j Job) bool {
		return j.Status == StatusRunning && len(j.Members) == 2
	})
}
