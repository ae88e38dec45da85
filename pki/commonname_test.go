package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// signLeaf signs tmpl with ca, as a tool other than Issue would (Helm's
// genSignedCert sets only the CommonName, IPs and DNS names), writes the
// pair beside a copy of the CA certificate and returns its Files.
func signLeaf(t *testing.T, ca *CA, tmpl *x509.Certificate) Files {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, err := randomSerial()
	if err != nil {
		t.Fatal(err)
	}
	tmpl.SerialNumber = serial
	tmpl.NotBefore = time.Now().Add(-time.Minute)
	tmpl.NotAfter = time.Now().Add(time.Hour)
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	tmpl.BasicConstraintsValid = true
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := encodeKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	f := Files{CA: filepath.Join(dir, CACertFile), Cert: filepath.Join(dir, "leaf.crt"), Key: filepath.Join(dir, "leaf.key")}
	for path, b := range map[string][]byte{f.CA: encodeCert(ca.cert.Raw), f.Cert: encodeCert(der), f.Key: keyPEM} {
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

func newTestCA(t *testing.T) *CA {
	t.Helper()
	ca, err := NewCA(filepath.Join(t.TempDir(), "ca"), CAOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// The CommonName encoding, the role's own name, alone or beside the
// URI SAN, through LoadCredentials (chain to the CA, then identity).
func TestCommonNameIdentity(t *testing.T) {
	ca := newTestCA(t)
	uri := func(s string) []*url.URL {
		u, err := url.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		return []*url.URL{u}
	}
	for _, tc := range []struct {
		name    string
		cn      string
		extraCN string // a second CommonName attribute
		uris    []*url.URL
		want    Identity // zero: refused
		wantErr string
	}{
		{name: "CN only, worker", cn: "worker", want: Identity{RoleWorker, "worker"}},
		{name: "CN only, coordinator", cn: "coordinator", want: Identity{RoleCoordinator, "coordinator"}},
		{name: "CN only, etcd", cn: "etcd", want: Identity{RoleEtcd, "etcd"}},
		{name: "CN only, nats", cn: "nats", want: Identity{RoleNATS, "nats"}},
		{name: "CN only, user", cn: "user", want: Identity{RoleUser, "user"}},
		{name: "URI and CN agree", cn: "coordinator", uris: uri("spiffe://modcoord/role/coordinator/c0"), want: Identity{RoleCoordinator, "c0"}},
		{name: "URI with a free-text CN", cn: "c0.example.com", uris: uri("spiffe://modcoord/role/coordinator/c0"), want: Identity{RoleCoordinator, "c0"}},
		{name: "URI and CN disagree on role", cn: "coordinator", uris: uri("spiffe://modcoord/role/worker/c0"), wantErr: "must agree"},
		{name: "no role at all", cn: "w0", wantErr: "no modcoord role"},
		{name: "empty CN", cn: "", wantErr: "no modcoord role"},
		{name: "role case", cn: "Worker", wantErr: "no modcoord role"},
		{name: "leading space", cn: " worker", wantErr: "no modcoord role"},
		{name: "trailing space", cn: "worker ", wantErr: "no modcoord role"},
		{name: "unknown role", cn: "admin", wantErr: "no modcoord role"},
		{name: "spiffe form in the CN", cn: "spiffe://modcoord/role/worker/w0", wantErr: "no modcoord role"},
		{name: "two CommonNames", cn: "worker", extraCN: "coordinator", wantErr: "exactly one CommonName"},
		{name: "a second free-text CommonName", cn: "worker", extraCN: "w0", wantErr: "exactly one CommonName"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tmpl := &x509.Certificate{Subject: pkix.Name{CommonName: tc.cn}, URIs: tc.uris}
			if tc.extraCN != "" {
				tmpl.Subject = pkix.Name{ExtraNames: []pkix.AttributeTypeAndValue{
					{Type: oidCommonName, Value: tc.cn}, {Type: asn1.ObjectIdentifier{2, 5, 4, 3}, Value: tc.extraCN},
				}}
			}
			f := signLeaf(t, ca, tmpl)
			creds, err := LoadCredentials(f)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("LoadCredentials: %v, want an error with %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("LoadCredentials: %v", err)
			}
			if creds.Identity != tc.want {
				t.Fatalf("identity %v, want %v", creds.Identity, tc.want)
			}
			// The same through a verified TLS handshake.
			if id, err := verifiedIdentity(t, creds); err != nil || id != tc.want {
				t.Fatalf("peer identity %v, %v; want %v", id, err, tc.want)
			}
		})
	}
}

// verifiedIdentity reads creds' leaf the way PeerIdentity does, after
// verifying it against the CA.
func verifiedIdentity(t *testing.T, creds *Credentials) (Identity, error) {
	t.Helper()
	chains, err := creds.Cert.Leaf.Verify(x509.VerifyOptions{Roots: creds.CAs, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	if err != nil {
		return Identity{}, err
	}
	return IdentityOf(chains[0][0])
}

// The CommonName encoding authenticates nothing by itself: a CN-only
// certificate from another CA is refused, at load and in a handshake.
func TestCommonNameNeedsTheClusterCA(t *testing.T) {
	ca, other := newTestCA(t), newTestCA(t)
	good := signLeaf(t, ca, &x509.Certificate{Subject: pkix.Name{CommonName: "coordinator"}, DNSNames: []string{"localhost"}})
	forged := signLeaf(t, other, &x509.Certificate{Subject: pkix.Name{CommonName: "worker"}})
	// The forged certificate presented with the cluster's CA file.
	forged.CA = good.CA
	if _, err := LoadCredentials(forged); err == nil || !strings.Contains(err.Error(), "not valid under the CA") {
		t.Fatalf("a CN-only certificate of another CA was loaded: %v", err)
	}

	server, err := LoadCredentials(good)
	if err != nil {
		t.Fatal(err)
	}
	forgedCreds := uncheckedCreds(t, forged)
	srvCfg, err := ServerConfig(server, RoleWorker)
	if err != nil {
		t.Fatal(err)
	}
	cliCfg, err := ClientConfig(forgedCreds, RoleCoordinator)
	if err != nil {
		t.Fatal(err)
	}
	cliCfg.ServerName = "localhost"
	if serr, _ := handshake(t, srvCfg, cliCfg); serr == nil {
		t.Fatal("the server accepted a CN-only client certificate of another CA")
	}

	// A CN-only worker certificate of the cluster CA gets in.
	worker := signLeaf(t, ca, &x509.Certificate{Subject: pkix.Name{CommonName: "worker"}})
	wc, err := LoadCredentials(worker)
	if err != nil {
		t.Fatal(err)
	}
	if cliCfg, err = ClientConfig(wc, RoleCoordinator); err != nil {
		t.Fatal(err)
	}
	cliCfg.ServerName = "localhost"
	if serr, cerr := handshake(t, srvCfg, cliCfg); serr != nil || cerr != nil {
		t.Fatalf("CN-only certificates of the cluster CA: server %v, client %v", serr, cerr)
	}
}

// Issue writes both encodings, and they agree.
func TestIssueSetsRoleCommonName(t *testing.T) {
	l := mustLocal(t)
	for _, role := range Roles() {
		leaf := mustCreds(t, l, role).Cert.Leaf
		if got, want := leaf.Subject.CommonName, string(role); got != want {
			t.Errorf("%s: CommonName %q, want %q", role, got, want)
		}
		if len(leaf.URIs) != 1 {
			t.Errorf("%s: %d URI SANs, want 1", role, len(leaf.URIs))
		}
		// Either encoding alone gives the role; only the URI carries the name.
		noURI := *leaf
		noURI.URIs = nil
		noCN := *leaf
		noCN.Subject = pkix.Name{}
		for c, want := range map[*x509.Certificate]Identity{&noURI: {role, string(role)}, &noCN: {role, "local"}} {
			if id, err := IdentityOf(c); err != nil || id != want {
				t.Errorf("%s: %v, %v; want %v", role, id, err, want)
			}
		}
	}
}
