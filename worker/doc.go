// Package worker is the cluster agent of one rank: it registers in etcd
// under a lease, waits for the coordinator's assignment (job, generation,
// rank), runs the generation's training with a train.Trainer and the NATS
// ring, takes part in the two-phase checkpoint commit, and reports
// progress. The training arithmetic itself lives in package train.
package worker
