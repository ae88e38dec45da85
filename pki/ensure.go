package pki

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// renewBefore is how close to expiry EnsureDir replaces a certificate, so
// that a long local run does not cross an expiry.
const renewBefore = 30 * 24 * time.Hour

// EnsureOptions tunes EnsureDir; the zero value is what `modcoord local` wants.
type EnsureOptions struct {
	// Name is the name in every certificate (default "local").
	Name string
	// Hosts every certificate is valid for (default localhost, 127.0.0.1
	// and ::1: a local cluster listens on loopback only).
	Hosts []string
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Local is a directory of throwaway material made by EnsureDir: a CA and
// one certificate per role, all named the same.
type Local struct {
	Dir  string
	Name string
}

// Files are the paths of role's material.
func (l *Local) Files(role Role) Files { return FilesFor(l.Dir, role, l.Name) }

// Credentials loads role's material.
func (l *Local) Credentials(role Role) (*Credentials, error) {
	return LoadCredentials(l.Files(role))
}

// EnsureDir makes sure dir holds a CA and a valid certificate for every
// role, for a single-machine cluster: it creates what is missing, reuses
// what is valid, and reissues what is expiring, belongs to another CA or
// names other hosts. A CA near its end is replaced with everything it
// signed, which is fine for throwaway material and wrong for a real
// cluster (use WriteClusterBundle there).
func EnsureDir(dir string, opts EnsureOptions) (*Local, error) {
	name := opts.Name
	if name == "" {
		name = "local"
	}
	if err := checkName(name); err != nil {
		return nil, fmt.Errorf("ensure PKI in %s: %w", dir, err)
	}
	hosts := opts.Hosts
	if len(hosts) == 0 {
		hosts = []string{"localhost", "127.0.0.1", "::1"}
	}
	now := clock(opts.Now)
	ca, err := ensureCA(dir, now, opts.Now)
	if err != nil {
		return nil, fmt.Errorf("ensure PKI in %s: %w", dir, err)
	}
	l := &Local{Dir: dir, Name: name}
	for _, role := range Roles() {
		// LoadCredentials checks the chain to this CA, so a certificate
		// left over from a replaced CA is reissued too.
		if creds, err := l.Credentials(role); err == nil && !creds.ExpiresWithin(renewBefore, now) && sameHosts(creds, hosts) &&
			creds.Cert.Leaf.Subject.CommonName == string(role) { // certificates before CN = role are reissued
			continue
		}
		if _, err := ca.Issue(role, name, hosts, IssueOptions{Now: opts.Now}); err != nil {
			return nil, fmt.Errorf("ensure PKI in %s: %w", dir, err)
		}
	}
	return l, nil
}

// ensureCA loads dir's CA, creating it if absent and replacing it if it
// is close to expiry. Half a CA (one file of two) is an error: guessing
// which half to trust could throw away a real cluster's CA key.
func ensureCA(dir string, now time.Time, clockFn func() time.Time) (*CA, error) {
	certPath, keyPath := filepath.Join(dir, CACertFile), filepath.Join(dir, CAKeyFile)
	switch hasCert, hasKey := exists(certPath), exists(keyPath); {
	case !hasCert && !hasKey:
		return NewCA(dir, CAOptions{Now: clockFn})
	case hasCert != hasKey:
		return nil, fmt.Errorf("only one of %s and %s exists; remove %s to make a new throwaway CA", CACertFile, CAKeyFile, dir)
	}
	ca, err := LoadCA(dir)
	if err != nil {
		return nil, fmt.Errorf("%w (remove %s to make a new throwaway CA)", err, dir)
	}
	if now.Add(renewBefore).Before(ca.cert.NotAfter) {
		return ca, nil
	}
	if err := errors.Join(os.Remove(certPath), os.Remove(keyPath)); err != nil {
		return nil, fmt.Errorf("replace expiring CA: %w", err)
	}
	return NewCA(dir, CAOptions{Now: clockFn})
}

// sameHosts reports whether creds' certificate names exactly hosts.
func sameHosts(creds *Credentials, hosts []string) bool {
	leaf := creds.Cert.Leaf
	var have []string
	have = append(have, leaf.DNSNames...)
	for _, ip := range leaf.IPAddresses {
		have = append(have, ip.String())
	}
	var want []string
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			h = ip.String()
		}
		if h != "" {
			want = append(want, h)
		}
	}
	slices.Sort(have)
	slices.Sort(want)
	return slices.Equal(have, want)
}
