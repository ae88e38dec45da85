// Package layers holds no code, only the test that keeps modcoord's import
// graph running one way:
//
//	cmd → {coordinator, worker, isoflop, local, bench} → train → {mod, shard, allreduce, checkpoint}
//
// Each package may import only the project packages its row in allowed
// lists, and the training and cluster parts may not link what belongs to
// tests and `modcoord local` (an embedded nats-server or etcd server), so
// that a worker binary carries no server and isoFLOP code carries no
// cluster.
package layers
