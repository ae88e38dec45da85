package corpus

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/modcoord/modcoord/tokenizer"
)

// Defaults for PrepareOptions.
const (
	// DefaultShardTokens is llm.c's shard size for FineWeb (10^8 tokens,
	// 200 MB per shard).
	DefaultShardTokens = 100_000_000
	// Without ValInputs, the last DefaultValFraction of the input bytes
	// validate, or SmallValFraction when the input is under
	// SmallCorpusBytes: a tiny corpus needs a larger share to get enough
	// validation windows, and 10% is what mod.NewDataset has always cut.
	DefaultValFraction = 0.005
	SmallValFraction   = 0.1
	SmallCorpusBytes   = 64 << 20
)

// chunkBytes is how much text is tokenised at a time.
const chunkBytes = 1 << 20

// PrepareOptions says what Prepare reads and writes.
type PrepareOptions struct {
	// Inputs are text files, directories of them (walked in lexical
	// order, regular files only) and token files: a name ending in .bin
	// is read as a token file (llm.c or nanoGPT, told apart by the magic)
	// and its tokens copied as they are, with no EOT added.
	Inputs []string
	// ValInputs, if any, make the validation stream and all of Inputs
	// trains. Otherwise the last ValFraction of the input bytes, in
	// stream order, validates.
	ValInputs   []string
	ValFraction float64 // 0: DefaultValFraction or SmallValFraction
	OutDir      string
	Tokenizer   tokenizer.Tokenizer
	ShardTokens int            // 0: DefaultShardTokens
	Progress    func(Progress) // may be nil
}

// Prepare tokenises the inputs into llm.c shards in OutDir,
// train_000000.bin... and val_000000.bin..., and writes manifest.json
// listing them, which OpenDir reads. Each text file is one document;
// with a tokenizer that has an EOT token, EOT separates consecutive
// documents of a stream. Text is read in chunks of about a megabyte, so
// memory does not grow with the corpus.
func Prepare(o PrepareOptions) (*Manifest, error) {
	if o.Tokenizer == nil {
		return nil, errors.New("prepare: no tokenizer given")
	}
	if o.ShardTokens == 0 {
		o.ShardTokens = DefaultShardTokens
	}
	if o.ShardTokens < 1 || o.ShardTokens > MaxShardTokens {
		return nil, fmt.Errorf("prepare: shard size %d tokens is outside [1, %d]", o.ShardTokens, MaxShardTokens)
	}
	if o.ValFraction < 0 || o.ValFraction >= 1 {
		return nil, fmt.Errorf("prepare: validation fraction %g is outside [0, 1)", o.ValFraction)
	}
	train, err := listInputs(o.Inputs)
	if err != nil {
		return nil, err
	}
	val, err := listInputs(o.ValInputs)
	if err != nil {
		return nil, err
	}
	if len(train) == 0 {
		return nil, errors.New("prepare: no input files (name text files, directories or .bin token files)")
	}
	if err := os.MkdirAll(o.OutDir, 0o755); err != nil {
		return nil, fmt.Errorf("prepare: %w", err)
	}
	p := &preparer{o: o, buf: make([]byte, chunkBytes), cutAt: -1}
	p.sinks[0] = &sink{dir: o.OutDir, kind: "train", max: o.ShardTokens}
	p.sinks[1] = &sink{dir: o.OutDir, kind: "val", max: o.ShardTokens}
	for _, in := range append(append([]input{}, train...), val...) {
		p.total += in.size
	}
	if len(val) == 0 {
		frac := o.ValFraction
		if frac == 0 {
			frac = DefaultValFraction
			if p.total < SmallCorpusBytes {
				frac = SmallValFraction
			}
		}
		p.cutAt = p.total - int64(float64(p.total)*frac)
	}
	err = p.run(train, val)
	for _, s := range p.sinks {
		if err == nil {
			err = s.finish()
		}
		s.abort()
	}
	if err != nil {
		return nil, err
	}
	m := &Manifest{
		Tokenizer: o.Tokenizer.Name(), VocabSize: o.Tokenizer.VocabSize(),
		Train: p.sinks[0].names, Val: p.sinks[1].names,
		TrainTokens: p.sinks[0].total, ValTokens: p.sinks[1].total,
	}
	if m.TrainTokens == 0 || m.ValTokens == 0 {
		return nil, fmt.Errorf("prepare: %d train and %d validation tokens; both streams need tokens (give more input, a larger validation fraction, or validation files)", m.TrainTokens, m.ValTokens)
	}
	if err := writeManifest(o.OutDir, m); err != nil {
		return nil, err
	}
	return m, nil
}

