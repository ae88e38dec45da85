package charttest

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/modcoord/modcoord/pki"
)

// The chart's TLS material (templates/tls.yaml, templates/_tls.tpl). What
// `helm template` cannot show: `lookup` returns nothing there, so that the
// generated CA and certificates survive an upgrade is checked against a
// real API server by .ci/kube-install-test.sh.

// tlsDir is where every pod finds ca.crt and its role's <role>-<name>.crt/.key.
const tlsDir = "/etc/modcoord/tls"

// podRoles maps a pod's app.kubernetes.io/component to the role whose
// certificate it mounts.
var podRoles = map[string]pki.Role{
	"coordinator": pki.RoleCoordinator, "worker": pki.RoleWorker,
	"etcd": pki.RoleEtcd, "nats": pki.RoleNATS,
}

// certificate mirrors the fields of cert-manager.io/v1 Certificate that the
// chart uses; strict decoding catches misspelt fields.
type certificate struct {
	APIVersion string            `json:"apiVersion"`
	Kind       string            `json:"kind"`
	Metadata   metav1.ObjectMeta `json:"metadata"`
	Spec       struct {
		SecretName     string `json:"secretName"`
		SecretTemplate struct {
			Labels      map[string]string `json:"labels,omitempty"`
			Annotations map[string]string `json:"annotations,omitempty"`
		} `json:"secretTemplate"`
		CommonName  string   `json:"commonName"`
		URIs        []string `json:"uris"`
		DNSNames    []string `json:"dnsNames,omitempty"`
		IPAddresses []string `json:"ipAddresses,omitempty"`
		Duration    string   `json:"duration"`
		RenewBefore string   `json:"renewBefore"`
		PrivateKey  struct {
			Algorithm      string `json:"algorithm"`
			Size           int    `json:"size"`
			Encoding       string `json:"encoding"`
			RotationPolicy string `json:"rotationPolicy"`
		} `json:"privateKey"`
		Usages    []string `json:"usages"`
		IssuerRef struct {
			Name  string `json:"name"`
			Kind  string `json:"kind"`
			Group string `json:"group"`
		} `json:"issuerRef"`
	} `json:"spec"`
}

// fullname is the release's object prefix, read off the coordinators'
// StatefulSet; it is also the <name> of every certificate.
func (r *rendered) fullname(t *testing.T) string {
	t.Helper()
	for _, m := range r.all {
		if m.kind == "StatefulSet" && strings.HasSuffix(m.name, "-coordinator") {
			return strings.TrimSuffix(m.name, "-coordinator")
		}
	}
	t.Fatal("no coordinator StatefulSet")
	return ""
}

// checkTLSMounts: every container has ca.crt and its own role's
// certificate and key in tlsDir, from a Secret, read-only; no pod mounts a
// CA key, the chart's CA Secret, or another role's key.
func (r *rendered) checkTLSMounts(t *testing.T) {
	full := r.fullname(t)
	for _, w := range r.workloads() {
		comp := w.template.Labels["app.kubernetes.io/component"]
		role, ok := podRoles[comp]
		if !ok {
			t.Errorf("%s: component %q has no TLS role; add it to podRoles", w.what, comp)
			continue
		}
		vols := map[string]corev1.Volume{}
		for _, v := range w.template.Spec.Volumes {
			vols[v.Name] = v
			var srcs []*corev1.SecretProjection
			switch {
			case v.Secret != nil:
				srcs = append(srcs, &corev1.SecretProjection{LocalObjectReference: corev1.LocalObjectReference{Name: v.Secret.SecretName}, Items: v.Secret.Items})
			case v.Projected != nil:
				for _, s := range v.Projected.Sources {
					if s.Secret != nil {
						srcs = append(srcs, s.Secret)
					}
				}
			}
			for _, s := range srcs {
				if s.Name == full+"-tls-ca" {
					t.Errorf("%s volume %s: mounts the CA Secret %s", w.what, v.Name, s.Name)
				}
				for _, it := range s.Items {
					if it.Key == pki.CAKeyFile || path.Base(it.Path) == pki.CAKeyFile {
						t.Errorf("%s volume %s: mounts a CA key (%s as %s)", w.what, v.Name, it.Key, it.Path)
					}
					if strings.HasSuffix(it.Key, ".key") && it.Key != pki.CAKeyFile && it.Key != "tls.key" && it.Key != fmt.Sprintf("%s-%s.key", role, full) {
						t.Errorf("%s volume %s: mounts %s, a key of another role", w.what, v.Name, it.Key)
					}
					if it.Key == "tls.key" && s.Name != fmt.Sprintf("%s-tls-%s", full, role) {
						t.Errorf("%s volume %s: mounts tls.key of %s, not of its role's Secret", w.what, v.Name, s.Name)
					}
				}
			}
		}
		for _, c := range w.template.Spec.Containers {
			for _, f := range []string{pki.CACertFile, fmt.Sprintf("%s-%s.crt", role, full), fmt.Sprintf("%s-%s.key", role, full)} {
				p := tlsDir + "/" + f
				if !secretFileMounted(c, vols, p) {
					t.Errorf("%s container %s: %s is not a file projected from a Secret", w.what, c.Name, p)
				}
				for _, vm := range c.VolumeMounts {
					if rel, err := filepath.Rel(vm.MountPath, p); err == nil && !strings.HasPrefix(rel, "..") && !vm.ReadOnly {
						t.Errorf("%s container %s: %s is mounted read-write (volume %s)", w.what, c.Name, p, vm.Name)
					}
				}
			}
		}
	}
}

