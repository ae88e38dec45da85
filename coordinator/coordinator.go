package coordinator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/modcoord/modcoord/jobspec"
	"github.com/modcoord/modcoord/pki"
)

// Config configures one coordinator process: a raft node, the HTTP API
// and, while it leads, the scheduler.
type Config struct {
	Node NodeConfig
	// APIAddr is the HTTP listen address; APIListener, if set, is used
	// instead (tests reserve ports before building the peer list).
	APIAddr     string
	APIListener net.Listener
	// Cluster names this cluster's etcd keys: /modcoord/<cluster>/...
	Cluster string
	// Etcd is the membership store. Without it no generation ever forms:
	// jobs queue and wait (useful only for API-only tests).
	Etcd *clientv3.Client
	// AssignmentSigner, a coordinator certificate and key (pki), signs
	// every assignment written to etcd; workers given the cluster CA act
	// only on signed ones (WatchOptions.Trust). Nil: unsigned, for a
	// cluster without certificates.
	AssignmentSigner *pki.Credentials
	// Token is the bearer token every /v1 request must carry. Empty is
	// refused unless InsecureNoAuth is set.
	Token          string
	InsecureNoAuth bool
	// DataRoot, when set, makes submit open each spec's data file under it,
	// the way a worker opens it under its own data root: a typo guard for
	// coordinators that mount the workers' data. Empty: no check (the
	// coordinator never reads training data).
	DataRoot string
	// SpecLimits bound what a submitted spec may ask for (the zero value:
	// jobspec's defaults, e.g. 8 GiB per worker). Workers re-validate
	// under their own limits, so give them the same values.
	SpecLimits jobspec.Limits
	// Debounce is how long the live worker set must be quiet before a new
	// generation forms (default 1 s); Resync is how often the leader
	// re-checks everything anyway (default 5 s).
	Debounce time.Duration
	Resync   time.Duration
	Logger   *slog.Logger
}

// Coordinator is a running coordinator.
type Coordinator struct {
	fsm  *FSM
	node *Node
	http *http.Server
	ln   net.Listener
	log  *slog.Logger
	live atomic.Int64
	// metrics is this coordinator's own registry (never the global one).
	metrics *prometheus.Registry

	cancel context.CancelFunc
	wg     sync.WaitGroup
	close  sync.Once
}

// Start opens the raft node, serves the API and runs the scheduler
// whenever this node leads. Close stops everything.
func Start(cfg Config) (*Coordinator, error) {
	if cfg.Token == "" && !cfg.InsecureNoAuth {
		return nil, errors.New("no API token: give a token file or MODCOORD_TOKEN, or --insecure-no-auth to run without authentication")
	}
	if err := checkEtcdName("cluster", cfg.Cluster); err != nil {
		return nil, err
	}
	if cfg.AssignmentSigner != nil {
		if err := checkSigner(cfg.AssignmentSigner); err != nil {
			return nil, fmt.Errorf("assignment signer: %w", err)
		}
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	log = log.With("node", cfg.Node.ID)
	cfg.Node.Logger = log
	if cfg.Debounce <= 0 {
		cfg.Debounce = time.Second
	}
	if cfg.Resync <= 0 {
		cfg.Resync = 5 * time.Second
	}
	if cfg.InsecureNoAuth {
		log.Warn("API authentication is disabled (--insecure-no-auth)")
	}

	ln := cfg.APIListener
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", cfg.APIAddr); err != nil {
			return nil, fmt.Errorf("api listen: %w", err)
		}
	}
	fsm := NewFSM()
	node, err := NewNode(cfg.Node, fsm)
	if err != nil {
		ln.Close()
		return nil, err
	}
	c := &Coordinator{fsm: fsm, node: node, ln: ln, log: log}
	c.live.Store(-1)
	c.metrics = newMetricsRegistry(fsm, node, &c.live)
	api := &apiServer{node: node, fsm: fsm, log: log, dataRoot: cfg.DataRoot, specLimits: cfg.SpecLimits, metrics: c.metrics,
		proxy: newForwardTransport(forwardDialTimeout, forwardResponseTimeout)}
	if cfg.Token != "" {
		api.setToken(cfg.Token)
	}
	c.http = &http.Server{Handler: api.handler(), ReadHeaderTimeout: 10 * time.Second}

	ctx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		if err := c.http.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("api server stopped", "err", err)
		}
	}()
	if cfg.Etcd != nil {
		ctrl := &controller{node: node, fsm: fsm, etcd: cfg.Etcd, cluster: cfg.Cluster, signer: cfg.AssignmentSigner,
			debounce: cfg.Debounce, resync: cfg.Resync, log: log.With("role", "leader"), live: &c.live}
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			c.followLeadership(ctx, ctrl)
		}()
	} else {
		log.Warn("no etcd configured: workers cannot join, jobs will wait")
	}
	log.Info("coordinator started", "api", ln.Addr().String(), "cluster", cfg.Cluster)
	return c, nil
}

// followLeadership runs the controller exactly while this node leads.
func (c *Coordinator) followLeadership(ctx context.Context, ctrl *controller) {
	var task *leaderTask
	defer func() { task.stop() }()
	// The ticker backs up the notification channel, which coalesces.
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		leads := c.node.IsLeader()
		switch {
		case leads && task == nil:
			c.log.Info("became leader; scheduling")
			task = startLeaderTask(ctx, ctrl)
		case !leads && task != nil:
			c.log.Info("lost leadership; scheduling stopped")
			task.stop()
			task = nil
		}
		select {
		case <-ctx.Done():
			return
		case <-c.node.LeadershipChanged():
		case <-tick.C:
		}
	}
}

// leaderTask is a running controller.
type leaderTask struct {
	cancel context.CancelFunc
	done   chan struct{}
}

func startLeaderTask(ctx context.Context, ctrl *controller) *leaderTask {
	ctx, cancel := context.WithCancel(ctx)
	t := &leaderTask{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(t.done)
		ctrl.run(ctx)
	}()
	return t
}

// stop cancels the controller and waits for it; nil is a no-op.
func (t *leaderTask) stop() {
	if t != nil {
		t.cancel()
		<-t.done
	}
}

// URL is the API's base URL as listened on.
func (c *Coordinator) URL() string { return "http://" + c.ln.Addr().String() }

// MetricsHandler serves this coordinator's metrics, for a separate
// metrics listener (the API serves them at /metrics too).
func (c *Coordinator) MetricsHandler() http.Handler {
	return promhttp.HandlerFor(c.metrics, promhttp.HandlerOpts{})
}

// Node is the coordinator's raft node.
func (c *Coordinator) Node() *Node { return c.node }

// FSM is the coordinator's replica of the job state.
func (c *Coordinator) FSM() *FSM { return c.fsm }

// Close stops the scheduler, the API and raft, in that order.
func (c *Coordinator) Close() error {
	var err error
	c.close.Do(func() {
		c.cancel()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		herr := c.http.Shutdown(ctx)
		if herr != nil {
			herr = c.http.Close()
		}
		c.wg.Wait()
		err = errors.Join(herr, c.node.Shutdown())
	})
	return err
}
