package charttest

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"sigs.k8s.io/yaml"

	"github.com/modcoord/modcoord/pki"
)

// chartDir is the chart under test; MODCOORD_CHART overrides it (used to
// check that the tests catch deliberately broken copies of the chart).
var chartDir = func() string {
	if d := os.Getenv("MODCOORD_CHART"); d != "" {
		return d
	}
	return "../modcoord"
}()

// renderCase is one `helm template` run and what must hold for it beyond
// the checks every render gets.
type renderCase struct {
	name       string
	release    string
	namespace  string
	valuesFile string   // relative to the chart; "" for the defaults
	set        []string // --set values, after valuesFile
	// external: objects the values name but the chart must not create
	// ("Secret/name", "PersistentVolumeClaim/name").
	external []string
	check    func(t *testing.T, r *rendered)
}

var cases = []renderCase{
	{
		name: "default", release: "modcoord", namespace: "modcoord",
		check: func(t *testing.T, r *rendered) {
			coord := r.statefulSet(t, "modcoord-coordinator")
			if *coord.Spec.Replicas != 3 {
				t.Errorf("coordinator replicas = %d, want 3", *coord.Spec.Replicas)
			}
			if len(coord.Spec.VolumeClaimTemplates) != 1 {
				t.Errorf("coordinators need a raft data PVC template, got %d", len(coord.Spec.VolumeClaimTemplates))
			}
			w := r.statefulSet(t, "modcoord-worker")
			if _, ok := w.Spec.Template.Spec.Containers[0].Resources.Limits["nvidia.com/gpu"]; ok {
				t.Error("default workers must not ask for GPUs")
			}
			// Bundled NATS and etcd, with generated secrets.
			r.statefulSet(t, "modcoord-nats")
			r.statefulSet(t, "modcoord-etcd")
			if r.has("Secret", "modcoord-token") {
				t.Error("Secret modcoord-token rendered; the API token is gone (mutual TLS)")
			}
			for _, s := range []string{"modcoord-nats"} {
				sec := r.secret(t, s)
				for k, v := range sec.Data {
					if len(v) < 32 {
						t.Errorf("Secret %s key %s: generated value has %d bytes, want >= 32", s, k, len(v))
					}
				}
			}
			pvc := r.get(t, "PersistentVolumeClaim", "modcoord-checkpoints").obj.(*corev1.PersistentVolumeClaim)
			if len(pvc.Spec.AccessModes) != 1 || pvc.Spec.AccessModes[0] != corev1.ReadWriteMany {
				t.Errorf("checkpoint PVC access modes %v, want [ReadWriteMany]", pvc.Spec.AccessModes)
			}
			if pvc.Annotations["helm.sh/resource-policy"] != "keep" {
				t.Error("checkpoint PVC should be kept on uninstall by default")
			}
			args := containerArgs(w.Spec.Template.Spec.Containers[0])
			if got, want := args["--nats"], "nats://modcoord-nats.modcoord.svc.cluster.local:4222"; got != want {
				t.Errorf("worker --nats=%q, want %q", got, want)
			}
			if got, want := args["--etcd"], "https://modcoord-etcd.modcoord.svc.cluster.local:2379"; got != want {
				t.Errorf("worker --etcd=%q, want %q", got, want)
			}
			// --coordinator is the one name every modcoord command uses for
			// the API address (--coordinators is only accepted as an alias).
			if !strings.Contains(args["--coordinator"], "https://") {
				t.Errorf("worker --coordinator=%q, want the coordinators' API URLs", args["--coordinator"])
			}
			if _, ok := args["--ring-window"]; ok {
				t.Errorf("worker --ring-window=%q with the default ringWindow 0, want the flag left out", args["--ring-window"])
			}
			r.absent(t, "ServiceMonitor", "PrometheusRule", "DaemonSet", "Certificate")
			r.checkGeneratedTLS(t, "modcoord")
		},
	},
	{
		name: "nondefault", release: "gpu", namespace: "ml", valuesFile: "ci/nondefault-values.yaml",
		external: []string{
			"Secret/modcoord-tls",
			"PersistentVolumeClaim/shared-checkpoints", "PersistentVolumeClaim/training-corpus",
		},
		check: func(t *testing.T, r *rendered) {
			w := r.statefulSet(t, "mc-gpu-worker")
			if *w.Spec.Replicas != 5 {
				t.Errorf("worker replicas = %d, want 5", *w.Spec.Replicas)
			}
			c := w.Spec.Template.Spec.Containers[0]
			gpu := c.Resources.Limits["nvidia.com/gpu"]
			if gpu.Value() != 1 {
				t.Errorf("worker nvidia.com/gpu limit = %s, want 1", gpu.String())
			}
			if len(w.Spec.Template.Spec.Tolerations) == 0 || w.Spec.Template.Spec.NodeSelector["nvidia.com/gpu.present"] != "true" {
				t.Error("worker tolerations/nodeSelector from values were not applied")
			}
			if w.Spec.Template.Spec.Affinity == nil || w.Spec.Template.Spec.Affinity.PodAntiAffinity == nil {
				t.Error("worker affinity from values was not applied")
			}
			args := containerArgs(c)
			if args["--nats"] != "nats://nats.messaging.svc.cluster.local:4222" || !strings.HasPrefix(args["--etcd"], "https://etcd-0.etcd.infra") {
				t.Errorf("external NATS/etcd URLs not used: --nats=%q --etcd=%q", args["--nats"], args["--etcd"])
			}
			if args["--checkpoint-dir"] != "/mnt/checkpoints" {
				t.Errorf("--checkpoint-dir=%q, want /mnt/checkpoints", args["--checkpoint-dir"])
			}
			if args["--ring-window"] != "32" {
				t.Errorf("--ring-window=%q, want 32 from worker.ringWindow", args["--ring-window"])
			}
			// Nothing bundled, nothing generated.
			r.absent(t, "Secret", "DaemonSet", "PersistentVolumeClaim")
			for _, m := range r.all {
				if m.kind == "StatefulSet" && (strings.HasSuffix(m.name, "-nats") || strings.HasSuffix(m.name, "-etcd")) {
					t.Errorf("external NATS/etcd, yet %s/%s is rendered", m.kind, m.name)
				}
			}
			coord := r.statefulSet(t, "mc-gpu-coordinator")
			if a := containerArgs(coord.Spec.Template.Spec.Containers[0]); a["--cluster"] != "gpu-prod" || a["--data-root"] != "/data" || a["--metrics"] != ":9091" {
				t.Errorf("coordinator --cluster=%q --data-root=%q --metrics=%q", a["--cluster"], a["--data-root"], a["--metrics"])
			}
			if p := containerPort(coord.Spec.Template.Spec.Containers[0], "metrics"); p != 9091 {
				t.Errorf("coordinator metrics port %d, want 9091 from coordinator.metricsPort", p)
			}
			sm := r.get(t, "ServiceMonitor", "mc-gpu").obj.(*serviceMonitor)
			if sm.Metadata.Labels["release"] != "kube-prometheus-stack" {
				t.Error("serviceMonitor.labels not applied")
			}
			r.checkServiceMonitorTargets(t, sm, []string{"mc-gpu-coordinator-headless", "mc-gpu-worker-headless"})
			r.checkDashboard(t, "mc-gpu-dashboard")
			pr := r.get(t, "PrometheusRule", "mc-gpu").obj.(*prometheusRule)
			if pr.Metadata.Labels["release"] != "kube-prometheus-stack" {
				t.Error("prometheusRule.labels not applied")
			}
			checkAlerts(t, pr, "ml", "mc-gpu", map[string]string{
				"ModcoordJobStalled":               "[20m]",
				"ModcoordCheckpointsFallingBehind": "> 4 * max",
			})
		},
	},
	{
		name: "pernode", release: "pn", namespace: "pn", valuesFile: "ci/pernode-values.yaml",
		check: func(t *testing.T, r *rendered) {
			ds := r.get(t, "DaemonSet", "pn-modcoord-nats").obj.(*appsv1.DaemonSet)
			if len(ds.Spec.Template.Spec.Tolerations) == 0 {
				t.Error("NATS DaemonSet must take nats.tolerations (it must run on the GPU nodes)")
			}
			local := r.get(t, "Service", "pn-modcoord-nats-local").obj.(*corev1.Service)
			if local.Spec.InternalTrafficPolicy == nil || *local.Spec.InternalTrafficPolicy != corev1.ServiceInternalTrafficPolicyLocal {
				t.Error("per-node NATS: the workers' Service must have internalTrafficPolicy Local")
			}
			w := r.statefulSet(t, "pn-modcoord-worker")
			if got, want := containerArgs(w.Spec.Template.Spec.Containers[0])["--nats"], "nats://pn-modcoord-nats-local.pn.svc.cluster.local:4222"; got != want {
				t.Errorf("worker --nats=%q, want the node-local Service %q", got, want)
			}
			conf := r.get(t, "ConfigMap", "pn-modcoord-nats").obj.(*corev1.ConfigMap).Data["nats.conf"]
			for _, want := range []string{"cluster {", "routes: $NATS_ROUTES", "no_advertise: true", "password: $NATS_ROUTE_PASSWORD", "verify: true"} {
				if !strings.Contains(conf, want) {
					t.Errorf("nats.conf lacks %q:\n%s", want, conf)
				}
			}
			env := map[string]corev1.EnvVar{}
			for _, e := range ds.Spec.Template.Spec.Containers[0].Env {
				env[e.Name] = e
			}
			if !strings.Contains(env["NATS_ROUTES"].Value, "@pn-modcoord-nats-headless.pn.svc.cluster.local:6222") {
				t.Errorf("NATS_ROUTES = %q, want a seed through the headless Service", env["NATS_ROUTES"].Value)
			}
			etcd := r.statefulSet(t, "pn-modcoord-etcd")
			if a := containerArgs(etcd.Spec.Template.Spec.Containers[0]); strings.Count(a["--initial-cluster"], "=https://") != 3 {
				t.Errorf("3 etcd members, --initial-cluster=%q", a["--initial-cluster"])
			}
			coord := r.statefulSet(t, "pn-modcoord-coordinator")
			if len(coord.Spec.VolumeClaimTemplates) != 0 {
				t.Error("coordinator.persistence.enabled=false must not create PVC templates")
			}
			gpu := w.Spec.Template.Spec.Containers[0].Resources.Limits["nvidia.com/gpu"]
			if gpu.Value() != 2 {
				t.Errorf("worker nvidia.com/gpu limit = %s, want 2", gpu.String())
			}
			if _, ok := r.get(t, "PersistentVolumeClaim", "pn-modcoord-checkpoints").obj.(*corev1.PersistentVolumeClaim).Annotations["helm.sh/resource-policy"]; ok {
				t.Error("keepOnUninstall=false must drop helm.sh/resource-policy")
			}
			r.checkGeneratedTLS(t, "pn")
		},
	},
	{
		name: "certmanager", release: "cm", namespace: "cm",
		set: []string{"tls.certManager.enabled=true", "tls.certManager.issuerRef.name=modcoord-ca"},
		external: []string{
			"Secret/cm-modcoord-tls-coordinator", "Secret/cm-modcoord-tls-worker",
			"Secret/cm-modcoord-tls-etcd", "Secret/cm-modcoord-tls-nats",
		},
		check: func(t *testing.T, r *rendered) {
			if r.has("Secret", "cm-modcoord-tls") || r.has("Secret", "cm-modcoord-tls-ca") {
				t.Error("cert-manager issues the certificates; the chart must not generate any")
			}
			n := 0
			for _, m := range r.all {
				c, ok := m.obj.(*certificate)
				if !ok {
					continue
				}
				n++
				role := strings.TrimPrefix(c.Metadata.Name, "cm-modcoord-tls-")
				if _, err := pki.ParseRole(role); err != nil {
					t.Errorf("Certificate %s: %v", c.Metadata.Name, err)
					continue
				}
				if c.Spec.SecretName != c.Metadata.Name {
					t.Errorf("Certificate %s: secretName %q", c.Metadata.Name, c.Spec.SecretName)
				}
				if want := role; c.Spec.CommonName != want {
					t.Errorf("Certificate %s: commonName %q, want %q", c.Metadata.Name, c.Spec.CommonName, want)
				}
				if want := "spiffe://modcoord/role/" + role + "/cm-modcoord"; len(c.Spec.URIs) != 1 || c.Spec.URIs[0] != want {
					t.Errorf("Certificate %s: uris %v, want [%s]", c.Metadata.Name, c.Spec.URIs, want)
				}
				if c.Spec.IssuerRef.Name != "modcoord-ca" || c.Spec.IssuerRef.Kind != "Issuer" {
					t.Errorf("Certificate %s: issuerRef %+v", c.Metadata.Name, c.Spec.IssuerRef)
				}
				if c.Spec.PrivateKey.Algorithm != "ECDSA" || c.Spec.PrivateKey.Size != 256 {
					t.Errorf("Certificate %s: privateKey %+v, want ECDSA 256", c.Metadata.Name, c.Spec.PrivateKey)
				}
				server := slices.Contains(c.Spec.Usages, "server auth")
				if server == (role == "user") || !slices.Contains(c.Spec.Usages, "client auth") {
					t.Errorf("Certificate %s: usages %v", c.Metadata.Name, c.Spec.Usages)
				}
				if role == "coordinator" && !slices.Contains(c.Spec.DNSNames, "cm-modcoord-coordinator-0.cm-modcoord-coordinator-headless.cm.svc.cluster.local") {
					t.Errorf("Certificate %s: dnsNames %v lack the pods' names", c.Metadata.Name, c.Spec.DNSNames)
				}
			}
			if n != len(pki.Roles()) {
				t.Errorf("%d Certificates, want one per role (%d)", n, len(pki.Roles()))
			}
		},
	},
}

