package allreduce

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	crand "crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/modcoord/modcoord/embedded"
	"github.com/modcoord/modcoord/shard"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// natsAuth is one way a test server demands credentials, and the client
// options that satisfy it.
type natsAuth struct {
	name   string
	server func(*server.Options)
	client NATSOptions
}

func natsAuths(t *testing.T) []natsAuth {
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	seed, _ := kp.Seed()
	pub, _ := kp.PublicKey()
	seedFile := filepath.Join(t.TempDir(), "user.nk")
	if err := os.WriteFile(seedFile, seed, 0o600); err != nil {
		t.Fatal(err)
	}
	serverTLS, clientTLS := selfSignedTLS(t)
	return []natsAuth{
		{"user and password",
			func(o *server.Options) { o.Username, o.Password = "worker", "s3cret" },
			NATSOptions{User: "worker", Password: "s3cret"}},
		{"token",
			func(o *server.Options) { o.Authorization = "tok3n" },
			NATSOptions{Token: "tok3n"}},
		{"nkey",
			func(o *server.Options) { o.Nkeys = []*server.NkeyUser{{Nkey: pub}} },
			NATSOptions{NKeySeedFile: seedFile}},
		{"user and password over TLS",
			func(o *server.Options) {
				o.Username, o.Password = "worker", "s3cret"
				o.TLSConfig, o.TLSTimeout = serverTLS, 5
			},
			NATSOptions{User: "worker", Password: "s3cret", TLS: clientTLS}},
	}
}

// natsServer starts an embedded server requiring auth, with a small
// max_payload so that rings must cut vectors into many messages.
func natsServer(t *testing.T, auth natsAuth, maxPayload int32) string {
	t.Helper()
	opts := server.Options{MaxPayload: maxPayload, NoLog: true}
	auth.server(&opts)
	s, err := embedded.StartNATSWithOptions(&opts, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { embedded.StopNATS(s) })
	return s.ClientURL()
}

func natsRings(t *testing.T, url string, client NATSOptions, world int, deadline time.Duration, wrap func(rank int, tr Transport) Transport) []*Ring {
	return natsRingsGather(t, url, client, world, deadline, GatherDefault, wrap)
}

func natsRingsGather(t *testing.T, url string, client NATSOptions, world int, deadline time.Duration, gather GatherMode, wrap func(rank int, tr Transport) Transport) []*Ring {
	t.Helper()
	rings := make([]*Ring, world)
	for r := range rings {
		client.URL, client.Name = url, fmt.Sprintf("rank-%d", r)
		tr, err := DialNATS(client)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { tr.Close() })
		var used Transport = tr
		if wrap != nil {
			used = wrap(r, tr)
		}
		ring, err := NewRing(used, Config{Job: "nats-test", Generation: 3, Rank: r, World: world, Deadline: deadline, Gather: gather})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ring.Close() })
		rings[r] = ring
	}
	return rings
}

// TestNATSAllReduceWithAuth runs collectives over an embedded server that
// requires each kind of credential, with chunks sized from the server's
// max_payload.
func TestNATSAllReduceWithAuth(t *testing.T) {
	checkGoroutines(t)
	const world, n, maxPayload = 3, 5000, 4096
	for i, auth := range natsAuths(t) {
		// Each credential with each all-gather, without running all six.
		gather := gatherModes[i%len(gatherModes)]
		t.Run(fmt.Sprintf("%s, %v all-gather", auth.name, gather), func(t *testing.T) {
			url := natsServer(t, auth, maxPayload)
			rings := natsRingsGather(t, url, auth.client, world, 5*time.Second, gather, nil)
			if want := (maxPayload - headerSize) / 4 / shard.Align * shard.Align; rings[0].ChunkFloats() != want {
				t.Errorf("%d floats per chunk under max_payload %d, want %d", rings[0].ChunkFloats(), maxPayload, want)
			}
			rng := rand.New(rand.NewPCG(4, 4))
			xs := randomVectors(rng, world, n)
			want := ringOrderSum(xs)
			bufs := cloneAll(xs)
			scalars := make([][]float64, world)
			errs, _ := onAllRanks(world, func(r int) error {
				if err := rings[r].AllReduce(ctxTimeout(t, 10*time.Second), 1, bufs[r]); err != nil {
					return err
				}
				scalars[r] = []float64{float64(r) + 0.5}
				return rings[r].AllReduceScalars(ctxTimeout(t, 10*time.Second), 1, scalars[r])
			})
			for r, err := range errs {
				if err != nil {
					t.Fatalf("rank %d: %v", r, err)
				}
				if i, ok := sameBits(bufs[r], want); !ok {
					t.Fatalf("rank %d: element %d = %v, want %v", r, i, bufs[r][i], want[i])
				}
				if scalars[r][0] != 4.5 {
					t.Errorf("rank %d: scalar sum %v, want 4.5", r, scalars[r][0])
				}
			}
		})
	}
}

