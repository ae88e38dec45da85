package local

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"

	"github.com/modcoord/modcoord/allreduce"
	"github.com/modcoord/modcoord/coordinator"
	"github.com/modcoord/modcoord/pki"
	"github.com/modcoord/modcoord/train"
	"github.com/modcoord/modcoord/worker"
)

// Options size the cluster.
type Options struct {
	Dir          string // state directory (raft, etcd, checkpoints); created if missing
	Coordinators int    // default 3
	Workers      int    // default 2
	LeaseTTL     time.Duration
	RingDeadline time.Duration
	HangTimeout  time.Duration // worker.Options.HangTimeout
	Log          *slog.Logger  // default: discard
	// DataRoot is the workers' data root (worker.Options.DataRoot); empty:
	// the working directory, where the coordinators also check a job's data.
	DataRoot string
	// OnStep is passed to every worker (see worker.Options).
	OnStep func(worker, job string, generation uint64, rank int, res train.StepResult)
	// OnTrainer is passed to every worker (see worker.Options).
	OnTrainer func(worker, job string, generation uint64, rank int, tr *train.Trainer)
}

// Cluster is a running in-process cluster.
type Cluster struct {
	opts Options
	// Client is a user's API client (submit, cancel, read).
	Client *coordinator.Client
	// workerTLS is the workers' API client configuration.
	workerTLS *tls.Config

	nats *server.Server
	etcd *embed.Etcd
	// etcdCli is the coordinators' etcd client (coordinator certificate),
	// workerEtcd the workers' (worker certificate): etcd auth tells them apart.
	etcdCli    *clientv3.Client
	workerEtcd *clientv3.Client
	// pki is the throwaway CA and role certificates under Dir/pki:
	// coordinators use the coordinator certificate for raft, the API and
	// etcd, workers the worker certificate, and Client the user's.
	pki *pki.Local

	mu      sync.Mutex
	coords  []*coordinator.Coordinator
	peers   []coordinator.Peer
	workers map[string]*workerProc
	log     *slog.Logger
}

type workerProc struct {
	cancel context.CancelFunc
	done   chan error
	tr     *allreduce.NATSTransport
	reg    *prometheus.Registry
}

// CheckpointDir is where workers write checkpoints.
func (c *Cluster) CheckpointDir() string { return filepath.Join(c.opts.Dir, "checkpoints") }

// Start brings everything up and waits for a raft leader.
func Start(ctx context.Context, o Options) (_ *Cluster, err error) {
	if o.Coordinators <= 0 {
		o.Coordinators = 3
	}
	if o.Workers <= 0 {
		o.Workers = 2
	}
	if o.LeaseTTL <= 0 {
		o.LeaseTTL = 3 * time.Second
	}
	if o.RingDeadline <= 0 {
		o.RingDeadline = 20 * time.Second
	}
	if o.Log == nil {
		o.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if err := os.MkdirAll(o.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("state directory: %w", err)
	}
	c := &Cluster{opts: o, workers: map[string]*workerProc{}, log: o.Log}
	defer func() {
		if err != nil {
			c.Close()
		}
	}()
	if err := c.ensurePKI(); err != nil {
		return nil, err
	}
	userTLS, err := c.clientTLS(pki.RoleUser)
	if err != nil {
		return nil, err
	}
	if c.workerTLS, err = c.clientTLS(pki.RoleWorker); err != nil {
		return nil, err
	}
	if err := c.startNATS(); err != nil {
		return nil, err
	}
	if err := c.startEtcd(); err != nil {
		return nil, err
	}
	if err := c.startCoordinators(); err != nil {
		return nil, err
	}
	var addrs []string
	for _, p := range c.peers {
		addrs = append(addrs, p.APIAddr)
	}
	if c.Client, err = coordinator.NewClient(addrs, userTLS); err != nil {
		return nil, err
	}
	if err := c.waitLeader(ctx, 20*time.Second); err != nil {
		return nil, err
	}
	for i := 0; i < o.Workers; i++ {
		if err := c.StartWorker(fmt.Sprintf("worker-%d", i)); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// clientTLS is the API client configuration of role's certificate.
func (c *Cluster) clientTLS(role pki.Role) (*tls.Config, error) {
	creds, err := c.creds(role)
	if err != nil {
		return nil, err
	}
	return coordinator.ClientTLS(creds)
}

func randomSecret() string {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand never fails on supported platforms
	}
	return hex.EncodeToString(b)
}

func (c *Cluster) startNATS() error {
	s, err := startSecureNATS(c.pki)
	if err != nil {
		return err
	}
	c.nats = s
	return nil
}

func (c *Cluster) startEtcd() error {
	e, err := startSecureEtcd(c.pki, filepath.Join(c.opts.Dir, "etcd"))
	if err != nil {
		return err
	}
	c.etcd = e
	endpoint := "https://" + e.Clients[0].Addr().String()
	if c.etcdCli, err = etcdClient(c.pki, pki.RoleCoordinator, endpoint); err != nil {
		return err
	}
	if c.workerEtcd, err = etcdClient(c.pki, pki.RoleWorker, endpoint); err != nil {
		return err
	}
	return nil
}

func (c *Cluster) startCoordinators() error {
	creds, err := c.creds(pki.RoleCoordinator)
	if err != nil {
		return err
	}
	n := c.opts.Coordinators
	raftLns, apiLns := make([]net.Listener, n), make([]net.Listener, n)
	for i := 0; i < n; i++ {
		var err error
		if raftLns[i], err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			return err
		}
		if apiLns[i], err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			return err
		}
		c.peers = append(c.peers, coordinator.Peer{
			ID: fmt.Sprintf("coord-%d", i), RaftAddr: raftLns[i].Addr().String(),
			APIAddr: "https://" + apiLns[i].Addr().String(),
		})
	}
	for i := 0; i < n; i++ {
		co, err := coordinator.Start(coordinator.Config{
			Node: coordinator.NodeConfig{
				ID: c.peers[i].ID, RaftListener: raftLns[i], Peers: c.peers, Bootstrap: true, RaftTLS: creds,
				DataDir: filepath.Join(c.opts.Dir, "raft", c.peers[i].ID), RaftLog: io.Discard,
				Timing: coordinator.RaftTiming{HeartbeatTimeout: 500 * time.Millisecond, ElectionTimeout: 500 * time.Millisecond,
					LeaderLeaseTimeout: 250 * time.Millisecond, CommitTimeout: 20 * time.Millisecond},
			},
			APIListener: apiLns[i], TLS: creds, Cluster: localCluster, Etcd: c.etcdCli, AssignmentSigner: creds, DataRoot: c.opts.DataRoot,
			Debounce: 500 * time.Millisecond, Resync: 2 * time.Second, Logger: c.log,
		})
		if err != nil {
			return fmt.Errorf("coordinator %d: %w", i, err)
		}
		c.coords = append(c.coords, co)
	}
	return nil
}