func TestChartRenders(t *testing.T) {
	helm := helmBinary(t)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			args := []string{"template", c.release, chartDir, "--namespace", c.namespace}
			if c.valuesFile != "" {
				args = append(args, "-f", filepath.Join(chartDir, c.valuesFile))
			}
			for _, v := range c.set {
				args = append(args, "--set", v)
			}
			out := runHelm(t, helm, args...)
			r := parse(t, out, c.release)
			r.external = map[string]bool{}
			for _, e := range c.external {
				r.external[e] = true
			}
			r.checkEveryObject(t)
			r.checkWorkloads(t)
			r.checkServices(t)
			r.checkNoSecretLeaks(t)
			r.checkCoordinators(t)
			r.checkTLSMounts(t)
			r.checkMutualTLS(t)
			r.checkNetworkPolicies(t, c)
			r.checkWorkerPDB(t, c)
			c.check(t, r)
		})
	}
}

// Every ci/*-values.yaml must be covered by a case above, so a new values
// file cannot silently skip the checks.
func TestEveryCIValuesFileIsRendered(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(chartDir, "ci", "*-values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no ci/*-values.yaml found")
	}
	covered := map[string]bool{}
	for _, c := range cases {
		covered[c.valuesFile] = true
	}
	for _, f := range files {
		rel, _ := filepath.Rel(chartDir, f)
		if !covered[rel] {
			t.Errorf("%s has no case in chart_test.go", rel)
		}
	}
}

