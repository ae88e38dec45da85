package pki

import (
	"crypto/x509/pkix"
	"fmt"
	"path/filepath"
	"strings"
)

// SubjectFor is the subject of role's certificates: O=modcoord, CN=<role>.
// The CommonName is the role, not the certificate's name, because the
// servers that map a certificate to a user do so by subject: etcd takes
// the CN as its user name (EtcdUser) and NATS matches the subject DN
// (NATSUser); names are dynamic (one per worker pod), roles are not.
func SubjectFor(role Role) pkix.Name {
	return pkix.Name{Organization: []string{"modcoord"}, CommonName: string(role)}
}

// EtcdUser is the etcd user a client certificate of role authenticates
// as once etcd auth is on (etcd takes the certificate's CommonName).
func EtcdUser(role Role) string { return string(role) }

// NATSUser is the NATS user a client certificate of role is mapped to by
// a server with verify_and_map (server.Options.TLSMap): its subject DN as
// nats-server writes it.
func NATSUser(role Role) string { return SubjectFor(role).String() }

// FilesInDir finds role's material in a TLS directory (the --tls-dir of
// modcoord's commands): ca.crt and the one <role>-<name>.crt with its
// .key. A directory holding several certificates of the role is refused:
// which one a process uses must not depend on file name order.
func FilesInDir(dir string, role Role) (Files, error) {
	if _, err := ParseRole(string(role)); err != nil {
		return Files{}, err
	}
	matches, err := filepath.Glob(filepath.Join(dir, string(role)+"-*.crt"))
	if err != nil {
		return Files{}, fmt.Errorf("TLS directory %s: %w", dir, err)
	}
	switch len(matches) {
	case 0:
		return Files{}, fmt.Errorf("TLS directory %s holds no %s certificate (%s-<name>.crt); copy ca.crt and this component's .crt and .key from the output of modcoord certs", dir, role, role)
	case 1:
	default:
		return Files{}, fmt.Errorf("TLS directory %s holds %d %s certificates (%s); give each process a directory with ca.crt and only its own certificate and key", dir, len(matches), role, strings.Join(matches, ", "))
	}
	name := strings.TrimSuffix(strings.TrimPrefix(filepath.Base(matches[0]), string(role)+"-"), ".crt")
	return FilesFor(dir, role, name), nil
}

// LoadDir loads role's credentials from a TLS directory (FilesInDir) and
// checks that the certificate found carries that role.
func LoadDir(dir string, role Role) (*Credentials, error) {
	f, err := FilesInDir(dir, role)
	if err != nil {
		return nil, err
	}
	c, err := LoadCredentials(f)
	if err != nil {
		return nil, err
	}
	if c.Identity.Role != role {
		return nil, fmt.Errorf("load TLS credentials: %s carries role %s, not %s", f.Cert, c.Identity.Role, role)
	}
	return c, nil
}