func (c *Cluster) waitLeader(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if c.Leader() >= 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return errors.New("no raft leader elected")
}

// Leader is the index of the coordinator that leads, or -1.
func (c *Cluster) Leader() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, co := range c.coords {
		if co != nil && co.Node().IsLeader() {
			return i
		}
	}
	return -1
}

// StopCoordinator shuts coordinator i down (its raft state stays on disk).
func (c *Cluster) StopCoordinator(i int) error {
	c.mu.Lock()
	co := c.coords[i]
	c.coords[i] = nil
	c.mu.Unlock()
	if co == nil {
		return nil
	}
	return co.Close()
}

// StartWorker starts a worker with the given id.
func (c *Cluster) StartWorker(id string) error {
	wc, err := c.creds(pki.RoleWorker)
	if err != nil {
		return err
	}
	natsTLS, err := pki.ClientConfig(wc, pki.RoleNATS)
	if err != nil {
		return err
	}
	tr, err := allreduce.DialNATS(allreduce.NATSOptions{URL: c.nats.ClientURL(), Name: id, TLS: natsTLS})
	if err != nil {
		return fmt.Errorf("worker %s: %w", id, err)
	}
	reg := prometheus.NewRegistry()
	metrics, err := worker.NewMetrics(reg)
	if err != nil {
		tr.Close()
		return err
	}
	var addrs []string
	for _, p := range c.peers {
		addrs = append(addrs, p.APIAddr)
	}
	client, err := coordinator.NewClient(addrs, c.workerTLS)
	if err != nil {
		tr.Close()
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &workerProc{cancel: cancel, done: make(chan error, 1), tr: tr, reg: reg}
	go func() {
		p.done <- worker.Run(ctx, worker.Options{
			ID: id, Cluster: localCluster, Etcd: c.workerEtcd, AssignmentTrust: wc.CAs, Coordinator: client, Transport: tr,
			CheckpointDir: c.CheckpointDir(), DataRoot: c.opts.DataRoot, LeaseTTL: c.opts.LeaseTTL, RingDeadline: c.opts.RingDeadline,
			HangTimeout: c.opts.HangTimeout, Metrics: metrics, Log: c.log, OnStep: c.onStep(id), OnTrainer: c.onTrainer(id),
		})
	}()
	c.mu.Lock()
	c.workers[id] = p
	c.mu.Unlock()
	return nil
}

func (c *Cluster) onStep(id string) func(string, uint64, int, train.StepResult) {
	if c.opts.OnStep == nil {
		return nil
	}
	return func(job string, gen uint64, rank int, res train.StepResult) { c.opts.OnStep(id, job, gen, rank, res) }
}

func (c *Cluster) onTrainer(id string) func(string, uint64, int, *train.Trainer) {
	if c.opts.OnTrainer == nil {
		return nil
	}
	return func(job string, gen uint64, rank int, tr *train.Trainer) { c.opts.OnTrainer(id, job, gen, rank, tr) }
}

// WorkerMetrics is the Prometheus registry of a running worker (nil if
// there is none by that id).
func (c *Cluster) WorkerMetrics(id string) prometheus.Gatherer {
	c.mu.Lock()
	defer c.mu.Unlock()
	if p := c.workers[id]; p != nil {
		return p.reg
	}
	return nil
}

// KillWorker stops a worker abruptly: its NATS connection drops at once
// and it stops renewing its etcd lease, as when a process dies.
func (c *Cluster) KillWorker(id string) {
	c.mu.Lock()
	p := c.workers[id]
	delete(c.workers, id)
	c.mu.Unlock()
	if p == nil {
		return
	}
	p.tr.Close()
	p.cancel()
	<-p.done
}

// Close stops everything.
func (c *Cluster) Close() {
	c.mu.Lock()
	ids := make([]string, 0, len(c.workers))
	for id := range c.workers {
		ids = append(ids, id)
	}
	c.mu.Unlock()
	for _, id := range ids {
		c.KillWorker(id)
	}
	for i := range c.coords {
		c.StopCoordinator(i)
	}
	if c.etcdCli != nil {
		c.etcdCli.Close()
	}
	if c.workerEtcd != nil {
		c.workerEtcd.Close()
	}
	if c.etcd != nil {
		c.etcd.Close()
	}
	if c.nats != nil {
		c.nats.Shutdown()
		c.nats.WaitForShutdown()
	}
}
