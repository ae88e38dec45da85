package allreduce

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	crand "crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"math/big"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"
)

// scriptConn is a connection whose reads return a fixed byte stream in
// pieces of random length, as a socket may.
type scriptConn struct {
	net.Conn
	data []byte
	rng  *rand.Rand
}

func (c *scriptConn) Read(p []byte) (int, error) {
	if len(c.data) == 0 {
		return 0, io.EOF
	}
	n := min(len(p), len(c.data), 1+c.rng.IntN(3000))
	copy(p, c.data[:n])
	c.data = c.data[n:]
	return n, nil
}

// readThroughTap reads stream through a tapConn tapping subject "a.b",
// into pieces of random size, and returns what nats.go would see and the
// tapped payloads.
func readThroughTap(t *testing.T, stream []byte, seed uint64) (passed []byte, payloads []string, tc *tapConn) {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 1))
	taps := &tapSet{}
	if err := taps.add("a.b", func(p []byte) { payloads = append(payloads, string(p)) }); err != nil {
		t.Fatal(err)
	}
	tc = newTapConn(&scriptConn{data: stream, rng: rng}, taps, &msgPool{})
	for {
		p := make([]byte, 1+rng.IntN(40000))
		n, err := tc.Read(p)
		passed = append(passed, p[:n]...)
		if err == io.EOF {
			return passed, payloads, tc
		}
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			t.Fatal("Read returned 0 bytes and no error")
		}
	}
}

func msgFrame(subject, reply string, payload string) string {
	args := subject + " 7 "
	if reply != "" {
		args += reply + " "
	}
	return "MSG " + args + strconv.Itoa(len(payload)) + "\r\n" + payload + "\r\n"
}

// TestTapConnTakesOutTappedMessages feeds a server's stream through a tap
// in random pieces: nats.go must see every frame but the tapped
// subject's MSG frames, unchanged and in order, and the tap must deliver
// exactly those payloads, in order.
func TestTapConnTakesOutTappedMessages(t *testing.T) {
	big := strings.Repeat("x", tapReadSize+12345) // larger than the tap's buffer
	frames := []struct {
		raw    string
		tapped bool
	}{
		{`INFO {"server_id":"s","max_payload":1048576}` + "\r\n", false},
		{msgFrame("a.b", "", "hello"), true},
		{"PING\r\n", false},
		{msgFrame("other", "", "not ours"), false},
		{msgFrame("a.b", "reply.x", "\r\nMSG a.b 7 3\r\n"), true}, // protocol look-alikes inside a payload
		{"HMSG a.b 7 12 14\r\nNATS/1.0\r\n\r\nhi\r\n", false},     // headers: left to nats.go
		{"+OK\r\n", false},
		{"-ERR 'Permissions Violation for Subscription to \"x\"'\r\n", false},
		{msgFrame("a.b", "", ""), true},
		{msgFrame("a.bc", "", "prefix of a tapped subject"), false},
		{msgFrame("a.b", "", big), true},
		{"INFO {\"connect_urls\":[\"" + strings.Repeat("10.0.0.1:4222\",\"", 600) + "\"]}\r\n", false}, // longer than tapMaxLine
		{"PONG\r\n", false},
		{msgFrame("a.b", "", "last"), true},
	}
	var stream, want []byte
	var wantPayloads []string
	tappedBytes := 0
	for _, f := range frames {
		stream = append(stream, f.raw...)
		if f.tapped {
			tappedBytes += len(f.raw)
			payload := f.raw[strings.Index(f.raw, "\r\n")+2 : len(f.raw)-2]
			wantPayloads = append(wantPayloads, payload)
		} else {
			want = append(want, f.raw...)
		}
	}
	for seed := range uint64(20) {
		passed, payloads, tc := readThroughTap(t, stream, seed)
		if !bytes.Equal(passed, want) {
			t.Fatalf("seed %d: nats.go saw %d bytes, want %d:\n%.300q\nwant\n%.300q", seed, len(passed), len(want), passed, want)
		}
		if len(payloads) != len(wantPayloads) {
			t.Fatalf("seed %d: %d tapped payloads, want %d", seed, len(payloads), len(wantPayloads))
		}
		for i := range payloads {
			if payloads[i] != wantPayloads[i] {
				t.Fatalf("seed %d: payload %d = %.40q, want %.40q", seed, i, payloads[i], wantPayloads[i])
			}
		}
		if tc.transparent || tc.tapped != tappedBytes {
			t.Fatalf("seed %d: transparent %v, tapped %d bytes, want false, %d", seed, tc.transparent, tc.tapped, tappedBytes)
		}
	}
}

