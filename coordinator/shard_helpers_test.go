package coordinator

import (
	"strings"

	"github.com/modcoord/modcoord/checkpoint"
)

// testShard is a well-formed shard record of [lo, hi) for rank of world,
// as a worker reports it: a real file name, a size possible for the
// range, and checksums of the right form.
func testShard(rank, world, lo, hi int) checkpoint.ShardInfo {
	return checkpoint.ShardInfo{
		Rank: rank, Lo: lo, Hi: hi, File: checkpoint.ShardFileName(rank, world),
		Bytes: 8 + 100 + 12*int64(hi-lo), HeaderSHA256: strings.Repeat("cd", 32), DataSHA256: strings.Repeat("ab", 32),
	}
}

// testShardReport reports testShard for step with the config every rank
// of a test job sends.
func testShardReport(gen uint64, step int64, rank, world, lo, hi int) ShardReport {
	return ShardReport{Generation: gen, Step: step, Shard: testShard(rank, world, lo, hi), Config: []byte(`{"test":true}`)}
}
