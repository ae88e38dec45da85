package coordinator

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"
	"unicode"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"

	"github.com/modcoord/modcoord/pki"
)

// Peer is one coordinator of the cluster: its raft server id, the address
// other coordinators reach its raft transport at, and its HTTP API's base
// URL (followers forward API requests there when it leads).
type Peer struct {
	ID       string
	RaftAddr string
	APIAddr  string
}

// ParsePeers reads "id=raftAddr=apiAddr,..." (the --peers flag). An API
// address without a scheme gets https:// (the API is mutual TLS).
func ParsePeers(s string) ([]Peer, error) {
	var peers []Peer
	seen := map[string]bool{}
	for _, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		parts := strings.Split(item, "=")
		if len(parts) != 3 || parts[0] == "" || parts[1] == "" || parts[2] == "" || strings.ContainsFunc(item, unicode.IsSpace) {
			return nil, fmt.Errorf("peer %q: want id=raftHost:port=apiHost:port, without spaces", item)
		}
		if seen[parts[0]] {
			return nil, fmt.Errorf("peer %q: id %s is listed twice", item, parts[0])
		}
		seen[parts[0]] = true
		api := parts[2]
		if !strings.Contains(api, "://") {
			api = "https://" + api
		}
		api = strings.TrimRight(api, "/")
		if _, port, err := net.SplitHostPort(parts[1]); err != nil || port == "" {
			return nil, fmt.Errorf("peer %q: raft address %q is not host:port", item, parts[1])
		}
		if u, err := url.Parse(api); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("peer %q: API address %q is not an http(s) URL with a host", item, parts[2])
		}
		peers = append(peers, Peer{ID: parts[0], RaftAddr: parts[1], APIAddr: api})
	}
	if len(peers) == 0 {
		return nil, errors.New("no peers given; list every coordinator as id=raftHost:port=apiHost:port")
	}
	return peers, nil
}

// RaftTiming holds raft's timeouts. Zero fields take raft's defaults
// (1 s heartbeat and election, 500 ms lease); tests use much shorter ones.
type RaftTiming struct {
	HeartbeatTimeout   time.Duration
	ElectionTimeout    time.Duration
	LeaderLeaseTimeout time.Duration
	CommitTimeout      time.Duration
}

// NodeConfig configures one raft member.
type NodeConfig struct {
	// ID is this coordinator's raft server id; it must be one of Peers.
	ID string
	// RaftBind is the address to listen on for raft (default: this node's
	// address in Peers). Other nodes dial the address in Peers.
	RaftBind string
	// RaftListener, if set, is used instead of listening on RaftBind, so a
	// caller (a test) can reserve a port before building the peer list.
	RaftListener net.Listener
	// RaftTLS is this coordinator's certificate (role coordinator) and the
	// cluster CA, from pki.LoadCredentials. The raft link is mutual TLS
	// and admits coordinators only; the certificate must be valid for this
	// node's host in Peers, which its peers dial.
	RaftTLS *pki.Credentials
	// InsecurePlainRaft runs raft over plain TCP when RaftTLS is nil.
	// Whoever reaches the raft port can then rewrite the cluster's log;
	// it exists until every launcher passes certificates.
	InsecurePlainRaft bool
	DataDir           string
	Peers             []Peer
	// Bootstrap forms the cluster from Peers if this node has no raft state
	// yet. Starting every node with the same peers and Bootstrap is safe.
	Bootstrap bool
	Timing    RaftTiming
	// SnapshotThreshold is how many log entries trigger a snapshot (0: raft's 8192).
	SnapshotThreshold uint64
	Logger            *slog.Logger
	// RaftLog receives raft's own (hclog) log lines at warn level and above
	// (default os.Stderr).
	RaftLog io.Writer
}

// Node is one coordinator's raft member with its on-disk stores.
type Node struct {
	id        string
	peers     []Peer
	raft      *raft.Raft
	fsm       *FSM
	store     *raftboltdb.BoltStore
	transport *raft.NetworkTransport
	log       *slog.Logger

	leaderChg chan struct{}
	// caughtUpTerm is the last term in which a barrier completed on this
	// node as leader: from then on its FSM holds every committed entry.
	caughtUpTerm atomic.Uint64
	notify       chan bool
	notifyDone   chan struct{}
}

