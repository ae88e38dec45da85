// Package chaos is the multi-host chaos suite: a modcoord cluster in Docker
// containers (three raft coordinators, etcd, NATS with authentication,
// three workers, a shared checkpoint volume) and faults injected into it
// while jobs train: a worker killed, the raft leader killed, the leader
// partitioned from the network, every container restarted.
//
// The suite is chaos_test.go, behind the build tag chaos so that
// `go test ./...` skips it:
//
//	bash .ci/chaos.sh
//	# or, with the image built (deploy/chaos/images.sh):
//	go test -tags chaos ./deploy/chaos/ -v -timeout 40m
//
// See README.md in this directory for what is checked and measured.
package chaos
