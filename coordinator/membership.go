package coordinator

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// DefaultWorkerTTL is how long a worker stays registered after its last
// lease keep-alive.
const DefaultWorkerTTL = 10 * time.Second

// WorkerInfo is what a worker publishes about itself in etcd.
type WorkerInfo struct {
	ID        string    `json:"id"`
	Host      string    `json:"host"`
	StartedAt time.Time `json:"started_at"`
	// Load is the worker's recent step timing while it trains
	// (Registration.Update); the leader reports stragglers from it.
	Load *WorkerLoad `json:"load,omitempty"`
}

// Registration keeps a worker registered until Close.
type Registration struct {
	cli    *clientv3.Client
	key    string
	value  string
	ttl    int64
	log    *slog.Logger
	cancel context.CancelFunc
	done   chan struct{}

	mu    sync.Mutex
	lease clientv3.LeaseID

	closeOnce sync.Once
	closeErr  error
}

// Register publishes a worker at /modcoord/<cluster>/workers/<id> under a
// lease of ttl (0: DefaultWorkerTTL; etcd rounds up to whole seconds) and
// keeps the lease alive until Close. If the lease is lost (etcd
// unreachable past the TTL) it registers again as soon as it can; the
// coordinator will have formed a generation without this worker meanwhile.
//
// If another live process holds the same id (such as this worker's
// previous run, whose lease has not expired yet) Register waits for that
// key to go. ctx bounds that wait and the first registration only.
func Register(ctx context.Context, cli *clientv3.Client, cluster string, info WorkerInfo, ttl time.Duration) (*Registration, error) {
	if err := checkEtcdName("cluster", cluster); err != nil {
		return nil, err
	}
	if err := checkEtcdName("worker id", info.ID); err != nil {
		return nil, err
	}
	if ttl <= 0 {
		ttl = DefaultWorkerTTL
	}
	val, err := json.Marshal(info)
	if err != nil {
		return nil, fmt.Errorf("encode worker info: %w", err)
	}
	r := &Registration{
		cli: cli, key: WorkersPrefix(cluster) + info.ID, value: string(val),
		ttl:  int64(math.Ceil(ttl.Seconds())),
		log:  slog.Default().With("worker", info.ID, "cluster", cluster),
		done: make(chan struct{}),
	}
	if err := r.register(ctx); err != nil {
		return nil, fmt.Errorf("register worker %s: %w", info.ID, err)
	}
	kctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go r.keepAlive(kctx)
	return r, nil
}

// register puts the key under a fresh lease once no one else holds it.
func (r *Registration) register(ctx context.Context) error {
	for {
		g, err := r.cli.Grant(ctx, r.ttl)
		if err != nil {
			return fmt.Errorf("grant lease: %w", err)
		}
		r.mu.Lock()
		value := r.value
		r.mu.Unlock()
		resp, err := r.cli.Txn(ctx).
			If(clientv3.Compare(clientv3.CreateRevision(r.key), "=", 0)).
			Then(clientv3.OpPut(r.key, value, clientv3.WithLease(g.ID))).
			Commit()
		if err != nil {
			r.revoke(g.ID)
			return fmt.Errorf("put %s: %w", r.key, err)
		}
		if resp.Succeeded {
			r.mu.Lock()
			r.lease = g.ID
			r.mu.Unlock()
			return nil
		}
		r.revoke(g.ID)
		r.log.Info("worker id is still registered by another process; waiting for it to go", "key", r.key)
		if err := r.waitDeleted(ctx, resp.Header.Revision); err != nil {
			return err
		}
	}
}

func (r *Registration) waitDeleted(ctx context.Context, rev int64) error {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for w := range r.cli.Watch(wctx, r.key, clientv3.WithRev(rev+1)) {
		if w.Err() != nil {
			return nil // look again
		}
		for _, ev := range w.Events {
			if ev.Type == clientv3.EventTypeDelete {
				return nil
			}
		}
	}
	return ctx.Err()
}

// keepAlive renews the lease, and registers again when it is lost.
func (r *Registration) keepAlive(ctx context.Context) {
	defer close(r.done)
	for ctx.Err() == nil {
		r.mu.Lock()
		lease := r.lease
		r.mu.Unlock()
		ch, err := r.cli.KeepAlive(ctx, lease)
		if err == nil {
			for range ch {
			}
		}
		if ctx.Err() != nil {
			return
		}
		r.log.Warn("worker lease lost; registering again", "key", r.key, "err", err)
		for ctx.Err() == nil {
			if err := r.register(ctx); err == nil {
				break
			} else if ctx.Err() == nil {
				r.log.Warn("register again failed", "err", err)
			}
			sleepCtx(ctx, time.Second)
		}
	}
}

