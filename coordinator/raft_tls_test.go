package coordinator

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/modcoord/modcoord/pki"
)

// forgedName marks the job an intruder tries to slip into the raft log.
const forgedName = "forged-by-intruder"

// intruderStream is the stream layer of an intruder's raft transport: it
// dials however the attack says, and listens on a port nobody uses (raft's
// transport insists on accepting).
type intruderStream struct {
	net.Listener
	dial func(addr string, timeout time.Duration) (net.Conn, error)
}

func (s *intruderStream) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	return s.dial(string(addr), timeout)
}

func plainDial(addr string, timeout time.Duration) (net.Conn, error) {
	return net.DialTimeout("tcp", addr, timeout)
}

// tlsDial presents certs (maybe none) and, being an intruder, does not
// bother verifying the server: only the server's checks stand in the way.
func tlsDial(certs []tls.Certificate) func(string, time.Duration) (net.Conn, error) {
	return func(addr string, timeout time.Duration) (net.Conn, error) {
		d := tls.Dialer{NetDialer: &net.Dialer{Timeout: timeout}, Config: &tls.Config{
			MinVersion: tls.VersionTLS13, Certificates: certs, InsecureSkipVerify: true,
		}}
		return d.Dial("tcp", addr)
	}
}

// intruderSpec is a job the FSM accepts.
func intruderSpec(name string) (JobSpec, Plan) {
	return JobSpec{Name: name, Data: "testdata/job.yaml", Batch: 4, BudgetFLOPs: 100, MinWorkers: 1, MaxWorkers: 1,
		CheckpointEvery: 10, KeepCheckpoints: 1}, Plan{FLOPsPerStep: 10, Steps: 10}
}

// forgeAppend sends n, through stream, what a leader of a newer term
// would: one submit entry after n's last one, committed at once. This is
// hashicorp/raft's own wire format (an rpc type byte, then msgpack), since
// it is raft's own NetworkTransport that sends it.
func forgeAppend(t *testing.T, n *Node, dial func(string, time.Duration) (net.Conn, error)) (*raft.AppendEntriesResponse, error) {
	t.Helper()
	st := n.raft.Stats()
	num := func(k string) uint64 {
		v, err := strconv.ParseUint(st[k], 10, 64)
		if err != nil {
			t.Fatalf("raft stat %s: %v", k, err)
		}
		return v
	}
	term, last, lastTerm := num("term"), num("last_log_index"), num("last_log_term")
	spec, plan := intruderSpec(forgedName)
	data, err := encodeCommand(Command{Type: CmdSubmit, At: time.Now(), Submit: &SubmitCommand{Spec: spec, Plan: plan, RequestID: forgedName}})
	if err != nil {
		t.Fatal(err)
	}
	trans := raft.NewNetworkTransport(&intruderStream{Listener: listen(t), dial: dial}, 1, 2*time.Second, io.Discard)
	defer trans.Close()
	req := &raft.AppendEntriesRequest{
		RPCHeader:         raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte("intruder"), Addr: []byte(trans.LocalAddr())},
		Term:              term + 1,
		PrevLogEntry:      last,
		PrevLogTerm:       lastTerm,
		Entries:           []*raft.Log{{Index: last + 1, Term: term + 1, Type: raft.LogCommand, Data: data, AppendedAt: time.Now()}},
		LeaderCommitIndex: last + 1,
	}
	var resp raft.AppendEntriesResponse
	self, _ := findPeer(n.peers, n.id)
	err = trans.AppendEntries(raft.ServerID(n.id), raft.ServerAddress(self.RaftAddr), req, &resp)
	return &resp, err
}

// forgedIn reports whether n's raft log or FSM holds the forged entry.
func forgedIn(t *testing.T, c *Coordinator) bool {
	t.Helper()
	for _, j := range c.FSM().Jobs() {
		if j.Spec.Name == forgedName {
			return true
		}
	}
	n := c.Node()
	first, err := n.store.FirstIndex()
	if err != nil {
		t.Fatal(err)
	}
	last, err := n.store.LastIndex()
	if err != nil {
		t.Fatal(err)
	}
	for i := max(first, 1); i <= last && first > 0; i++ {
		var l raft.Log
		if err := n.store.GetLog(i, &l); err != nil {
			continue // compacted into a snapshot meanwhile
		}
		if bytes.Contains(l.Data, []byte(forgedName)) {
			return true
		}
	}
	return false
}

