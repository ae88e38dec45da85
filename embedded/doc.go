// Package embedded starts a nats-server and an etcd member inside the
// current process. `modcoord local`, the chaos suite's infrastructure
// binary, the Kubernetes install test and the tests use it; production
// workers and coordinators connect to servers run elsewhere and never link
// it (the layering test keeps nats-server and etcd's server out of them).
package embedded
