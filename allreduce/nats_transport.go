package allreduce

import (
	"crypto/tls"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// NATSOptions says how to reach the NATS server and authenticate. Set at
// most one of User/Password, Token, NKeySeedFile and CredsFile; they are
// passed through to nats.Connect unchanged.
type NATSOptions struct {
	URL  string // comma-separated server URLs, e.g. nats://nats-local:4222
	Name string // connection name shown by the server's monitoring

	User, Password string
	Token          string
	NKeySeedFile   string // file holding an nkey user seed
	CredsFile      string // JWT + seed .creds file (decentralised auth)

	// TLS, when set, is used for the connection (and requires TLS).
	TLS *tls.Config

	// ConnectTimeout bounds the initial dial; 0 means nats.go's default.
	ConnectTimeout time.Duration

	// WriteBufferSize is how many bytes of publishes nats.go gathers
	// before Publish itself writes them to the socket; below it, its
	// flusher goroutine writes them in the background. Zero means
	// DefaultNATSWriteBuffer.
	WriteBufferSize int

	// PingInterval is how often the client pings the server; after
	// natsMaxPingsOut unanswered pings it drops the connection and
	// reconnects. Zero means DefaultNATSPingInterval.
	PingInterval time.Duration

	// OnAsyncError, when set, hears errors the server reports outside any
	// call (slow consumer, permission violation on publish). Without it
	// they are not printed; the collective they break fails by its
	// deadline, and the connection's LastError keeps the latest.
	OnAsyncError func(error)
}

// DefaultNATSWriteBuffer is NATSOptions.WriteBufferSize's default: eight
// default-sized chunks. nats.go's own default, 32 KiB, makes every chunk's
// Publish a write system call on the collective's goroutine; with room
// for a few chunks the flusher writes them, several per call, while the
// collective goes on receiving (same-run NATS/TCP ratios 0.41–0.49 with
// 32 KiB, 0.50–0.54 with 256 KiB in `modcoord bench allreduce`;
// docs/allreduce.md).
const DefaultNATSWriteBuffer = 256 << 10

// DefaultNATSPingInterval is NATSOptions.PingInterval's default. nats.go's
// own, 2 minutes with 2 pings outstanding, leaves a connection whose
// peer vanished without a FIN or RST (a partition or a dropped link while
// the server restarted) looking alive for 4 to 6 minutes, during which
// every subscription times out: in the chaos soak one worker failed 12
// generations in a row that way (7 minutes without progress). At 5 s and
// 3 pings it reconnects within 20 s, inside one ring deadline.
const DefaultNATSPingInterval = 5 * time.Second

// natsMaxPingsOut is how many pings may go unanswered before the client
// reconnects.
const natsMaxPingsOut = 3

// NATSTransport sends ring messages as NATS core publishes. Each inbox is
// one subscription whose pending limits are lifted: the Ring's pipeline
// window, not the client's default 64 MiB cap, bounds what is queued, and
// hitting the cap would make the server or client drop us as a slow
// consumer (the only symptom the client sees is "connection closed").
type NATSTransport struct {
	nc    *nats.Conn
	owned bool
}

// DialNATS connects with opts; Close closes the connection. The
// connection is made with NoEcho, so it never receives its own publishes:
// it serves one rank. Ranks sharing it would not hear each other; give
// each rank of a process its own DialNATS (or use NewNATSTransport).
func DialNATS(opts NATSOptions) (*NATSTransport, error) {
	o, err := opts.natsOptions()
	if err != nil {
		return nil, err
	}
	nc, err := nats.Connect(opts.URL, o...)
	if err != nil {
		return nil, fmt.Errorf("connect to NATS at %s: %w", opts.URL, err)
	}
	return &NATSTransport{nc: nc, owned: true}, nil
}

// NewNATSTransport uses a connection the caller owns and closes.
func NewNATSTransport(nc *nats.Conn) *NATSTransport { return &NATSTransport{nc: nc} }

func (opts NATSOptions) natsOptions() ([]nats.Option, error) {
	set := 0
	for _, s := range []string{opts.User + opts.Password, opts.Token, opts.NKeySeedFile, opts.CredsFile} {
		if s != "" {
			set++
		}
	}
	if set > 1 {
		return nil, errors.New("NATS options: set only one of user/password, token, nkey seed file, creds file")
	}
	o := []nats.Option{
		nats.Name(opts.Name),
		// A collective that loses messages in a reconnect fails by its
		// deadline; buffering minutes of gradients while disconnected
		// would only delay that.
		nats.ReconnectBufSize(-1),
		// A rank has no use for its own fan-out broadcasts; without this
		// the server would send each back to it (the Ring drops them).
		nats.NoEcho(),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			if opts.OnAsyncError != nil {
				opts.OnAsyncError(err)
			}
		}),
	}
	wb := opts.WriteBufferSize
	if wb <= 0 {
		wb = DefaultNATSWriteBuffer
	}
	o = append(o, nats.WriteBufferSize(wb))
	ping := opts.PingInterval
	if ping <= 0 {
		ping = DefaultNATSPingInterval
	}
	o = append(o, nats.PingInterval(ping), nats.MaxPingsOutstanding(natsMaxPingsOut))
	if opts.ConnectTimeout > 0 {
		o = append(o, nats.Timeout(opts.ConnectTimeout))
	}
	switch {
	case opts.User != "" || opts.Password != "":
		o = append(o, nats.UserInfo(opts.User, opts.Password))
	case opts.Token != "":
		o = append(o, nats.Token(opts.Token))
	case opts.NKeySeedFile != "":
		nk, err := nats.NkeyOptionFromSeed(opts.NKeySeedFile)
		if err != nil {
			return nil, fmt.Errorf("NATS nkey seed %s: %w", opts.NKeySeedFile, err)
		}
		o = append(o, nk)
	case opts.CredsFile != "":
		o = append(o, nats.UserCredentials(opts.CredsFile))
	}
	if opts.TLS != nil {
		o = append(o, nats.Secure(opts.TLS))
	}
	return o, nil
}

