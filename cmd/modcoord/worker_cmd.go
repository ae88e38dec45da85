package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/modcoord/modcoord/allreduce"
	"github.com/modcoord/modcoord/coordinator"
	"github.com/modcoord/modcoord/mod"
	"github.com/modcoord/modcoord/worker"
)

func cmdWorker(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("worker", flag.ContinueOnError)
	id := fs.String("id", envOr("POD_NAME", hostnameOr("worker")), "worker id, unique in the cluster (default: $POD_NAME or the host name)")
	cluster := fs.String("cluster", "default", "cluster name (scopes etcd keys)")
	coords := fs.String("coordinators", envOr("MODCOORD_ADDR", "http://127.0.0.1:7070"), "coordinator API URLs, comma-separated")
	tokenFile := fs.String("token-file", os.Getenv("MODCOORD_TOKEN_FILE"), "file holding the API bearer token (or set MODCOORD_TOKEN)")
	etcd := fs.String("etcd", "http://127.0.0.1:2379", "etcd client URLs, comma-separated")
	natsURL := fs.String("nats", "nats://127.0.0.1:4222", "NATS server URLs, comma-separated")
	natsUser := fs.String("nats-user", "", "NATS user")
	natsPassFile := fs.String("nats-password-file", "", "file holding the NATS password")
	natsCreds := fs.String("nats-creds", "", "NATS .creds file (JWT and nkey seed)")
	natsNKey := fs.String("nats-nkey", "", "file holding an NATS nkey seed")
	ckDir := fs.String("checkpoint-dir", "checkpoints", "shared checkpoint volume, the same path on every worker")
	dataRoot := fs.String("data-root", ".", "directory that job specs' data paths are relative to; nothing outside it is read")
	metricsAddr := fs.String("metrics", ":9090", "listen address for /metrics and /healthz (empty: off)")
	lease := fs.Duration("lease", 10*time.Second, "etcd lease TTL: how soon a dead worker is noticed")
	deadline := fs.Duration("ring-deadline", 60*time.Second, "how long a collective waits for a silent peer before failing")
	window := fs.Int("ring-window", 0, "all-reduce pipeline depth in chunks (0: the default, sized for one host; raise it on a cluster with more latency per hop, see docs/allreduce.md); every worker of a job must use the same value")
	chunkBytes := fs.Int("ring-chunk-bytes", 0, "all-reduce message payload in bytes (0: the default); every worker of a job must use the same value")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *window < 0 || *chunkBytes < 0 {
		return fmt.Errorf("--ring-window %d, --ring-chunk-bytes %d: need 0 (the default) or a positive value", *window, *chunkBytes)
	}
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	token, err := readToken(*tokenFile)
	if err != nil {
		return err
	}
	// A short timeout: a request on an open connection to a partitioned
	// coordinator gets no reset and would otherwise hang for 30 s. Enough
	// retries (about 35 s of backoff) to outlast a raft election after the
	// leader dies, so that a progress or checkpoint report is not dropped.
	client, err := coordinator.NewClient(splitList(*coords), token,
		coordinator.WithHTTPClient(&http.Client{Timeout: 5 * time.Second}),
		coordinator.WithRetries(20, 100*time.Millisecond))
	if err != nil {
		return err
	}
	natsOpts := allreduce.NATSOptions{URL: *natsURL, Name: *id, User: *natsUser, CredsFile: *natsCreds, NKeySeedFile: *natsNKey}
	if *natsPassFile != "" {
		b, err := os.ReadFile(*natsPassFile)
		if err != nil {
			return fmt.Errorf("--nats-password-file: %w", err)
		}
		natsOpts.Password = strings.TrimSpace(string(b))
	}
	tr, err := allreduce.DialNATS(natsOpts)
	if err != nil {
		return fmt.Errorf("connect to NATS at %s: %w", *natsURL, err)
	}
	defer tr.Close()
	etcdCli, err := clientv3.New(clientv3.Config{Endpoints: splitList(*etcd), DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return fmt.Errorf("etcd client: %w", err)
	}
	defer etcdCli.Close()

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics, err := worker.NewMetrics(reg)
	if err != nil {
		return err
	}
	if *metricsAddr != "" {
		stop, err := serveMetrics(*metricsAddr, reg)
		if err != nil {
			return err
		}
		defer stop()
	}
	log.Info("worker starting", "id", *id, "cluster", *cluster, "blas", mod.BLASEngine(), "checkpoints", *ckDir)
	err = worker.Run(ctx, worker.Options{
		ID: *id, Cluster: *cluster, Etcd: etcdCli, Coordinator: client, Transport: tr,
		CheckpointDir: *ckDir, DataRoot: *dataRoot, LeaseTTL: *lease, RingDeadline: *deadline, RingWindow: *window, RingChunkBytes: *chunkBytes, Metrics: metrics, Log: log,
	})
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
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

// readToken reads the API token from a file, or MODCOORD_TOKEN. It never
// logs the value.
func readToken(file string) (string, error) {
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("token file: %w", err)
		}
		t := strings.TrimSpace(string(b))
		if t == "" {
			return "", fmt.Errorf("token file %s is empty", file)
		}
		return t, nil
	}
	if t := os.Getenv("MODCOORD_TOKEN"); t != "" {
		return t, nil
	}
	return "", errors.New("no API token: pass --token-file or set MODCOORD_TOKEN (the coordinators require one)")
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func hostnameOr(def string) string {
	if h, err := os.Hostname(); err == nil && h != "" {
		return h
	}
	return def
}