// checkGeneratedTLS: the chart's Secrets hold a CA and one certificate and
// key per role; each certificate chains to the CA, carries its role (the
// CommonName, read by pki), names the Services and pods clients dial, and
// works for a mutual TLS handshake through pki's configurations.
func (r *rendered) checkGeneratedTLS(t *testing.T, namespace string) {
	t.Helper()
	full := r.fullname(t)
	leaves := r.secret(t, full+"-tls")
	caSec := r.secret(t, full+"-tls-ca")

	var want []string
	want = append(want, pki.CACertFile)
	for _, role := range pki.Roles() {
		want = append(want, fmt.Sprintf("%s-%s.crt", role, full), fmt.Sprintf("%s-%s.key", role, full))
	}
	var have []string
	for k := range leaves.Data {
		have = append(have, k)
	}
	sort.Strings(want)
	sort.Strings(have)
	if !slices.Equal(have, want) {
		t.Fatalf("Secret %s keys %v, want %v", leaves.Name, have, want)
	}
	if string(leaves.Data[pki.CACertFile]) != string(caSec.Data[pki.CACertFile]) {
		t.Errorf("Secret %s and %s hold different CA certificates", leaves.Name, caSec.Name)
	}
	ca := parseOneCert(t, caSec.Name+" ca.crt", caSec.Data[pki.CACertFile])
	if !ca.IsCA || !ca.BasicConstraintsValid {
		t.Errorf("%s ca.crt is not a CA certificate", caSec.Name)
	}
	if _, err := tls.X509KeyPair(caSec.Data[pki.CACertFile], caSec.Data[pki.CAKeyFile]); err != nil {
		t.Errorf("%s: ca.key does not match ca.crt: %v", caSec.Name, err)
	}

	// The files as a pod sees them, loaded the way the processes will.
	dir := t.TempDir()
	for k, v := range leaves.Data {
		if err := os.WriteFile(filepath.Join(dir, k), v, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	creds := map[pki.Role]*pki.Credentials{}
	loaded := true
	for _, role := range pki.Roles() {
		c, err := pki.LoadCredentials(pki.FilesFor(dir, role, full))
		if err != nil {
			t.Errorf("%s certificate: %v", role, err)
			loaded = false
			continue
		}
		// A CommonName-only certificate (sprig cannot write the role URI):
		// pki reads the role from the CN, and the name is then the role.
		if c.Identity != (pki.Identity{Role: role, Name: string(role)}) {
			t.Errorf("%s certificate carries %v", role, c.Identity)
		}
		if cn := c.Cert.Leaf.Subject.CommonName; len(cn) > 64 {
			t.Errorf("%s certificate: CommonName %q is longer than RFC 5280's 64", role, cn)
		}
		if time.Until(c.Cert.Leaf.NotAfter) < 300*24*time.Hour {
			t.Errorf("%s certificate expires %v; want the default validity of about two years", role, c.Cert.Leaf.NotAfter)
		}
		creds[role] = c
	}
	if !loaded {
		return
	}
	coordHeadless := fmt.Sprintf("%s-coordinator-headless.%s.svc", full, namespace)
	hosts := map[pki.Role][]string{
		pki.RoleCoordinator: {
			// The raft and API addresses of --peers, a replica added after
			// the certificate was made (the wildcard), the client Service.
			fmt.Sprintf("%s-coordinator-0.%s.cluster.local", full, coordHeadless),
			fmt.Sprintf("%s-coordinator-0.%s", full, coordHeadless),
			fmt.Sprintf("%s-coordinator-8.%s.cluster.local", full, coordHeadless),
			full, fmt.Sprintf("%s.%s.svc", full, namespace), fmt.Sprintf("%s.%s.svc.cluster.local", full, namespace),
			"localhost", "127.0.0.1",
		},
		pki.RoleEtcd: {
			fmt.Sprintf("%s-etcd.%s.svc.cluster.local", full, namespace),
			fmt.Sprintf("%s-etcd-0.%s-etcd-headless.%s.svc.cluster.local", full, full, namespace),
			"localhost",
		},
		pki.RoleNATS: {
			fmt.Sprintf("%s-nats.%s.svc.cluster.local", full, namespace),
			fmt.Sprintf("%s-nats-local.%s.svc.cluster.local", full, namespace),
			fmt.Sprintf("%s-nats-headless.%s.svc.cluster.local", full, namespace),
			"localhost",
		},
	}
	for role, hs := range hosts {
		for _, h := range hs {
			if err := creds[role].Cert.Leaf.VerifyHostname(h); err != nil {
				t.Errorf("%s certificate: %v", role, err)
			}
		}
	}
	if err := creds[pki.RoleWorker].Cert.Leaf.VerifyHostname(hosts[pki.RoleCoordinator][0]); err == nil {
		t.Error("the worker certificate is valid for a coordinator's name")
	}

	// Mutual TLS as the components will run it: a worker and a user dial a
	// coordinator; a coordinator dials etcd and NATS; a worker's
	// certificate cannot pose as a coordinator.
	for _, tc := range []struct {
		server, client pki.Role
		allowed        []pki.Role // by the server
		host           string
		ok             bool
	}{
		{pki.RoleCoordinator, pki.RoleWorker, []pki.Role{pki.RoleCoordinator, pki.RoleWorker, pki.RoleUser}, hosts[pki.RoleCoordinator][0], true},
		{pki.RoleCoordinator, pki.RoleUser, []pki.Role{pki.RoleCoordinator, pki.RoleWorker, pki.RoleUser}, hosts[pki.RoleCoordinator][4], true},
		{pki.RoleEtcd, pki.RoleCoordinator, []pki.Role{pki.RoleCoordinator, pki.RoleWorker}, hosts[pki.RoleEtcd][0], true},
		{pki.RoleNATS, pki.RoleWorker, []pki.Role{pki.RoleWorker}, hosts[pki.RoleNATS][1], true},
		{pki.RoleCoordinator, pki.RoleUser, []pki.Role{pki.RoleCoordinator}, hosts[pki.RoleCoordinator][0], false},
	} {
		serverID, err := mtls(t, creds[tc.server], creds[tc.client], tc.allowed, tc.server, tc.host)
		if tc.ok && (err != nil || serverID != (pki.Identity{Role: tc.client, Name: string(tc.client)})) {
			t.Errorf("%s dialing %s at %s: %v (server saw %v)", tc.client, tc.server, tc.host, err, serverID)
		}
		if !tc.ok && err == nil {
			t.Errorf("%s dialing %s at %s with only %v allowed: accepted", tc.client, tc.server, tc.host, tc.allowed)
		}
	}
	// The worker's certificate, served, is refused by a client that wants a coordinator.
	if _, err := mtls(t, creds[pki.RoleWorker], creds[pki.RoleUser], []pki.Role{pki.RoleUser}, pki.RoleCoordinator, "localhost"); err == nil {
		t.Error("a worker certificate passed as a coordinator")
	}
}

func parseOneCert(t *testing.T, what string, b []byte) *x509.Certificate {
	t.Helper()
	block, rest := pem.Decode(b)
	if block == nil || block.Type != "CERTIFICATE" || len(strings.TrimSpace(string(rest))) != 0 {
		t.Fatalf("%s: want exactly one PEM certificate", what)
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	return c
}

// mtls runs one handshake over loopback between server (allowing
// allowed) and client (wanting a serverRole at host) and returns the
// identity the server saw, or the first error of either side.
func mtls(t *testing.T, server, client *pki.Credentials, allowed []pki.Role, serverRole pki.Role, host string) (pki.Identity, error) {
	t.Helper()
	scfg, err := pki.ServerConfig(server, allowed...)
	if err != nil {
		return pki.Identity{}, err
	}
	ccfg, err := pki.ClientConfig(client, serverRole)
	if err != nil {
		return pki.Identity{}, err
	}
	ccfg.ServerName = host
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type result struct {
		id  pki.Identity
		err error
	}
	done := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- result{err: err}
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		tc := tls.Server(c, scfg)
		if err := tc.Handshake(); err != nil {
			done <- result{err: err}
			return
		}
		id, err := pki.PeerIdentity(tc.ConnectionState())
		if err == nil {
			_, err = tc.Write([]byte{1})
		}
		done <- result{id, err}
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	tc := tls.Client(c, ccfg)
	cerr := tc.Handshake()
	if cerr == nil {
		// In TLS 1.3 a refusal of the client's certificate arrives as an alert on the first read.
		_, cerr = tc.Read(make([]byte, 1))
	}
	if cerr != nil {
		c.Close()
		<-done
		return pki.Identity{}, cerr
	}
	res := <-done
	return res.id, res.err
}

// checkMutualTLS: every process is wired for mutual TLS. No process has a
// token or a NATS password; every modcoord process has --tls-dir at the
// mounted directory (checkTLSMounts checks the files there); every URL to
// the API and etcd is https; etcd requires client (and peer) certificates
// from the CA and has the etcd-setup sidecar; nats.conf maps client
// certificates to the worker user, which may use the ring's subjects only.
func (r *rendered) checkMutualTLS(t *testing.T) {
	full := r.fullname(t)
	httpsFlags := []string{"--etcd", "--coordinator", "--listen-client-urls", "--advertise-client-urls",
		"--listen-peer-urls", "--initial-advertise-peer-urls"}
	for _, w := range r.workloads() {
		comp := w.template.Labels["app.kubernetes.io/component"]
		setups := 0
		for _, c := range w.template.Spec.Containers {
			what := fmt.Sprintf("%s container %s", w.what, c.Name)
			args := containerArgs(c)
			for _, gone := range []string{"--token-file", "--nats-user", "--nats-password-file", "--nats-creds", "--insecure-no-auth"} {
				if _, ok := args[gone]; ok {
					t.Errorf("%s: has %s; authentication is by certificate only", what, gone)
				}
			}
			if len(c.Args) > 0 && slices.Contains([]string{"coordinator", "worker", "etcd-setup"}, c.Args[0]) && args["--tls-dir"] != tlsDir {
				t.Errorf("%s: --tls-dir=%q, want %s", what, args["--tls-dir"], tlsDir)
			}
			for _, f := range httpsFlags {
				v, ok := args[f]
				if !ok {
					continue
				}
				for _, u := range strings.Split(v, ",") {
					if !strings.HasPrefix(u, "https://") {
						t.Errorf("%s: %s has %q, want https://", what, f, u)
					}
				}
			}
			if v, ok := args["--initial-cluster"]; ok {
				for _, m := range strings.Split(v, ",") {
					if _, u, _ := strings.Cut(m, "="); !strings.HasPrefix(u, "https://") {
						t.Errorf("%s: --initial-cluster member %q is not https://", what, m)
					}
				}
			}
			switch {
			case comp == "etcd" && c.Name == "etcd":
				cert := fmt.Sprintf("%s/etcd-%s", tlsDir, full)
				want := map[string]string{
					"--client-cert-auth": "true", "--trusted-ca-file": tlsDir + "/ca.crt",
					"--cert-file": cert + ".crt", "--key-file": cert + ".key",
					"--peer-client-cert-auth": "true", "--peer-trusted-ca-file": tlsDir + "/ca.crt",
					"--peer-cert-file": cert + ".crt", "--peer-key-file": cert + ".key",
					"--peer-cert-allowed-cn": "etcd",
				}
				for k, v := range want {
					if args[k] != v {
						t.Errorf("%s: %s=%q, want %q", what, k, args[k], v)
					}
				}
			case comp == "etcd" && c.Name == "etcd-setup":
				setups++
				if args["--wait"] != "true" || !strings.HasPrefix(args["--etcd"], "https://127.0.0.1:") || args["--cluster"] == "" {
					t.Errorf("%s: args %v, want etcd-setup --wait against the local member", what, c.Args)
				}
			}
		}
		if comp == "etcd" && setups == 0 {
			t.Errorf("%s: no etcd-setup sidecar: etcd auth would never be turned on", w.what)
		}
	}
	m, ok := r.find("ConfigMap", full+"-nats")
	if !ok {
		return
	}
	conf := m.obj.(*corev1.ConfigMap).Data["nats.conf"]
	for _, want := range []string{
		"verify_and_map: true",
		fmt.Sprintf(`cert_file: "%s/nats-%s.crt"`, tlsDir, full),
		fmt.Sprintf(`ca_file: "%s/ca.crt"`, tlsDir),
	} {
		if !strings.Contains(conf, want) {
			t.Errorf("nats.conf lacks %q:\n%s", want, conf)
		}
	}
	users := regexp.MustCompile(`(?m)^\s*\{ user: ("[^"]*").*$`).FindAllStringSubmatch(conf, -1)
	var names []string
	for _, u := range users {
		names = append(names, u[1])
		if !strings.Contains(u[0], `permissions: { publish: ["modcoord.>"], subscribe: ["modcoord.>"] }`) {
			t.Errorf("nats.conf user %s: %q, want publish and subscribe modcoord.> only", u[1], u[0])
		}
	}
	if strings.Join(names, " ") != `"CN=worker" "CN=worker,O=modcoord"` {
		t.Errorf("nats.conf users %v, want the worker certificate's subjects only", names)
	}
	if strings.Contains(conf, "$NATS_PASSWORD") {
		t.Error("nats.conf still has a password user")
	}
}
