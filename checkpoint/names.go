package checkpoint

import (
	"fmt"
	"strconv"
	"strings"
)

// Names of things on disk. They are part of the format: changing them
// strands existing checkpoints.
const (
	// ManifestFile is the committed manifest inside a step directory. Its
	// presence means the raft leader committed the step.
	ManifestFile = "MANIFEST.json"
	shardSuffix  = ".safetensors"
	// tempPrefix marks files being written; a crash can leave them behind
	// and they are never mistaken for shards or manifests.
	tempPrefix = ".tmp-"
	maxJobName = 128
)

// ShardFileName is the file name of rank's shard in a world of n workers,
// e.g. "rank-00003-of-00008.safetensors". Zero padding makes ls sort ranks.
func ShardFileName(rank, world int) string {
	return fmt.Sprintf("rank-%05d-of-%05d%s", rank, world, shardSuffix)
}

// stepDirName names the directory of one checkpoint attempt. The generation
// is part of the name so that a step re-checkpointed after a rollback (same
// step, newer generation) never overwrites the files of the earlier commit.
func stepDirName(step int64, generation uint64) string {
	return fmt.Sprintf("step-%010d-gen-%d", step, generation)
}

// parseStepDirName is the inverse of stepDirName; it accepts only the exact
// form stepDirName produces so that stray directories are ignored.
func parseStepDirName(name string) (step int64, generation uint64, ok bool) {
	rest, found := strings.CutPrefix(name, "step-")
	if !found {
		return 0, 0, false
	}
	stepText, genText, found := strings.Cut(rest, "-gen-")
	if !found {
		return 0, 0, false
	}
	step, err := strconv.ParseInt(stepText, 10, 64)
	if err != nil || step < 0 {
		return 0, 0, false
	}
	generation, err = strconv.ParseUint(genText, 10, 64)
	if err != nil || stepDirName(step, generation) != name {
		return 0, 0, false
	}
	return step, generation, true
}

// checkJobName rejects job names that are unsafe as a path component.
func checkJobName(job string) error {
	if job == "" || len(job) > maxJobName {
		return fmt.Errorf("job name %q must be 1 to %d characters", job, maxJobName)
	}
	if job[0] == '.' {
		return fmt.Errorf("job name %q must not start with '.'", job)
	}
	for _, c := range job {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.'
		if !ok {
			return fmt.Errorf("job name %q may only use letters, digits, '-', '_' and '.'", job)
		}
	}
	return nil
}

// checkShardFileName rejects manifest file names that could escape the step
// directory or are not shards.
func checkShardFileName(name string) error {
	if name == "" || strings.ContainsAny(name, `/\`) || name[0] == '.' || !strings.HasSuffix(name, shardSuffix) {
		return fmt.Errorf("shard file name %q must be a plain file name ending in %s", name, shardSuffix)
	}
	return nil
}