func TestNATSRejectsBadCredentials(t *testing.T) {
	checkGoroutines(t)
	auths := natsAuths(t)
	url := natsServer(t, auths[0], 0)
	for _, opts := range []NATSOptions{
		{User: "worker", Password: "wrong"},
		{},
		{Token: "tok3n"},
	} {
		opts.URL = url
		opts.ConnectTimeout = 2 * time.Second
		if tr, err := DialNATS(opts); err == nil {
			tr.Close()
			t.Errorf("connected with %+v", opts)
		}
	}
	if _, err := DialNATS(NATSOptions{URL: url, User: "a", Password: "b", Token: "c"}); err == nil {
		t.Error("DialNATS accepted two kinds of credentials")
	}
}

// TestNATSDeadRank closes one rank's connection in the middle of a
// collective: the others must name it within the deadline.
func TestNATSDeadRank(t *testing.T) {
	checkGoroutines(t)
	for _, gather := range gatherModes {
		t.Run(gather.String(), func(t *testing.T) { natsDeadRank(t, gather) })
	}
}

func natsDeadRank(t *testing.T, gather GatherMode) {
	const world, n, dead = 3, 20000, 1
	const deadline = time.Second
	auth := natsAuths(t)[0]
	url := natsServer(t, auth, 4096)
	var cut *cutTransport
	rings := natsRingsGather(t, url, auth.client, world, deadline, gather, func(r int, tr Transport) Transport {
		if r != dead {
			return tr
		}
		cut = newCutTransport(tr)
		cut.onCut = func() { tr.(*NATSTransport).Close() }
		return cut
	})
	bufs := cloneAll(randomVectors(rand.New(rand.NewPCG(5, 5)), world, n))
	if errs, _ := onAllRanks(world, func(r int) error { return rings[r].AllReduce(context.Background(), 1, bufs[r]) }); errors.Join(errs...) != nil {
		t.Fatal(errors.Join(errs...))
	}
	cut.cutAfter(3)
	errs, took := onAllRanks(world, func(r int) error { return rings[r].AllReduce(context.Background(), 2, bufs[r]) })
	for r, err := range errs {
		if err == nil {
			t.Errorf("rank %d: succeeded with rank %d dead", r, dead)
			continue
		}
		if took[r] >= deadline {
			t.Errorf("rank %d took %v, deadline %v: %v", r, took[r], deadline, err)
		}
		var pe *PeerError
		if r != dead && (!errors.As(err, &pe) || pe.Rank != dead) {
			t.Errorf("rank %d: %v does not name rank %d", r, err, dead)
		}
	}
}

// TestNATSSubjectPermissions: a user allowed only its own job's subjects
// (docs/allreduce.md) runs that job's ring and cannot join another's.
func TestNATSSubjectPermissions(t *testing.T) {
	checkGoroutines(t)
	allow := func(subjects ...string) *server.SubjectPermission {
		return &server.SubjectPermission{Allow: subjects}
	}
	auth := natsAuth{
		server: func(o *server.Options) {
			o.Users = []*server.User{{Username: "job-a", Password: "pa", Permissions: &server.Permissions{
				Publish: allow("modcoord.job-a.>"), Subscribe: allow("modcoord.job-a.>"),
			}}}
		},
		client: NATSOptions{User: "job-a", Password: "pa"},
	}
	url := natsServer(t, auth, 0)
	opts := auth.client
	opts.URL = url
	rings := make([]*Ring, 2)
	for rank := range rings {
		tr, err := DialNATS(opts)
		if err != nil {
			t.Fatal(err)
		}
		defer tr.Close()
		if r, err := NewRing(tr, Config{Job: "job-b", Rank: rank, World: 2}); err == nil {
			r.Close()
			t.Fatal("joined another job's ring")
		}
		if rings[rank], err = NewRing(tr, Config{Job: "job-a", Rank: rank, World: 2, Deadline: 5 * time.Second}); err != nil {
			t.Fatalf("own job's ring: %v", err)
		}
		defer rings[rank].Close()
	}
	bufs := [][]float32{{1, 2, 3}, {10, 20, 30}}
	errs, _ := onAllRanks(2, func(r int) error { return rings[r].AllReduce(context.Background(), 1, bufs[r]) })
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	for r, b := range bufs {
		if b[0] != 11 || b[1] != 22 || b[2] != 33 {
			t.Errorf("rank %d: %v, want [11 22 33]", r, b)
		}
	}
}

