package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/modcoord/modcoord/coordinator"
	"github.com/modcoord/modcoord/pki"
)

type coordinatorOptions struct {
	id, raftAddr, apiAddr, dataDir, dataRoot, peers, etcd, cluster, metricsAddr, logLevel string
	tls                                                                                   tlsFiles
	bootstrap                                                                             bool
	heartbeat, debounce                                                                   time.Duration
}

// newCoordinatorCmd runs a raft coordinator node. Its --api-addr and
// --raft-addr are listen addresses; --coordinator on the other commands is
// where to reach one.
func newCoordinatorCmd(e env) *cobra.Command {
	var o coordinatorOptions
	cmd := &cobra.Command{
		Use:   "coordinator",
		Short: "Run a raft coordinator node (API, scheduler)",
		Args:  positional(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runCoordinator(cmd.Context(), cmd.ErrOrStderr(), o, e)
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&o.id, "id", envOr(e.getenv, "POD_NAME", "coord-0"), "raft server id, one of --peers (default: $POD_NAME)")
	fs.StringVar(&o.raftAddr, "raft-addr", "", "raft listen address (default: this node's address in --peers)")
	fs.StringVar(&o.apiAddr, "api-addr", ":7070", "API listen address (HTTPS, mutual TLS)")
	fs.StringVar(&o.dataDir, "data-dir", "raft-data", "directory for the raft log, stable store and snapshots")
	fs.StringVar(&o.peers, "peers", "", "every coordinator as id=raftHost:port=apiHost:port (the API address takes https://), comma-separated (default: this node alone, raft 127.0.0.1:7000)")
	fs.BoolVar(&o.bootstrap, "bootstrap", false, "form the cluster from --peers if this node has no raft state (safe on every node)")
	addEtcdClusterFlags(fs, &o.etcd, &o.cluster)
	addServerTLSFlags(fs, &o.tls)
	fs.StringVar(&o.metricsAddr, "metrics", ":9090", "plain-HTTP listen address for /healthz, /readyz and /metrics (probes and Prometheus; no API there; empty: off)")
	fs.StringVar(&o.dataRoot, "data-root", "", "when set, submit checks that a job's data file opens under this directory (the workers' data root, if mounted here); empty: no check")
	fs.DurationVar(&o.heartbeat, "raft-heartbeat", time.Second, "raft heartbeat and election timeout")
	fs.DurationVar(&o.debounce, "debounce", time.Second, "how long the live worker set must be quiet before a new generation forms")
	fs.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
	return cmd
}

func runCoordinator(ctx context.Context, stderr io.Writer, o coordinatorOptions, e env) error {
	var level slog.Level
	if err := level.UnmarshalText([]byte(o.logLevel)); err != nil {
		return usageErrorf("--log-level: %v", err)
	}
	log := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: level}))

	creds, err := o.tls.load(pki.RoleCoordinator)
	if err != nil {
		return err
	}
	peerSpec := o.peers
	if peerSpec == "" {
		raft := o.raftAddr
		if raft == "" {
			raft = "127.0.0.1:7000"
		}
		peerSpec = fmt.Sprintf("%s=%s=%s", o.id, loopbackFor(raft), loopbackFor(o.apiAddr))
	}
	peerList, err := coordinator.ParsePeers(peerSpec)
	if err != nil {
		return usageErrorf("--peers: %v", err)
	}
	etcdCli, err := newEtcdClient(o.etcd, creds)
	if err != nil {
		return err
	}
	defer etcdCli.Close()

	co, err := coordinator.Start(coordinator.Config{
		Node: coordinator.NodeConfig{
			ID: o.id, RaftBind: o.raftAddr, DataDir: o.dataDir, Peers: peerList, Bootstrap: o.bootstrap,
			RaftTLS: creds,
			Timing:  coordinator.RaftTiming{HeartbeatTimeout: o.heartbeat, ElectionTimeout: o.heartbeat, LeaderLeaseTimeout: o.heartbeat / 2},
		},
		APIAddr: o.apiAddr, TLS: creds, OpsAddr: o.metricsAddr, Cluster: o.cluster, Etcd: etcdCli, DataRoot: o.dataRoot, AssignmentSigner: creds,
		Debounce: o.debounce, Logger: log,
	})
	if err != nil {
		return fmt.Errorf("start coordinator %s: %w", o.id, err)
	}
	defer co.Close()
	<-ctx.Done()
	log.Info("shutting down")
	return nil
}

// addEtcdClusterFlags adds --etcd and --cluster, shared by coordinator
// and worker.
func addEtcdClusterFlags(fs *pflag.FlagSet, etcd, cluster *string) {
	fs.StringVar(etcd, "etcd", "https://127.0.0.1:2379", "etcd client URLs, comma-separated")
	bindEnv(fs, "etcd", "MODCOORD_ETCD")
	fs.StringVar(cluster, "cluster", "default", "cluster name (scopes etcd keys)")
	bindEnv(fs, "cluster", "MODCOORD_CLUSTER")
}

// loopbackFor turns a listen address such as ":7070" or "0.0.0.0:7070"
// into one this machine can dial.
func loopbackFor(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || (host != "" && host != "0.0.0.0" && host != "::") {
		return addr
	}
	return net.JoinHostPort("127.0.0.1", port)
}