func (r *Registration) revoke(id clientv3.LeaseID) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	_, _ = r.cli.Revoke(ctx, id)
}

// Update replaces the published WorkerInfo (under the same lease); a new
// registration after a lost lease publishes the latest one. The id must
// not change.
func (r *Registration) Update(ctx context.Context, info WorkerInfo) error {
	val, err := json.Marshal(info)
	if err != nil {
		return fmt.Errorf("encode worker info: %w", err)
	}
	// The coordinator ignores a value that names another id or is over
	// MaxWorkerInfoBytes; refuse it here, before it replaces the value a
	// re-registration would publish.
	if !strings.HasSuffix(r.key, "/"+info.ID) {
		return fmt.Errorf("update %s: worker id %q is not the registered one", r.key, info.ID)
	}
	if len(val) > MaxWorkerInfoBytes {
		return fmt.Errorf("update %s: worker info is %d bytes, over the limit of %d", r.key, len(val), MaxWorkerInfoBytes)
	}
	r.mu.Lock()
	r.value = string(val)
	lease := r.lease
	r.mu.Unlock()
	// Only while our key exists under our lease: never resurrect a key
	// after Close or a lost lease.
	resp, err := r.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.LeaseValue(r.key), "=", lease)).
		Then(clientv3.OpPut(r.key, string(val), clientv3.WithLease(lease))).
		Commit()
	if err != nil {
		return fmt.Errorf("update %s: %w", r.key, err)
	}
	if !resp.Succeeded {
		return fmt.Errorf("update %s: not registered under lease %x", r.key, lease)
	}
	return nil
}

// Key is the etcd key this worker is registered at.
func (r *Registration) Key() string { return r.key }

// Close stops the keep-alive and revokes the lease, so the coordinator
// sees the worker leave at once instead of after the TTL. It is safe to
// call more than once, also concurrently (a worker's hang watchdog and its
// membership loop may both close it); the later calls wait for the first
// and return its result.
func (r *Registration) Close() error {
	r.closeOnce.Do(func() {
		r.cancel()
		<-r.done
		r.mu.Lock()
		lease := r.lease
		r.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		if _, err := r.cli.Revoke(ctx, lease); err != nil {
			r.closeErr = fmt.Errorf("revoke lease of %s: %w", r.key, err)
		}
	})
	return r.closeErr
}

// watchWorkers follows the live worker set until ctx is done, calling
// changed with a fresh copy after every change.
func watchWorkers(ctx context.Context, cli *clientv3.Client, cluster string, log *slog.Logger, changed func(map[string]WorkerInfo)) {
	prefix := WorkersPrefix(cluster)
	live := map[string]WorkerInfo{}
	decode := func(kv *mvccpb.KeyValue) {
		id := strings.TrimPrefix(string(kv.Key), prefix)
		var w WorkerInfo
		if len(kv.Value) > MaxWorkerInfoBytes {
			log.Warn("ignoring oversized worker registration", "key", truncate(string(kv.Key), 200), "bytes", len(kv.Value))
			delete(live, id)
			return
		}
		// The id must be one Register accepts: etcd is writable by every
		// worker, and an id becomes a generation member and a NATS subject.
		if err := json.Unmarshal(kv.Value, &w); err != nil || w.ID != id || checkEtcdName("worker id", id) != nil {
			log.Warn("ignoring malformed worker registration", "key", string(kv.Key))
			return
		}
		live[id] = w
	}
	mirrorPrefix(ctx, cli, prefix, log,
		func(kvs []*mvccpb.KeyValue) {
			clear(live)
			for _, kv := range kvs {
				decode(kv)
			}
			changed(maps.Clone(live))
		},
		func(ev *clientv3.Event) {
			if ev.Type == clientv3.EventTypeDelete {
				delete(live, strings.TrimPrefix(string(ev.Kv.Key), prefix))
			} else {
				decode(ev.Kv)
			}
			changed(maps.Clone(live))
		})
}

// pickMembers chooses a generation's workers from the live ones: sorted by
// id, as many as possible up to max_workers such that the batch splits
// evenly. It returns nil when fewer than min_workers are alive.
func pickMembers(live []string, spec JobSpec) []string {
	ids := slices.Sorted(slices.Values(live))
	n := min(len(ids), spec.MaxWorkers)
	for n >= spec.MinWorkers && spec.Batch%n != 0 {
		n--
	}
	if n < spec.MinWorkers || n < 1 {
		return nil
	}
	return ids[:n]
}
