// Package peerstate keeps a rank's training state in memory so that the
// next generation can resume from its peers instead of from disk.
//
// Every rank of a generation already holds all the parameters (after the
// all-gather) but AdamW moments only for its own range. A Store keeps,
// at the last two completed steps, the parameters and moments of the
// rank's own range and a replica of its left ring neighbour's. The
// replica is not shipped: after each step the owner sends its reduced
// gradient chunk (4 bytes per element of its range) to its right
// neighbour (Replicator), which replays the same deterministic AdamW
// update on the replica and checks that the parameters it gets are bit
// for bit those of the all-gather. Shipping the moments instead would
// cost 8 bytes per element, and the parameters and moments 12.
//
// Per rank, with P parameters over N ranks: 4P/N bytes sent and received
// per step; 48P/N bytes of memory (own and replica ranges, parameters and
// both moments, two steps each) plus 4P/N for the incoming chunk; one
// extra AdamW pass over P/N elements per step.
//
// Losing one rank loses nothing: its range lives on in its right
// neighbour. A survivor may have completed one step more than another (the
// loss cut the all-gather short for some), which is why two steps are
// kept: every range is then held at the older one. A new generation (any
// number of ranks) fetches, for each range of the old layout, the
// parameters from the worker the coordinator named, and the moments of
// its own new range and of its new left neighbour's (Fetcher, Serve),
// over the same bus and its mutual TLS. Two neighbours lost at once lose
// a range: the coordinator then falls back to the last checkpoint.
package peerstate
