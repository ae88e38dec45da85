package coordinator

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modcoord/modcoord/pki"
)

func TestStartRefusesNoTLS(t *testing.T) {
	_, err := Start(Config{Cluster: "c"})
	if err == nil || !strings.Contains(err.Error(), "no TLS credentials") {
		t.Fatalf("Start without TLS credentials: %v", err)
	}
	l := testPKI(t)
	_, err = Start(Config{Cluster: "c", TLS: testCreds(t, l, pki.RoleWorker)})
	if err == nil || !strings.Contains(err.Error(), "coordinator certificate") {
		t.Fatalf("Start with a worker's certificate: %v", err)
	}
	_, err = Start(Config{Cluster: "c", TLS: testCreds(t, l, pki.RoleCoordinator),
		Node: NodeConfig{Peers: []Peer{{ID: "c0", RaftAddr: "127.0.0.1:1", APIAddr: "http://127.0.0.1:2"}}}})
	if err == nil || !strings.Contains(err.Error(), "must be https://") {
		t.Fatalf("Start with a plain-HTTP peer: %v", err)
	}
}

// TestOpsListener: health, readiness and metrics are plain HTTP on the
// ops listener, which serves no /v1 route; the API port serves only /v1.
func TestOpsListener(t *testing.T) {
	tc := startCluster(t, 1, nil, "ops")
	tc.leader()
	ops := tc.coords[0].OpsURL()
	for path, want := range map[string]int{"/healthz": 200, "/readyz": 200, "/metrics": 200, "/v1/jobs": 404} {
		resp, err := http.Get(ops + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("ops GET %s: %d, want %d", path, resp.StatusCode, want)
		}
	}
	hc := rawClient(t, tc, pki.RoleUser)
	for path, want := range map[string]int{"/healthz": 404, "/metrics": 404, "/v1/jobs": 200} {
		if got, _ := call(t, hc, http.MethodGet, tc.urls()[0]+path, "", nil); got != want {
			t.Errorf("API GET %s: %d, want %d", path, got, want)
		}
	}
	// A plain-HTTP request to the API port gets no answer from /v1.
	if resp, err := http.Get(strings.Replace(tc.urls()[0], "https://", "http://", 1) + "/v1/jobs"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Error("plain HTTP to the API port listed the jobs")
		}
	}
}

func TestSubmitBadSpec(t *testing.T) {
	tc := startCluster(t, 1, nil, "badspec")
	tc.leader()
	c := tc.client()
	spec := strings.Replace(string(smallSpec(t, "bad", 1, 1, 4, 10)), "batch: 4", "batch: 0\nepochs: 2", 1)
	_, err := c.Submit(context.Background(), []byte(spec))
	var apiErr *APIError
	if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusBadRequest || !errors.Is(err, ErrInvalid) {
		t.Fatalf("bad spec: %v", err)
	}
	joined := strings.Join(apiErr.Fields, "\n")
	for _, want := range []string{"epochs: unknown field", "batch: 0 is out of range"} {
		if !strings.Contains(joined, want) {
			t.Errorf("fields %q lack %q", apiErr.Fields, want)
		}
	}
	missing := strings.Replace(string(smallSpec(t, "nodata", 1, 1, 4, 10)), "testdata/job.yaml", "testdata/missing.txt", 1)
	// This coordinator runs without CheckData: only workers need the file.
	if _, err := c.Submit(context.Background(), []byte(missing)); err != nil {
		t.Errorf("without the data check a missing file is accepted: %v", err)
	}
}