// TestNATSCallerConnectionEcho: on a connection the caller made (without
// NoEcho) the server sends a rank its own broadcasts back; the Ring must
// discard them quietly and still produce the fixed-order sum.
func TestNATSCallerConnectionEcho(t *testing.T) {
	checkGoroutines(t)
	const world, n = 3, 30000
	auth := natsAuths(t)[0]
	url := natsServer(t, auth, 8192)
	rings := make([]*Ring, world)
	for r := range rings {
		nc, err := nats.Connect(url, nats.UserInfo(auth.client.User, auth.client.Password))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		ring, err := NewRing(NewNATSTransport(nc), Config{Job: "echo", Generation: 1, Rank: r, World: world, Deadline: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ring.Close() })
		rings[r] = ring
	}
	xs := randomVectors(rand.New(rand.NewPCG(6, 6)), world, n)
	want := ringOrderSum(xs)
	bufs := cloneAll(xs)
	errs, _ := onAllRanks(world, func(r int) error { return rings[r].AllReduce(ctxTimeout(t, 10*time.Second), 1, bufs[r]) })
	for r, err := range errs {
		if err != nil {
			t.Fatalf("rank %d: %v", r, err)
		}
		if i, ok := sameBits(bufs[r], want); !ok {
			t.Fatalf("rank %d: element %d differs", r, i)
		}
		if st := rings[r].Stats(); st.Invalid != 0 || st.Duplicate != 0 || st.Stale != 0 {
			t.Errorf("rank %d: own broadcasts counted as drops: %+v", r, st)
		}
	}
}

// selfSignedTLS returns a server certificate for 127.0.0.1 and a client
// configuration that trusts it.
func selfSignedTLS(t *testing.T) (server, client *tls.Config) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), crand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "modcoord-test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(crand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	server = &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}, MinVersion: tls.VersionTLS12}
	client = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	return server, client
}

// blackhole is a TCP proxy that can stop forwarding without closing
// anything: what a client sees when a partition drops its packets.
type blackhole struct {
	ln   net.Listener
	dead chan struct{}
}

func newBlackhole(t *testing.T, target string) *blackhole {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &blackhole{ln: ln, dead: make(chan struct{})}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			t.Cleanup(func() { c.Close(); s.Close() })
			go b.pipe(c, s)
			go b.pipe(s, c)
		}
	}()
	return b
}

// pipe copies until the hole closes, then reads and drops everything.
func (b *blackhole) pipe(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if err != nil {
			return
		}
		select {
		case <-b.dead:
			continue
		default:
		}
		if _, err := dst.Write(buf[:n]); err != nil {
			return
		}
	}
}

// TestNATSTransportNoticesADeadLink: when the link to the server silently
// drops every packet, the client's pings go unanswered and it leaves the
// connection (to reconnect) within natsMaxPingsOut ping intervals, rather
// than after nats.go's default of minutes. (With the 5 s default the
// 10 s bound below fails: the interval is what is tested.)
func TestNATSTransportNoticesADeadLink(t *testing.T) {
	url := natsServer(t, natsAuths(t)[0], 1<<20)
	hole := newBlackhole(t, url[len("nats://"):])
	disconnected := make(chan struct{}, 1)
	tr, err := DialNATS(NATSOptions{URL: "nats://" + hole.ln.Addr().String(), User: "worker", Password: "s3cret", PingInterval: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	tr.Conn().SetDisconnectErrHandler(func(*nats.Conn, error) {
		select {
		case disconnected <- struct{}{}:
		default:
		}
	})
	if _, err := tr.Listen("before", func([]byte) {}); err != nil {
		t.Fatalf("subscribe on a live link: %v", err)
	}
	close(hole.dead)
	t0 := time.Now()
	select {
	case <-disconnected:
		t.Logf("dead link noticed after %v", time.Since(t0).Round(time.Millisecond))
	case <-time.After(10 * time.Second):
		t.Fatalf("the connection still looks alive 10s after its link died (status %v)", tr.Conn().Status())
	}
}
