// Command certgen writes the TLS material of a single-host compose cluster
// (deploy/compose-secrets.sh): a cluster CA and one certificate per role,
// all named -name and valid for -hosts, with pki.EnsureDir, so that running
// it again keeps what is valid and renews what is expiring.
//
//	go run ./deploy/certgen -ca deploy/secrets/ca -out deploy/secrets/tls -name compose \
//	    -hosts c0,c1,c2,etcd,nats,localhost,127.0.0.1,::1
//
// The CA (ca.crt, ca.key) stays in -ca. -out gets what containers mount,
// named as pki.FilesFor names them: ca.crt and <role>-<name>.crt/.key for
// every role (or only -role's), never ca.key. It is a stopgap until `modcoord certs` can
// write this layout.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/modcoord/modcoord/pki"
)

func main() {
	caDir := flag.String("ca", "", "directory of the CA (created if missing; keep it off the containers)")
	out := flag.String("out", "", "directory for ca.crt and every role's certificate and key")
	name := flag.String("name", "compose", "name of every certificate (<role>-<name>.crt)")
	hosts := flag.String("hosts", "localhost,127.0.0.1,::1", "comma-separated DNS names and IPs every certificate is valid for")
	role := flag.String("role", "", "copy only this role's certificate and key to -out (default: every role's)")
	flag.Parse()
	if err := run(*caDir, *out, *name, *hosts, *role); err != nil {
		fmt.Fprintln(os.Stderr, "certgen:", err)
		os.Exit(1)
	}
}

func run(caDir, out, name, hostList, only string) error {
	if caDir == "" || out == "" {
		return fmt.Errorf("-ca and -out are required")
	}
	if a, b := filepath.Clean(caDir), filepath.Clean(out); a == b {
		return fmt.Errorf("-ca and -out must differ: the CA key must not be beside what containers mount")
	}
	var hosts []string
	for _, h := range strings.Split(hostList, ",") {
		if h = strings.TrimSpace(h); h != "" {
			hosts = append(hosts, h)
		}
	}
	roles := pki.Roles()
	if only != "" {
		r, err := pki.ParseRole(only)
		if err != nil {
			return fmt.Errorf("-role: %w", err)
		}
		roles = []pki.Role{r}
	}
	local, err := pki.EnsureDir(caDir, pki.EnsureOptions{Name: name, Hosts: hosts})
	if err != nil {
		return err
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	files := []string{pki.CACertFile}
	for _, role := range roles {
		f := local.Files(role)
		files = append(files, filepath.Base(f.Cert), filepath.Base(f.Key))
	}
	for _, f := range files {
		b, err := os.ReadFile(filepath.Join(caDir, f))
		if err != nil {
			return err
		}
		dst := filepath.Join(out, f)
		// Replace rather than rewrite: the old file may be read-only (compose-secrets.sh makes them 0400).
		tmp := dst + ".tmp"
		if err := os.WriteFile(tmp, b, 0o600); err != nil {
			return err
		}
		if err := os.Rename(tmp, dst); err != nil {
			return err
		}
	}
	fmt.Fprintf(os.Stderr, "certgen: %s holds ca.crt and <role>-%s.crt/.key for %v (CA in %s)\n", out, name, roles, caDir)
	return nil
}