// Conn is the underlying connection.
func (t *NATSTransport) Conn() *nats.Conn { return t.nc }

// MaxMessage implements Transport: the server's max_payload.
func (t *NATSTransport) MaxMessage() int { return int(t.nc.MaxPayload()) }

// Send implements Transport. nats.go copies msg into its write buffer
// before Publish returns.
func (t *NATSTransport) Send(inbox string, msg []byte) error {
	if err := t.nc.Publish(inbox, msg); err != nil {
		if last := t.nc.LastError(); last != nil && !errors.Is(err, last) {
			// A slow-consumer disconnect shows as "connection closed";
			// the last error says why it closed.
			return fmt.Errorf("publish to %s: %w (last connection error: %v)", inbox, err, last)
		}
		return fmt.Errorf("publish to %s: %w", inbox, err)
	}
	return nil
}

// Listen implements Transport. nats.go runs handle on one goroutine per
// subscription, in arrival order, with a payload it allocated for us.
func (t *NATSTransport) Listen(inbox string, handle func([]byte)) (func() error, error) {
	var (
		mu      sync.Mutex
		stopped bool
	)
	sub, err := t.nc.Subscribe(inbox, func(m *nats.Msg) {
		mu.Lock()
		defer mu.Unlock()
		if !stopped {
			handle(m.Data)
		}
	})
	if err != nil {
		return nil, fmt.Errorf("subscribe to %s: %w", inbox, err)
	}
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		sub.Unsubscribe()
		return nil, fmt.Errorf("lift pending limits on %s: %w", inbox, err)
	}
	// Make sure the server has the subscription (and accepted our
	// credentials for it) before peers are told we listen.
	if err := t.nc.Flush(); err != nil {
		sub.Unsubscribe()
		if errors.Is(err, nats.ErrTimeout) {
			// The server did not answer a ping: the link is likely dead
			// though no error closed it. Reconnect now rather than after
			// the ping timer, so that the next generation finds it fresh.
			if rerr := t.nc.ForceReconnect(); rerr != nil {
				return nil, fmt.Errorf("subscribe to %s: %w (and reconnecting: %v)", inbox, err, rerr)
			}
			return nil, fmt.Errorf("subscribe to %s: %w (no answer from the server; reconnecting)", inbox, err)
		}
		return nil, fmt.Errorf("subscribe to %s: %w", inbox, err)
	}
	// The server answers a forbidden subscription with an error before
	// the flush's PONG, so by now it is recorded.
	if err := t.nc.LastError(); errors.Is(err, nats.ErrPermissionViolation) && strings.Contains(err.Error(), `"`+inbox+`"`) {
		sub.Unsubscribe()
		return nil, fmt.Errorf("subscribe to %s: %w", inbox, err)
	}
	var once sync.Once
	var stopErr error
	stop := func() error {
		once.Do(func() {
			if err := sub.Unsubscribe(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) && !errors.Is(err, nats.ErrBadSubscription) {
				stopErr = fmt.Errorf("unsubscribe from %s: %w", inbox, err)
			}
			// Wait out a handler that is running, and keep later ones out.
			mu.Lock()
			stopped = true
			mu.Unlock()
		})
		return stopErr
	}
	return stop, nil
}

// Close closes the connection if DialNATS opened it.
func (t *NATSTransport) Close() error {
	if t.owned {
		t.nc.Close()
	}
	return nil
}