// The schema and the template guards reject bad values.
func TestChartRejectsBadValues(t *testing.T) {
	helm := helmBinary(t)
	bad := []struct {
		name string
		set  []string
		want string // substring of helm's error
	}{
		{"typo at top level", []string{"workr.replicas=3"}, "workr"},
		{"typo in a component", []string{"coordinator.replicaz=3"}, "replicaz"},
		{"typo in nats", []string{"nats.topolgy=daemonset"}, "topolgy"},
		{"unknown topology", []string{"nats.topology=mesh"}, "topology"},
		{"even raft cluster", []string{"coordinator.replicas=2"}, "odd"},
		{"negative GPUs", []string{"worker.gpus=-1"}, "gpus"},
		{"external NATS without URL", []string{"nats.enabled=false"}, "nats.url"},
		{"external etcd without URL", []string{"etcd.enabled=false"}, "etcd.url"},
		{"external etcd over plain HTTP", []string{"etcd.enabled=false", "etcd.url=https://e0:2379\\,http://e1:2379"}, "url"},
		{"the API token is gone", []string{"auth.token=abc"}, "auth"},
		{"the workers' NATS password is gone", []string{"nats.auth.password=abc"}, "password"},
		{"bad duration", []string{"worker.lease=10 seconds"}, "lease"},
		{"bad alert window", []string{"prometheusRule.stallWindow=ten minutes"}, "stallWindow"},
		{"zero checkpoint lag", []string{"prometheusRule.checkpointLagFactor=0"}, "checkpointLagFactor"},
		{"typo in tls", []string{"tls.existingSecert=x"}, "existingSecert"},
		{"bad certificate name", []string{"tls.certName=a/b"}, "certName"},
		{"certificate name too long for a CommonName", []string{"tls.certName=" + strings.Repeat("n", 44)}, "certName"},
		{"cert-manager without an issuer", []string{"tls.certManager.enabled=true"}, "issuerRef.name"},
		{"cert-manager and an existing Secret", []string{"tls.certManager.enabled=true", "tls.certManager.issuerRef.name=ca", "tls.existingSecret=x"}, "set one"},
	}
	for _, b := range bad {
		t.Run(b.name, func(t *testing.T) {
			args := []string{"template", "x", chartDir}
			for _, s := range b.set {
				args = append(args, "--set", s)
			}
			cmd := exec.Command(helm, args...)
			out, err := cmd.CombinedOutput()
			if err == nil {
				t.Fatalf("helm %s succeeded, want an error mentioning %q", strings.Join(args, " "), b.want)
			}
			if !strings.Contains(string(out), b.want) {
				t.Errorf("helm error does not mention %q:\n%s", b.want, out)
			}
		})
	}
}

// --- rendering and strict decoding -------------------------------------------

func helmBinary(t *testing.T) string {
	t.Helper()
	if h := os.Getenv("HELM"); h != "" {
		return h
	}
	if h, err := exec.LookPath("helm"); err == nil {
		return h
	}
	if out, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
		for _, dir := range filepath.SplitList(strings.TrimSpace(string(out))) {
			if h := filepath.Join(dir, "bin", "helm"); isExecutable(h) {
				return h
			}
		}
	}
	t.Skip("helm not found ($HELM, $PATH, $(go env GOPATH)/bin): install it with " +
		"`go install helm.sh/helm/v3/cmd/helm@v3.22.0` (.ci/chart.sh does) to run the chart tests")
	return ""
}

func isExecutable(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir() && st.Mode()&0o111 != 0
}