func TestBudgetLedgerAndMetrics(t *testing.T) {
	etcd := startEtcd(t)
	tc := startCluster(t, 1, etcd, "budget")
	tc.leader()
	c, w := tc.client(), tc.workerClient()
	ctx := context.Background()
	registerWorker(t, etcd, "budget", "w1")

	const steps = 37.5 // a budget of 37.5 steps buys exactly 37
	sub, err := c.Submit(ctx, smallSpec(t, "budget", 1, 1, 4, steps))
	if err != nil {
		t.Fatal(err)
	}
	if want := int64(math.Floor(sub.BudgetFLOPs / sub.FLOPsPerStep)); sub.Steps != want || sub.Steps != 37 {
		t.Errorf("steps = %d, want floor(%g / %g) = %d = 37", sub.Steps, sub.BudgetFLOPs, sub.FLOPsPerStep, want)
	}
	j := waitJob(t, c, sub.ID, "the job to run", func(j Job) bool { return j.Status == StatusRunning })
	for s := int64(1); s <= 5; s++ {
		cancel, err := w.Progress(ctx, sub.ID, ProgressReport{Generation: j.Generation, Step: s, Loss: 3.25, Tokens: 64, WallS: 0.1, Worker: "w1"})
		if err != nil || cancel {
			t.Fatalf("progress %d: cancel %v, %v", s, cancel, err)
		}
	}
	j, err = c.Job(ctx, sub.ID)
	if err != nil {
		t.Fatal(err)
	}
	l := j.Ledger
	if l.StepsDone != 5 || l.FLOPsUsed != 5*sub.FLOPsPerStep || l.FLOPsSpent != l.FLOPsUsed || l.TotalSteps != 37 {
		t.Errorf("ledger %+v", l)
	}
	if len(j.Recent) != 5 || j.Recent[4].Loss != 3.25 {
		t.Errorf("recent progress %+v", j.Recent)
	}

	m := scrape(t, tc.coords[0].OpsURL())
	label := `{job="` + sub.ID + `"}`
	for name, want := range map[string]float64{
		"modcoord_job_steps_done" + label:                5,
		"modcoord_job_budget_steps" + label:              37,
		"modcoord_job_checkpoint_committed_step" + label: 0,
		"modcoord_job_checkpoint_every_steps" + label:    10, // smallSpec's checkpoint_every
		"modcoord_job_used_flops" + label:                l.FLOPsUsed,
		"modcoord_job_budget_remaining_flops" + label:    l.BudgetFLOPs - l.FLOPsUsed,
		"modcoord_job_train_loss" + label:                3.25,
		"modcoord_job_generation" + label:                float64(j.Generation),
		"modcoord_workers":                               1,
		"modcoord_raft_leader":                           1,
	} {
		got, ok := m[name]
		if !ok || math.Abs(got-want) > 1e-9*math.Abs(want) {
			t.Errorf("%s = %v (present %v), want %v", name, got, ok, want)
		}
	}
	if m["modcoord_raft_commit_index"] < 1 {
		t.Error("commit index not exported")
	}

	// Cancel: the next progress report is told to stop.
	if _, err := c.Cancel(ctx, sub.ID, "test over"); err != nil {
		t.Fatal(err)
	}
	cancel, err := w.Progress(ctx, sub.ID, ProgressReport{Generation: j.Generation, Step: 6, Worker: "w1"})
	if err != nil || !cancel {
		t.Errorf("progress after cancel: cancel %v, %v", cancel, err)
	}
}

// scrape reads /metrics into name{labels} → value.
func scrape(t *testing.T, base string) map[string]float64 {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err == nil {
			out[line[:i]] = v
		}
	}
	return out
}

