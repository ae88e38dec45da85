// Package corpus holds a training corpus as token shards on disk and
// draws training and validation batches from them. Its one job is to turn
// token files into the windows mod trains on; tokenising text is package
// tokenizer's job, and Prepare joins the two.
//
// # Shard formats
//
// llm.c (what Prepare writes): a header of 256 little-endian int32 —
// [0] = 20240520 (Magic), [1] = 1 (Version: uint16 tokens), [2] = the
// token count, the rest zero — followed by count little-endian uint16
// tokens. A reader refuses a wrong magic, another version, a negative
// count, a file shorter than the header, a count larger than the file
// holds (truncated) and a file longer than the count says (trailing
// data), each time naming the file and the fix. Counts are int32, so a
// shard holds at most 2³¹−1 tokens, and no file over 1 TiB is mapped.
//
// nanoGPT: little-endian uint16 tokens and nothing else. A file of odd
// length (cut mid-token) or no bytes is refused.
//
// Format rule: Format Auto (the default) reads a file whose first four
// bytes are the llm.c magic as llm.c and anything else as nanoGPT; both
// use the .bin extension in the wild, so the extension cannot tell them
// apart. Name LLMC or NanoGPT to force one; with LLMC a damaged magic is
// an error instead of being read as tokens. Prepare treats an input whose
// name ends in .bin as a token file (Auto) and anything else as text.
//
// Shards are mapped read-only (mmap) and read in place, so a corpus may be
// far larger than memory: only the pages a batch touches are read, and the
// kernel may drop them again. Several shards form one stream, their
// virtual concatenation in the order given; windows cross shard
// boundaries. Training and validation are separate streams with their own
// shards.
//
// # The batch rule
//
// Batch sample i of step s starts at
//
//	off = mix64(seed ^ mix64(uint64(s) ^ mix64(uint64(i) + 0x5eed))) % span
//	span = trainLen − seqLen − 1
//
// in the training stream (mix64 is splitmix64's finaliser, as in package
// mod); its tokens are stream[off : off+seqLen] and its targets
// stream[off+1 : off+seqLen+1]. It is a pure function of (seed, step, i)
// and the stream, so the global batch does not depend on how many
// workers split it, a resume reads bit-identical batches, and a byte-level
// corpus draws exactly the windows mod.Dataset.Batch draws. Validation
// window w is stream[w·seqLen : w·seqLen+seqLen+1] of the validation
// stream.
//
// Corpus.Release drops the pages read so far from the process's resident
// set; they stay in the page cache. It is optional (mapped file pages are
// reclaimable) and keeps RSS near the working set of recent batches.
//
// # Prepare
//
// Prepare tokenises text files and directories (walked in lexical order,
// regular files only, streamed a megabyte at a time) into train_NNNNNN.bin
// and val_NNNNNN.bin llm.c shards of at most ShardTokens tokens (default
// 10⁸) plus manifest.json. Each text file is a document; EOT, when the
// tokenizer has one, separates consecutive documents. Inputs named *.bin
// are token files, copied as they are after a vocabulary check. The
// validation stream is the named ValInputs or else the last ValFraction of
// the input bytes: 0.5% by default, 10% (mod.NewDataset's split) when the
// input is under 64 MiB. Chunks and the split are cut only where the cut
// cannot change gpt2's tokens (see cut.go); with the byte tokenizer a
// single file prepared with the defaults is exactly mod.NewDataset's
// split.
//
// # Vocabulary
//
// Shards carry no tokenizer name. CheckVocab scans each shard once for its
// largest token and refuses a model vocabulary that does not cover it
// (a scan rather than a sidecar file, so it cannot go stale). A directory
// made by Prepare has a manifest.json that names the tokenizer and lists
// the shards; OpenDir uses it, or falls back to llm.c's *train*.bin /
// *val*.bin naming.
package corpus