// TestAdversarialRaftPeerWithoutCertificate replays issue 14's attack (a
// hand-made AppendEntries of a newer term carrying a submit) against every
// coordinator of a TLS cluster, over plain TCP and over TLS with
// certificates that must not pass. None may get an entry into any log.
// The control subtest sends the same forgery to a plain-TCP cluster and
// sees it applied, so the attack is a real one and this test can fail.
func TestAdversarialRaftPeerWithoutCertificate(t *testing.T) {
	t.Run("control: plain raft applies the forgery", func(t *testing.T) {
		tc := startClusterWith(t, 1, nil, "plain", clusterOptions{plainRaft: true})
		tc.leader()
		resp, err := forgeAppend(t, tc.coords[0].Node(), plainDial)
		if err != nil || !resp.Success {
			t.Fatalf("forgery against plain raft: %v, success %v", err, resp.Success)
		}
		waitFor(t, 10*time.Second, "the forged job in the FSM", func() bool { return forgedIn(t, tc.coords[0]) })
	})

	tc := startCluster(t, 3, nil, "adversarial")
	tc.leader()
	other := testPKI(t) // an unrelated CA
	for _, a := range []struct {
		name string
		dial func(string, time.Duration) (net.Conn, error)
	}{
		{"plain TCP", plainDial},
		{"TLS without a certificate", tlsDial(nil)},
		{"coordinator certificate of another CA", tlsDial([]tls.Certificate{testCreds(t, other, pki.RoleCoordinator).Cert})},
		{"worker certificate of the cluster's CA", tlsDial([]tls.Certificate{testCreds(t, tc.pki, pki.RoleWorker).Cert})},
		{"user certificate of the cluster's CA", tlsDial([]tls.Certificate{testCreds(t, tc.pki, pki.RoleUser).Cert})},
	} {
		t.Run(a.name, func(t *testing.T) {
			for i, c := range tc.coords {
				resp, err := forgeAppend(t, c.Node(), a.dial)
				if err == nil {
					t.Fatalf("coordinator %d answered the intruder (success %v, term %d)", i, resp.Success, resp.Term)
				}
				t.Logf("coordinator %d: %v", i, err)
			}
		})
	}

	// A real submission through the leader, applied everywhere, orders
	// after anything the intruders might have slipped in.
	spec, plan := intruderSpec("legitimate")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := tc.coords[tc.leader()].Node().Apply(ctx, Command{Type: CmdSubmit, At: time.Now(), Submit: &SubmitCommand{Spec: spec, Plan: plan}}); err != nil {
		t.Fatalf("the cluster no longer works: %v", err)
	}
	for i, c := range tc.coords {
		waitFor(t, 10*time.Second, "the legitimate job everywhere", func() bool {
			_, ok := c.FSM().Job("job-000001")
			return ok
		})
		if forgedIn(t, c) {
			t.Errorf("coordinator %d holds the forged entry", i)
		}
	}
}

// TestTLSStreamLayerSlowHandshake: connections that never finish a
// handshake neither delay a real peer's connection nor live past the
// handshake timeout.
func TestTLSStreamLayerSlowHandshake(t *testing.T) {
	l := testPKI(t)
	creds := testCreds(t, l, pki.RoleCoordinator)
	ln := listen(t)
	const timeout = time.Second
	server, err := newTLSStreamLayer(ln, ln.Addr(), creds, timeout, testLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()
	var silent []net.Conn
	for range 3 {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		silent = append(silent, c)
	}
	client, err := newTLSStreamLayer(listen(t), ln.Addr(), creds, time.Second, testLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	start := time.Now()
	go func() {
		c, err := client.Dial(raft.ServerAddress(ln.Addr().String()), 5*time.Second)
		if err == nil {
			c.Write([]byte{0})
			defer c.Close()
			time.Sleep(time.Second)
		}
	}()
	got, err := server.Accept()
	if err != nil {
		t.Fatal(err)
	}
	got.Close()
	// Handshakes one after another would take three timeouts here.
	if d := time.Since(start); d >= timeout {
		t.Errorf("a real peer waited %v behind silent connections", d)
	}
	for i, c := range silent {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil || isTimeout(err) {
			t.Errorf("silent connection %d still open after the handshake timeout: %v", i, err)
		}
	}
	server.Close()
	if _, err := server.Accept(); err == nil {
		t.Error("Accept after Close returned a connection")
	}
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

func TestNewNodeRaftTLSConfig(t *testing.T) {
	l := testPKI(t)
	other, err := pki.EnsureDir(t.TempDir(), pki.EnsureOptions{Hosts: []string{"elsewhere.example"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		cfg  func(*NodeConfig)
		want string
	}{
		{"no TLS and not insecure", func(*NodeConfig) {}, "no TLS credentials"},
		{"worker certificate", func(c *NodeConfig) { c.RaftTLS = testCreds(t, l, pki.RoleWorker) }, "coordinator certificate"},
		{"certificate for another host", func(c *NodeConfig) { c.RaftTLS = testCreds(t, other, pki.RoleCoordinator) }, "not valid for its raft address"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ln := listen(t)
			defer ln.Close()
			cfg := NodeConfig{ID: "c0", RaftListener: ln, DataDir: t.TempDir(), RaftLog: io.Discard, Logger: testLogger(),
				Peers: []Peer{{ID: "c0", RaftAddr: ln.Addr().String(), APIAddr: "http://127.0.0.1:1"}}}
			tc.cfg(&cfg)
			n, err := NewNode(cfg, NewFSM())
			if err == nil {
				n.Shutdown()
				t.Fatal("NewNode accepted the configuration")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}
}
