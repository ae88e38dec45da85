//go:build chaos

package chaos

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/modcoord/modcoord/checkpoint"
	"github.com/modcoord/modcoord/coordinator"
	"github.com/modcoord/modcoord/jobspec"
	"github.com/modcoord/modcoord/pki"
)

// Knobs (environment):
//
//	CHAOS_IMAGE      image to run (default modcoord-chaos:dev); built by
//	                 deploy/chaos/images.sh unless CHAOS_SKIP_BUILD=1
//	CHAOS_STEPS      steps every job runs (default 1500)
//	CHAOS_ARTIFACTS  where logs and report.json go (default a new temp dir)
//	CHAOS_KEEP=1     leave the cluster up at the end (for debugging)
//	CHAOS_FAULTS     comma-separated subset of worker-kill, leader-kill,
//	                 leader-partition, restart-all, worker-bounce (default all)
//	CHAOS_STRICT=1   findings (misbehaviour that left the guarantees intact)
//	                 fail the suite too
//	CHAOS_PROJECT    compose project and name prefix (default modcoord-chaos)
//	CHAOS_SOAK_*     the soak (soak_test.go)

// project prefixes the containers, the network and the checkpoint volume
// (CHAOS_PROJECT, as in compose.yaml): two suites may share one engine.
var (
	project = envOr("CHAOS_PROJECT", "modcoord-chaos")
	network = project + "-net"
	ckptVol = project + "-ckpt"
)

const (
	dataPath  = "tinyshakespeare.txt" // under the workers' --data-root=/opt/modcoord/data
	world     = 3
	ckptEvery = 20
	keepCkpts = 3
	// victim is the worker the worker-kill fault kills: rank 0, the one that
	// reports progress and completion, so the most is lost with it.
	victim = "w0"
)

var (
	coordinators = []string{"c0", "c1", "c2"}
	workers      = []string{"w0", "w1", "w2"}
	allServices  = []string{"etcd", "nats", "c0", "c1", "c2", "w0", "w1", "w2"}
)

func container(svc string) string { return project + "-" + svc }

// specYAML is every job's spec: only the name differs, so every job's final
// parameters must be bit-identical (data order and initialization are pure
// functions of the seeds, and the world size is always 3).
func specYAML(name string, budget float64) []byte {
	return []byte(fmt.Sprintf(`name: %s
data: %s
model: {d_model: 32, layers: 2, heads: 2, seq_len: 32, capacity: 0.25}
batch: 12
budget_flops: %s
min_workers: %d
max_workers: %d
checkpoint_every: %d
keep_checkpoints: %d
seed: 7
`, name, dataPath, strconv.FormatFloat(budget, 'g', -1, 64), world, world, ckptEvery, keepCkpts))
}

// ---------------------------------------------------------------------------
// The cluster

type cluster struct {
	t         *testing.T
	repo      string
	compose   []string
	env       []string
	image     string
	secrets   string
	ports     map[string]int // coordinator -> host port of its API (HTTPS, mutual TLS)
	mports    map[string]int // coordinator -> host port of its plain-HTTP metrics listener
	hc        *http.Client   // the API client: the user certificate, the cluster CA
	mc        *http.Client   // plain HTTP for /readyz and /metrics
	artifacts string
	steps     int64
	budget    float64
	fps       float64
	// netemFallback: the kernel has no netem qdisc (soak_test.go).
	netemFallback atomic.Bool
}

func repoRoot(t *testing.T) string {
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Clean(filepath.Join(wd, "..", ".."))
}

// composeCommand is `docker compose` where the plugin exists, else
// docker-compose.
func composeCommand() ([]string, error) {
	if exec.Command("docker", "compose", "version").Run() == nil {
		return []string{"docker", "compose"}, nil
	}
	if _, err := exec.LookPath("docker-compose"); err == nil {
		return []string{"docker-compose"}, nil
	}
	return nil, errors.New("neither `docker compose` nor docker-compose is available")
}

// writeTLS makes the cluster's TLS material in secrets: a CA in ca/
// (mounted nowhere) and, for each role, tls/<role>/ with ca.crt and
// <role>-chaos.crt/.key, which compose.yaml mounts at /etc/modcoord/tls in
// that role's containers. One certificate per role, valid for every
// service name. World-readable: the containers' uid is not the suite's.
func writeTLS(secrets string) error {
	local, err := pki.EnsureDir(filepath.Join(secrets, "ca"), pki.EnsureOptions{
		Name:  "chaos",
		Hosts: []string{"c0", "c1", "c2", "etcd", "nats", "localhost", "127.0.0.1", "::1"},
	})
	if err != nil {
		return fmt.Errorf("TLS material: %w", err)
	}
	for _, role := range pki.Roles() {
		dir := filepath.Join(secrets, "tls", string(role))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("TLS material: %w", err)
		}
		os.Chmod(filepath.Join(secrets, "tls"), 0o755)
		os.Chmod(dir, 0o755)
		f := local.Files(role)
		for _, src := range []string{f.CA, f.Cert, f.Key} {
			b, err := os.ReadFile(src)
			if err != nil {
				return fmt.Errorf("TLS material: %w", err)
			}
			if err := os.WriteFile(filepath.Join(dir, filepath.Base(src)), b, 0o644); err != nil {
				return fmt.Errorf("TLS material: %w", err)
			}
		}
	}
	return nil
}

func freePort(t *testing.T) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// run runs a command and returns its combined output.
func run(ctx context.Context, env []string, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if err != nil {
		return out.String(), fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, out.String())
	}
	return out.String(), nil
}

func (c *cluster) docker(timeout time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return run(ctx, c.env, "docker", args...)
}

func (c *cluster) dc(timeout time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	full := append(slices.Clone(c.compose[1:]), "-p", project, "-f", filepath.Join(c.repo, "deploy", "chaos", "compose.yaml"))
	return run(ctx, c.env, c.compose[0], append(full, args...)...)
}

func (c *cluster) logf(format string, a ...any) {
	c.t.Helper()
	c.t.Logf("%s "+format, append([]any{time.Now().Format("15:04:05.000")}, a...)...)
}

