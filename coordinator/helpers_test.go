package coordinator

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"

	"github.com/modcoord/modcoord/mod"
	"github.com/modcoord/modcoord/pki"
)

// testLogger discards logs unless MODCOORD_TEST_LOG is set.
func testLogger() *slog.Logger {
	if os.Getenv("MODCOORD_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// startEtcd runs a single-member embedded etcd on random loopback ports.
func startEtcd(t *testing.T) *clientv3.Client {
	t.Helper()
	cfg := embed.NewConfig()
	cfg.Dir = filepath.Join(t.TempDir(), "etcd")
	cfg.LogLevel = "panic" // shutdown logs "server closed" at error level
	u, _ := url.Parse("http://127.0.0.1:0")
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*u}, []url.URL{*u}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*u}, []url.URL{*u}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.UnsafeNoFsync = true
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		t.Fatalf("start etcd: %v", err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(30 * time.Second):
		e.Close()
		t.Fatal("etcd did not become ready")
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{e.Clients[0].Addr().String()}, DialTimeout: 5 * time.Second, Logger: nil})
	if err != nil {
		e.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cli.Close()
		e.Close()
	})
	return cli
}

// testCluster is n coordinators on loopback, each in its own temp dir.
type testCluster struct {
	t      *testing.T
	coords []*Coordinator // nil once killed
	cfgs   []Config
	// pki is the cluster's CA and certificates: the API always uses
	// them, raft unless plainRaft.
	pki *pki.Local
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// testPKI makes a throwaway CA and role certificates for loopback in a
// temp dir.
func testPKI(t testing.TB) *pki.Local {
	t.Helper()
	l, err := pki.EnsureDir(filepath.Join(t.TempDir(), "pki"), pki.EnsureOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func testCreds(t testing.TB, l *pki.Local, role pki.Role) *pki.Credentials {
	t.Helper()
	c, err := l.Credentials(role)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// clusterOptions vary startCluster.
type clusterOptions struct {
	// plainRaft runs raft without TLS (only to show what TLS prevents).
	plainRaft bool
}

// startCluster starts n bootstrapping coordinators whose raft link is
// mutual TLS. Ports are reserved by opening the listeners first, so the
// peer list is known before any node starts.
func startCluster(t *testing.T, n int, etcd *clientv3.Client, cluster string) *testCluster {
	t.Helper()
	return startClusterWith(t, n, etcd, cluster, clusterOptions{})
}

func startClusterWith(t *testing.T, n int, etcd *clientv3.Client, cluster string, opts clusterOptions) *testCluster {
	t.Helper()
	local := testPKI(t)
	creds := testCreds(t, local, pki.RoleCoordinator)
	raftCreds := creds
	if opts.plainRaft {
		raftCreds = nil
	}
	var peers []Peer
	var raftLns, apiLns, opsLns []net.Listener
	for i := range n {
		r, a := listen(t), listen(t)
		raftLns, apiLns, opsLns = append(raftLns, r), append(apiLns, a), append(opsLns, listen(t))
		peers = append(peers, Peer{ID: fmt.Sprintf("c%d", i), RaftAddr: r.Addr().String(), APIAddr: "https://" + a.Addr().String()})
	}
	tc := &testCluster{t: t, pki: local}
	dir := t.TempDir()
	for i := range n {
		cfg := Config{
			Node: NodeConfig{
				ID: peers[i].ID, RaftListener: raftLns[i], DataDir: filepath.Join(dir, peers[i].ID),
				Peers: peers, Bootstrap: true, RaftLog: io.Discard,
				RaftTLS: raftCreds, InsecurePlainRaft: opts.plainRaft,
				Timing: RaftTiming{HeartbeatTimeout: 300 * time.Millisecond, ElectionTimeout: 300 * time.Millisecond,
					LeaderLeaseTimeout: 150 * time.Millisecond, CommitTimeout: 10 * time.Millisecond},
			},
			APIListener: apiLns[i],
			OpsListener: opsLns[i],
			TLS:         creds,
			Cluster:     cluster,
			Etcd:        etcd,
			Debounce:    200 * time.Millisecond,
			Resync:      500 * time.Millisecond,
			Logger:      testLogger(),
		}
		c, err := Start(cfg)
		if err != nil {
			t.Fatalf("start coordinator %d: %v", i, err)
		}
		tc.coords = append(tc.coords, c)
		tc.cfgs = append(tc.cfgs, cfg)
	}
	t.Cleanup(func() {
		for _, c := range tc.coords {
			if c != nil {
				c.Close()
			}
		}
	})
	return tc
}

// leader waits for one of the live coordinators to lead and returns its index.
func (tc *testCluster) leader() int {
	tc.t.Helper()
	var idx int
	waitFor(tc.t, 20*time.Second, "a raft leader", func() bool {
		for i, c := range tc.coords {
			if c != nil && c.Node().IsLeader() {
				idx = i
				return true
			}
		}
		return false
	})
	return idx
}

// follower returns a live coordinator that is not i.
func (tc *testCluster) follower(i int) int {
	for j, c := range tc.coords {
		if j != i && c != nil {
			return j
		}
	}
	tc.t.Fatal("no live follower")
	return -1
}

func (tc *testCluster) kill(i int) {
	tc.t.Helper()
	if err := tc.coords[i].Close(); err != nil {
		tc.t.Logf("close coordinator %d: %v", i, err)
	}
	tc.coords[i] = nil
}

func (tc *testCluster) urls() []string {
	var out []string
	for _, cfg := range tc.cfgs {
		p, _ := findPeer(cfg.Node.Peers, cfg.Node.ID)
		out = append(out, p.APIAddr)
	}
	return out
}

// client is a user's API client (submit, cancel, read) for urls (default:
// every coordinator).
func (tc *testCluster) client(urls ...string) *Client {
	tc.t.Helper()
	return tc.clientAs(pki.RoleUser, urls...)
}

// workerClient is a worker's API client (progress, shards, complete, fail).
func (tc *testCluster) workerClient(urls ...string) *Client {
	tc.t.Helper()
	return tc.clientAs(pki.RoleWorker, urls...)
}

func (tc *testCluster) clientAs(role pki.Role, urls ...string) *Client {
	tc.t.Helper()
	if len(urls) == 0 {
		urls = tc.urls()
	}
	conf, err := ClientTLS(testCreds(tc.t, tc.pki, role))
	if err != nil {
		tc.t.Fatal(err)
	}
	c, err := NewClient(urls, conf, WithRetries(12, 50*time.Millisecond))
	if err != nil {
		tc.t.Fatal(err)
	}
	return c
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitJob polls the API until the job satisfies cond.
func waitJob(t *testing.T, c *Client, id, what string, cond func(Job) bool) Job {
	t.Helper()
	var j Job
	waitFor(t, 20*time.Second, what, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		var err error
		j, err = c.Job(ctx, id)
		return err == nil && cond(j)
	})
	return j
}

func registerWorker(t *testing.T, cli *clientv3.Client, cluster, id string) *Registration {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := Register(ctx, cli, cluster, WorkerInfo{ID: id, Host: "localhost", StartedAt: time.Now()}, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// smallSpec is a valid spec YAML with a budget of exactly steps steps (+half a step).
func smallSpec(t testing.TB, name string, minW, maxW, batch int, steps float64) []byte {
	t.Helper()
	model := mod.Config{DModel: 32, Layers: 2, Heads: 2, SeqLen: 16}.WithDefaults()
	fps := model.TrainFLOPs(batch).Total()
	return fmt.Appendf(nil, `name: %s
data: testdata/job.yaml
model: {d_model: 32, layers: 2, heads: 2, seq_len: 16}
batch: %d
budget_flops: %v
min_workers: %d
max_workers: %d
checkpoint_every: 10
keep_checkpoints: 2
`, name, batch, fps*steps, minW, maxW)
}

// readValidSpec is the example spec the fsm tests start from.
func readValidSpec(t testing.TB) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/job.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return b
}
