package coordinator

import (
	"context"
	"fmt"
	"log/slog"
	"regexp"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// etcd layout. Everything of one cluster lives under /modcoord/<cluster>/.
//
//	/modcoord/<cluster>/workers/<worker-id>   WorkerInfo, under the worker's lease
//	/modcoord/<cluster>/assignments/<job-id>  Assignment, written by the raft leader

// etcdName is what cluster names and worker ids may be: they are path
// segments in etcd keys (and worker ids appear in NATS subjects).
var etcdName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$`)

func checkEtcdName(kind, s string) error {
	if !etcdName.MatchString(s) {
		return fmt.Errorf("%s %q: use 1-128 letters, digits, '_' or '-', starting with a letter or digit", kind, truncate(s, 80))
	}
	return nil
}

// WorkersPrefix is the etcd prefix under which workers register.
func WorkersPrefix(cluster string) string { return "/modcoord/" + cluster + "/workers/" }

// AssignmentsPrefix is the etcd prefix of the per-job assignments.
func AssignmentsPrefix(cluster string) string { return "/modcoord/" + cluster + "/assignments/" }

// AssignmentKey is the etcd key of one job's assignment.
func AssignmentKey(cluster, job string) string { return AssignmentsPrefix(cluster) + job }

// mirrorListTimeout bounds one listing of a prefix; it is retried.
const mirrorListTimeout = 10 * time.Second

// mirrorPrefix follows an etcd prefix until ctx is done: list gets the
// whole prefix (first, and again whenever the watch broke, e.g. after a
// compaction), event gets every change after that listing.
func mirrorPrefix(ctx context.Context, cli *clientv3.Client, prefix string, log *slog.Logger,
	list func([]*mvccpb.KeyValue), event func(*clientv3.Event)) {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		// Bounded: after an etcd restart a list on a half-open connection
		// hung for minutes (the chaos soak), and a new leader's controller
		// with it, never scheduling.
		lctx, cancel := context.WithTimeout(ctx, mirrorListTimeout)
		resp, err := cli.Get(lctx, prefix, clientv3.WithPrefix())
		cancel()
		if err != nil {
			if ctx.Err() == nil {
				log.Warn("etcd list failed; retrying", "prefix", prefix, "err", err)
			}
			sleepCtx(ctx, backoff)
			backoff = min(2*backoff, 5*time.Second)
			continue
		}
		backoff = 100 * time.Millisecond
		list(resp.Kvs)
		wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		for w := range cli.Watch(wctx, prefix, clientv3.WithPrefix(), clientv3.WithRev(resp.Header.Revision+1)) {
			if err := w.Err(); err != nil {
				if ctx.Err() == nil {
					log.Warn("etcd watch broke; relisting", "prefix", prefix, "err", err)
				}
				break
			}
			for _, ev := range w.Events {
				event(ev)
			}
		}
		cancel()
		sleepCtx(ctx, backoff)
	}
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
