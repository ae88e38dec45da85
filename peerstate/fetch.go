package peerstate

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/modcoord/modcoord/allreduce"
)

// Serve answers fetches of what s holds on its ServeSubject until stop is
// called. A request must name a range and step s holds, a span that fits
// one reply, and a reply subject of the same job; anything else gets an
// error reply (or, if it cannot be answered, is dropped).
func Serve(tr allreduce.Transport, s *Store, log *slog.Logger) (stop func() error, err error) {
	cfg := s.Config()
	prefix := "modcoord." + cfg.Job + "."
	maxFloats := chunkFloats(tr.MaxMessage(), replyHeader)
	var buf []float32 // one request at a time: Listen runs handle serially
	handle := func(msg []byte) {
		req, ok := decodeRequest(msg)
		if !ok || !strings.HasPrefix(req.reply, prefix) {
			log.Warn("peer state: dropping a malformed fetch request", "bytes", len(msg))
			return
		}
		// message is a reply of count elements in bodyLen bytes, the body
		// left for the caller to fill.
		message := func(status byte, count, bodyLen int) []byte {
			b := make([]byte, replyHeader+bodyLen)
			le := binary.LittleEndian
			le.PutUint32(b[0:], magicReply)
			le.PutUint64(b[4:], req.id)
			b[12] = status
			le.PutUint32(b[13:], uint32(count))
			return b
		}
		send := func(b []byte) {
			if err := tr.Send(req.reply, b); err != nil {
				log.Warn("peer state: reply to a fetch", "err", err)
			}
		}
		refuse := func(text string) {
			b := message(statusError, len(text), len(text))
			copy(b[replyHeader:], text)
			send(b)
		}
		span := req.hi - req.lo
		if req.hi < req.lo || span > uint64(maxFloats) || req.hi > uint64(cfg.Layout.Total) || req.rank >= uint32(cfg.Layout.World) {
			refuse(fmt.Sprintf("span [%d,%d) of range %d: at most %d elements of a vector of %d", req.lo, req.hi, req.rank, maxFloats, cfg.Layout.Total))
			return
		}
		if cap(buf) < int(span) {
			buf = make([]float32, span)
		}
		dst := buf[:span]
		if err := s.Read(int(req.rank), int64(req.step), req.part, int(req.lo), int(req.hi), dst); err != nil {
			refuse(err.Error())
			return
		}
		// The floats go straight into the message: no second copy of up
		// to a whole bus message per request.
		b := message(statusOK, len(dst), 4*len(dst))
		putFloats(b[replyHeader:], dst)
		send(b)
	}
	stop, err = tr.Listen(ServeSubject(cfg.Job, cfg.Generation, cfg.Rank), handle)
	if err != nil {
		return nil, fmt.Errorf("serve peer state of rank %d: %w", cfg.Rank, err)
	}
	return stop, nil
}

// Fetcher asks other workers' stores for their ranges.
type Fetcher struct {
	tr        allreduce.Transport
	job       string
	reply     string
	stop      func() error
	maxFloats int
	timeout   time.Duration

	mu      sync.Mutex
	nextID  uint64
	waiting map[uint64]*fetch
}

type fetch struct {
	dst  []float32
	done chan error // buffered 1
}

// Window is how many fetch requests one Fetch keeps in flight.
const Window = 8

// NewFetcher listens for answers as rank of generation of job. A request
// unanswered after timeout is sent again once, then fails.
func NewFetcher(tr allreduce.Transport, job string, generation uint64, rank int, timeout time.Duration) (*Fetcher, error) {
	f := &Fetcher{tr: tr, job: job, reply: ReplySubject(job, generation, rank),
		maxFloats: chunkFloats(tr.MaxMessage(), replyHeader), timeout: timeout, waiting: map[uint64]*fetch{}}
	stop, err := tr.Listen(f.reply, f.handle)
	if err != nil {
		return nil, fmt.Errorf("peer state fetcher: %w", err)
	}
	f.stop = stop
	return f, nil
}

// Close stops listening.
func (f *Fetcher) Close() error { return f.stop() }

