package pki

import (
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

func TestRoleReadBack(t *testing.T) {
	l := mustLocal(t)
	for _, role := range Roles() {
		t.Run(string(role), func(t *testing.T) {
			c := mustCreds(t, l, role)
			got, err := RoleOf(c.Cert.Leaf)
			if err != nil || got != role {
				t.Fatalf("RoleOf = %q, %v; want %q", got, err, role)
			}
			if c.Identity != (Identity{Role: role, Name: "local"}) {
				t.Fatalf("identity %v", c.Identity)
			}
			// Only a user certificate lacks server auth.
			hasServer := false
			for _, u := range c.Cert.Leaf.ExtKeyUsage {
				hasServer = hasServer || u == x509.ExtKeyUsageServerAuth
			}
			if hasServer != (role != RoleUser) {
				t.Fatalf("server auth %v for %s", hasServer, role)
			}
		})
	}
}

func TestIdentityOfRefuses(t *testing.T) {
	uri := func(s string) *url.URL {
		u, err := url.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		return u
	}
	for _, tc := range []struct {
		name string
		uris []*url.URL
		want string
	}{
		{"no URI", nil, "no modcoord role"},
		{"foreign trust domain only", []*url.URL{uri("spiffe://other/role/coordinator/x")}, "no modcoord role"},
		{"unknown role", []*url.URL{uri("spiffe://modcoord/role/admin/x")}, "malformed"},
		{"no name", []*url.URL{uri("spiffe://modcoord/role/worker")}, "malformed"},
		{"bad name", []*url.URL{uri("spiffe://modcoord/role/worker/a/b")}, "malformed"},
		{"two roles", []*url.URL{uri("spiffe://modcoord/role/worker/a"), uri("spiffe://modcoord/role/coordinator/a")}, "exactly one"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := IdentityOf(&x509.Certificate{URIs: tc.uris})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}
	if _, err := IdentityOf(&x509.Certificate{URIs: []*url.URL{uri("https://example.com"), uri("spiffe://modcoord/role/nats/n1")}}); err != nil {
		t.Fatalf("an unrelated URI beside the role: %v", err)
	}
}

func TestPeerIdentity(t *testing.T) {
	l := mustLocal(t)
	leaf := mustCreds(t, l, RoleWorker).Cert.Leaf
	// Presented but unverified certificates do not count.
	if _, err := PeerIdentity(tls.ConnectionState{PeerCertificates: []*x509.Certificate{leaf}}); err == nil {
		t.Fatal("an unverified certificate was accepted")
	}
	r := &http.Request{TLS: &tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{leaf}}}}
	if id, err := RequestIdentity(r); err != nil || id.Role != RoleWorker {
		t.Fatalf("RequestIdentity = %v, %v", id, err)
	}
	if _, err := RequestIdentity(&http.Request{}); err == nil {
		t.Fatal("a plain HTTP request has an identity")
	}
}

func TestNames(t *testing.T) {
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"c0", true}, {"c0.modcoord.svc", true}, {"10.0.0.1", true}, {"", false}, {".hidden", false},
		{"a/b", false}, {"../x", false}, {"has space", false}, {strings.Repeat("x", 65), false},
		{NameForHost("::1"), true}, {NameForHost("*.coord.svc"), true},
	} {
		if err := checkName(tc.name); (err == nil) != tc.ok {
			t.Errorf("checkName(%q) = %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
}
