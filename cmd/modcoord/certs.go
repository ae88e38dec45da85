package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/spf13/cobra"

	"github.com/modcoord/modcoord/pki"
)

type certsOptions struct {
	out                                      string
	coordinators, workers, users, etcd, nats string
	validity, caValidity                     time.Duration
}

const certsLong = `Write a new cluster CA and one certificate per component to --out, for a
cluster set up by hand (modcoord local makes its own). Each certificate
carries its role (coordinator, worker, user, etcd, nats); its subject
CommonName is the role, which etcd takes as the user and NATS maps to a user.

Give every process a --tls-dir holding ca.crt and its own .crt and .key
(only one certificate of its role per directory). ca.key signs new
certificates: keep it off the cluster's machines. --out must not hold a CA.`

func newCertsCmd() *cobra.Command {
	var o certsOptions
	cmd := &cobra.Command{
		Use:   "certs --out DIR --coordinator-hosts HOSTS [flags]",
		Short: "Write a cluster CA and the components' certificates",
		Long:  certsLong,
		Args:  positional(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runCerts(cmd.OutOrStdout(), o)
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&o.out, "out", "", "directory to write the CA and certificates to (created; must not hold a CA)")
	fs.StringVar(&o.coordinators, "coordinator-hosts", "", "coordinator host names or IPs, comma-separated: one certificate each, valid for that host (raft and API)")
	fs.StringVar(&o.workers, "workers", "worker", "worker certificate names, comma-separated (workers only dial out: one shared certificate is fine)")
	fs.StringVar(&o.users, "users", "admin", "user (CLI) certificate names, comma-separated")
	fs.StringVar(&o.etcd, "etcd-hosts", "", "etcd server host names or IPs, comma-separated: one certificate each")
	fs.StringVar(&o.nats, "nats-hosts", "", "NATS server host names or IPs, comma-separated: one certificate each")
	fs.DurationVar(&o.validity, "validity", pki.DefaultLeafValidity, "how long the certificates are valid")
	fs.DurationVar(&o.caValidity, "ca-validity", pki.DefaultCAValidity, "how long the CA is valid")
	return cmd
}

func runCerts(stdout io.Writer, o certsOptions) error {
	if o.out == "" {
		return usageErrorf("--out: give the directory to write to")
	}
	if len(splitList(o.coordinators)) == 0 {
		return usageErrorf("--coordinator-hosts: give the coordinators' host names")
	}
	names := func(s string) []pki.CertSpec {
		var out []pki.CertSpec
		for _, n := range splitList(s) {
			out = append(out, pki.CertSpec{Name: n})
		}
		return out
	}
	opts := pki.BundleOptions{
		Coordinators: pki.SpecsForHosts(splitList(o.coordinators)),
		Workers:      names(o.workers), Users: names(o.users),
		Etcd: pki.SpecsForHosts(splitList(o.etcd)), NATS: pki.SpecsForHosts(splitList(o.nats)),
		Validity: o.validity, CAValidity: o.caValidity,
	}
	if err := pki.WriteClusterBundle(o.out, opts); err != nil {
		return err
	}
	entries, err := os.ReadDir(o.out)
	if err != nil {
		return err
	}
	var files []string
	for _, e := range entries {
		if !e.IsDir() && e.Name()[0] != '.' {
			files = append(files, e.Name())
		}
	}
	sort.Strings(files)
	fmt.Fprintf(stdout, "Wrote a new cluster CA and its certificates to %s:\n", o.out)
	for _, f := range files {
		note := ""
		switch f {
		case pki.CACertFile:
			note = "  the cluster CA: into every --tls-dir"
		case pki.CAKeyFile:
			note = "  the CA key: keep it offline, on none of the cluster's machines"
		}
		fmt.Fprintf(stdout, "  %s%s\n", filepath.Join(o.out, f), note)
	}
	fmt.Fprint(stdout, `
Give each process a directory with ca.crt and its own <role>-<name>.crt and .key:
  modcoord coordinator --tls-dir DIR --etcd https://ETCD:2379 ...
  modcoord worker      --tls-dir DIR --etcd https://ETCD:2379 --nats tls://NATS:4222 ...
etcd: client TLS with client certificates from ca.crt (etcd --client-cert-auth
  --trusted-ca-file ca.crt --cert-file etcd-HOST.crt --key-file etcd-HOST.key),
  then once, and again for every new cluster name:
  modcoord etcd-setup --tls-dir DIR-with-the-etcd-certificate --etcd https://ETCD:2379 --cluster NAME
NATS: TLS requiring client certificates from ca.crt, users mapped from the
  certificate (verify_and_map); the one user is "`+pki.NATSUser(pki.RoleWorker)+`"
  with publish and subscribe allowed on "modcoord.>" only.
`)
	return nil
}