// handle delivers a reply to its request, checking every size first; a
// reply nobody waits for (late, duplicate, forged) is dropped.
func (f *Fetcher) handle(msg []byte) {
	le := binary.LittleEndian
	if len(msg) < replyHeader || le.Uint32(msg) != magicReply {
		return
	}
	id, status, n := le.Uint64(msg[4:]), msg[12], int(le.Uint32(msg[13:]))
	// The copy into dst happens under the lock: once a waiter that gave
	// up (timeout, cancel) has removed its entry, nothing writes into its
	// dst any more, which the caller may by then be using or retrying into.
	f.mu.Lock()
	w := f.waiting[id]
	delete(f.waiting, id)
	if w == nil {
		f.mu.Unlock()
		return
	}
	body := msg[replyHeader:]
	var err error
	switch {
	case status == statusOK && n == len(w.dst) && len(body) == 4*n:
		getFloats(w.dst, body)
	case status == statusError && len(body) == n:
		err = fmt.Errorf("the holder refused: %s", truncate(string(body), 300))
	default:
		err = fmt.Errorf("malformed reply: status %d, %d elements in %d bytes for a request of %d", status, n, len(body), len(w.dst))
	}
	f.mu.Unlock()
	w.done <- err // buffered: never blocks
}

// Source is where a range is fetched from: the serving store's
// generation and rank, and the range of that generation's layout.
type Source struct {
	Generation uint64
	Rank       int // the holder's rank in Generation
	Range      int // the range (its owner's rank in Generation)
	Step       int64
}

// Fetch fills dst with part of elements [lo, hi) of src's range at its
// step, in requests that fit the bus, Window of them in flight.
func (f *Fetcher) Fetch(ctx context.Context, src Source, part Part, lo, hi int, dst []float32) error {
	if len(dst) != hi-lo || lo > hi {
		return fmt.Errorf("fetch [%d,%d) into %d elements", lo, hi, len(dst))
	}
	subject := ServeSubject(f.job, src.Generation, src.Rank)
	type span struct{ lo, hi int }
	var spans []span
	for a := lo; a < hi; a += f.maxFloats {
		spans = append(spans, span{a, min(hi, a+f.maxFloats)})
	}
	errs := make(chan error, len(spans))
	sem := make(chan struct{}, Window)
	var wg sync.WaitGroup
	for _, sp := range spans {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			wg.Wait()
			return ctx.Err()
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			r := request{step: uint64(src.Step), rank: uint32(src.Range), part: part, lo: uint64(sp.lo), hi: uint64(sp.hi), reply: f.reply}
			if err := f.one(ctx, subject, r, dst[sp.lo-lo:sp.hi-lo]); err != nil {
				errs <- fmt.Errorf("fetch %s [%d,%d) of range %d at step %d from rank %d of generation %d: %w",
					part, sp.lo, sp.hi, src.Range, src.Step, src.Rank, src.Generation, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	return errors.Join(collect(errs)...)
}

func collect(errs <-chan error) []error {
	var out []error
	for err := range errs {
		out = append(out, err)
	}
	return out
}

// one sends a request and waits for its reply, sending it again once if
// none comes within the timeout.
func (f *Fetcher) one(ctx context.Context, subject string, r request, dst []float32) error {
	var last error
	for try := 0; try < 2; try++ {
		w := &fetch{dst: dst, done: make(chan error, 1)}
		f.mu.Lock()
		f.nextID++
		r.id = f.nextID
		f.waiting[r.id] = w
		f.mu.Unlock()
		forget := func() {
			f.mu.Lock()
			delete(f.waiting, r.id)
			f.mu.Unlock()
		}
		if err := f.tr.Send(subject, r.encode()); err != nil {
			forget()
			return err
		}
		t := time.NewTimer(f.timeout)
		select {
		case err := <-w.done:
			t.Stop()
			return err
		case <-ctx.Done():
			t.Stop()
			forget()
			return ctx.Err()
		case <-t.C:
			forget()
			last = fmt.Errorf("no reply from %s after %s", subject, f.timeout)
		}
	}
	return last
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
