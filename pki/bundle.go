package pki

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// CertSpec is one certificate of a bundle: its name and the hosts it
// is valid for (server roles need the names clients dial).
type CertSpec struct {
	Name  string
	Hosts []string
}

// SpecsForHosts is one certificate per host, named after it, the shape
// `--coordinator-hosts c0.example,c1.example` asks for.
func SpecsForHosts(hosts []string) []CertSpec {
	var out []CertSpec
	for _, h := range hosts {
		if h != "" {
			out = append(out, CertSpec{Name: NameForHost(h), Hosts: []string{h}})
		}
	}
	return out
}

// BundleOptions lists the certificates of a hand-made cluster.
type BundleOptions struct {
	// Coordinators: one per coordinator; at least one is required.
	Coordinators []CertSpec
	// Workers default to one certificate named "worker" (workers only
	// dial out, so one certificate may be shared; give one each to be
	// able to tell them apart).
	Workers []CertSpec
	// Users default to one certificate named "admin".
	Users []CertSpec
	// Etcd and NATS are the servers' certificates; none is issued if
	// empty (a cluster that runs them without TLS, for now).
	Etcd []CertSpec
	NATS []CertSpec
	// CAValidity and Validity default to DefaultCAValidity and
	// DefaultLeafValidity.
	CAValidity, Validity time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// WriteClusterBundle creates a new CA in dir and issues every certificate
// opts lists, for `modcoord certs`. It refuses a directory that already
// holds a CA: issuing a second CA over a running cluster's would lock
// every component out. Copy ca.crt and a component's own .crt/.key to
// each machine; ca.key belongs on none of them.
func WriteClusterBundle(dir string, opts BundleOptions) error {
	if len(opts.Coordinators) == 0 {
		return errors.New("cluster bundle: no coordinator certificates asked for; give the coordinators' host names")
	}
	if len(opts.Workers) == 0 {
		opts.Workers = []CertSpec{{Name: "worker"}}
	}
	if len(opts.Users) == 0 {
		opts.Users = []CertSpec{{Name: "admin"}}
	}
	plan := []struct {
		role  Role
		specs []CertSpec
	}{
		{RoleCoordinator, opts.Coordinators}, {RoleWorker, opts.Workers}, {RoleUser, opts.Users},
		{RoleEtcd, opts.Etcd}, {RoleNATS, opts.NATS},
	}
	// Check everything before writing anything, so a typo does not leave
	// half a bundle behind.
	for _, p := range plan {
		seen := map[string]bool{}
		for _, s := range p.specs {
			if err := checkName(s.Name); err != nil {
				return fmt.Errorf("cluster bundle: %s certificate: %w", p.role, err)
			}
			if seen[s.Name] {
				return fmt.Errorf("cluster bundle: two %s certificates named %q", p.role, s.Name)
			}
			seen[s.Name] = true
			if p.role.servesTLS() && p.role != RoleWorker && len(s.Hosts) == 0 {
				return fmt.Errorf("cluster bundle: %s certificate %q has no hosts; clients could not verify it", p.role, s.Name)
			}
		}
	}
	if exists(filepath.Join(dir, CAKeyFile)) || exists(filepath.Join(dir, CACertFile)) {
		return fmt.Errorf("cluster bundle: %s already holds a CA; choose an empty --out directory", dir)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("cluster bundle: %w", err)
	}
	ca, err := NewCA(dir, CAOptions{Validity: opts.CAValidity, Now: opts.Now})
	if err != nil {
		return fmt.Errorf("cluster bundle: %w", err)
	}
	for _, p := range plan {
		for _, s := range p.specs {
			if _, err := ca.Issue(p.role, s.Name, s.Hosts, IssueOptions{Validity: opts.Validity, Now: opts.Now}); err != nil {
				return fmt.Errorf("cluster bundle: %w", err)
			}
		}
	}
	return nil
}