func TestClientTriesNextCoordinator(t *testing.T) {
	tc := startCluster(t, 1, nil, "clientnext")
	tc.leader()
	dead := "https://" + listenAndClose(t)
	conf, err := ClientTLS(testCreds(t, tc.pki, pki.RoleUser))
	if err != nil {
		t.Fatal(err)
	}
	c, err := NewClient([]string{dead, tc.urls()[0]}, conf, WithRetries(4, 10*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Jobs(context.Background()); err != nil {
		t.Errorf("client did not move past a dead coordinator: %v", err)
	}
}

// listenAndClose returns a loopback address nothing listens on.
func listenAndClose(t *testing.T) string {
	ln := listen(t)
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// TestClientPassesOverAnUnansweringCoordinator: a coordinator that takes
// a request and never answers (a partitioned leader on a kept-alive
// connection) costs one request timeout, not one each time the rotation
// comes back to it while the others still answer "no leader".
func TestClientPassesOverAnUnansweringCoordinator(t *testing.T) {
	var hung, flakyCalls atomic.Int64
	release := make(chan struct{})
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hung.Add(1)
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	defer hang.Close()
	defer close(release)
	flaky := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if flakyCalls.Add(1) == 1 {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprint(w, `{"error":"no leader yet","code":"unavailable"}`)
			return
		}
		fmt.Fprint(w, `{"jobs":[]}`)
	}))
	defer flaky.Close()

	const timeout = 300 * time.Millisecond
	c, err := NewClient([]string{hang.URL, flaky.URL}, nil,
		WithHTTPClient(&http.Client{Timeout: timeout}), WithRetries(6, 10*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	c.avoidFor = time.Second // so that the test can outwait it
	start := time.Now()
	if _, err := c.Jobs(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := hung.Load(); n != 1 {
		t.Errorf("the unanswering coordinator got %d requests, want 1", n)
	}
	if d := time.Since(start); d >= 2*timeout {
		t.Errorf("request took %v, two timeouts or more", d)
	}
	// Once the pass-over ends, the client starts from the coordinator
	// that last answered, not from the one it passed over.
	time.Sleep(c.avoidFor + 100*time.Millisecond)
	if _, err := c.Jobs(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := hung.Load(); n != 1 {
		t.Errorf("after the pass-over, the unanswering coordinator got %d requests in all, want 1", n)
	}
	// Once every coordinator has failed, the client tries them again
	// rather than giving up on the ones it passes over.
	c2, _ := NewClient([]string{hang.URL}, nil, WithHTTPClient(&http.Client{Timeout: 50 * time.Millisecond}), WithRetries(3, time.Millisecond))
	before := hung.Load()
	if _, err := c2.Jobs(context.Background()); err == nil {
		t.Error("a client whose only coordinator never answers succeeded")
	}
	if n := hung.Load() - before; n != 3 {
		t.Errorf("with one coordinator, %d attempts reached it, want 3", n)
	}
}

// TestForwardTransportGivesUpOnASilentLeader: a leader that takes a
// forwarded request and never answers (just partitioned away) fails the
// forward within the response bound, so the follower can answer "leader
// unreachable; retry" before the worker's own timeout.
func TestForwardTransportGivesUpOnASilentLeader(t *testing.T) {
	release := make(chan struct{})
	silent := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	defer silent.Close()
	defer close(release)
	const bound = 200 * time.Millisecond
	hc := &http.Client{Transport: newForwardTransport(time.Second, bound, nil)}
	start := time.Now()
	resp, err := hc.Get(silent.URL)
	if err == nil {
		resp.Body.Close()
		t.Fatal("a forward to a silent leader succeeded")
	}
	if d := time.Since(start); d > 5*bound {
		t.Errorf("the forward gave up after %v, want about %v", d, bound)
	}
	if forwardResponseTimeout >= 5*time.Second {
		t.Errorf("forwards wait up to %v, not below the workers' 5 s request timeout", forwardResponseTimeout)
	}
}

// TestWriteErrorBoundsEchoes: whatever a client sent and an error quotes
// (a 1 MB unknown field name, thousands of field errors), the answer stays
// small.
func TestWriteErrorBoundsEchoes(t *testing.T) {
	huge := strings.Repeat("x", 1<<20)
	many := make([]string, 10000)
	for i := range many {
		many[i] = huge[:1000]
	}
	for _, tc := range []struct {
		name   string
		msg    string
		fields []string
	}{
		{"long message", `request body: json: unknown field "` + huge + `"`, nil},
		{"many long fields", "invalid spec", many},
		{"short", "ok", []string{"a: b"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			writeError(rec, http.StatusBadRequest, "invalid", tc.msg, tc.fields)
			if n := rec.Body.Len(); n > 16<<10 {
				t.Fatalf("error body is %d bytes", n)
			}
			if !strings.Contains(rec.Body.String(), tc.msg[:min(len(tc.msg), 20)]) {
				t.Errorf("body lost the message's start: %.200s", rec.Body.String())
			}
		})
	}
}

// TestClientProgressAttemptTimeout: a progress report whose first attempt
// reaches a coordinator that never answers (a leader just partitioned
// away) moves on after the per-attempt bound, not the request timeout;
// other requests keep the request timeout.
func TestClientProgressAttemptTimeout(t *testing.T) {
	release := make(chan struct{})
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	defer hang.Close()
	defer close(release)
	ok := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"cancel":false,"jobs":[]}`)
	}))
	defer ok.Close()

	const timeout, attempt = 2 * time.Second, 200 * time.Millisecond
	cases := []struct {
		name    string
		call    func(*Client) error
		atLeast time.Duration
		below   time.Duration
	}{
		{"progress: the attempt bound", func(c *Client) error {
			_, err := c.Progress(context.Background(), "job-000001", ProgressReport{Step: 1})
			return err
		}, attempt, timeout / 2},
		{"other requests: the request timeout", func(c *Client) error {
			_, err := c.Jobs(context.Background())
			return err
		}, timeout, 2 * timeout},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := NewClient([]string{hang.URL, ok.URL}, nil, WithHTTPClient(&http.Client{Timeout: timeout}),
				WithRetries(4, 10*time.Millisecond), WithProgressAttemptTimeout(attempt))
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			if err := tc.call(c); err != nil {
				t.Fatal(err)
			}
			if d := time.Since(start); d < tc.atLeast || d >= tc.below {
				t.Errorf("took %v, want [%v, %v)", d, tc.atLeast, tc.below)
			}
		})
	}
}
