package pki

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
)

// Role is the kind of component a certificate identifies.
type Role string

// The roles; see the package documentation for what each may do.
const (
	RoleCoordinator Role = "coordinator"
	RoleWorker      Role = "worker"
	RoleUser        Role = "user"
	RoleEtcd        Role = "etcd"
	RoleNATS        Role = "nats"
)

// Roles lists every role, in a fixed order.
func Roles() []Role {
	return []Role{RoleCoordinator, RoleWorker, RoleUser, RoleEtcd, RoleNATS}
}

// ParseRole checks that s names a role.
func ParseRole(s string) (Role, error) {
	r := Role(s)
	if !slices.Contains(Roles(), r) {
		return "", fmt.Errorf("unknown role %q (want one of %v)", s, Roles())
	}
	return r, nil
}

// servesTLS reports whether certificates of this role may authenticate a
// server. A user's certificate is for the CLI only, so a stolen laptop key
// cannot stand up a fake coordinator.
func (r Role) servesTLS() bool { return r != RoleUser }

// Identity is who a certificate names: its role and the name it was issued for.
type Identity struct {
	Role Role
	Name string
}

func (id Identity) String() string { return string(id.Role) + "/" + id.Name }

const (
	trustDomain = "modcoord"
	rolePrefix  = "/role/"
)

// roleURI is the URI SAN that carries id.
func roleURI(id Identity) *url.URL {
	return &url.URL{Scheme: "spiffe", Host: trustDomain, Path: rolePrefix + string(id.Role) + "/" + id.Name}
}

// RoleCommonName is the CommonName that carries id's role: the role's own
// name (SubjectFor). It is what Issue writes beside the URI SAN, and the
// only identity a certificate made by a tool that cannot write URI SANs
// (Helm's genSignedCert) carries; such a certificate's name is its role.
func RoleCommonName(id Identity) string { return string(id.Role) }

var oidCommonName = asn1.ObjectIdentifier{2, 5, 4, 3}

// identityFromCN reads a role out of cert's CommonName. claimed is false
// when no CommonName is a role's name (a free-text CommonName claims
// nothing); a certificate whose CommonName is a role must have exactly one
// CommonName. The identity's name is the role, since a CommonName carries
// nothing else.
func identityFromCN(cert *x509.Certificate) (id Identity, claimed bool, err error) {
	var cns []string
	for _, atv := range cert.Subject.Names {
		if atv.Type.Equal(oidCommonName) {
			s, _ := atv.Value.(string) // a non-string CN claims nothing, but still counts
			cns = append(cns, s)
		}
	}
	if len(cert.Subject.Names) == 0 && cert.Subject.CommonName != "" {
		// A certificate built in memory rather than parsed.
		cns = []string{cert.Subject.CommonName}
	}
	var role Role
	for _, cn := range cns {
		if r, err := ParseRole(cn); err == nil {
			claimed, role = true, r
		}
	}
	if !claimed {
		return Identity{}, false, nil
	}
	if len(cns) != 1 {
		return Identity{}, true, fmt.Errorf("certificate carries %d CommonNames, one of them a modcoord role; exactly one CommonName is allowed", len(cns))
	}
	return Identity{Role: role, Name: string(role)}, true, nil
}

// IdentityOf reads the role and name a certificate carries: its one
// spiffe://modcoord/role/<role>/<name> URI SAN, else its CommonName
// modcoord:<role>:<name>. When it carries both they must name the same
// identity. A certificate with neither, with several role URIs, or with a
// CommonName that starts with "modcoord:" but is not exactly that form is
// refused. It does not verify the certificate; call it on a verified
// chain's leaf (the chain to the cluster CA is what authenticates either
// encoding).
func IdentityOf(cert *x509.Certificate) (Identity, error) {
	if cert == nil {
		return Identity{}, errors.New("no certificate")
	}
	var found []Identity
	for _, u := range cert.URIs {
		if u.Scheme != "spiffe" || u.Host != trustDomain || !strings.HasPrefix(u.Path, rolePrefix) {
			continue
		}
		role, name, ok := strings.Cut(strings.TrimPrefix(u.Path, rolePrefix), "/")
		r, err := ParseRole(role)
		if !ok || err != nil || checkName(name) != nil {
			return Identity{}, fmt.Errorf("certificate %q: malformed role URI %q", cert.Subject.CommonName, u)
		}
		found = append(found, Identity{Role: r, Name: name})
	}
	if len(found) > 1 {
		return Identity{}, fmt.Errorf("certificate %q carries %d role URIs; exactly one is allowed", cert.Subject.CommonName, len(found))
	}
	cnID, claimed, err := identityFromCN(cert)
	if err != nil {
		return Identity{}, err
	}
	switch {
	case len(found) == 1 && claimed && found[0].Role != cnID.Role:
		return Identity{}, fmt.Errorf("certificate %q: its role URI names role %s but its CommonName role %s; they must agree", cert.Subject.CommonName, found[0].Role, cnID.Role)
	case len(found) == 1:
		return found[0], nil
	case claimed:
		return cnID, nil
	default:
		return Identity{}, fmt.Errorf("certificate %q carries no modcoord role (neither a spiffe://%s%s<role>/<name> URI SAN nor a CommonName naming a role); issue it with modcoord certs", cert.Subject.CommonName, trustDomain, rolePrefix)
	}
}

// RoleOf is IdentityOf's role.
func RoleOf(cert *x509.Certificate) (Role, error) {
	id, err := IdentityOf(cert)
	return id.Role, err
}

// PeerIdentity is the identity of the verified peer of a TLS connection.
// Only a verified chain counts: a certificate the peer merely presented
// (cs.PeerCertificates without VerifiedChains) is refused.
func PeerIdentity(cs tls.ConnectionState) (Identity, error) {
	if len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
		return Identity{}, errors.New("peer presented no verified certificate")
	}
	return IdentityOf(cs.VerifiedChains[0][0])
}

// RequestIdentity is the identity of the verified client of an HTTPS request.
func RequestIdentity(r *http.Request) (Identity, error) {
	if r.TLS == nil {
		return Identity{}, errors.New("request did not come over TLS")
	}
	return PeerIdentity(*r.TLS)
}

// checkName keeps names usable both in a URI path and as part of a file
// name: letters, digits, '.', '_' and '-', not starting with '.'.
func checkName(name string) error {
	if name == "" || len(name) > 64 {
		return fmt.Errorf("name %q: want 1 to 64 characters", name)
	}
	if name[0] == '.' {
		return fmt.Errorf("name %q must not start with '.'", name)
	}
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("name %q: only letters, digits, '.', '_' and '-' are allowed", name)
		}
	}
	return nil
}

// NameForHost turns a host name or IP address into a certificate name
// (':' of IPv6 and '*' of wildcards become '_').
func NameForHost(host string) string {
	return strings.NewReplacer(":", "_", "*", "_", "/", "_").Replace(host)
}