// NewNode opens (or creates) the raft state under cfg.DataDir and starts
// raft with fsm.
func NewNode(cfg NodeConfig, fsm *FSM) (*Node, error) {
	self, ok := findPeer(cfg.Peers, cfg.ID)
	if !ok {
		return nil, fmt.Errorf("raft node %q is not in the peer list", cfg.ID)
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.Default()
	}
	switch {
	case cfg.RaftTLS != nil:
		if err := checkRaftHost(cfg.RaftTLS, self.RaftAddr); err != nil {
			return nil, err
		}
	case !cfg.InsecurePlainRaft:
		return nil, errors.New("raft has no TLS credentials: give this coordinator's certificate (modcoord certs), or InsecurePlainRaft to run raft unauthenticated")
	default:
		logger.Warn("raft runs over plain TCP: anyone who reaches the raft port can rewrite the cluster's log")
	}
	if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
		return nil, fmt.Errorf("raft data dir: %w", err)
	}
	out := cfg.RaftLog
	if out == nil {
		out = os.Stderr
	}
	hlog := hclog.New(&hclog.LoggerOptions{Name: "raft." + cfg.ID, Level: hclog.Warn, Output: out})

	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.ID)
	rc.Logger = hlog
	t := cfg.Timing
	setIf(&rc.HeartbeatTimeout, t.HeartbeatTimeout)
	setIf(&rc.ElectionTimeout, t.ElectionTimeout)
	setIf(&rc.LeaderLeaseTimeout, t.LeaderLeaseTimeout)
	setIf(&rc.CommitTimeout, t.CommitTimeout)
	if cfg.SnapshotThreshold > 0 {
		rc.SnapshotThreshold = cfg.SnapshotThreshold
	}
	n := &Node{
		id: cfg.ID, peers: cfg.Peers, fsm: fsm, log: logger,
		leaderChg:  make(chan struct{}, 1),
		notify:     make(chan bool, 4),
		notifyDone: make(chan struct{}),
	}
	rc.NotifyCh = n.notify

	store, err := raftboltdb.NewBoltStore(filepath.Join(cfg.DataDir, "raft.db"))
	if err != nil {
		return nil, fmt.Errorf("open raft store: %w", err)
	}
	n.store = store
	snaps, err := raft.NewFileSnapshotStoreWithLogger(cfg.DataDir, 2, hlog)
	if err != nil {
		store.Close()
		return nil, fmt.Errorf("open snapshot store: %w", err)
	}
	ln := cfg.RaftListener
	if ln == nil {
		bind := cfg.RaftBind
		if bind == "" {
			bind = self.RaftAddr
		}
		if ln, err = net.Listen("tcp", bind); err != nil {
			store.Close()
			return nil, fmt.Errorf("raft listen: %w", err)
		}
	}
	var stream raft.StreamLayer = &streamLayer{Listener: ln, advertise: advertiseAddr(self.RaftAddr)}
	if cfg.RaftTLS != nil {
		if stream, err = newTLSStreamLayer(ln, advertiseAddr(self.RaftAddr), cfg.RaftTLS, raftHandshakeTimeout, logger); err != nil {
			ln.Close()
			store.Close()
			return nil, err
		}
	}
	n.transport = raft.NewNetworkTransportWithLogger(stream, 3, 5*time.Second, hlog)

	has, err := raft.HasExistingState(store, store, snaps)
	if err != nil {
		n.closeStores()
		return nil, fmt.Errorf("read raft state: %w", err)
	}
	r, err := raft.NewRaft(rc, fsm, store, store, snaps, n.transport)
	if err != nil {
		n.closeStores()
		return nil, fmt.Errorf("start raft: %w", err)
	}
	n.raft = r
	go n.watchLeadership()
	if cfg.Bootstrap && !has {
		var servers []raft.Server
		for _, p := range cfg.Peers {
			servers = append(servers, raft.Server{ID: raft.ServerID(p.ID), Address: raft.ServerAddress(p.RaftAddr), Suffrage: raft.Voter})
		}
		if err := r.BootstrapCluster(raft.Configuration{Servers: servers}).Error(); err != nil && !errors.Is(err, raft.ErrCantBootstrap) {
			_ = n.Shutdown()
			return nil, fmt.Errorf("bootstrap raft: %w", err)
		}
	}
	logger.Info("raft node started", "id", cfg.ID, "raft_addr", self.RaftAddr, "existing_state", has, "peers", len(cfg.Peers))
	return n, nil
}

func setIf(dst *time.Duration, v time.Duration) {
	if v > 0 {
		*dst = v
	}
}

