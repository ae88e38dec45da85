// Package coordinator runs modcoord's control plane: it accepts training
// jobs, turns each job's FLOP budget into an exact step count, keeps the
// durable job state (status, membership generation, budget ledger,
// committed checkpoints) in a hashicorp/raft replicated state machine, and
// tells workers what to do.
//
// The split of responsibilities follows one rule: etcd holds ephemeral
// liveness and discovery, raft holds durable job truth.
//
//   - Workers register under a lease at /modcoord/<cluster>/workers/<id>
//     (Register). The raft leader watches that prefix, and when the live set
//     changes it commits a new generation through raft and publishes the
//     job's Assignment at /modcoord/<cluster>/assignments/<job> for workers
//     to watch (WatchAssignments).
//   - Every coordinator serves the same HTTP+JSON API (api.go); followers
//     forward to the leader, so clients may talk to any of them. Client is
//     the Go client that the CLI and the workers use.
//   - A submission, progress report or checkpoint commit is acknowledged
//     only after its raft log entry has been applied.
//   - Coordinators speak raft to each other over mutual TLS
//     (raft_tls.go): only certificates of the cluster CA with the
//     coordinator role (package pki) may append to the log.
//
// One job runs at a time; later jobs queue in submission order.
package coordinator