func runHelm(t *testing.T, helm string, args ...string) []byte {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(helm, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("helm %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.Bytes()
}

// manifest is one rendered object.
type manifest struct {
	source     string // the template file
	kind, name string
	raw        []byte
	obj        any // a typed k8s.io/api object, *serviceMonitor or *prometheusRule
	meta       metav1.Object
}

type rendered struct {
	release  string
	all      []*manifest
	external map[string]bool
}

var (
	scheme  = runtime.NewScheme()
	decoder runtime.Decoder
)

func init() {
	for _, add := range []func(*runtime.Scheme) error{corev1.AddToScheme, appsv1.AddToScheme, policyv1.AddToScheme, networkingv1.AddToScheme} {
		if err := add(scheme); err != nil {
			panic(err)
		}
	}
	// EnableStrict: unknown and duplicate fields are errors, not silently dropped.
	decoder = serializer.NewCodecFactory(scheme, serializer.EnableStrict).UniversalDeserializer()
}

var docSep = regexp.MustCompile(`(?m)^---\s*$`)
var sourceLine = regexp.MustCompile(`(?m)^# Source: (\S+)`)

func parse(t *testing.T, out []byte, release string) *rendered {
	t.Helper()
	r := &rendered{release: release}
	seen := map[string]bool{}
	for _, doc := range docSep.Split(string(out), -1) {
		src := ""
		if m := sourceLine.FindStringSubmatch(doc); m != nil {
			src = m[1]
		}
		var probe struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
		}
		if err := yaml.Unmarshal([]byte(doc), &probe); err != nil {
			t.Fatalf("%s: not YAML: %v\n%s", src, err, doc)
		}
		if probe.Kind == "" {
			if strings.TrimSpace(stripComments(doc)) != "" {
				t.Fatalf("%s: a document without kind:\n%s", src, doc)
			}
			continue
		}
		m := &manifest{source: src, kind: probe.Kind, raw: []byte(doc)}
		switch {
		case probe.APIVersion == "monitoring.coreos.com/v1" && probe.Kind == "ServiceMonitor":
			sm := &serviceMonitor{}
			if err := yaml.UnmarshalStrict([]byte(doc), sm); err != nil {
				t.Fatalf("%s: ServiceMonitor does not decode strictly: %v", src, err)
			}
			m.obj, m.meta = sm, &sm.Metadata
		case probe.APIVersion == "cert-manager.io/v1" && probe.Kind == "Certificate":
			c := &certificate{}
			if err := yaml.UnmarshalStrict([]byte(doc), c); err != nil {
				t.Fatalf("%s: Certificate does not decode strictly: %v", src, err)
			}
			m.obj, m.meta = c, &c.Metadata
		case probe.APIVersion == "monitoring.coreos.com/v1" && probe.Kind == "PrometheusRule":
			pr := &prometheusRule{}
			if err := yaml.UnmarshalStrict([]byte(doc), pr); err != nil {
				t.Fatalf("%s: PrometheusRule does not decode strictly: %v", src, err)
			}
			m.obj, m.meta = pr, &pr.Metadata
		default:
			obj, gvk, err := decoder.Decode([]byte(doc), nil, nil)
			if err != nil {
				t.Fatalf("%s: %s %s does not decode strictly into the Kubernetes API types: %v", src, probe.APIVersion, probe.Kind, err)
			}
			if gvk.Kind != probe.Kind {
				t.Fatalf("%s: decoded as %v", src, gvk)
			}
			m.obj = obj
			m.meta = obj.(metav1.Object)
		}
		m.name = m.meta.GetName()
		key := m.kind + "/" + m.name
		if seen[key] {
			t.Errorf("%s rendered twice", key)
		}
		seen[key] = true
		r.all = append(r.all, m)
	}
	if len(r.all) == 0 {
		t.Fatal("helm template rendered nothing")
	}
	return r
}

func stripComments(doc string) string {
	var b strings.Builder
	for _, l := range strings.Split(doc, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "#") {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

func (r *rendered) get(t *testing.T, kind, name string) *manifest {
	t.Helper()
	for _, m := range r.all {
		if m.kind == kind && m.name == name {
			return m
		}
	}
	t.Fatalf("%s/%s not rendered; have %v", kind, name, r.keys())
	return nil
}

func (r *rendered) has(kind, name string) bool {
	for _, m := range r.all {
		if m.kind == kind && m.name == name {
			return true
		}
	}
	return false
}

func (r *rendered) absent(t *testing.T, kinds ...string) {
	t.Helper()
	for _, m := range r.all {
		for _, k := range kinds {
			if m.kind == k {
				t.Errorf("%s/%s rendered, want no %s", m.kind, m.name, k)
			}
		}
	}
}

func (r *rendered) keys() []string {
	var k []string
	for _, m := range r.all {
		k = append(k, m.kind+"/"+m.name)
	}
	sort.Strings(k)
	return k
}

func (r *rendered) statefulSet(t *testing.T, name string) *appsv1.StatefulSet {
	t.Helper()
	return r.get(t, "StatefulSet", name).obj.(*appsv1.StatefulSet)
}

func (r *rendered) secret(t *testing.T, name string) *corev1.Secret {
	t.Helper()
	return r.get(t, "Secret", name).obj.(*corev1.Secret)
}

// serviceMonitor mirrors the fields of monitoring.coreos.com/v1
// ServiceMonitor (prometheus-operator pkg/apis/monitoring/v1) that the chart
// uses; strict decoding into it catches misspelt fields.
type serviceMonitor struct {
	APIVersion string            `json:"apiVersion"`
	Kind       string            `json:"kind"`
	Metadata   metav1.ObjectMeta `json:"metadata"`
	Spec       struct {
		JobLabel          string               `json:"jobLabel,omitempty"`
		Selector          metav1.LabelSelector `json:"selector"`
		NamespaceSelector struct {
			Any        bool     `json:"any,omitempty"`
			MatchNames []string `json:"matchNames,omitempty"`
		} `json:"namespaceSelector"`
		Endpoints []struct {
			Port              string       `json:"port"`
			Path              string       `json:"path,omitempty"`
			Scheme            string       `json:"scheme,omitempty"`
			Interval          string       `json:"interval,omitempty"`
			ScrapeTimeout     string       `json:"scrapeTimeout,omitempty"`
			HonorLabels       bool         `json:"honorLabels,omitempty"`
			Relabelings       []relabelCfg `json:"relabelings,omitempty"`
			MetricRelabelings []relabelCfg `json:"metricRelabelings,omitempty"`
		} `json:"endpoints"`
	} `json:"spec"`
}

// prometheusRule mirrors monitoring.coreos.com/v1 PrometheusRule
// (prometheus-operator pkg/apis/monitoring/v1), alerting rules only.
type prometheusRule struct {
	APIVersion string            `json:"apiVersion"`
	Kind       string            `json:"kind"`
	Metadata   metav1.ObjectMeta `json:"metadata"`
	Spec       struct {
		Groups []struct {
			Name  string `json:"name"`
			Rules []struct {
				Alert       string            `json:"alert"`
				Expr        string            `json:"expr"`
				For         string            `json:"for,omitempty"`
				Labels      map[string]string `json:"labels,omitempty"`
				Annotations map[string]string `json:"annotations,omitempty"`
			} `json:"rules"`
		} `json:"groups"`
	} `json:"spec"`
}

type relabelCfg struct {
	SourceLabels []string `json:"sourceLabels,omitempty"`
	Separator    string   `json:"separator,omitempty"`
	TargetLabel  string   `json:"targetLabel,omitempty"`
	Regex        string   `json:"regex,omitempty"`
	Modulus      uint64   `json:"modulus,omitempty"`
	Replacement  string   `json:"replacement,omitempty"`
	Action       string   `json:"action,omitempty"`
}

// --- checks every render gets ------------------------------------------------

var standardLabels = []string{
	"app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/version",
	"app.kubernetes.io/component", "app.kubernetes.io/managed-by", "helm.sh/chart",
}

func (r *rendered) checkLabels(t *testing.T, what string, l map[string]string) {
	t.Helper()
	for _, k := range standardLabels {
		if l[k] == "" {
			t.Errorf("%s: missing label %s", what, k)
		}
	}
	if l["app.kubernetes.io/instance"] != r.release {
		t.Errorf("%s: app.kubernetes.io/instance=%q, want the release %q", what, l["app.kubernetes.io/instance"], r.release)
	}
	if l["app.kubernetes.io/managed-by"] != "Helm" {
		t.Errorf("%s: app.kubernetes.io/managed-by=%q, want Helm", what, l["app.kubernetes.io/managed-by"])
	}
}

func (r *rendered) checkEveryObject(t *testing.T) {
	for _, m := range r.all {
		r.checkLabels(t, m.kind+"/"+m.name, m.meta.GetLabels())
		if ns := m.meta.GetNamespace(); ns != "" {
			t.Errorf("%s/%s: hard-coded namespace %q (helm sets it)", m.kind, m.name, ns)
		}
		if len(m.name) > 63 {
			t.Errorf("%s/%s: name longer than 63 characters", m.kind, m.name)
		}
	}
}

// podOwner is a workload with a pod template.
type podOwner struct {
	what     string
	selector *metav1.LabelSelector
	template *corev1.PodTemplateSpec
	sts      *appsv1.StatefulSet
}

func (r *rendered) workloads() []podOwner {
	var ws []podOwner
	for _, m := range r.all {
		switch o := m.obj.(type) {
		case *appsv1.StatefulSet:
			ws = append(ws, podOwner{"StatefulSet/" + o.Name, o.Spec.Selector, &o.Spec.Template, o})
		case *appsv1.DaemonSet:
			ws = append(ws, podOwner{"DaemonSet/" + o.Name, o.Spec.Selector, &o.Spec.Template, nil})
		case *appsv1.Deployment:
			ws = append(ws, podOwner{"Deployment/" + o.Name, o.Spec.Selector, &o.Spec.Template, nil})
		case *corev1.Pod:
			ws = append(ws, podOwner{"Pod/" + o.Name, nil, &corev1.PodTemplateSpec{ObjectMeta: o.ObjectMeta, Spec: o.Spec}, nil})
		}
	}
	return ws
}

func (r *rendered) checkWorkloads(t *testing.T) {
	ws := r.workloads()
	if len(ws) == 0 {
		t.Fatal("no workloads rendered")
	}
	for _, w := range ws {
		pod := w.template
		r.checkLabels(t, w.what+" pod template", pod.Labels)
		if w.selector != nil {
			sel, err := metav1.LabelSelectorAsSelector(w.selector)
			if err != nil || sel.Empty() {
				t.Errorf("%s: bad or empty selector %v: %v", w.what, w.selector, err)
			} else if !sel.Matches(labels.Set(pod.Labels)) {
				t.Errorf("%s: selector %v does not match its pod labels %v", w.what, w.selector, pod.Labels)
			}
			for k := range w.selector.MatchLabels {
				if k == "app.kubernetes.io/version" || k == "helm.sh/chart" {
					t.Errorf("%s: selector uses %s, which changes on upgrade (selectors are immutable)", w.what, k)
				}
			}
		}
		if w.sts != nil {
			svc, ok := r.find("Service", w.sts.Spec.ServiceName)
			if !ok {
				t.Errorf("%s: serviceName %q is not a rendered Service", w.what, w.sts.Spec.ServiceName)
			} else if s := svc.obj.(*corev1.Service); s.Spec.ClusterIP != corev1.ClusterIPNone {
				t.Errorf("%s: serviceName %q is not headless", w.what, s.Name)
			}
			for _, vct := range w.sts.Spec.VolumeClaimTemplates {
				for k := range vct.Labels {
					if k == "app.kubernetes.io/version" || k == "helm.sh/chart" {
						t.Errorf("%s: volumeClaimTemplate %s has label %s; the templates are immutable, so upgrades would fail", w.what, vct.Name, k)
					}
				}
			}
		}
		r.checkVolumes(t, w.what, w.sts, &pod.Spec)
		if len(pod.Spec.InitContainers) > 0 {
			t.Errorf("%s: init containers are not expected; if added, extend these checks", w.what)
		}
		for _, c := range pod.Spec.Containers {
			what := fmt.Sprintf("%s container %s", w.what, c.Name)
			if c.Name != "etcd-setup" {
				// The etcd-setup sidecar retries, then idles: nothing to probe.
				checkProbes(t, what, c)
			}
			checkResources(t, what, c)
			checkContainerSecurity(t, what, &pod.Spec, c)
			r.checkEnv(t, what, c)
			if c.Image == "" {
				t.Errorf("%s: no image", what)
			}
		}
	}
}

func (r *rendered) find(kind, name string) (*manifest, bool) {
	for _, m := range r.all {
		if m.kind == kind && m.name == name {
			return m, true
		}
	}
	return nil, false
}

func checkProbes(t *testing.T, what string, c corev1.Container) {
	t.Helper()
	ports := map[string]int32{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	for name, p := range map[string]*corev1.Probe{"liveness": c.LivenessProbe, "readiness": c.ReadinessProbe} {
		if p == nil {
			t.Errorf("%s: no %s probe", what, name)
			continue
		}
		if p.HTTPGet == nil && p.TCPSocket == nil && p.Exec == nil && p.GRPC == nil {
			t.Errorf("%s: %s probe has no handler", what, name)
		}
		if p.HTTPGet != nil {
			if p.HTTPGet.Path == "" || !strings.HasPrefix(p.HTTPGet.Path, "/") {
				t.Errorf("%s: %s probe path %q", what, name, p.HTTPGet.Path)
			}
			if pn := p.HTTPGet.Port.StrVal; pn != "" {
				if _, ok := ports[pn]; !ok {
					t.Errorf("%s: %s probe port %q is not a container port", what, name, pn)
				}
			}
		}
	}
}

func checkResources(t *testing.T, what string, c corev1.Container) {
	t.Helper()
	for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		if q, ok := c.Resources.Requests[r]; !ok || q.IsZero() {
			t.Errorf("%s: no %s request", what, r)
		}
	}
	lim, ok := c.Resources.Limits[corev1.ResourceMemory]
	if !ok || lim.IsZero() {
		t.Errorf("%s: no memory limit", what)
	}
	for name, req := range c.Resources.Requests {
		if l, ok := c.Resources.Limits[name]; ok && l.Cmp(req) < 0 {
			t.Errorf("%s: %s limit %s below request %s", what, name, l.String(), req.String())
		}
	}
	for name, l := range c.Resources.Limits {
		if strings.Contains(string(name), "/") { // extended resources (GPUs): whole numbers
			if l.Value() < 1 || l.MilliValue()%1000 != 0 {
				t.Errorf("%s: %s limit %s must be a positive integer", what, name, l.String())
			}
		}
	}
}

func checkContainerSecurity(t *testing.T, what string, pod *corev1.PodSpec, c corev1.Container) {
	t.Helper()
	psc := pod.SecurityContext
	if psc == nil {
		psc = &corev1.PodSecurityContext{}
	}
	sc := c.SecurityContext
	if sc == nil {
		t.Errorf("%s: no securityContext", what)
		return
	}
	nonRoot := (sc.RunAsNonRoot != nil && *sc.RunAsNonRoot) || (sc.RunAsNonRoot == nil && psc.RunAsNonRoot != nil && *psc.RunAsNonRoot)
	if !nonRoot {
		t.Errorf("%s: runAsNonRoot is not true", what)
	}
	uid := psc.RunAsUser
	if sc.RunAsUser != nil {
		uid = sc.RunAsUser
	}
	if uid == nil || *uid == 0 {
		t.Errorf("%s: runAsUser unset or 0", what)
	} else if *uid != 65532 {
		t.Errorf("%s: runAsUser %d, want 65532", what, *uid)
	}
	if psc.FSGroup == nil {
		t.Errorf("%s: pod has no fsGroup (mounted volumes would not be writable by the non-root user)", what)
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Errorf("%s: readOnlyRootFilesystem is not true", what)
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Errorf("%s: allowPrivilegeEscalation is not false", what)
	}
	if sc.Privileged != nil && *sc.Privileged {
		t.Errorf("%s: privileged", what)
	}
	dropAll := false
	if sc.Capabilities != nil {
		for _, d := range sc.Capabilities.Drop {
			dropAll = dropAll || d == "ALL"
		}
		if len(sc.Capabilities.Add) > 0 {
			t.Errorf("%s: adds capabilities %v", what, sc.Capabilities.Add)
		}
	}
	if !dropAll {
		t.Errorf("%s: capabilities do not drop ALL", what)
	}
	seccomp := psc.SeccompProfile
	if sc.SeccompProfile != nil {
		seccomp = sc.SeccompProfile
	}
	if seccomp == nil || seccomp.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("%s: seccompProfile is not RuntimeDefault", what)
	}
	if pod.HostNetwork || pod.HostPID || pod.HostIPC {
		t.Errorf("%s: uses host namespaces", what)
	}
	// A read-only root needs a writable /tmp.
	tmp := false
	for _, vm := range c.VolumeMounts {
		if vm.MountPath == "/tmp" {
			for _, v := range pod.Volumes {
				if v.Name == vm.Name && v.EmptyDir != nil {
					tmp = true
				}
			}
		}
	}
	if !tmp {
		t.Errorf("%s: no emptyDir at /tmp", what)
	}
}

var secretishName = regexp.MustCompile(`(?i)(token|passw|secret|creds|credential|key|seed)`)
var envRef = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

// checkEnv: an env var whose name looks secret must come from a Secret
// (secretKeyRef), or consist only of $(VAR) references to such variables
// (plus quoting), never a literal.
func (r *rendered) checkEnv(t *testing.T, what string, c corev1.Container) {
	t.Helper()
	fromSecret := map[string]bool{}
	for _, e := range c.Env {
		if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
			fromSecret[e.Name] = true
			r.checkSecretRef(t, what+" env "+e.Name, e.ValueFrom.SecretKeyRef.Name)
		}
		if e.ValueFrom != nil && e.ValueFrom.ConfigMapKeyRef != nil && secretishName.MatchString(e.Name) {
			t.Errorf("%s: env %s comes from a ConfigMap; secrets belong in Secrets", what, e.Name)
		}
	}
	for _, e := range c.Env {
		if e.Value == "" || !secretishName.MatchString(e.Name) {
			continue
		}
		refs := envRef.FindAllStringSubmatch(e.Value, -1)
		rest := strings.Trim(envRef.ReplaceAllString(e.Value, ""), `"' `)
		if len(refs) == 0 || rest != "" {
			t.Errorf("%s: env %s has a literal value; use secretKeyRef", what, e.Name)
			continue
		}
		for _, ref := range refs {
			if !fromSecret[ref[1]] {
				t.Errorf("%s: env %s references $(%s), which is not from a Secret", what, e.Name, ref[1])
			}
		}
	}
	for _, ef := range c.EnvFrom {
		if ef.ConfigMapRef != nil {
			t.Errorf("%s: envFrom a ConfigMap is not expected", what)
		}
	}
}

func (r *rendered) checkSecretRef(t *testing.T, what, name string) {
	t.Helper()
	if !r.has("Secret", name) && !r.external["Secret/"+name] {
		t.Errorf("%s: Secret %q is neither rendered nor an expected existing Secret", what, name)
	}
}

// checkVolumes: every referenced Secret, ConfigMap and PVC exists (rendered
// or declared external), every mount has a volume, and each flag naming a
// file (--token-file, --nats-password-file, --nats-creds) points at a key
// projected from a Secret.
func (r *rendered) checkVolumes(t *testing.T, what string, sts *appsv1.StatefulSet, pod *corev1.PodSpec) {
	t.Helper()
	vols := map[string]corev1.Volume{}
	for _, v := range pod.Volumes {
		vols[v.Name] = v
		switch {
		case v.Secret != nil:
			r.checkSecretRef(t, what+" volume "+v.Name, v.Secret.SecretName)
			if len(v.Secret.Items) == 0 {
				t.Errorf("%s volume %s: mounts every key of Secret %s; list the items (a Secret may hold a CA key)", what, v.Name, v.Secret.SecretName)
			}
		case v.Projected != nil:
			for _, s := range v.Projected.Sources {
				if s.Secret != nil {
					r.checkSecretRef(t, what+" volume "+v.Name, s.Secret.Name)
					if len(s.Secret.Items) == 0 {
						t.Errorf("%s volume %s: projects every key of Secret %s; list the items (a Secret may hold a CA key)", what, v.Name, s.Secret.Name)
					}
				}
				if s.ServiceAccountToken != nil {
					t.Errorf("%s: projects a service account token; nothing here calls the API", what)
				}
			}
		case v.ConfigMap != nil:
			if !r.has("ConfigMap", v.ConfigMap.Name) {
				t.Errorf("%s: volume %s: ConfigMap %q not rendered", what, v.Name, v.ConfigMap.Name)
			}
		case v.PersistentVolumeClaim != nil:
			n := v.PersistentVolumeClaim.ClaimName
			if !r.has("PersistentVolumeClaim", n) && !r.external["PersistentVolumeClaim/"+n] {
				t.Errorf("%s: volume %s: PVC %q neither rendered nor expected to exist", what, v.Name, n)
			}
		case v.HostPath != nil:
			t.Errorf("%s: hostPath volume %s", what, v.Name)
		}
	}
	if sts != nil {
		for _, vct := range sts.Spec.VolumeClaimTemplates {
			vols[vct.Name] = corev1.Volume{Name: vct.Name}
		}
	}
	if pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken {
		t.Errorf("%s: automountServiceAccountToken is not false", what)
	}
	for _, c := range pod.Containers {
		for _, vm := range c.VolumeMounts {
			if _, ok := vols[vm.Name]; !ok {
				t.Errorf("%s container %s: mount %s has no volume", what, c.Name, vm.Name)
			}
		}
		for flagName, path := range containerArgs(c) {
			if flagName != "--token-file" && flagName != "--nats-password-file" && flagName != "--nats-creds" {
				continue
			}
			if !secretFileMounted(c, vols, path) {
				t.Errorf("%s container %s: %s=%s is not a file projected from a Secret", what, c.Name, flagName, path)
			}
		}
	}
}

func secretFileMounted(c corev1.Container, vols map[string]corev1.Volume, path string) bool {
	for _, vm := range c.VolumeMounts {
		rel, err := filepath.Rel(vm.MountPath, path)
		if err != nil || strings.HasPrefix(rel, "..") {
			continue
		}
		v := vols[vm.Name]
		var items []corev1.KeyToPath
		switch {
		case v.Secret != nil:
			items = v.Secret.Items
		case v.Projected != nil:
			for _, s := range v.Projected.Sources {
				if s.Secret != nil {
					items = append(items, s.Secret.Items...)
				}
			}
		default:
			continue
		}
		for _, it := range items {
			if it.Path == rel {
				return true
			}
		}
	}
	return false
}

// containerPort is the number of c's port called name (0: none).
func containerPort(c corev1.Container, name string) int32 {
	for _, p := range c.Ports {
		if p.Name == name {
			return p.ContainerPort
		}
	}
	return 0
}

// containerArgs maps --flag=value arguments (and bare --flag to "true").
func containerArgs(c corev1.Container) map[string]string {
	m := map[string]string{}
	for _, a := range append(append([]string{}, c.Command...), c.Args...) {
		if !strings.HasPrefix(a, "--") {
			continue
		}
		k, v, ok := strings.Cut(a, "=")
		if !ok {
			v = "true"
		}
		m[k] = v
	}
	return m
}

// checkServices: every Service selects the pods of a rendered workload, and
// its named target ports exist on those pods.
func (r *rendered) checkServices(t *testing.T) {
	ws := r.workloads()
	for _, m := range r.all {
		svc, ok := m.obj.(*corev1.Service)
		if !ok {
			continue
		}
		if len(svc.Spec.Selector) == 0 {
			t.Errorf("Service/%s: no selector", svc.Name)
			continue
		}
		sel := labels.SelectorFromSet(svc.Spec.Selector)
		var matched []podOwner
		for _, w := range ws {
			if sel.Matches(labels.Set(w.template.Labels)) {
				matched = append(matched, w)
			}
		}
		if len(matched) == 0 {
			t.Errorf("Service/%s: selector %v matches no rendered pod template", svc.Name, svc.Spec.Selector)
			continue
		}
		for _, p := range svc.Spec.Ports {
			if p.TargetPort.StrVal == "" {
				continue
			}
			for _, w := range matched {
				found := false
				for _, c := range w.template.Spec.Containers {
					for _, cp := range c.Ports {
						found = found || cp.Name == p.TargetPort.StrVal
					}
				}
				if !found {
					t.Errorf("Service/%s port %s: targetPort %q is not a port of %s", svc.Name, p.Name, p.TargetPort.StrVal, w.what)
				}
			}
		}
	}
}

// checkNoSecretLeaks: no value stored in a rendered Secret appears in any
// other object (a ConfigMap, an env value, an argument, an annotation).
func (r *rendered) checkNoSecretLeaks(t *testing.T) {
	var values []string
	for _, m := range r.all {
		s, ok := m.obj.(*corev1.Secret)
		if !ok {
			continue
		}
		for _, v := range s.Data {
			values = append(values, string(v))
		}
		for _, v := range s.StringData {
			values = append(values, v)
		}
	}
	for _, m := range r.all {
		if m.kind == "Secret" {
			continue
		}
		for _, v := range values {
			if len(v) < 6 {
				continue
			}
			enc := base64.StdEncoding.EncodeToString([]byte(v))
			if bytes.Contains(m.raw, []byte(v)) || bytes.Contains(m.raw, []byte(enc)) {
				t.Errorf("%s/%s (%s) contains a value stored in a Secret", m.kind, m.name, m.source)
			}
		}
		if cm, ok := m.obj.(*corev1.ConfigMap); ok {
			for k, d := range cm.Data {
				if regexp.MustCompile(`(?i)(password|token)\s*[:=]\s*["']?[A-Za-z0-9]{6,}`).MatchString(d) {
					t.Errorf("ConfigMap/%s key %s looks like it holds a literal password or token", cm.Name, k)
				}
			}
		}
	}
}

// checkCoordinators: the raft peer list names every replica by pod name and
// headless DNS name, a PodDisruptionBudget covers the coordinators, and the
// probes are the agreed endpoints.
func (r *rendered) checkCoordinators(t *testing.T) {
	var sts *appsv1.StatefulSet
	for _, m := range r.all {
		if s, ok := m.obj.(*appsv1.StatefulSet); ok && s.Spec.Template.Labels["app.kubernetes.io/component"] == "coordinator" {
			sts = s
		}
	}
	if sts == nil {
		t.Fatal("no coordinator StatefulSet")
	}
	if sts.Spec.PodManagementPolicy != appsv1.ParallelPodManagement {
		t.Errorf("coordinators: podManagementPolicy %q; OrderedReady never gets past pod 0 (ready needs a raft leader)", sts.Spec.PodManagementPolicy)
	}
	c := sts.Spec.Template.Spec.Containers[0]
	if c.LivenessProbe.HTTPGet == nil || c.LivenessProbe.HTTPGet.Path != "/healthz" ||
		c.ReadinessProbe.HTTPGet == nil || c.ReadinessProbe.HTTPGet.Path != "/readyz" {
		t.Error("coordinator probes must be /healthz (liveness) and /readyz (readiness)")
	}
	args := containerArgs(c)
	// The API port wants a client certificate, which the kubelet has not:
	// the probes go to the plain-HTTP --metrics port.
	metrics := containerPort(c, "metrics")
	if metrics == 0 || args["--metrics"] != fmt.Sprintf(":%d", metrics) {
		t.Errorf("coordinator --metrics=%q, container port metrics %d", args["--metrics"], metrics)
	}
	for name, p := range map[string]*corev1.Probe{"liveness": c.LivenessProbe, "readiness": c.ReadinessProbe} {
		if p.HTTPGet == nil || p.HTTPGet.Port.StrVal != "metrics" || (p.HTTPGet.Scheme != "" && p.HTTPGet.Scheme != corev1.URISchemeHTTP) {
			t.Errorf("coordinator %s probe must be plain HTTP on the metrics port: %+v", name, p.HTTPGet)
		}
	}
	if headless, ok := r.find("Service", sts.Spec.ServiceName); ok {
		for _, p := range headless.obj.(*corev1.Service).Spec.Ports {
			if p.Name == "metrics" && (p.TargetPort.StrVal != "metrics" || p.Port != metrics) {
				t.Errorf("coordinator headless Service port metrics: %d -> %q, want %d -> metrics (the scrape is plain HTTP)", p.Port, p.TargetPort.StrVal, metrics)
			}
		}
	}
	peers := strings.Split(args["--peers"], ",")
	n := int(*sts.Spec.Replicas)
	if len(peers) != n {
		t.Fatalf("--peers has %d entries for %d replicas: %q", len(peers), n, args["--peers"])
	}
	headless, _ := r.find("Service", sts.Spec.ServiceName)
	if headless == nil || !headless.obj.(*corev1.Service).Spec.PublishNotReadyAddresses {
		t.Error("the coordinators' headless Service must publish not-ready addresses (raft needs peers before anyone is ready)")
	}
	for i, p := range peers {
		parts := strings.Split(p, "=")
		if len(parts) != 3 {
			t.Errorf("peer %q: want id=raftHost:port=apiURL", p)
			continue
		}
		pod := fmt.Sprintf("%s-%d", sts.Name, i)
		host := pod + "." + sts.Spec.ServiceName + "."
		if parts[0] != pod || !strings.HasPrefix(parts[1], host) || !strings.HasSuffix(parts[1], ":7000") ||
			!strings.HasPrefix(parts[2], "https://"+host) || !strings.HasSuffix(parts[2], ":7070") {
			t.Errorf("peer %d = %q, want %s=%s...:7000=https://%s...:7070", i, p, pod, host, host)
		}
	}
	if args["--id"] != "$(POD_NAME)" || args["--bootstrap"] != "true" || args["--tls-dir"] != tlsDir {
		t.Errorf("coordinator args: --id=%q --bootstrap=%q --tls-dir=%q", args["--id"], args["--bootstrap"], args["--tls-dir"])
	}
	if _, insecure := args["--insecure-no-auth"]; insecure {
		t.Error("coordinators must not run with --insecure-no-auth")
	}
	pdbs := 0
	for _, m := range r.all {
		pdb, ok := m.obj.(*policyv1.PodDisruptionBudget)
		if !ok {
			continue
		}
		sel, err := metav1.LabelSelectorAsSelector(pdb.Spec.Selector)
		if err != nil || !sel.Matches(labels.Set(sts.Spec.Template.Labels)) {
			continue
		}
		pdbs++
		if pdb.Spec.MaxUnavailable == nil || pdb.Spec.MaxUnavailable.IntValue() != 1 {
			t.Errorf("PDB %s: maxUnavailable %v, want 1", pdb.Name, pdb.Spec.MaxUnavailable)
		}
	}
	if pdbs != 1 {
		t.Errorf("%d PodDisruptionBudgets select the coordinators, want 1", pdbs)
	}
}

func (r *rendered) checkServiceMonitorTargets(t *testing.T, sm *serviceMonitor, wantServices []string) {
	t.Helper()
	sel, err := metav1.LabelSelectorAsSelector(&sm.Spec.Selector)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, m := range r.all {
		svc, ok := m.obj.(*corev1.Service)
		if !ok || !sel.Matches(labels.Set(svc.Labels)) {
			continue
		}
		got = append(got, svc.Name)
		for _, ep := range sm.Spec.Endpoints {
			found := false
			for _, p := range svc.Spec.Ports {
				found = found || p.Name == ep.Port
			}
			if !found {
				t.Errorf("ServiceMonitor endpoint port %q is not a port of Service %s", ep.Port, svc.Name)
			}
		}
	}
	sort.Strings(got)
	if strings.Join(got, ",") != strings.Join(wantServices, ",") {
		t.Errorf("ServiceMonitor selects %v, want %v", got, wantServices)
	}
}

// The dashboard is valid JSON with a panel for every metric modcoord exports.
func (r *rendered) checkDashboard(t *testing.T, name string) {
	t.Helper()
	cm := r.get(t, "ConfigMap", name).obj.(*corev1.ConfigMap)
	var d struct {
		Title  string `json:"title"`
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal([]byte(cm.Data["modcoord.json"]), &d); err != nil {
		t.Fatalf("dashboard JSON: %v", err)
	}
	if d.Title == "" || len(d.Panels) == 0 {
		t.Fatal("dashboard has no title or panels")
	}
	var exprs strings.Builder
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			exprs.WriteString(tg.Expr + "\n")
		}
	}
	for _, metric := range []string{
		"modcoord_step_duration_seconds", "modcoord_tokens_total", "modcoord_job_used_flops",
		"modcoord_job_budget_remaining_flops", "modcoord_job_train_loss", "modcoord_job_val_loss", "modcoord_router_tokens_selected",
		"modcoord_allreduce_duration_seconds", "modcoord_allreduce_bytes_total", "modcoord_checkpoint_duration_seconds",
		"modcoord_workers", "modcoord_raft_leader",
	} {
		if !regexp.MustCompile(`\b` + metric + `(_bucket)?\b`).MatchString(exprs.String()) {
			t.Errorf("dashboard has no panel querying %s", metric)
		}
	}
	if !strings.Contains(exprs.String(), "by (layer)") {
		t.Error("router panel must split modcoord_router_tokens_selected by layer")
	}
	if cm.Labels["grafana_dashboard"] != "1" {
		t.Error("dashboard ConfigMap lacks the Grafana sidecar label")
	}
}

