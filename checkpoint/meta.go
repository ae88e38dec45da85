package checkpoint

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
)

// Format identification stored in every shard's __metadata__.
const (
	FormatName    = "modcoord.checkpoint"
	FormatVersion = "1"
)

// Tensor names inside a shard file, in data order.
const (
	TensorParams = "params"
	TensorAdamM  = "adam_m"
	TensorAdamV  = "adam_v"
)

// tensorNames lists the tensors in the order their data is stored.
func tensorNames() [3]string { return [3]string{TensorParams, TensorAdamM, TensorAdamV} }

// maxElems bounds M so that byte sizes (12 bytes per element per shard)
// never overflow int64.
const maxElems = 1 << 58

// Keys of a shard's __metadata__ (all values are strings, as safetensors
// requires).
const (
	metaFormat     = "format"
	metaVersion    = "format_version"
	metaJob        = "job"
	metaStep       = "step"
	metaGeneration = "generation"
	metaRank       = "rank"
	metaWorld      = "world"
	metaLo         = "lo"
	metaHi         = "hi"
	metaTotal      = "total"
	metaDataSHA    = "data_sha256"
	metaConfig     = "config"
)

// ShardMeta says what a shard is: which checkpoint, which worker, which
// range of the flat vector.
type ShardMeta struct {
	Job        string
	Step       int64
	Generation uint64
	Rank       int
	World      int
	Lo, Hi     int // the range [Lo,Hi) of the flat vector this shard holds
	Total      int // M, the length of the flat vector
	// Config is opaque JSON from the caller (model config, tensor layout),
	// stored compacted. Empty means none.
	Config json.RawMessage
}

// Len is the number of elements of each tensor in the shard.
func (m ShardMeta) Len() int { return m.Hi - m.Lo }

// Validate checks that m describes a possible shard.
func (m ShardMeta) Validate() error {
	if err := checkJobName(m.Job); err != nil {
		return err
	}
	switch {
	case m.Step < 0:
		return fmt.Errorf("step %d is negative", m.Step)
	case m.World < 1:
		return fmt.Errorf("world size %d must be at least 1", m.World)
	case m.Rank < 0 || m.Rank >= m.World:
		return fmt.Errorf("rank %d is outside [0,%d)", m.Rank, m.World)
	case m.Total < 1 || int64(m.Total) > maxElems:
		return fmt.Errorf("total %d must be in [1,%d]", m.Total, maxElems)
	case m.Lo < 0 || m.Lo > m.Hi || m.Hi > m.Total:
		return fmt.Errorf("range [%d,%d) is not inside [0,%d)", m.Lo, m.Hi, m.Total)
	case len(m.Config) > 0 && !json.Valid(m.Config):
		return fmt.Errorf("config is not valid JSON")
	}
	return nil
}

// metadata renders m as safetensors __metadata__.
func (m ShardMeta) metadata(dataSHA256 string) (map[string]string, error) {
	md := map[string]string{
		metaFormat:     FormatName,
		metaVersion:    FormatVersion,
		metaJob:        m.Job,
		metaStep:       strconv.FormatInt(m.Step, 10),
		metaGeneration: strconv.FormatUint(m.Generation, 10),
		metaRank:       strconv.Itoa(m.Rank),
		metaWorld:      strconv.Itoa(m.World),
		metaLo:         strconv.Itoa(m.Lo),
		metaHi:         strconv.Itoa(m.Hi),
		metaTotal:      strconv.Itoa(m.Total),
		metaDataSHA:    dataSHA256,
	}
	if len(m.Config) > 0 {
		c, err := compactJSON(m.Config)
		if err != nil {
			return nil, fmt.Errorf("config: %w", err)
		}
		md[metaConfig] = string(c)
	}
	return md, nil
}