func startCluster(t *testing.T) *cluster {
	c := &cluster{t: t, repo: repoRoot(t), image: envOr("CHAOS_IMAGE", "modcoord-chaos:dev"),
		mc: &http.Client{Timeout: 3 * time.Second}, ports: map[string]int{}, mports: map[string]int{}}
	var err error
	if c.compose, err = composeCommand(); err != nil {
		t.Skip(err)
	}
	if _, err := exec.LookPath("docker"); err != nil {
		t.Skip("no docker CLI")
	}
	c.artifacts = os.Getenv("CHAOS_ARTIFACTS")
	if c.artifacts == "" {
		if c.artifacts, err = os.MkdirTemp("", "modcoord-chaos-"); err != nil {
			t.Fatal(err)
		}
	} else if err := os.MkdirAll(c.artifacts, 0o755); err != nil {
		t.Fatal(err)
	}
	c.logf("artifacts (logs, report.json) in %s", c.artifacts)

	if os.Getenv("CHAOS_SKIP_BUILD") != "1" {
		t0 := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
		out, err := run(ctx, []string{"CHAOS_IMAGE=" + c.image}, "bash", filepath.Join(c.repo, "deploy", "chaos", "images.sh"))
		cancel()
		if err != nil {
			t.Fatalf("build images: %v", err)
		}
		c.logf("image %s ready in %s", c.image, time.Since(t0).Round(time.Second))
		_ = out
	}

	// Secrets: the TLS material (see writeTLS), mounted read-only, one
	// role's directory per container (compose.yaml). The suite talks to
	// the API as a user.
	if c.secrets, err = os.MkdirTemp("", "modcoord-chaos-secrets-"); err != nil {
		t.Fatal(err)
	}
	os.Chmod(c.secrets, 0o755)
	if err := writeTLS(c.secrets); err != nil {
		t.Fatal(err)
	}
	user, err := pki.LoadDir(filepath.Join(c.secrets, "tls", string(pki.RoleUser)), pki.RoleUser)
	if err != nil {
		t.Fatal(err)
	}
	tlsCfg, err := pki.ClientConfig(user, pki.RoleCoordinator)
	if err != nil {
		t.Fatal(err)
	}
	c.hc = &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsCfg, ForceAttemptHTTP2: true}}
	c.env = []string{"CHAOS_IMAGE=" + c.image, "CHAOS_SECRETS=" + c.secrets, "CHAOS_PROJECT=" + project}
	for _, co := range coordinators {
		c.ports[co], c.mports[co] = freePort(t), freePort(t)
		c.env = append(c.env, fmt.Sprintf("CHAOS_%s_PORT=%d", strings.ToUpper(co), c.ports[co]),
			fmt.Sprintf("CHAOS_%s_METRICS_PORT=%d", strings.ToUpper(co), c.mports[co]))
	}

	// Leftovers of an earlier run that could not clean up.
	if _, err := c.dc(3*time.Minute, "down", "-v", "--remove-orphans", "-t", "2"); err != nil {
		t.Fatalf("clean up an earlier run: %v", err)
	}
	t.Cleanup(c.teardown)

	// Bring it up in order: etcd and NATS, then the coordinators, then the
	// workers (a worker that finds no NATS exits).
	t0 := time.Now()
	if _, err := c.dc(3*time.Minute, "up", "-d", "etcd", "nats", "ckpt-keeper"); err != nil {
		t.Fatal(err)
	}
	if err := c.waitInfra(60 * time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := c.dc(3*time.Minute, "up", "-d", "--no-deps", "c0", "c1", "c2"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.waitLeader(60*time.Second, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := c.dc(3*time.Minute, "up", "-d", "--no-deps", "w0", "w1", "w2"); err != nil {
		t.Fatal(err)
	}
	if err := c.waitWorkers(60 * time.Second); err != nil {
		t.Fatal(err)
	}
	c.logf("cluster up in %s (API on 127.0.0.1:%d, :%d, :%d)", time.Since(t0).Round(100*time.Millisecond),
		c.ports["c0"], c.ports["c1"], c.ports["c2"])
	c.planJob(t)
	return c
}

// planJob computes the budget that buys exactly CHAOS_STEPS steps.
func (c *cluster) planJob(t *testing.T) {
	c.steps = 1500
	if s := os.Getenv("CHAOS_STEPS"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < 200 {
			t.Fatalf("CHAOS_STEPS=%q: want an integer of at least 200", s)
		}
		c.steps = n
	}
	spec, err := coordinator.ParseSpec(specYAML("plan", 1e15))
	if err != nil {
		t.Fatal(err)
	}
	plan, err := spec.Plan(jobspec.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	c.fps = plan.FLOPsPerStep
	// Half a step over, so that floor(budget / flops_per_step) is exact.
	c.budget = (float64(c.steps) + 0.5) * c.fps
	spec, err = coordinator.ParseSpec(specYAML("plan", c.budget))
	if err == nil {
		plan, err = spec.Plan(jobspec.Limits{})
	}
	if err != nil || plan.Steps != c.steps {
		t.Fatalf("budget %g buys %d steps, want %d (%v)", c.budget, plan.Steps, c.steps, err)
	}
	c.logf("job: %d steps × %.4g FLOPs/step, checkpoint every %d, keep %d, world %d", c.steps, c.fps, ckptEvery, keepCkpts, world)
}

func (c *cluster) teardown() {
	c.saveLogs("compose.log")
	if os.Getenv("CHAOS_KEEP") == "1" {
		c.logf("CHAOS_KEEP=1: leaving the cluster up; tear down with: %s -p %s -f deploy/chaos/compose.yaml down -v (CHAOS_SECRETS=%s)",
			strings.Join(c.compose, " "), project, c.secrets)
		return
	}
	if out, err := c.dc(3*time.Minute, "down", "-v", "--remove-orphans", "-t", "5"); err != nil {
		c.t.Errorf("tear down: %v\n%s", err, out)
	}
	os.RemoveAll(c.secrets)
}

func (c *cluster) saveLogs(name string) {
	out, _ := c.dc(2*time.Minute, "logs", "--no-color", "--timestamps")
	if err := os.WriteFile(filepath.Join(c.artifacts, name), []byte(out), 0o644); err != nil {
		c.t.Logf("save logs: %v", err)
	}
}

// ---------------------------------------------------------------------------
// Talking to the coordinators

func (c *cluster) url(co, path string) string {
	return fmt.Sprintf("https://127.0.0.1:%d%s", c.ports[co], path)
}

// metricsURL is co's plain-HTTP metrics listener (/healthz, /readyz,
// /metrics).
func (c *cluster) metricsURL(co, path string) string {
	return fmt.Sprintf("http://127.0.0.1:%d%s", c.mports[co], path)
}

// metricsGet reads path from co's metrics listener.
func (c *cluster) metricsGet(co, path string) (int, []byte, error) {
	resp, err := c.mc.Get(c.metricsURL(co, path))
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// call sends one request to one coordinator's API, as a user.
func (c *cluster) call(co, method, path string, body []byte) (int, []byte, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, c.url(co, path), rd)
	if err != nil {
		return 0, nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/yaml")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// get asks the coordinators in turn until one answers below 500 (a
// follower forwards /v1 to the leader).
func (c *cluster) get(path string, out any) error {
	var errs []error
	for _, co := range coordinators {
		code, b, err := c.call(co, http.MethodGet, path, nil)
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("%s: %w", co, err))
		case code >= 500:
			errs = append(errs, fmt.Errorf("%s: %d %s", co, code, bytes.TrimSpace(b)))
		case code != http.StatusOK:
			return fmt.Errorf("GET %s from %s: %d %s", path, co, code, bytes.TrimSpace(b))
		default:
			return json.Unmarshal(b, out)
		}
	}
	return fmt.Errorf("GET %s: no coordinator answered: %w", path, errors.Join(errs...))
}

type readyz struct {
	Ready    bool   `json:"ready"`
	Leader   string `json:"leader"`
	IsLeader bool   `json:"is_leader"`
}

func (c *cluster) readyz(co string) (readyz, bool) {
	var r readyz
	code, b, err := c.metricsGet(co, "/readyz")
	if err != nil || (code != 200 && code != 503) || json.Unmarshal(b, &r) != nil {
		return readyz{}, false
	}
	return r, true
}

// leaderNow is the coordinator that says it leads, among those reachable
// other than except.
func (c *cluster) leaderNow(except string) string {
	for _, co := range coordinators {
		if co == except {
			continue
		}
		if r, ok := c.readyz(co); ok && r.IsLeader {
			return co
		}
	}
	return ""
}

func (c *cluster) waitLeader(timeout time.Duration, except string) (string, error) {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if l := c.leaderNow(except); l != "" {
			return l, nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return "", fmt.Errorf("no raft leader (other than %q) after %s", except, timeout)
}

// liveWorkers is the leader's modcoord_workers gauge (-1: unknown).
func (c *cluster) liveWorkers() int {
	l := c.leaderNow("")
	if l == "" {
		return -1
	}
	code, b, err := c.metricsGet(l, "/metrics")
	if err != nil || code != 200 {
		return -1
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "modcoord_workers "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err == nil {
				return int(f)
			}
		}
	}
	return -1
}

func (c *cluster) waitWorkers(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	n := -1
	for time.Now().Before(deadline) {
		if n = c.liveWorkers(); n == world {
			return nil
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("%d of %d workers registered after %s", n, world, timeout)
}

// probe runs `chaosinfra http` inside a container.
func (c *cluster) probe(timeout time.Duration, svc string, args ...string) (string, error) {
	return c.docker(timeout, append([]string{"exec", container(svc), "/usr/local/bin/chaosinfra", "http"}, args...)...)
}

func (c *cluster) waitInfra(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		// etcd serves only mutual TLS: its own certificate is the client.
		e, _ := c.probe(10*time.Second, "etcd", "--timeout=2s", "--tls-dir=/etc/modcoord/tls", "GET", "https://127.0.0.1:2379/health")
		n, _ := c.probe(10*time.Second, "nats", "--timeout=2s", "GET", "http://127.0.0.1:8222/healthz")
		if strings.HasPrefix(e, "200") && strings.HasPrefix(n, "200") {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("etcd/NATS not healthy after %s: etcd %q, nats %q", timeout, e, n)
		}
		time.Sleep(300 * time.Millisecond)
	}
}

type containerState struct {
	Running  bool
	Networks map[string]any
}

func (c *cluster) inspect(svc string) (containerState, error) {
	out, err := c.docker(30*time.Second, "inspect", "-f", "{{json .State.Running}} {{json .NetworkSettings.Networks}}", container(svc))
	if err != nil {
		return containerState{}, err
	}
	var st containerState
	running, nets, _ := strings.Cut(strings.TrimSpace(out), " ")
	st.Running = running == "true"
	_ = json.Unmarshal([]byte(nets), &st.Networks)
	return st, nil
}

// leaderStallLimit is how long training may stall after a leader fault
// before it is a finding: an election takes 1-3 s with 1 s raft timeouts,
// and the workers' reports retry with backoff.
const leaderStallLimit = 10 * time.Second

// finishedAt is when a container's process last exited, by Docker's
// record: the precise moment a kill took effect.
// firstExit is when the first container's process exited after issued
// (zero: none did), for a fault that stops several containers.
func (c *cluster) firstExit(issued time.Time) time.Time {
	var first time.Time
	for _, svc := range allServices {
		if at, err := c.finishedAt(svc); err == nil && at.After(issued) && (first.IsZero() || at.Before(first)) {
			first = at
		}
	}
	return first
}

// startAll starts etcd and NATS, waits for them, then every modcoord
// container. `docker start` of several containers starts them one after
// the other; each is started on its own instead, all at once.
func (c *cluster) startAll() error {
	start := func(svcs ...string) error {
		errs := make([]error, len(svcs))
		var wg sync.WaitGroup
		for i, svc := range svcs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, errs[i] = c.docker(2*time.Minute, "start", container(svc))
			}()
		}
		wg.Wait()
		return errors.Join(errs...)
	}
	if err := start("etcd", "nats"); err != nil {
		return err
	}
	if err := c.waitInfra(60 * time.Second); err != nil {
		return err
	}
	return start(allServices[2:]...)
}

func (c *cluster) finishedAt(svc string) (time.Time, error) {
	out, err := c.docker(30*time.Second, "inspect", "-f", "{{.State.FinishedAt}}", container(svc))
	if err != nil {
		return time.Time{}, err
	}
	return time.Parse(time.RFC3339Nano, strings.TrimSpace(out))
}

// kill sends SIGKILL and returns when the process died.
func (c *cluster) kill(svc string) (time.Time, error) {
	issued := time.Now()
	if _, err := c.docker(time.Minute, "kill", "-s", "KILL", container(svc)); err != nil {
		return issued, err
	}
	at, err := c.finishedAt(svc)
	if err != nil || at.Before(issued.Add(-time.Second)) {
		return issued, fmt.Errorf("when did %s die? %v (finished at %s)", svc, err, at)
	}
	return at, nil
}

// ensureHealthy undoes what a failed scenario may have left behind: every
// container running and on the network, a leader, three workers, no job
// still holding the workers.
func (c *cluster) ensureHealthy() error {
	for _, svc := range allServices {
		st, err := c.inspect(svc)
		if err != nil {
			return err
		}
		if _, ok := st.Networks[network]; !ok {
			c.logf("repair: reconnecting %s to %s", svc, network)
			if _, err := c.docker(time.Minute, "network", "connect", "--alias", svc, network, container(svc)); err != nil {
				return err
			}
		}
		if !st.Running {
			c.logf("repair: starting %s", svc)
			if _, err := c.docker(time.Minute, "start", container(svc)); err != nil {
				return err
			}
		}
	}
	if _, err := c.waitLeader(90*time.Second, ""); err != nil {
		return err
	}
	var list coordinator.JobList
	if err := c.get("/v1/jobs", &list); err != nil {
		return err
	}
	for _, j := range list.Jobs {
		if !j.Status.Terminal() {
			c.logf("repair: canceling %s (%s), left over by an earlier scenario", j.ID, j.Status)
			if code, b, err := c.callAny(http.MethodPost, "/v1/jobs/"+j.ID+"/cancel", nil); err != nil || code != 200 {
				return fmt.Errorf("cancel %s: %d %s %v", j.ID, code, b, err)
			}
		}
	}
	return c.waitWorkers(90 * time.Second)
}

// callAny sends a request to the coordinators in turn until one answers
// below 500.
func (c *cluster) callAny(method, path string, body []byte) (int, []byte, error) {
	var lastErr error
	for attempt := 0; attempt < 20; attempt++ {
		for _, co := range coordinators {
			code, b, err := c.call(co, method, path, body)
			if err == nil && code < 500 {
				return code, b, nil
			}
			lastErr = fmt.Errorf("%s: %d %s %v", co, code, bytes.TrimSpace(b), err)
		}
		time.Sleep(500 * time.Millisecond)
	}
	return 0, nil, lastErr
}

func (c *cluster) submit(name string) (string, error) {
	code, b, err := c.callAny(http.MethodPost, "/v1/jobs", specYAML(name, c.budget))
	if err != nil {
		return "", err
	}
	if code != http.StatusCreated {
		return "", fmt.Errorf("submit: %d %s", code, b)
	}
	var res coordinator.SubmitResult
	if err := json.Unmarshal(b, &res); err != nil {
		return "", err
	}
	if res.Steps != c.steps {
		return "", fmt.Errorf("submitted job buys %d steps, want %d", res.Steps, c.steps)
	}
	return res.ID, nil
}

// ---------------------------------------------------------------------------
// Watching a job

type ckKey struct {
	Step int64
	Gen  uint64
}

type genInfo struct {
	Gen       uint64
	At        time.Time // GenerationAt, the leader's clock
	Status    coordinator.JobStatus
	Members   []string
	StartStep int64
	// FromMemory: the generation resumed from its workers' memory, not
	// from a checkpoint read from disk.
	FromMemory bool
	SeenAt     time.Time
}

type leaderObs struct {
	At      time.Time
	Leaders map[string]string // coordinator -> the leader it names ("" none, "?" unreachable)
}

// tracker polls a job and the coordinators' /readyz, and keeps everything
// seen: every progress report, every committed checkpoint (with when it was
// first seen committed), every generation.
type tracker struct {
	c      *cluster
	job    string
	cancel context.CancelFunc
	done   chan struct{}

	mu        sync.Mutex
	last      coordinator.Job
	lastAt    time.Time
	polls     int
	pollErrs  int
	points    map[ckKey]coordinator.ProgressPoint // by (step, generation)
	committed map[ckKey]checkpoint.Manifest
	firstSeen map[ckKey]time.Time
	gens      map[uint64]genInfo
	leaders   []leaderObs
}

func (c *cluster) track(job string) *tracker {
	ctx, cancel := context.WithCancel(context.Background())
	tr := &tracker{c: c, job: job, cancel: cancel, done: make(chan struct{}),
		points: map[ckKey]coordinator.ProgressPoint{}, committed: map[ckKey]checkpoint.Manifest{},
		firstSeen: map[ckKey]time.Time{}, gens: map[uint64]genInfo{}}
	go tr.loop(ctx)
	return tr
}

func (tr *tracker) stop() {
	tr.cancel()
	<-tr.done
}

func (tr *tracker) loop(ctx context.Context) {
	defer close(tr.done)
	tick := time.NewTicker(150 * time.Millisecond)
	defer tick.Stop()
	for {
		tr.pollOnce()
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func (tr *tracker) pollOnce() {
	// The leaders every coordinator names, in parallel.
	obs := leaderObs{At: time.Now(), Leaders: map[string]string{}}
	var wg sync.WaitGroup
	var omu sync.Mutex
	for _, co := range coordinators {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, ok := tr.c.readyz(co)
			l := "?"
			if ok {
				l = r.Leader
			}
			omu.Lock()
			obs.Leaders[co] = l
			omu.Unlock()
		}()
	}
	var j coordinator.Job
	err := tr.c.get("/v1/jobs/"+tr.job, &j)
	wg.Wait()
	now := time.Now()

	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.polls++
	tr.leaders = append(tr.leaders, obs)
	if err != nil {
		tr.pollErrs++
		return
	}
	tr.last, tr.lastAt = j, now
	for _, p := range j.Recent {
		k := ckKey{p.Step, p.Generation}
		if _, ok := tr.points[k]; !ok {
			tr.points[k] = p
		}
	}
	record := func(m checkpoint.Manifest) {
		k := ckKey{m.Step, m.Generation}
		if _, ok := tr.committed[k]; !ok {
			tr.committed[k] = m
			tr.firstSeen[k] = now
		}
	}
	if j.Checkpoint != nil {
		record(*j.Checkpoint)
	}
	for _, m := range j.Retained {
		record(m)
	}
	if _, ok := tr.gens[j.Generation]; !ok && j.Generation > 0 {
		tr.gens[j.Generation] = genInfo{Gen: j.Generation, At: j.GenerationAt, Status: j.Status,
			Members: slices.Clone(j.Members), StartStep: j.StartStep, FromMemory: j.ResumeMemory != nil, SeenAt: now}
	}
}

func (tr *tracker) snapshot() coordinator.Job {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return tr.last
}

// waitFor polls the tracker's state until cond holds.
func (tr *tracker) waitFor(timeout time.Duration, what string, cond func(tr *tracker) bool) error {
	deadline := time.Now().Add(timeout)
	for {
		tr.mu.Lock()
		ok := cond(tr)
		last := tr.last
		tr.mu.Unlock()
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: not after %s (job %s: %s, step %d/%d, generation %d)", what, timeout,
				tr.job, last.Status, last.Ledger.StepsDone, last.Ledger.TotalSteps, last.Generation)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// progressAfter is the first progress report applied after t (by the
// leader's clock) that shows training went on: from a later generation
// than gen, or past step.
func (tr *tracker) progressAfter(t time.Time, gen uint64, step int64) (coordinator.ProgressPoint, bool) {
	var best coordinator.ProgressPoint
	found := false
	for _, p := range tr.points {
		if !p.At.After(t) || !(p.Generation > gen || p.Step > step) {
			continue
		}
		if !found || p.At.Before(best.At) {
			best, found = p, true
		}
	}
	return best, found
}

// maxGap is the longest time after t without a progress report (the
// first one counts from t), and the step reported before it.
func (tr *tracker) maxGap(t time.Time) (time.Duration, int64) {
	var at []coordinator.ProgressPoint
	for _, p := range tr.points {
		if p.At.After(t) {
			at = append(at, p)
		}
	}
	sort.Slice(at, func(i, j int) bool { return at[i].At.Before(at[j].At) })
	prev, prevStep := t, tr.lastStepBefore(t)
	var gap time.Duration
	var step int64
	for _, p := range at {
		if d := p.At.Sub(prev); d > gap {
			gap, step = d, prevStep
		}
		prev, prevStep = p.At, p.Step
	}
	return gap, step
}

// lastStepBefore is the last step reported before t.
func (tr *tracker) lastStepBefore(t time.Time) int64 {
	var step int64
	var at time.Time
	for _, p := range tr.points {
		if p.At.Before(t) && p.At.After(at) {
			step, at = p.Step, p.At
		}
	}
	return step
}

// firstGenAfter is the first generation formed after t, optionally only
// running ones with a full world.
func (tr *tracker) firstGenAfter(t time.Time, running bool) (genInfo, bool) {
	var best genInfo
	found := false
	for _, g := range tr.gens {
		if !g.At.After(t) || (running && (g.Status == coordinator.StatusWaiting || len(g.Members) != world)) {
			continue
		}
		if !found || g.Gen < best.Gen {
			best, found = g, true
		}
	}
	return best, found
}

// newLeaderAfter is when a coordinator other than old was first named
// leader by some coordinator, after t.
func (tr *tracker) newLeaderAfter(t time.Time, old string) (time.Time, string, bool) {
	for _, o := range tr.leaders {
		if !o.At.After(t) {
			continue
		}
		for _, l := range o.Leaders {
			if l != "" && l != "?" && l != old {
				return o.At, l, true
			}
		}
	}
	return time.Time{}, "", false
}

// anyLeaderAfter is when some coordinator first named a leader after t.
func (tr *tracker) anyLeaderAfter(t time.Time) (time.Time, string, bool) {
	return tr.newLeaderAfter(t, "")
}

// ---------------------------------------------------------------------------
// Scenarios

type result struct {
	Fault    string   `json:"fault"`
	Job      string   `json:"job"`
	Pass     bool     `json:"pass"`
	Failures []string `json:"failures,omitempty"`
	// Findings are misbehaviour that did not break the checked guarantees
	// (the job still completed bit-identically); CHAOS_STRICT=1 fails them.
	Findings    []string      `json:"findings,omitempty"`
	Notes       []string      `json:"notes,omitempty"`
	JobWall     time.Duration `json:"job_wall_ns"`
	FaultAtStep int64         `json:"fault_at_step"`
	// Detect is fault → new generation formed or new leader elected.
	Detect time.Duration `json:"detect_ns"`
	// Resume is fault → first progress report after it.
	Resume time.Duration `json:"resume_ns"`
	// StepsLost is the last step reported before the fault minus the step
	// the next generation resumed from (0 when no generation had to form).
	StepsLost int64 `json:"steps_lost"`
	// LedgerRedone is (flops_spent - flops_used) / flops_per_step at the
	// end: every redone step the coordinator counted.
	LedgerRedone float64 `json:"ledger_redone_steps"`
	// MaxGap is the longest time without a progress report after the
	// fault (for the baseline: over the whole job), and the step it began at.
	MaxGap      time.Duration `json:"max_gap_ns"`
	MaxGapStep  int64         `json:"max_gap_step"`
	ResumedFrom int64         `json:"resumed_from_step"`
	Fingerprint []string      `json:"fingerprint,omitempty"`
	Checkpoints int           `json:"checkpoints_checked"`
	Probes      int           `json:"partition_probes,omitempty"`
	Detected    bool          `json:"-"`
	Resumed     bool          `json:"-"`
}

func (r *result) fail(format string, a ...any) {
	r.Failures = append(r.Failures, fmt.Sprintf(format, a...))
}

func (r *result) finding(format string, a ...any) {
	msg := fmt.Sprintf(format, a...)
	if slices.Contains(r.Findings, msg) {
		return
	}
	r.Findings = append(r.Findings, msg)
	if os.Getenv("CHAOS_STRICT") == "1" {
		r.fail("(strict) %s", msg)
	}
}

func (r *result) note(format string, a ...any) {
	r.Notes = append(r.Notes, fmt.Sprintf(format, a...))
}

// faultCtx is what a fault's injection knows and records.
type faultCtx struct {
	c          *cluster
	tr         *tracker
	r          *result
	at         time.Time // when the fault was injected
	genAtFault uint64
	oldLeader  string // leader faults
	detectAt   time.Time
}

type scenario struct {
	name    string
	trigger float64 // inject once this fraction of the steps is done
	inject  func(f *faultCtx) error
	// prepare, if set, runs right after the job was submitted.
	prepare func(f *faultCtx) error
}

var scenarios = []scenario{
	{"worker-kill", 0.35, injectWorkerKill, nil},
	{"leader-kill", 0.40, injectLeaderKill, nil},
	{"leader-partition", 0.40, injectLeaderPartition, preparePartition},
	{"restart-all", 0.45, injectRestartAll, nil},
	{"worker-bounce", 0.50, injectWorkerBounce, nil},
}

// bounceVictim is the worker the worker-bounce fault kills and restarts at once.
const bounceVictim = "w1"

// injectWorkerBounce: SIGKILL a worker and start it again at once, as a
// supervisor (Kubernetes, systemd) would: it is back before its etcd lease
// expired, so it re-registers within the coordinator's debounce.
func injectWorkerBounce(f *faultCtx) error {
	c := f.c
	at, err := c.kill(bounceVictim)
	f.at = at
	if err != nil {
		return err
	}
	if _, err := c.docker(time.Minute, "start", container(bounceVictim)); err != nil {
		return err
	}
	c.logf("killed %s and started it again %s later", bounceVictim, time.Since(at).Round(time.Millisecond))
	return f.tr.waitFor(120*time.Second, "a running generation of 3 after the bounce", func(tr *tracker) bool {
		g, ok := tr.firstGenAfter(f.at, true)
		if ok {
			if first, ok2 := tr.firstGenAfter(f.at, false); ok2 {
				f.detectAt = first.At
			} else {
				f.detectAt = g.At
			}
		}
		return ok
	})
}

// injectWorkerKill: SIGKILL a worker mid-step; once the coordinator has
// formed a generation without it, start it again.
func injectWorkerKill(f *faultCtx) error {
	c := f.c
	at, err := c.kill(victim)
	f.at = at
	if err != nil {
		return err
	}
	c.logf("killed %s (SIGKILL)", victim)
	err = f.tr.waitFor(90*time.Second, "a generation without the killed worker", func(tr *tracker) bool {
		g, ok := tr.firstGenAfter(f.at, false)
		if ok {
			f.detectAt = g.At
		}
		return ok
	})
	if err != nil {
		return err
	}
	c.logf("new generation after %s; starting %s again", f.detectAt.Sub(f.at).Round(time.Millisecond), victim)
	if _, err := c.docker(time.Minute, "start", container(victim)); err != nil {
		return err
	}
	return f.tr.waitFor(120*time.Second, "a running generation of 3 after the restart", func(tr *tracker) bool {
		_, ok := tr.firstGenAfter(f.at, true)
		return ok
	})
}

// injectLeaderKill: SIGKILL the raft leader; once another leads and the
// job made progress, start it again.
func injectLeaderKill(f *faultCtx) error {
	c := f.c
	old := c.leaderNow("")
	if old == "" {
		return errors.New("no leader to kill")
	}
	f.oldLeader = old
	at, err := c.kill(old)
	f.at = at
	if err != nil {
		return err
	}
	c.logf("killed leader %s (SIGKILL)", old)
	if err := f.tr.waitFor(60*time.Second, "a new leader", func(tr *tracker) bool {
		at, _, ok := tr.newLeaderAfter(f.at, old)
		f.detectAt = at
		return ok
	}); err != nil {
		return err
	}
	if err := f.tr.waitFor(120*time.Second, "progress under the new leader", func(tr *tracker) bool {
		_, ok := tr.progressAfter(f.at, f.genAtFault, tr.lastStepBefore(f.at))
		return ok
	}); err != nil {
		return err
	}
	c.logf("new leader %s after %s; starting %s again", c.leaderNow(old), f.detectAt.Sub(f.at).Round(time.Millisecond), old)
	if _, err := c.docker(time.Minute, "start", container(old)); err != nil {
		return err
	}
	return waitFollower(c, old)
}

// waitFollower waits until co is back and names a leader other than itself.
func waitFollower(c *cluster, co string) error {
	deadline := time.Now().Add(90 * time.Second)
	for time.Now().Before(deadline) {
		if r, ok := c.readyz(co); ok && r.Leader != "" {
			c.logf("%s is back; it names %s as leader", co, r.Leader)
			return nil
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("%s did not rejoin the raft cluster within 90s", co)
}

type probeAttempt struct {
	StartMS  int64  `json:"start_ms"`
	EndMS    int64  `json:"end_ms"`
	Isolated bool   `json:"isolated"`
	Status   int    `json:"status"`
	Body     string `json:"body"`
}

const probeName = "chaos-partition-probe"

// preparePartition puts the prober's job spec into every coordinator, so
// that the fault itself is quick.
func preparePartition(f *faultCtx) error {
	c := f.c
	probeFile := filepath.Join(c.artifacts, "probe.yaml")
	if err := os.WriteFile(probeFile, specYAML(probeName, c.budget), 0o644); err != nil {
		return err
	}
	for _, co := range coordinators {
		if _, err := c.docker(time.Minute, "cp", probeFile, container(co)+":/tmp/probe.yaml"); err != nil {
			return err
		}
	}
	return nil
}

// injectLeaderPartition: disconnect the leader from the network. From
// inside it, submissions are sent straight to its own API from the moment
// it is isolated (while it may still believe it leads) until well after a
// new leader was elected: none may succeed. Then heal the partition.
func injectLeaderPartition(f *faultCtx) error {
	c := f.c
	old := c.leaderNow("")
	if old == "" {
		return errors.New("no leader to partition")
	}
	f.oldLeader = old
	// The prober waits inside the container until its network is gone,
	// then writes to its own API again and again.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "docker", "exec", container(old), "/usr/local/bin/chaosinfra", "http",
		"--when-isolated", "--wait=60s", "--repeat-for=15s", "--interval=250ms", "--timeout=5s",
		"--tls-dir=/etc/modcoord/user-tls", "--body-file=/tmp/probe.yaml", "POST", "https://127.0.0.1:7070/v1/jobs")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return err
	}
	lines := make(chan string, 1024)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	select {
	case l := <-lines:
		if !strings.Contains(l, "waiting") {
			return fmt.Errorf("partition prober: %q %s", l, stderr.String())
		}
	case <-time.After(60 * time.Second):
		return fmt.Errorf("partition prober did not start: %s", stderr.String())
	}
	f.at = time.Now() // refined below to when the prober saw the network go
	if _, err := c.docker(time.Minute, "network", "disconnect", network, container(old)); err != nil {
		return err
	}
	c.logf("partitioned leader %s (disconnected from %s)", old, network)
	healed := false
	heal := func() error {
		if healed {
			return nil
		}
		healed = true
		_, err := c.docker(time.Minute, "network", "connect", "--alias", old, network, container(old))
		return err
	}
	defer heal()

	if err := f.tr.waitFor(60*time.Second, "a new leader", func(tr *tracker) bool {
		at, _, ok := tr.newLeaderAfter(f.at, old)
		f.detectAt = at
		return ok
	}); err != nil {
		return err
	}
	if err := f.tr.waitFor(120*time.Second, "progress under the new leader", func(tr *tracker) bool {
		_, ok := tr.progressAfter(f.at, f.genAtFault, tr.lastStepBefore(f.at))
		return ok
	}); err != nil {
		return err
	}
	c.logf("new leader %s and progress; waiting for the prober to finish", c.leaderNow(old))
	var attempts []probeAttempt
	var raw []string
	for line := range lines {
		raw = append(raw, line)
		var a probeAttempt
		var iso struct {
			IsolatedMS int64 `json:"isolated_ms"`
		}
		switch {
		case json.Unmarshal([]byte(line), &iso) == nil && iso.IsolatedMS > 0:
			f.at = time.UnixMilli(iso.IsolatedMS)
		case json.Unmarshal([]byte(line), &a) == nil && a.StartMS > 0:
			attempts = append(attempts, a)
		}
	}
	if err := cmd.Wait(); err != nil {
		f.r.fail("partition prober: %v: %s", err, stderr.String())
	}
	f.tr.mu.Lock()
	f.detectAt, _, _ = f.tr.newLeaderAfter(f.at, old)
	f.tr.mu.Unlock()
	f.r.Probes = len(attempts)
	if len(attempts) == 0 {
		f.r.fail("the partitioned leader was never probed (prober output: %q)", strings.Join(raw, "\n"))
		return heal()
	}
	statuses := map[int]int{}
	for i, a := range attempts {
		statuses[a.Status]++
		if a.Status >= 200 && a.Status < 300 {
			f.r.fail("the partitioned old leader %s ACCEPTED a write %dms after the partition: %d %s", old,
				a.StartMS-f.at.UnixMilli(), a.Status, a.Body)
		}
		if !a.Isolated {
			f.r.fail("probe %d ran while %s was connected", i, old)
		}
	}
	first := attempts[0]
	f.r.note("partition probes: %d writes sent to the isolated old leader's own API, statuses %v; the first, %dms after isolation, took %dms: %d %s",
		len(attempts), statuses, first.StartMS-f.at.UnixMilli(), first.EndMS-first.StartMS, first.Status, oneLine(first.Body))
	if err := heal(); err != nil {
		return err
	}
	c.logf("healed the partition of %s", old)
	return waitFollower(c, old)
}

// injectRestartAll: stop every container at once (SIGTERM, then SIGKILL
// after 10 s), then start them again: etcd and NATS first, then the rest.
func injectRestartAll(f *faultCtx) error {
	c := f.c
	var names []string
	for _, svc := range allServices {
		names = append(names, container(svc))
	}
	f.at = time.Now()
	if _, err := c.docker(2*time.Minute, append([]string{"stop", "-t", "10"}, names...)...); err != nil {
		return err
	}
	stopped := time.Now()
	c.logf("stopped all %d containers in %s", len(names), stopped.Sub(f.at).Round(time.Millisecond))
	// The fault is when the first process exited: the cluster started to
	// go down then (the stop signals reach the containers one by one).
	issued := f.at
	if first := c.firstExit(issued); !first.IsZero() {
		f.at = first
	}
	if err := c.startAll(); err != nil {
		return err
	}
	started := time.Now()
	c.logf("started all again %s after the stop", started.Sub(f.at).Round(time.Millisecond))
	defer func() {
		f.tr.mu.Lock()
		defer f.tr.mu.Unlock()
		f.r.note("restart: docker stop took %s (the first container exited %s after it was issued); everything was started again %s after the first exit",
			stopped.Sub(issued).Round(time.Millisecond), f.at.Sub(issued).Round(time.Millisecond), started.Sub(f.at).Round(time.Millisecond))
		if at, l, ok := f.tr.anyLeaderAfter(started); ok {
			f.r.note("leader %s elected %s after the coordinators were started", l, at.Sub(started).Round(time.Millisecond))
		}
	}()
	// Either a new generation forms, or the workers go on in the old one
	// (they came back before the coordinators noticed them gone).
	return f.tr.waitFor(4*time.Minute, "a running generation of 3, or progress, after the restart", func(tr *tracker) bool {
		if first, ok := tr.firstGenAfter(f.at, false); ok {
			f.detectAt = first.At
		} else if at, _, ok := tr.anyLeaderAfter(started); ok {
			f.detectAt = at
		}
		_, formed := tr.firstGenAfter(f.at, true)
		_, progressed := tr.progressAfter(f.at, f.genAtFault, tr.lastStepBefore(f.at))
		return formed || progressed || tr.last.Status.Terminal()
	})
}

// ---------------------------------------------------------------------------
// Running a job, with or without a fault, and checking it

type fingerprint []checkpoint.ShardInfo

func (fp fingerprint) Lines() []string {
	var out []string
	for _, s := range fp {
		out = append(out, fmt.Sprintf("rank %d [%d,%d) %s", s.Rank, s.Lo, s.Hi, s.DataSHA256))
	}
	return out
}

func sameFingerprint(a, b fingerprint) bool {
	return slices.EqualFunc(a, b, func(x, y checkpoint.ShardInfo) bool {
		return x.Rank == y.Rank && x.Lo == y.Lo && x.Hi == y.Hi && x.DataSHA256 == y.DataSHA256
	})
}

// runJob submits a job, injects the fault once the trigger step is reached
// (sc nil: no fault), waits for the job to end and checks it.
func (c *cluster) runJob(name string, sc *scenario, baseline fingerprint) (*result, fingerprint) {
	r := &result{Fault: name}
	if sc == nil {
		r.Fault = "none (baseline)"
	}
	if err := c.ensureHealthy(); err != nil {
		r.fail("cluster not healthy before the job: %v", err)
		return r, nil
	}
	id, err := c.submit("chaos-" + name)
	if err != nil {
		r.fail("%v", err)
		return r, nil
	}
	r.Job = id
	t0 := time.Now()
	c.logf("%s: submitted %s", name, id)
	tr := c.track(id)
	defer tr.stop()

	f := &faultCtx{c: c, tr: tr, r: r}
	if sc != nil && sc.prepare != nil {
		if err := sc.prepare(f); err != nil {
			r.fail("prepare %s: %v", name, err)
		}
	}
	if sc != nil {
		trigger := int64(sc.trigger*float64(c.steps))/ckptEvery*ckptEvery + ckptEvery/2 + 1
		err := tr.waitFor(5*time.Minute, fmt.Sprintf("step %d", trigger), func(tr *tracker) bool {
			j := tr.last
			return j.Status.Terminal() || (j.Status == coordinator.StatusRunning && len(j.Members) == world && j.Ledger.StepsDone >= trigger)
		})
		if err != nil {
			r.fail("%v", err)
			return r, nil
		}
		pre := tr.snapshot()
		if pre.Status.Terminal() {
			r.fail("the job ended (%s) before step %d: raise CHAOS_STEPS", pre.Reason, trigger)
			return r, nil
		}
		f.genAtFault = pre.Generation
		c.logf("%s: injecting at step ~%d (generation %d, last commit step %d)", name, pre.Ledger.StepsDone, pre.Generation, ckStep(pre.Checkpoint))
		if err := sc.inject(f); err != nil {
			r.fail("inject %s: %v", name, err)
		}
	}
	err = tr.waitFor(6*time.Minute, "the job to end", func(tr *tracker) bool { return tr.last.Status.Terminal() })
	tr.stop()
	tr.pollOnce() // the final state, after the tracker stopped
	final := tr.snapshot()
	r.JobWall = time.Since(t0)
	if err != nil {
		r.fail("%v", err)
		return r, nil
	}
	c.logf("%s: %s %s in %s", name, id, final.Reason, r.JobWall.Round(100*time.Millisecond))

	// The job ran every step and its last checkpoint is the last step.
	if final.Status != coordinator.StatusCompleted {
		r.fail("job %s: %s", id, final.Reason)
	}
	if final.Ledger.StepsDone != c.steps || final.Ledger.TotalSteps != c.steps {
		r.fail("steps done %d of %d, want %d", final.Ledger.StepsDone, final.Ledger.TotalSteps, c.steps)
	}
	var fp fingerprint
	if final.Checkpoint == nil || final.Checkpoint.Step != c.steps || final.Checkpoint.World != world {
		r.fail("final checkpoint %+v, want step %d of world %d", ckSummary(final.Checkpoint), c.steps, world)
	} else {
		fp = fingerprint(final.Checkpoint.Shards)
		r.Fingerprint = fp.Lines()
		if baseline != nil && !sameFingerprint(fp, baseline) {
			r.fail("final state differs from the undisturbed run's:\n  got  %s\n  want %s",
				strings.Join(fp.Lines(), "\n       "), strings.Join(baseline.Lines(), "\n       "))
		}
	}
	r.LedgerRedone = (final.Ledger.FLOPsSpent - final.Ledger.FLOPsUsed) / final.Ledger.FLOPsPerStep

	tr.mu.Lock()
	if sc == nil {
		var firstAt time.Time
		for _, p := range tr.points {
			if firstAt.IsZero() || p.At.Before(firstAt) {
				firstAt = p.At
			}
		}
		r.MaxGap, r.MaxGapStep = tr.maxGap(firstAt)
	}
	committed := make([]checkpoint.Manifest, 0, len(tr.committed))
	firstSeen := map[ckKey]time.Time{}
	for k, m := range tr.committed {
		committed = append(committed, m)
		firstSeen[k] = tr.firstSeen[k]
	}
	gens := cloneGens(tr.gens)
	r.note("%d polls (%d failed), %d generations, %d progress reports seen", tr.polls, tr.pollErrs, len(tr.gens), len(tr.points))
	tr.mu.Unlock()

	starts := c.checkWorkerLogs(r, id, t0, gens, committed, firstSeen)
	if sc != nil && !f.at.IsZero() {
		tr.mu.Lock()
		c.measure(f, final, starts)
		tr.mu.Unlock()
	}
	c.checkCheckpoints(r, final, committed, firstSeen, f.at)
	if name == "leader-partition" {
		c.checkNoProbeJob(r)
	}
	r.Pass = len(r.Failures) == 0
	return r, fp
}

func cloneGens(m map[uint64]genInfo) map[uint64]genInfo {
	out := make(map[uint64]genInfo, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func ckStep(m *checkpoint.Manifest) int64 {
	if m == nil {
		return 0
	}
	return m.Step
}

func ckSummary(m *checkpoint.Manifest) string {
	if m == nil {
		return "none"
	}
	return fmt.Sprintf("step %d generation %d world %d", m.Step, m.Generation, m.World)
}

func oneLine(s string) string {
	return truncate(strings.Join(strings.Fields(s), " "), 160)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// measure computes detection, resumption and lost work. tr.mu is held.
func (c *cluster) measure(f *faultCtx, final coordinator.Job, starts []trainStart) {
	tr, r := f.tr, f.r
	// The last step reported before the fault. When a new generation had
	// to form, everything the old one still reported until then counts
	// (a graceful stop, or a report in flight as a worker died).
	last := tr.lastStepBefore(f.at)
	if g, ok := tr.firstGenAfter(f.at, false); ok {
		for _, p := range tr.points {
			if p.Generation == f.genAtFault && p.At.Before(g.At) && p.Step > last {
				last = p.Step
			}
		}
	}
	r.FaultAtStep = last
	r.MaxGap, r.MaxGapStep = tr.maxGap(f.at)
	if !f.detectAt.IsZero() {
		r.Detect, r.Detected = f.detectAt.Sub(f.at), true
	} else if g, ok := tr.firstGenAfter(f.at, false); ok {
		r.Detect, r.Detected = g.At.Sub(f.at), true
	} else {
		r.fail("no new generation and no new leader seen after the fault")
	}
	if p, ok := tr.progressAfter(f.at, f.genAtFault, last); ok {
		r.Resume, r.Resumed = p.At.Sub(f.at), true
		r.note("first progress after the fault: step %d of generation %d", p.Step, p.Generation)
	} else {
		r.fail("no progress seen after the fault")
	}
	// The work lost is what the next generation had to redo.
	var lastCommitBefore int64
	for k := range tr.committed {
		if tr.firstSeen[k].Before(f.at) && k.Step > lastCommitBefore {
			lastCommitBefore = k.Step
		}
	}
	if g, ok := tr.firstGenAfter(f.at, true); ok {
		r.ResumedFrom = g.StartStep
		r.StepsLost = max(0, last-g.StartStep)
		r.note("generation %d (%v) resumed from step %d; last commit seen before the fault: step %d",
			g.Gen, g.Members, g.StartStep, lastCommitBefore)
		if g.StartStep < lastCommitBefore {
			r.fail("generation %d resumed from step %d, older than step %d committed before the fault: a committed checkpoint was lost",
				g.Gen, g.StartStep, lastCommitBefore)
		}
	} else {
		// No generation formed; did restarted workers start training again?
		r.ResumedFrom = -1
		for _, st := range starts {
			if st.From >= 0 && st.At.After(f.at) && (r.ResumedFrom < 0 || st.From < r.ResumedFrom) {
				r.ResumedFrom = st.From
			}
		}
		if r.ResumedFrom >= 0 {
			r.StepsLost = max(0, last-r.ResumedFrom)
			r.note("no new generation formed, but workers started generation %d again, from step %d (last commit seen before the fault: step %d)",
				final.Generation, r.ResumedFrom, lastCommitBefore)
		} else {
			r.note("no new generation formed: the workers trained on (generation %d)", final.Generation)
		}
		if final.Generation != f.genAtFault {
			r.note("the job ended in generation %d, not %d", final.Generation, f.genAtFault)
		}
	}
	if r.ResumedFrom >= 0 && float64(r.StepsLost) > r.LedgerRedone+0.5 {
		r.finding("%d steps were redone but the ledger counts %.0f: flops_spent misses the replayed steps (their progress reports were refused as stale)",
			r.StepsLost, r.LedgerRedone)
	}
	if f.oldLeader != "" && r.MaxGap > leaderStallLimit {
		r.finding("after the %s the job made no progress for %s (from step %d) although a new leader was named %s after the fault: "+
			"the workers' API requests to the lost coordinator hang until the client's timeout (see the workers' \"checkpoint round abandoned\" lines)",
			r.Fault, r.MaxGap.Round(100*time.Millisecond), r.MaxGapStep, r.Detect.Round(100*time.Millisecond))
	}
	if g, ok := tr.firstGenAfter(f.at, false); ok && f.oldLeader != "" {
		// Losing a coordinator should not disturb the workers.
		why := "no worker logged a failure"
		for _, st := range starts {
			if st.Failed != "" && st.At.After(f.at) {
				why = fmt.Sprintf("%s: %s", st.Worker, truncate(st.Failed, 300))
				break
			}
		}
		r.finding("the %s broke the workers' generation (generation %d formed %s after the fault; %d steps redone): %s",
			r.Fault, g.Gen, g.At.Sub(f.at).Round(100*time.Millisecond), r.StepsLost, why)
	}
	if f.oldLeader != "" {
		if at, l, ok := tr.newLeaderAfter(f.at, f.oldLeader); ok {
			r.note("old leader %s, new leader %s after %s", f.oldLeader, l, at.Sub(f.at).Round(time.Millisecond))
		} else if at, l, ok := tr.anyLeaderAfter(f.at); ok {
			r.note("old leader %s, leader %s after %s", f.oldLeader, l, at.Sub(f.at).Round(time.Millisecond))
		}
	}
}

type verifyResult struct {
	Step        int64    `json:"step"`
	Generation  uint64   `json:"generation"`
	OK          bool     `json:"ok"`
	HasManifest bool     `json:"has_manifest"`
	Problems    []string `json:"problems"`
}

// checkCheckpoints: every checkpoint seen committed is either still
// retained, with its files intact (present, recorded size, header and data
// checksums), or was dropped by retention after keep_checkpoints newer
// commits.
func (c *cluster) checkCheckpoints(r *result, final coordinator.Job, committed []checkpoint.Manifest, firstSeen map[ckKey]time.Time, faultAt time.Time) {
	retained := map[ckKey]bool{}
	for _, m := range final.Retained {
		retained[ckKey{m.Step, m.Generation}] = true
	}
	if n := len(final.Retained); n == 0 || final.Checkpoint == nil ||
		final.Retained[n-1].Step != final.Checkpoint.Step || final.Retained[n-1].Generation != final.Checkpoint.Generation {
		r.fail("the last retained checkpoint is not the committed one")
	}
	if len(final.Retained) > keepCkpts {
		r.fail("%d checkpoints retained, keep_checkpoints is %d", len(final.Retained), keepCkpts)
	}
	sort.Slice(committed, func(i, j int) bool { return committed[i].Step < committed[j].Step })
	for _, m := range committed {
		k := ckKey{m.Step, m.Generation}
		if retained[k] {
			continue
		}
		newer := 0
		for _, n := range final.Retained {
			if n.Step > m.Step {
				newer++
			}
		}
		if newer < keepCkpts {
			when := "after"
			if firstSeen[k].Before(faultAt) {
				when = "before"
			}
			r.fail("checkpoint step %d generation %d, seen committed %s the fault, is gone but only %d newer ones are retained",
				m.Step, m.Generation, when, newer)
		}
	}
	// The retained ones must verify on the shared volume.
	in, _ := json.Marshal(final.Retained)
	cmd := exec.Command("docker", "run", "--rm", "-i", "--network", "none", "-v", ckptVol+":/checkpoints:ro",
		"--entrypoint", "/usr/local/bin/chaosinfra", c.image, "verify", "--root", "/checkpoints")
	cmd.Stdin = bytes.NewReader(in)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		r.fail("verify checkpoints: %v: %s", err, stderr.String())
		return
	}
	var vr []verifyResult
	if err := json.Unmarshal(out, &vr); err != nil {
		r.fail("verify checkpoints: %v: %s", err, out)
		return
	}
	r.Checkpoints = len(vr)
	noManifest := 0
	for _, v := range vr {
		if !v.OK {
			r.fail("retained checkpoint step %d generation %d is damaged: %s", v.Step, v.Generation, strings.Join(v.Problems, "; "))
		}
		if !v.HasManifest {
			noManifest++
		}
	}
	r.note("%d committed checkpoints seen; the %d retained verify (shard files, sizes, checksums)", len(committed), len(vr))
	if noManifest > 0 {
		r.note("%d retained checkpoints have no MANIFEST.json on disk (the committing rank died before writing it)", noManifest)
	}
}

// checkWorkerLogs reads the workers' logs for the job: every generation
// must start from the step the coordinator recorded for it; no worker may
// fall back to an older checkpoint because a committed one was damaged;
// and no worker should start training a generation from a step older than
// a checkpoint committed before it started (it would redo committed work:
// a finding, see CHAOS_STRICT).
func (c *cluster) checkWorkerLogs(r *result, job string, since time.Time, gens map[uint64]genInfo,
	committed []checkpoint.Manifest, firstSeen map[ckKey]time.Time) []trainStart {
	var found []trainStart
	type key struct {
		worker string
		gen    uint64
	}
	starts := map[key]int{}
	abandoned := 0
	for _, w := range workers {
		out, err := c.docker(time.Minute, "logs", "--since", since.Add(-time.Second).Format(time.RFC3339Nano), container(w))
		if err != nil {
			r.note("logs of %s: %v", w, err)
			continue
		}
		for _, line := range strings.Split(out, "\n") {
			if !strings.Contains(line, job) {
				continue
			}
			var e struct {
				Time     time.Time `json:"time"`
				Msg      string    `json:"msg"`
				Job      string    `json:"job"`
				Gen      uint64    `json:"generation"`
				FromStep *int64    `json:"from_step"`
			}
			if json.Unmarshal([]byte(line), &e) != nil || e.Job != job {
				continue
			}
			switch e.Msg {
			case "checkpoint damaged; falling back to an older one":
				r.fail("%s fell back from a damaged committed checkpoint: %s", w, truncate(line, 300))
			case "checkpoint round abandoned":
				abandoned++
			case "generation failed":
				var ef struct {
					Err string `json:"err"`
				}
				_ = json.Unmarshal([]byte(line), &ef)
				found = append(found, trainStart{Worker: w, Gen: e.Gen, From: -1, At: e.Time, Failed: ef.Err})
			case "training":
				starts[key{w, e.Gen}]++
				if e.FromStep == nil {
					continue
				}
				found = append(found, trainStart{Worker: w, Gen: e.Gen, From: *e.FromStep, At: e.Time})
				if g, ok := gens[e.Gen]; ok && *e.FromStep != g.StartStep {
					r.fail("%s trained generation %d from step %d, the coordinator says it resumed from %d", w, e.Gen, *e.FromStep, g.StartStep)
				}
				// The newest checkpoint committed well before this start.
				var newest int64
				for _, m := range committed {
					if t, ok := firstSeen[ckKey{m.Step, m.Generation}]; ok && t.Before(e.Time.Add(-time.Second)) && m.Step > newest {
						newest = m.Step
					}
				}
				if newest > *e.FromStep {
					r.finding("%s started training generation %d from step %d at %s although step %d had been committed before: "+
						"a restarted worker rejoined a generation formed before its restart and replays it from that generation's start "+
						"(the coordinator never saw it leave: it re-registered within the debounce)",
						w, e.Gen, *e.FromStep, e.Time.Format("15:04:05.000"), newest)
				}
			}
		}
	}
	for k, n := range starts {
		if n > 1 {
			r.note("%s started generation %d %d times (it restarted and re-ran a generation it had begun)", k.worker, k.gen, n)
		}
	}
	if abandoned > 0 {
		r.note("%d checkpoint shard reports were abandoned (their round was overtaken by a later one; not a lost commit)", abandoned)
	}
	return found
}

// trainStart is a worker's "training" log line: it began a generation
// (From: the step), or its "generation failed" line (From -1, Failed: why).
type trainStart struct {
	Worker string
	Gen    uint64
	From   int64
	At     time.Time
	Failed string
}

func (c *cluster) checkNoProbeJob(r *result) {
	var list coordinator.JobList
	if err := c.get("/v1/jobs", &list); err != nil {
		r.fail("list jobs after the partition: %v", err)
		return
	}
	for _, j := range list.Jobs {
		if j.Spec.Name == probeName {
			r.fail("a submission sent to the partitioned old leader exists after healing: %s (%s)", j.ID, j.Status)
		}
	}
}

// ---------------------------------------------------------------------------

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func TestChaos(t *testing.T) {
	suiteStart := time.Now()
	c := startCluster(t)

	var results []*result
	base, baseFP := c.runJob("baseline", nil, nil)
	results = append(results, base)
	if !base.Pass || baseFP == nil {
		c.report(results, suiteStart)
		t.Fatalf("the undisturbed run failed: %s", strings.Join(base.Failures, "\n"))
	}
	want := map[string]bool{}
	for _, f := range strings.Split(os.Getenv("CHAOS_FAULTS"), ",") {
		if f = strings.TrimSpace(f); f != "" {
			want[f] = true
		}
	}
	for i := range scenarios {
		sc := &scenarios[i]
		if len(want) > 0 && !want[sc.name] {
			continue
		}
		r, _ := c.runJob(sc.name, sc, baseFP)
		results = append(results, r)
		if !r.Pass {
			t.Errorf("%s: %s", sc.name, strings.Join(r.Failures, "\n  "))
			c.saveLogs("compose-after-" + sc.name + ".log")
		}
	}
	c.report(results, suiteStart)
}

func (c *cluster) report(results []*result, start time.Time) {
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "FAULT\tJOB\tAT STEP\tDETECT\tRESUME\tSTEPS LOST\tREDONE (LEDGER)\tRESUMED FROM\tMAX GAP (AT STEP)\tJOB WALL\tRESULT")
	for _, r := range results {
		d, rs, lost, from, at := "-", "-", "-", "-", "-"
		if r.Detected {
			d = r.Detect.Round(10 * time.Millisecond).String()
		}
		if r.Resumed {
			rs = r.Resume.Round(10 * time.Millisecond).String()
		}
		if r.Fault != "none (baseline)" {
			lost = strconv.FormatInt(r.StepsLost, 10)
			at = strconv.FormatInt(r.FaultAtStep, 10)
			if r.ResumedFrom >= 0 {
				from = strconv.FormatInt(r.ResumedFrom, 10)
			} else {
				from = "(same gen)"
			}
		}
		res := "PASS"
		if len(r.Findings) > 0 {
			res = fmt.Sprintf("PASS, %d finding(s)", len(r.Findings))
		}
		if !r.Pass {
			res = "FAIL"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%.0f\t%s\t%s (%d)\t%s\t%s\n", r.Fault, r.Job, at, d, rs, lost, r.LedgerRedone, from,
			r.MaxGap.Round(10*time.Millisecond), r.MaxGapStep, r.JobWall.Round(100*time.Millisecond), res)
	}
	tw.Flush()
	fmt.Fprintf(&b, "\nsuite wall time %s; %d steps per job\n", time.Since(start).Round(time.Second), c.steps)
	for _, r := range results {
		fmt.Fprintf(&b, "\n%s (%s):\n", r.Fault, r.Job)
		for _, n := range r.Notes {
			fmt.Fprintf(&b, "  - %s\n", n)
		}
		for _, f := range r.Findings {
			fmt.Fprintf(&b, "  * FINDING: %s\n", f)
		}
		for _, f := range r.Failures {
			fmt.Fprintf(&b, "  ! FAIL: %s\n", f)
		}
		if len(r.Fingerprint) > 0 {
			fmt.Fprintf(&b, "  final state: %s\n", strings.Join(r.Fingerprint, "; "))
		}
	}
	fmt.Println("\n=== chaos suite report ===\n" + b.String())
	if js, err := json.MarshalIndent(results, "", "  "); err == nil {
		_ = os.WriteFile(filepath.Join(c.artifacts, "report.json"), js, 0o644)
	}
	_ = os.WriteFile(filepath.Join(c.artifacts, "report.txt"), []byte(b.String()), 0o644)
}