// preparer is the state of one Prepare call.
type preparer struct {
	o      PrepareOptions
	buf    []byte
	sinks  [2]*sink // train, val
	cur    int      // index of the sink being written
	total  int64    // input bytes in all
	done   int64    // input bytes consumed
	cutAt  int64    // input byte where validation starts, -1 if ValInputs
	docs   [2]int   // documents started per sink
	inPath string
}

func (p *preparer) run(train, val []input) error {
	for _, in := range train {
		if err := p.file(in); err != nil {
			return err
		}
	}
	p.cur = 1
	for _, in := range val {
		if err := p.file(in); err != nil {
			return err
		}
	}
	return nil
}

func (p *preparer) file(in input) error {
	p.inPath = in.path
	if in.tokens {
		return p.tokenFile(in)
	}
	if err := p.startDoc(); err != nil {
		return err
	}
	f, err := os.Open(in.path)
	if err != nil {
		return fmt.Errorf("prepare: %w", err)
	}
	defer f.Close()
	return p.text(f)
}

// startDoc writes EOT before every document but a stream's first.
func (p *preparer) startDoc() error {
	p.docs[p.cur]++
	eot, ok := p.o.Tokenizer.EOT()
	if !ok || p.docs[p.cur] == 1 {
		return nil
	}
	return p.sinks[p.cur].write([]int{eot})
}

// text tokenises one file chunk by chunk, cutting only where the cut
// cannot change the tokens (see cut.go).
func (p *preparer) text(f *os.File) error {
	anywhere := p.o.Tokenizer.Name() == tokenizer.ByteName
	buf, eof := p.buf[:0], false
	for !eof || len(buf) > 0 {
		if !eof {
			n, err := io.ReadFull(f, buf[len(buf):cap(buf)])
			buf = buf[:len(buf)+n]
			switch {
			case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
				eof = true
			case err != nil:
				return fmt.Errorf("prepare: read %s: %w", f.Name(), err)
			}
		}
		end := len(buf)
		if !eof {
			end = lastCut(buf, anywhere)
		}
		if p.cur == 0 && p.cutAt >= 0 && p.done+int64(end) > p.cutAt {
			end = firstCutFrom(buf[:end], int(max(p.cutAt-p.done, 0)), anywhere)
			if err := p.emit(buf[:end]); err != nil {
				return err
			}
			p.cur = 1 // validation starts here, mid-document: no EOT
			p.docs[1] = 1
		} else if err := p.emit(buf[:end]); err != nil {
			return err
		}
		buf = buf[:copy(buf, buf[end:])]
	}
	return nil
}

func (p *preparer) emit(chunk []byte) error {
	if len(chunk) > 0 {
		if err := p.sinks[p.cur].write(p.o.Tokenizer.Encode(chunk)); err != nil {
			return err
		}
	}
	p.advance(int64(len(chunk)))
	return nil
}

func (p *preparer) advance(n int64) {
	p.done += n
	if p.o.Progress != nil {
		p.o.Progress(Progress{Path: p.inPath, Done: p.done, Total: p.total, TrainTokens: p.sinks[0].total, ValTokens: p.sinks[1].total})
	}
}

// tokenFile copies a token file's tokens, checking them against the
// tokenizer's vocabulary. Two input bytes count as one token.
func (p *preparer) tokenFile(in input) error {
	sh, err := OpenShard(in.path, Auto)
	if err != nil {
		return fmt.Errorf("prepare: %w", err)
	}
	defer sh.Close()
	vocab := p.o.Tokenizer.VocabSize()
	p.advance(in.size - 2*int64(sh.Len())) // the header, if any
	const step = chunkBytes / 2
	raw := make([]int32, step)
	ids := make([]int, step)
	for off := 0; off < sh.Len(); {
		n := min(step, sh.Len()-off)
		if p.cur == 0 && p.cutAt >= 0 && p.done+2*int64(n) > p.cutAt {
			n = int(max(p.cutAt-p.done, 0) / 2)
			if n == 0 {
				p.cur, p.docs[1] = 1, 1
				n = min(step, sh.Len()-off)
			}
		}
		sh.read(off, raw[:n])
		for j, t := range raw[:n] {
			if int(t) >= vocab {
				return fmt.Errorf("prepare: token file %s: token %d at index %d is outside tokenizer %s's vocabulary of %d (prepare it with the tokenizer that made it)", in.path, t, off+j, p.o.Tokenizer.Name(), vocab)
			}
			ids[j] = int(t)
		}
		if err := p.sinks[p.cur].write(ids[:n]); err != nil {
			return err
		}
		off += n
		p.advance(2 * int64(n))
	}
	return nil
}