func findPeer(peers []Peer, id string) (Peer, bool) {
	for _, p := range peers {
		if p.ID == id {
			return p, true
		}
	}
	return Peer{}, false
}

// watchLeadership drains raft's NotifyCh (raft blocks on it otherwise) and
// turns it into a coalescing signal.
func (n *Node) watchLeadership() {
	defer close(n.notifyDone)
	for range n.notify {
		select {
		case n.leaderChg <- struct{}{}:
		default:
		}
	}
}

// LeadershipChanged is signalled when this node gains or loses leadership;
// read IsLeader for the new state.
func (n *Node) LeadershipChanged() <-chan struct{} { return n.leaderChg }

// ID is this node's raft server id.
func (n *Node) ID() string { return n.id }

// IsLeader reports whether this node is the raft leader.
func (n *Node) IsLeader() bool { return n.raft.State() == raft.Leader }

// Leader returns the current leader's server id and raft address, empty
// when no leader is known.
func (n *Node) Leader() (id, raftAddr string) {
	addr, sid := n.raft.LeaderWithID()
	return string(sid), string(addr)
}

// LeaderAPI returns the current leader's API base URL.
func (n *Node) LeaderAPI() (string, bool) {
	id, _ := n.Leader()
	if id == "" {
		return "", false
	}
	p, ok := findPeer(n.peers, id)
	return p.APIAddr, ok
}

// CommitIndex is the index of the last log entry known committed.
func (n *Node) CommitIndex() uint64 { return n.raft.CommitIndex() }

// Apply commits a command through raft and returns its result once this
// node's FSM applied it; only then is the command acknowledged. An FSM
// rejection is returned as the error.
func (n *Node) Apply(ctx context.Context, c Command) (any, error) {
	b, err := encodeCommand(c)
	if err != nil {
		return nil, err
	}
	timeout := 10 * time.Second
	if d, ok := ctx.Deadline(); ok {
		timeout = time.Until(d)
	}
	f := n.raft.Apply(b, timeout)
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	select {
	case <-ctx.Done():
		return nil, fmt.Errorf("raft apply %s: %w", c.Type, ctx.Err())
	case err := <-done:
		if err != nil {
			return nil, fmt.Errorf("raft apply %s: %w", c.Type, err)
		}
	}
	if err, ok := f.Response().(error); ok {
		return nil, err
	}
	return f.Response(), nil
}

// Barrier waits until every entry committed before it is applied to this
// node's FSM; a new leader calls it before acting on its state.
func (n *Node) Barrier(timeout time.Duration) error {
	if err := n.raft.Barrier(timeout).Error(); err != nil {
		return fmt.Errorf("raft barrier: %w", err)
	}
	return nil
}

// CatchUp waits, once per leadership term, until this leader's FSM has
// applied every entry committed before the term began. A new leader learns
// the commit index only by committing in its own term, so until then its
// FSM may miss entries the old leader acknowledged; reads must wait.
func (n *Node) CatchUp(ctx context.Context) error {
	term := n.raft.CurrentTerm()
	if n.caughtUpTerm.Load() == term {
		return nil
	}
	timeout := 5 * time.Second
	if d, ok := ctx.Deadline(); ok {
		timeout = min(timeout, time.Until(d))
	}
	if err := n.Barrier(timeout); err != nil {
		return err
	}
	n.caughtUpTerm.Store(term)
	return nil
}

// Shutdown stops raft and closes the transport and stores.
func (n *Node) Shutdown() error {
	err := n.raft.Shutdown().Error()
	close(n.notify)
	<-n.notifyDone
	if cerr := n.closeStores(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("shutdown raft node %s: %w", n.id, err)
	}
	return nil
}

func (n *Node) closeStores() error {
	var errs []error
	if n.transport != nil {
		errs = append(errs, n.transport.Close())
	}
	errs = append(errs, n.store.Close())
	return errors.Join(errs...)
}

// streamLayer is raft's plain TCP stream layer (InsecurePlainRaft) over a
// listener we opened ourselves, advertising the address peers know us by (which may be a DNS
// name, so it is not resolved here).
type streamLayer struct {
	net.Listener
	advertise net.Addr
}

func (s *streamLayer) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	return net.DialTimeout("tcp", string(addr), timeout)
}

func (s *streamLayer) Addr() net.Addr { return s.advertise }

type advertiseAddr string

func (a advertiseAddr) Network() string { return "tcp" }
func (a advertiseAddr) String() string  { return string(a) }
