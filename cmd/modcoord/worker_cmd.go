package main

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"

	"github.com/modcoord/modcoord/allreduce"
	"github.com/modcoord/modcoord/coordinator"
	"github.com/modcoord/modcoord/mod"
	"github.com/modcoord/modcoord/pki"
	"github.com/modcoord/modcoord/worker"
)

type workerOptions struct {
	id, cluster, coordinator, etcd                                        string
	tls                                                                   tlsFiles
	natsURL, natsUser, natsPassFile, natsCreds, natsNKey, ckDir, dataRoot string
	metricsAddr                                                           string
	lease, deadline, hang                                                 time.Duration
	window, chunkBytes                                                    int
}

func newWorkerCmd(e env) *cobra.Command {
	var o workerOptions
	cmd := &cobra.Command{
		Use:   "worker",
		Short: "Run a training worker",
		Args:  positional(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runWorker(cmd.Context(), cmd.ErrOrStderr(), o, e)
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&o.id, "id", envOr(e.getenv, "POD_NAME", hostnameOr("worker")), "worker id, unique in the cluster (default: $POD_NAME or the host name)")
	addCoordinatorFlags(fs, &o.coordinator, &o.tls, pki.RoleWorker)
	addEtcdClusterFlags(fs, &o.etcd, &o.cluster)
	fs.StringVar(&o.natsURL, "nats", "tls://127.0.0.1:4222", "NATS server URLs, comma-separated")
	fs.StringVar(&o.natsUser, "nats-user", "", "NATS user")
	fs.StringVar(&o.natsPassFile, "nats-password-file", "", "file holding the NATS password")
	fs.StringVar(&o.natsCreds, "nats-creds", "", "NATS .creds file (JWT and nkey seed)")
	fs.StringVar(&o.natsNKey, "nats-nkey", "", "file holding an NATS nkey seed")
	fs.StringVar(&o.ckDir, "checkpoint-dir", "checkpoints", "shared checkpoint volume, the same path on every worker")
	fs.StringVar(&o.dataRoot, "data-root", ".", "directory that job specs' data paths are relative to; nothing outside it is read")
	fs.StringVar(&o.metricsAddr, "metrics", ":9090", "listen address for /metrics and /healthz (empty: off)")
	fs.DurationVar(&o.lease, "lease", 10*time.Second, "etcd lease TTL: how soon a dead worker is noticed")
	fs.DurationVar(&o.deadline, "ring-deadline", 60*time.Second, "how long a collective waits for a silent peer before failing")
	fs.DurationVar(&o.hang, "hang-timeout", 0, "a generation's run that makes no progress (no step) for this long takes the worker out of the cluster until it ends (0: 2×ring-deadline+10s; negative: never); must exceed the ring deadline plus the slowest step and the longest checkpoint restore")
	fs.IntVar(&o.window, "ring-window", 0, "all-reduce pipeline depth in chunks (0: the default, sized for one host; raise it on a cluster with more latency per hop, see docs/allreduce.md); every worker of a job must use the same value")
	fs.IntVar(&o.chunkBytes, "ring-chunk-bytes", 0, "all-reduce message payload in bytes (0: the default); every worker of a job must use the same value")
	return cmd
}

func runWorker(ctx context.Context, stderr io.Writer, o workerOptions, e env) error {
	if o.window < 0 || o.chunkBytes < 0 {
		return usageErrorf("--ring-window %d, --ring-chunk-bytes %d: need 0 (the default) or a positive value", o.window, o.chunkBytes)
	}
	log := slog.New(slog.NewJSONHandler(stderr, nil))
	creds, err := o.tls.load(pki.RoleWorker)
	if err != nil {
		return err
	}
	apiTLS, err := coordinator.ClientTLS(creds)
	if err != nil {
		return err
	}
	// A short timeout: a request on an open connection to a partitioned
	// coordinator gets no reset and would otherwise hang for 30 s. Enough
	// retries (about 35 s of backoff) to outlast a raft election after the
	// leader dies, so that a progress or checkpoint report is not dropped.
	client, err := coordinator.NewClient(splitList(o.coordinator), apiTLS,
		coordinator.WithTimeout(5*time.Second),
		coordinator.WithProgressAttemptTimeout(1500*time.Millisecond),
		coordinator.WithRetries(20, 100*time.Millisecond))
	if err != nil {
		return usageErrorf("--coordinator: %v", err)
	}
	// The one worker certificate serves the API, etcd and NATS; the worker
	// then acts only on assignments a coordinator of the same CA signed.
	etcdCli, err := newEtcdClient(o.etcd, creds)
	if err != nil {
		return err
	}
	defer etcdCli.Close()
	natsTLS, err := natsClientTLS(creds)
	if err != nil {
		return err
	}
	natsOpts := allreduce.NATSOptions{URL: o.natsURL, Name: o.id, User: o.natsUser, CredsFile: o.natsCreds, NKeySeedFile: o.natsNKey, TLS: natsTLS}
	if o.natsPassFile != "" {
		b, err := os.ReadFile(o.natsPassFile)
		if err != nil {
			return fmt.Errorf("--nats-password-file: %w", err)
		}
		natsOpts.Password = strings.TrimSpace(string(b))
	}
	tr, err := dialNATSRetrying(ctx, natsOpts, log)
	if err != nil {
		return fmt.Errorf("connect to NATS at %s: %w", o.natsURL, err)
	}
	defer tr.Close()

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics, err := worker.NewMetrics(reg)
	if err != nil {
		return fmt.Errorf("worker metrics: %w", err)
	}
	if o.metricsAddr != "" {
		stop, err := serveMetrics(o.metricsAddr, reg)
		if err != nil {
			return err
		}
		defer stop()
	}
	log.Info("worker starting", "id", o.id, "cluster", o.cluster, "blas", mod.BLASEngine(), "checkpoints", o.ckDir)
	err = worker.Run(ctx, worker.Options{
		ID: o.id, Cluster: o.cluster, Etcd: etcdCli, AssignmentTrust: trustOf(creds), Coordinator: client, Transport: tr,
		CheckpointDir: o.ckDir, DataRoot: o.dataRoot, LeaseTTL: o.lease, RingDeadline: o.deadline, HangTimeout: o.hang, RingWindow: o.window, RingChunkBytes: o.chunkBytes, Metrics: metrics, Log: log,
	})
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// trustOf is the CA a worker checks assignment signatures against (nil
// without --tls-dir).
func trustOf(c *pki.Credentials) *x509.CertPool {
	if c == nil {
		return nil
	}
	return c.CAs
}

// serveMetrics serves /metrics and /healthz.
func serveMetrics(addr string, reg *prometheus.Registry) (func(), error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics listener: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	return func() { srv.Close() }, nil
}

// natsConnectPatience is how long a starting worker keeps trying to reach
// NATS: a worker restarted while the NATS server restarts (the chaos soak
// does both at once) would otherwise exit and stay out of the cluster.
const natsConnectPatience = 2 * time.Minute

// dialNATSRetrying connects to NATS, retrying with backoff for
// natsConnectPatience while no server is reachable; any other error (bad
// credentials, TLS) fails at once.
func dialNATSRetrying(ctx context.Context, opts allreduce.NATSOptions, log *slog.Logger) (*allreduce.NATSTransport, error) {
	deadline := time.Now().Add(natsConnectPatience)
	backoff := 250 * time.Millisecond
	for {
		tr, err := allreduce.DialNATS(opts)
		if err == nil || !errors.Is(err, nats.ErrNoServers) || time.Now().After(deadline) {
			return tr, err
		}
		log.Warn("NATS not reachable yet; retrying", "url", opts.URL, "in", backoff, "err", err)
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%w (last error: %v)", ctx.Err(), err)
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}
