package allreduce

import (
	"bytes"
	"fmt"
	"math"
	"net"
	"strconv"
	"strings"
	"sync"
)

// tapSet is the subjects whose messages a tapConn takes out of the
// server's byte stream, each with the handler that gets the payload. It
// outlives connections: nats.go redials through the same dialer.
type tapSet struct {
	mu       sync.RWMutex
	handlers map[string]func([]byte)
}

// add taps subject. A subject is tapped once per connection: the server
// sends one MSG frame per subscription, and a tap cannot tell them apart.
func (s *tapSet) add(subject string, h func([]byte)) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, dup := s.handlers[subject]; dup {
		return fmt.Errorf("already listening on %s through this connection", subject)
	}
	if s.handlers == nil {
		s.handlers = make(map[string]func([]byte))
	}
	s.handlers[subject] = h
	return nil
}

func (s *tapSet) remove(subject string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.handlers, subject)
}

func (s *tapSet) lookup(subject []byte) func([]byte) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.handlers[string(subject)]
}

// tapConn is the connection nats.go reads from. Server-to-client frames
// pass through unchanged, except MSG frames for a tapped subject: those
// are cut out and their payload goes straight to the subject's handler,
// on nats.go's reading goroutine.
//
// Why: nats.go reads at most 32 KiB per system call, copies every
// payload into a zeroed allocation and hands it over through one more
// goroutine. For the ring's traffic that was most of the client's CPU
// (docs/allreduce.md). The tap reads up to tapReadSize per call and makes
// one copy. nats.go still owns the connection: it writes every byte,
// handles INFO, PING, errors and reconnects, and subscribes the tapped
// subjects itself, so it sees a valid protocol stream, just without the
// tapped messages.
//
// Anything the tap does not recognise (a TLS record, a malformed frame)
// switches it off for the rest of the connection: from then on every
// byte passes through and nats.go parses, or rejects, it as before.
type tapConn struct {
	net.Conn
	taps *tapSet
	pool *msgPool

	buf  []byte
	r, w int // buf[r:w] is read from the socket but not yet handled

	pass        int  // bytes from buf[r] on (some maybe still unread) that belong to nats.go
	inLine      bool // passing a control line whose end has not been seen
	transparent bool
	tapped      int // bytes of the stream taken out as tapped frames
}

const (
	tapReadSize = 256 << 10
	// tapMaxLine bounds a MSG control line (subject, sid, reply, size).
	// Longer lines of other kinds (INFO) pass through in pieces.
	tapMaxLine = 4 << 10
	// tapMaxPayload bounds what the tap buffers for one message; the
	// server's max_payload is far below it.
	tapMaxPayload = 64 << 20
)

func newTapConn(c net.Conn, taps *tapSet, pool *msgPool) *tapConn {
	return &tapConn{Conn: c, taps: taps, pool: pool, buf: make([]byte, tapReadSize)}
}

// Read gives nats.go the next bytes that are not a tapped message.
func (c *tapConn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for {
		if c.transparent && c.r == c.w {
			return c.Conn.Read(p)
		}
		if c.pass > 0 {
			if c.r == c.w {
				if err := c.fill(1); err != nil {
					return 0, err
				}
			}
			n := copy(p, c.buf[c.r:c.r+min(c.w-c.r, c.pass)])
			c.r += n
			c.pass -= n
			return n, nil
		}
		if c.transparent {
			c.pass = math.MaxInt
			continue
		}
		if err := c.frame(); err != nil {
			return 0, err
		}
	}
}

// fill reads from the socket until at least need bytes are buffered,
// moving the unhandled bytes to the front first when that makes room.
func (c *tapConn) fill(need int) error {
	if c.r == c.w {
		c.r, c.w = 0, 0
	}
	if need > len(c.buf) {
		grown := make([]byte, need+tapReadSize)
		c.w = copy(grown, c.buf[c.r:c.w])
		c.r, c.buf = 0, grown
	}
	if c.r+need > len(c.buf) {
		c.w = copy(c.buf, c.buf[c.r:c.w])
		c.r = 0
	}
	for c.w-c.r < need {
		n, err := c.Conn.Read(c.buf[c.w:])
		c.w += n
		if err != nil && c.w-c.r < need {
			return err
		}
	}
	return nil
}

var (
	opMSG  = []byte("MSG ")
	opHMSG = []byte("HMSG ")
	crlf   = []byte("\r\n")
)

