// Package local runs a whole modcoord cluster inside one process: an
// embedded nats-server (with authentication), an embedded etcd, three raft
// coordinators and N workers, all on loopback. It is `modcoord local` and
// the harness of the in-process cluster tests.
package local