// TestTapConnStepsAsideOnTheUnexpected: after anything the tap cannot
// parse, every later byte reaches nats.go untouched, tapped subject or
// not, so nats.go reports the problem as it would without a tap.
func TestTapConnStepsAsideOnTheUnexpected(t *testing.T) {
	later := msgFrame("a.b", "", "after") + "PING\r\n"
	cases := []struct {
		name, bad string
	}{
		{"TLS record after INFO", "\x16\x03\x01\x02\x00\x01\x00\x01\xfc"},
		{"size beyond any max_payload", "MSG a.b 7 999999999999\r\n"},
		{"negative size", "MSG a.b 7 -5\r\nhello\r\n"},
		{"too few arguments", "MSG a.b\r\n"},
		{"payload without its CRLF", "MSG a.b 7 5\r\nhelloXX"},
		{"MSG line without an end", "MSG a.b 7 " + strings.Repeat("9", tapMaxLine)},
		{"lower-case operation", "msg a.b 7 5\r\nhello\r\n"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			info := `INFO {"server_id":"s"}` + "\r\n"
			stream := []byte(info + tc.bad + later)
			for seed := range uint64(10) {
				passed, payloads, conn := readThroughTap(t, stream, seed)
				if !bytes.Equal(passed, stream) || len(payloads) != 0 || !conn.transparent {
					t.Fatalf("seed %d: passed %.80q (%d of %d bytes), tapped %d, transparent %v; want everything passed",
						seed, passed, len(passed), len(stream), len(payloads), conn.transparent)
				}
			}
		})
	}
}

// FuzzTapConn: whatever the server sends, the tap neither panics nor
// loses a byte: each is passed to nats.go, part of a frame it delivered,
// or part of a tapped frame the stream ended in the middle of (which a
// dropped connection loses anyway).
func FuzzTapConn(f *testing.F) {
	f.Add([]byte(msgFrame("a.b", "", "hello")+"PING\r\n"), uint64(1))
	f.Add([]byte("INFO {}\r\nMSG a.b 7 3\r\nabc\r\nHMSG a.b 7 2 4\r\nhhpp\r\n"), uint64(2))
	f.Add([]byte("MSG a.b 7 10\r\nshort"), uint64(3))
	f.Fuzz(func(t *testing.T, stream []byte, seed uint64) {
		passed, _, tc := readThroughTap(t, stream, seed)
		if left := tc.w - tc.r; len(passed)+tc.tapped+left != len(stream) {
			t.Fatalf("passed %d + tapped %d + %d unfinished bytes of a %d-byte stream", len(passed), tc.tapped, left, len(stream))
		}
	})
}

// TestNATSTapOnlyOnPlainTCP: a tap reads the socket, so it is used only
// where the socket carries the NATS protocol in the clear. Over TLS or a
// websocket nats.go's own reader stays.
func TestNATSTapOnlyOnPlainTCP(t *testing.T) {
	for _, tc := range []struct {
		urls string
		want bool
	}{
		{"nats://127.0.0.1:4222", true},
		{"127.0.0.1:4222", true},
		{"nats://a:4222, tcp://b:4222", true},
		{"TLS://a:4222", false},
		{"nats://a:4222,ws://b:8080", false},
		{"wss://a:443", false},
	} {
		if got := tapURLs(tc.urls); got != tc.want {
			t.Errorf("tapURLs(%q) = %v, want %v", tc.urls, got, tc.want)
		}
	}
	for _, auth := range natsAuths(t) {
		client := auth.client
		client.URL = natsServer(t, auth, 0)
		tr, err := DialNATS(client)
		if err != nil {
			t.Fatal(err)
		}
		if tapped := tr.taps != nil; tapped != (client.TLS == nil) {
			t.Errorf("%s: tapped %v", auth.name, tapped)
		}
		tr.Close()
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
