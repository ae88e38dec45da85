package coordinator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
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
	// APIAddr is the API's listen address; APIListener, if set, is used
	// instead (tests reserve ports before building the peer list). The API
	// is HTTPS with mutual TLS (see TLS).
	APIAddr     string
	APIListener net.Listener
	// TLS is this coordinator's certificate (role coordinator) and the
	// cluster CA, from pki.LoadCredentials; required. The API admits
	// clients with a user, worker or coordinator certificate from that CA
	// and decides what each may do by its role; a follower presents it to
	// forward requests to the leader. It is usually the same as
	// Node.RaftTLS. Every peer's APIAddr must then be an https URL.
	TLS *pki.Credentials
	// OpsAddr (or OpsListener) serves /healthz, /readyz and /metrics over
	// plain HTTP, for kubelet probes and Prometheus; it serves no /v1
	// route. Empty and nil: no ops listener.
	OpsAddr     string
	OpsListener net.Listener
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
	// MemoryWait bounds how long the leader waits for the memory reports
	// of a stopped generation's live workers before it forms the next
	// generation without them (default 10 s, ended early once every live member
	// reported; negative: never wait). Under load a frozen member can take
	// seconds to report, and a missed report costs a disk resume.
	MemoryWait time.Duration
	Logger     *slog.Logger
}

// Coordinator is a running coordinator.
type Coordinator struct {
	fsm   *FSM
	node  *Node
	http  *http.Server
	ln    net.Listener
	ops   *http.Server
	opsLn net.Listener
	log   *slog.Logger
	live  atomic.Int64
	// metrics is this coordinator's own registry (never the global one).
	metrics *prometheus.Registry

	cancel context.CancelFunc
	wg     sync.WaitGroup
	close  sync.Once
}

// Start opens the raft node, serves the API and runs the scheduler
// whenever this node leads. Close stops everything.
func Start(cfg Config) (*Coordinator, error) {
	if cfg.TLS == nil {
		return nil, errors.New("the API has no TLS credentials: give this coordinator's certificate and the cluster CA (modcoord certs)")
	}
	if cfg.TLS.Identity.Role != pki.RoleCoordinator {
		return nil, fmt.Errorf("the API certificate is a %s's; a coordinator needs a coordinator certificate", cfg.TLS.Identity.Role)
	}
	serverTLS, err := pki.ServerConfig(cfg.TLS, pki.RoleUser, pki.RoleWorker, pki.RoleCoordinator)
	if err != nil {
		return nil, err
	}
	forwardTLS, err := ClientTLS(cfg.TLS)
	if err != nil {
		return nil, err
	}
	for _, p := range cfg.Node.Peers {
		if !strings.HasPrefix(p.APIAddr, "https://") {
			return nil, fmt.Errorf("peer %s: API address %q must be https:// (the API is mutual TLS)", p.ID, p.APIAddr)
		}
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
	if cfg.MemoryWait == 0 {
		cfg.MemoryWait = 10 * time.Second
	}

	ln := cfg.APIListener
	if ln == nil {
		if ln, err = net.Listen("tcp", cfg.APIAddr); err != nil {
			return nil, fmt.Errorf("api listen: %w", err)
		}
	}
	opsLn := cfg.OpsListener
	if opsLn == nil && cfg.OpsAddr != "" {
		if opsLn, err = net.Listen("tcp", cfg.OpsAddr); err != nil {
			ln.Close()
			return nil, fmt.Errorf("ops (health and metrics) listen: %w", err)
		}
	}
	fsm := NewFSM()
	node, err := NewNode(cfg.Node, fsm)
	if err != nil {
		ln.Close()
		if opsLn != nil {
			opsLn.Close()
		}
		return nil, err
	}
	c := &Coordinator{fsm: fsm, node: node, ln: ln, opsLn: opsLn, log: log}
	c.live.Store(-1)
	board := &loadBoard{}
	c.metrics = newMetricsRegistry(fsm, node, &c.live, board)
	api := &apiServer{node: node, fsm: fsm, board: board, log: log, dataRoot: cfg.DataRoot, specLimits: cfg.SpecLimits, metrics: c.metrics,
		proxy: newForwardTransport(forwardDialTimeout, forwardResponseTimeout, forwardTLS)}
	c.http = &http.Server{Handler: api.handler(), ReadHeaderTimeout: 10 * time.Second, TLSConfig: serverTLS,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug)}
	c.ops = &http.Server{Handler: api.opsHandler(), ReadHeaderTimeout: 10 * time.Second}

	ctx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		if err := c.http.ServeTLS(ln, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("api server stopped", "err", err)
		}
	}()
	if opsLn != nil {
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			if err := c.ops.Serve(opsLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("ops server stopped", "err", err)
			}
		}()
	}
	if cfg.Etcd != nil {
		ctrl := &controller{node: node, fsm: fsm, etcd: cfg.Etcd, cluster: cfg.Cluster, signer: cfg.AssignmentSigner,
			debounce: cfg.Debounce, resync: cfg.Resync, memoryWait: cfg.MemoryWait, log: log.With("role", "leader"), live: &c.live, board: board}
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			c.followLeadership(ctx, ctrl)
		}()
	} else {
		log.Warn("no etcd configured: workers cannot join, jobs will wait")
	}
	log.Info("coordinator started", "api", "https://"+ln.Addr().String(), "ops", c.OpsURL(), "cluster", cfg.Cluster)
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
func (c *Coordinator) URL() string { return "https://" + c.ln.Addr().String() }

// OpsURL is the ops listener's base URL (/healthz, /readyz, /metrics),
// empty when there is none.
func (c *Coordinator) OpsURL() string {
	if c.opsLn == nil {
		return ""
	}
	return "http://" + c.opsLn.Addr().String()
}

// MetricsHandler serves this coordinator's metrics (the ops listener
// serves them at /metrics too).
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
		if c.opsLn != nil {
			if oerr := c.ops.Shutdown(ctx); oerr != nil {
				herr = errors.Join(herr, c.ops.Close())
			}
		}
		c.wg.Wait()
		err = errors.Join(herr, c.node.Shutdown())
	})
	return err
}
