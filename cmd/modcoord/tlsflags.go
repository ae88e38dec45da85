package main

import (
	"fmt"
	"path/filepath"
	"strings"

	"github.com/spf13/pflag"

	"github.com/modcoord/modcoord/pki"
)

// tlsFiles are the certificate flags: a directory laid out by `modcoord
// certs` (ca.crt and <role>-<name>.crt/.key), or each file by name. A file
// flag wins over the directory.
type tlsFiles struct {
	dir, ca, cert, key string
	// flag names, for messages: --ca or --tls-ca, ...
	caFlag, certFlag, keyFlag string
}

// addClientTLSFlags adds --tls-dir, --ca, --cert and --key: an API
// client's mutual TLS material (client commands: a user certificate;
// worker: a worker certificate).
func addClientTLSFlags(fs *pflag.FlagSet, f *tlsFiles, role pki.Role) {
	f.caFlag, f.certFlag, f.keyFlag = "ca", "cert", "key"
	fs.StringVar(&f.dir, "tls-dir", "", fmt.Sprintf("directory holding ca.crt and one %s-NAME.crt/.key (from modcoord certs)", role))
	bindEnv(fs, "tls-dir", "MODCOORD_TLS_DIR")
	fs.StringVar(&f.ca, "ca", "", "cluster CA certificate (default: ca.crt in --tls-dir)")
	bindEnv(fs, "ca", "MODCOORD_CA")
	fs.StringVar(&f.cert, "cert", "", fmt.Sprintf("this client's %s certificate (default: the %s-*.crt in --tls-dir)", role, role))
	bindEnv(fs, "cert", "MODCOORD_CERT")
	fs.StringVar(&f.key, "key", "", "the certificate's private key (default: --cert with .key for .crt)")
	bindEnv(fs, "key", "MODCOORD_KEY")
}

// addServerTLSFlags adds the coordinator's --tls-dir, --tls-ca, --tls-cert
// and --tls-key: its coordinator certificate, used for raft and the API.
func addServerTLSFlags(fs *pflag.FlagSet, f *tlsFiles) {
	f.caFlag, f.certFlag, f.keyFlag = "tls-ca", "tls-cert", "tls-key"
	fs.StringVar(&f.dir, "tls-dir", "", "directory holding ca.crt and one coordinator-NAME.crt/.key (from modcoord certs)")
	bindEnv(fs, "tls-dir", "MODCOORD_TLS_DIR")
	fs.StringVar(&f.ca, "tls-ca", "", "cluster CA certificate (default: ca.crt in --tls-dir)")
	bindEnv(fs, "tls-ca", "MODCOORD_TLS_CA")
	fs.StringVar(&f.cert, "tls-cert", "", "this coordinator's certificate, for raft and the API (default: the coordinator-*.crt in --tls-dir)")
	bindEnv(fs, "tls-cert", "MODCOORD_TLS_CERT")
	fs.StringVar(&f.key, "tls-key", "", "the certificate's private key (default: --tls-cert with .key for .crt)")
	bindEnv(fs, "tls-key", "MODCOORD_TLS_KEY")
}

// files resolves the flags to paths, looking for role's certificate in the
// directory when no file is named.
func (f tlsFiles) files(role pki.Role) (pki.Files, error) {
	out := pki.Files{CA: f.ca, Cert: f.cert, Key: f.key}
	if out.CA == "" && f.dir != "" {
		out.CA = filepath.Join(f.dir, pki.CACertFile)
	}
	if out.Cert == "" && f.dir != "" {
		matches, err := filepath.Glob(filepath.Join(f.dir, string(role)+"-*.crt"))
		if err != nil {
			return out, usageErrorf("--tls-dir %s: %v", f.dir, err)
		}
		switch len(matches) {
		case 0:
			return out, usageErrorf("--tls-dir %s holds no %s-NAME.crt; issue one with modcoord certs, or name it with --%s", f.dir, role, f.certFlag)
		case 1:
			out.Cert = matches[0]
		default:
			return out, usageErrorf("--tls-dir %s holds %d %s certificates (%s); choose one with --%s", f.dir, len(matches), role, strings.Join(matches, ", "), f.certFlag)
		}
	}
	if out.Key == "" && strings.HasSuffix(out.Cert, ".crt") {
		out.Key = strings.TrimSuffix(out.Cert, ".crt") + ".key"
	}
	if out.CA == "" || out.Cert == "" || out.Key == "" {
		return out, usageErrorf("no TLS certificate: the API is mutual TLS; give --tls-dir DIR (ca.crt and a %s-NAME.crt/.key from modcoord certs), or --%s, --%s and --%s", role, f.caFlag, f.certFlag, f.keyFlag)
	}
	return out, nil
}

// load reads and checks role's credentials; a certificate of another role
// is refused here rather than by the server.
func (f tlsFiles) load(role pki.Role) (*pki.Credentials, error) {
	files, err := f.files(role)
	if err != nil {
		return nil, err
	}
	creds, err := pki.LoadCredentials(files)
	if err != nil {
		return nil, err
	}
	if creds.Identity.Role != role {
		return nil, usageErrorf("%s is a %s certificate; this command needs a %s certificate", files.Cert, creds.Identity.Role, role)
	}
	return creds, nil
}
