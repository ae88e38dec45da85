// Package charttest holds the tests of the Helm chart in helm/modcoord.
//
// The tests render the chart with the `helm` binary (`helm template`) for the
// default values and for every helm/modcoord/ci/*-values.yaml, decode every
// manifest strictly into the Kubernetes API types (an unknown or misspelt
// field fails), and check the chart's promises: probes, resources and a
// locked-down securityContext on every container, standard labels on every
// object, selectors that match their pods, no secret value outside a Secret,
// mounted secret files where the flags point, a PodDisruptionBudget for the
// coordinators, the TLS material (tls_test.go: the generated certificates
// parsed with crypto/x509 and pki, each pod's own role's files mounted in
// /etc/modcoord/tls, no CA key mounted anywhere), and values.schema.json
// rejecting typos. `lookup` (which keeps generated secrets across upgrades)
// returns nothing under `helm template`; .ci/kube-install-test.sh checks it
// against a real API server.
//
// helm is looked up as $HELM, then on $PATH, then in $(go env GOPATH)/bin.
// Without it the tests skip; .ci/chart.sh installs it
// (go install helm.sh/helm/v3/cmd/helm@v3.22.0) so CI runs them.
package charttest