// checkAlerts checks every alert of the chart's PrometheusRule: it has a
// severity, a summary and a duration; its expression's brackets balance;
// each series it reads is one modcoord exports (exportedMetrics) and is
// selected by this release's namespace and Service, so two releases never
// alert on each other's jobs. want maps an alert to a fragment its
// expression must contain (a value that came from values.yaml).
func checkAlerts(t *testing.T, pr *prometheusRule, namespace, fullname string, want map[string]string) {
	t.Helper()
	exported := exportedMetrics(t)
	selector := regexp.MustCompile(`\b(modcoord_[a-z_]+)(\{[^}]*\})?`)
	grouping := regexp.MustCompile(`\b(by|on|without|ignoring)\s*\([^)]*\)`) // label names, not series
	seen := map[string]bool{}
	for _, g := range pr.Spec.Groups {
		for _, rule := range g.Rules {
			seen[rule.Alert] = true
			if rule.Labels["severity"] == "" || rule.Annotations["summary"] == "" || rule.For == "" {
				t.Errorf("alert %s: needs labels.severity, annotations.summary and for", rule.Alert)
			}
			if !balanced(rule.Expr) {
				t.Errorf("alert %s: unbalanced brackets in %q", rule.Alert, rule.Expr)
			}
			matches := selector.FindAllStringSubmatch(grouping.ReplaceAllString(rule.Expr, ""), -1)
			if len(matches) == 0 {
				t.Errorf("alert %s reads no modcoord series: %q", rule.Alert, rule.Expr)
			}
			for _, m := range matches {
				if !exported[m[1]] {
					t.Errorf("alert %s reads %s, which modcoord does not export", rule.Alert, m[1])
				}
				if !strings.Contains(m[2], fmt.Sprintf("namespace=%q", namespace)) || !strings.Contains(m[2], fmt.Sprintf("service=\"%s-", fullname)) {
					t.Errorf("alert %s: %s%s is not limited to namespace %s and the release's Services", rule.Alert, m[1], m[2], namespace)
				}
			}
			if frag, ok := want[rule.Alert]; ok && !strings.Contains(rule.Expr, frag) {
				t.Errorf("alert %s: expression lacks %q: %s", rule.Alert, frag, rule.Expr)
			}
		}
	}
	for _, a := range []string{"ModcoordNoRaftLeader", "ModcoordJobStalled", "ModcoordCheckpointsFallingBehind", "ModcoordCheckpointsSkipped"} {
		if !seen[a] {
			t.Errorf("PrometheusRule has no alert %s", a)
		}
	}
}

// exportedMetrics collects the modcoord_* metric names written as string
// literals in the packages that export metrics.
func exportedMetrics(t *testing.T) map[string]bool {
	t.Helper()
	names := map[string]bool{}
	lit := regexp.MustCompile(`"(modcoord_[a-z_]+)"`)
	for _, dir := range []string{"../../coordinator", "../../worker", "../../checkpoint"} {
		files, err := filepath.Glob(filepath.Join(dir, "*.go"))
		if err != nil || len(files) == 0 {
			t.Fatalf("metric sources in %s: %v", dir, err)
		}
		for _, f := range files {
			if strings.HasSuffix(f, "_test.go") {
				continue
			}
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range lit.FindAllSubmatch(b, -1) {
				names[string(m[1])] = true
			}
		}
	}
	return names
}

func balanced(s string) bool {
	var stack []rune
	pairs := map[rune]rune{')': '(', ']': '[', '}': '{'}
	for _, c := range s {
		switch c {
		case '(', '[', '{':
			stack = append(stack, c)
		case ')', ']', '}':
			if len(stack) == 0 || stack[len(stack)-1] != pairs[c] {
				return false
			}
			stack = stack[:len(stack)-1]
		}
	}
	return len(stack) == 0
}
