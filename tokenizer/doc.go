// Package tokenizer turns text into token ids and back. Its one job is to
// name the vocabularies modcoord trains on; it knows nothing of files,
// shards or batches (package corpus does).
//
// Two tokenizers exist, chosen by name with New:
//
//   - "byte": vocabulary 256, token i is byte i. It is exactly the
//     byte-level tokenisation mod.Dataset uses, so any file is a valid
//     corpus and nothing is lost in a round trip. It has no end-of-text
//     token.
//   - "gpt2": GPT-2's byte-pair encoding (tiktoken's r50k_base, also called
//     "gpt2"), vocabulary 50257, end-of-text token 50256. These are the ids
//     of nanoGPT's and llm.c's GPT-2 shards, so their .bin files and ours
//     are interchangeable.
//
// The gpt2 encoding comes from github.com/tiktoken-go/tokenizer. It was
// chosen because it is pure Go (no cgo, no Rust, no Python), embeds its
// vocabularies as generated Go source (codec/r50k_base_vocab.go) so nothing
// is downloaded or read from disk at run time, matches OpenAI's tiktoken
// ids, and is maintained (v0.10.0 at the time of writing; it tracks the
// current Go release). The alternative, github.com/pkoukk/tiktoken-go,
// fetches the BPE ranks over HTTP unless a separate offline loader is
// plugged in, which a training cluster without internet access cannot rely
// on.
//
// Encode never interprets special tokens in the text: "<|endoftext|>" in a
// document is encoded as ordinary text (tiktoken's encode_ordinary), so a
// document cannot forge a document boundary; callers insert EOT themselves.
// gpt2's pre-tokeniser works on Unicode text: invalid UTF-8 in the input is
// encoded as U+FFFD, so only valid UTF-8 round-trips exactly. Decode turns
// an id outside the vocabulary into U+FFFD rather than failing, because it
// is used to print model samples, where a readable string beats an error.
package tokenizer
