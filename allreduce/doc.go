// Package allreduce sums float32 gradient vectors across data-parallel
// workers with a ring reduce-scatter and an all-gather (by default each
// owner publishing its range once to a subject every rank subscribes to;
// optionally around the ring), over NATS or in memory, and sums a few
// float64 scalars (loss, squared gradient norm) in a fixed rank order.
//
// Results are bit-identical from run to run for a given world size: every
// element is summed along a fixed chain of ranks whatever the timing (see
// docs/allreduce.md). Every collective has a deadline; a peer that goes
// silent makes it fail on every rank with a *PeerError naming that peer,
// and the Ring must then be rebuilt under a new generation.
package allreduce