// parseMetadata is the inverse of metadata; errors name path.
func parseMetadata(path string, md map[string]string) (meta ShardMeta, dataSHA256 string, err error) {
	bad := func(format string, args ...any) error { return corrupt(path, fixNotShard, format, args...) }
	get := func(key string) (string, error) {
		v, ok := md[key]
		if !ok {
			return "", bad("__metadata__ lacks %q", key)
		}
		return v, nil
	}
	num := func(key string) (int64, error) {
		s, err := get(key)
		if err != nil {
			return 0, err
		}
		v, perr := strconv.ParseInt(s, 10, 64)
		if perr != nil || strconv.FormatInt(v, 10) != s {
			return 0, bad("__metadata__ %q is %q, not a decimal integer", key, s)
		}
		return v, nil
	}
	format, err := get(metaFormat)
	if err != nil {
		return meta, "", err
	}
	if format != FormatName {
		return meta, "", bad("__metadata__ format is %q, want %q", format, FormatName)
	}
	version, err := get(metaVersion)
	if err != nil {
		return meta, "", err
	}
	if version != FormatVersion {
		return meta, "", corrupt(path, fixUpgrade, "format version is %q, this reader understands %q", version, FormatVersion)
	}
	if meta.Job, err = get(metaJob); err != nil {
		return meta, "", err
	}
	var nums [7]int64
	for i, key := range [...]string{metaStep, metaGeneration, metaRank, metaWorld, metaLo, metaHi, metaTotal} {
		if nums[i], err = num(key); err != nil {
			return meta, "", err
		}
	}
	if nums[1] < 0 {
		return meta, "", bad("__metadata__ generation %d is negative", nums[1])
	}
	meta.Step, meta.Generation = nums[0], uint64(nums[1])
	meta.Rank, meta.World, meta.Lo, meta.Hi, meta.Total = int(nums[2]), int(nums[3]), int(nums[4]), int(nums[5]), int(nums[6])
	if c, ok := md[metaConfig]; ok {
		meta.Config = json.RawMessage(c)
	}
	if verr := meta.Validate(); verr != nil {
		return meta, "", bad("__metadata__ is inconsistent: %v", verr)
	}
	if dataSHA256, err = get(metaDataSHA); err != nil {
		return meta, "", err
	}
	if !isSHA256Hex(dataSHA256) {
		return meta, "", bad("__metadata__ data_sha256 %q is not 64 lowercase hex digits", dataSHA256)
	}
	return meta, dataSHA256, nil
}

// mismatch describes how got differs from want, or returns "" if they
// describe the same shard.
func (got ShardMeta) mismatch(want ShardMeta) string {
	var diffs []string
	add := func(field string, g, w any) {
		diffs = append(diffs, fmt.Sprintf("%s=%v (manifest says %v)", field, g, w))
	}
	if got.Job != want.Job {
		add("job", got.Job, want.Job)
	}
	if got.Step != want.Step {
		add("step", got.Step, want.Step)
	}
	if got.Generation != want.Generation {
		add("generation", got.Generation, want.Generation)
	}
	if got.Rank != want.Rank {
		add("rank", got.Rank, want.Rank)
	}
	if got.World != want.World {
		add("world", got.World, want.World)
	}
	if got.Lo != want.Lo || got.Hi != want.Hi {
		add("range", fmt.Sprintf("[%d,%d)", got.Lo, got.Hi), fmt.Sprintf("[%d,%d)", want.Lo, want.Hi))
	}
	if got.Total != want.Total {
		add("total", got.Total, want.Total)
	}
	if !sameJSON(got.Config, want.Config) {
		diffs = append(diffs, "config differs from the manifest's")
	}
	if len(diffs) == 0 {
		return ""
	}
	return fmt.Sprint("metadata does not match the manifest: ", diffs)
}

func compactJSON(b []byte) ([]byte, error) {
	var buf bytes.Buffer
	if err := json.Compact(&buf, b); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// sameJSON compares two JSON documents ignoring insignificant whitespace;
// manifests are stored indented, shard metadata compacted.
func sameJSON(a, b []byte) bool {
	if len(a) == 0 || len(b) == 0 {
		return len(a) == len(b)
	}
	ca, errA := compactJSON(a)
	cb, errB := compactJSON(b)
	return errA == nil && errB == nil && bytes.Equal(ca, cb)
}

func isSHA256Hex(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}