// frame handles buffered input at a frame boundary: it delivers a tapped
// message, or sets pass to the length of a frame for nats.go, or reads
// more. It returns only socket errors.
func (c *tapConn) frame() error {
	if c.r == c.w {
		return c.fill(1)
	}
	data := c.buf[c.r:c.w]
	if c.inLine {
		if i := bytes.Index(data, crlf); i >= 0 {
			c.pass, c.inLine = i+2, false
		} else {
			// Keep a trailing \r: it may start the line's \r\n.
			c.pass = max(len(data)-1, 0)
			if c.pass == 0 {
				return c.fill(2)
			}
		}
		return nil
	}
	if !knownOp(data) {
		c.transparent = true
		return nil
	}
	end := bytes.Index(data, crlf)
	if end < 0 {
		if !bytes.HasPrefix(data, opMSG) && !bytes.HasPrefix(data, opHMSG) && len(data) >= len(opHMSG) {
			// INFO, -ERR and the like carry no payload: pass what
			// there is, the rest follows.
			c.inLine = true
			return nil
		}
		if len(data) >= tapMaxLine {
			c.transparent = true
			return nil
		}
		return c.fill(len(data) + 1)
	}
	line := data[:end]
	switch {
	case bytes.HasPrefix(line, opMSG):
		subject, size, ok := parseMsgLine(line[len(opMSG):])
		if !ok {
			c.transparent = true
			return nil
		}
		frameLen := end + 2 + size + 2
		handle := c.taps.lookup(subject)
		if handle == nil {
			c.pass = frameLen
			return nil
		}
		if len(data) < frameLen {
			return c.fill(frameLen)
		}
		if !bytes.Equal(data[end+2+size:frameLen], crlf) {
			c.transparent = true
			return nil
		}
		payload := c.pool.copyOf(data[end+2 : end+2+size])
		c.r += frameLen
		c.tapped += frameLen
		handle(payload)
		return nil
	case bytes.HasPrefix(line, opHMSG):
		total, ok := parseHmsgLine(line[len(opHMSG):])
		if !ok {
			c.transparent = true
			return nil
		}
		c.pass = end + 2 + total + 2
		return nil
	default:
		c.pass = end + 2
		return nil
	}
}

// knownOp reports whether data can start a server-to-client operation
// (INFO, MSG, HMSG, PING, PONG, +OK, -ERR). A TLS record cannot.
func knownOp(data []byte) bool {
	switch data[0] {
	case 'I', 'M', 'H', 'P', '+', '-':
		return true
	}
	return false
}

// parseMsgLine splits "<subject> <sid> [reply] <size>".
func parseMsgLine(args []byte) (subject []byte, size int, ok bool) {
	f := bytes.Fields(args)
	if len(f) != 3 && len(f) != 4 {
		return nil, 0, false
	}
	n, err := strconv.Atoi(string(f[len(f)-1]))
	if err != nil || n < 0 || n > tapMaxPayload {
		return nil, 0, false
	}
	return f[0], n, true
}

// parseHmsgLine reads the total size of "<subject> <sid> [reply] <hdr> <total>".
func parseHmsgLine(args []byte) (total int, ok bool) {
	f := bytes.Fields(args)
	if len(f) != 4 && len(f) != 5 {
		return 0, false
	}
	n, err := strconv.Atoi(string(f[len(f)-1]))
	if err != nil || n < 0 || n > tapMaxPayload {
		return 0, false
	}
	return n, true
}

// tapDialer dials plain TCP connections wrapped in a tapConn.
type tapDialer struct {
	net.Dialer
	taps *tapSet
	pool *msgPool
}

func (d *tapDialer) Dial(network, address string) (net.Conn, error) {
	c, err := d.Dialer.Dial(network, address)
	if err != nil {
		return nil, err
	}
	return newTapConn(c, d.taps, d.pool), nil
}

// tapURLs reports whether every server in a NATS URL list is reached by
// a plain TCP connection, which is what a tap can read. Websocket
// connections are framed, so they keep nats.go's own reader.
func tapURLs(urls string) bool {
	for _, u := range strings.Split(urls, ",") {
		u = strings.ToLower(strings.TrimSpace(u))
		if i := strings.Index(u, "://"); i >= 0 && u[:i] != "nats" && u[:i] != "tcp" {
			return false
		}
	}
	return true
}
