package coordinator

import (
	"bytes"
	"context"
	cryptorand "crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/modcoord/modcoord/pki"
)

// Client talks to a coordinator cluster's API. It knows several
// coordinators: on a connection failure it tries the next (and passes
// over the failed one for 10 s while another can be tried), and on a 5xx
// (no leader yet, leader unreachable) it backs off and retries. Requests
// that change state are safe to retry: submissions carry an idempotency
// key, and the FSM treats repeated reports as no-ops.
type Client struct {
	addrs    []string
	hc       *http.Client
	tr       *http.Transport // the default transport, before WithHTTPClient
	timeout  time.Duration
	attempts int
	backoff  time.Duration
	// next is the index of the coordinator to try first: the last one
	// that answered.
	next atomic.Int64

	// avoidFor is how long a coordinator that failed without answering
	// (refused, reset, timed out) is passed over while another may be
	// tried. Without it the rotation comes back to a partitioned leader
	// while the others still answer "no leader" during the election, and
	// every visit costs a whole request timeout.
	avoidFor time.Duration
	// progressAttempt bounds each attempt of a progress report (0: only
	// the request timeout); see WithProgressAttemptTimeout.
	progressAttempt time.Duration
	mu              sync.Mutex
	avoid           []time.Time // per address: passed over until then
}

// ClientOption adjusts a Client.
type ClientOption func(*Client)

// WithHTTPClient sets the HTTP client, replacing the default one and its
// TLS configuration: hc's transport must carry its own (tests use it
// against plain servers).
func WithHTTPClient(hc *http.Client) ClientOption { return func(c *Client) { c.hc = hc } }

// WithTimeout bounds each request (default 30 s).
func WithTimeout(d time.Duration) ClientOption { return func(c *Client) { c.timeout = d } }

// WithProgressAttemptTimeout bounds each attempt of a progress report
// below the request timeout. A report is small, coalesced and safe to
// repeat, and a healthy leader applies it in milliseconds; right after the
// leader is partitioned away an attempt that waits the whole request
// timeout for it holds up every report behind it (the job's progress
// seemed to pause for ~10 s).
func WithProgressAttemptTimeout(d time.Duration) ClientOption {
	return func(c *Client) { c.progressAttempt = d }
}

// WithDialTimeout bounds each new connection's dial (default 30 s).
func WithDialTimeout(d time.Duration) ClientOption {
	return func(c *Client) {
		c.tr.DialContext = (&net.Dialer{Timeout: d, KeepAlive: 30 * time.Second}).DialContext
	}
}

// ClientTLS is the TLS configuration of an API client holding creds (a
// user's, a worker's or a coordinator's certificate): it presents the
// certificate and accepts only a server with a coordinator certificate
// from the cluster CA.
func ClientTLS(creds *pki.Credentials) (*tls.Config, error) {
	return pki.ClientConfig(creds, pki.RoleCoordinator)
}

// WithRetries sets how many attempts a request gets (default 8) and the
// first backoff (default 100 ms, doubling to at most 2 s).
func WithRetries(attempts int, backoff time.Duration) ClientOption {
	return func(c *Client) { c.attempts, c.backoff = max(attempts, 1), backoff }
}

// NewClient returns a client for the coordinators at addrs (base URLs such
// as https://127.0.0.1:7070; a bare host:port gets https://). tlsConf is
// the client's mutual TLS configuration, from ClientTLS; nil is only for
// tests that talk to a plain HTTP server through WithHTTPClient, since
// every coordinator serves HTTPS.
func NewClient(addrs []string, tlsConf *tls.Config, opts ...ClientOption) (*Client, error) {
	c := &Client{attempts: 8, backoff: 100 * time.Millisecond, avoidFor: 10 * time.Second, timeout: 30 * time.Second}
	c.tr = http.DefaultTransport.(*http.Transport).Clone()
	// A copy per transport: net/http adds "h2" to the config's NextProtos
	// on first use, a data race when clients share one config.
	if tlsConf != nil {
		c.tr.TLSClientConfig = tlsConf.Clone()
	}
	for _, a := range addrs {
		a = strings.TrimRight(strings.TrimSpace(a), "/")
		if a == "" {
			continue
		}
		if !strings.Contains(a, "://") {
			a = "https://" + a
		}
		u, err := url.Parse(a)
		if err != nil {
			return nil, fmt.Errorf("coordinator address %q: %w", a, err)
		}
		if tlsConf != nil && u.Scheme != "https" {
			return nil, fmt.Errorf("coordinator address %q: the API is HTTPS with client certificates; use https://%s", a, u.Host)
		}
		c.addrs = append(c.addrs, a)
	}
	if len(c.addrs) == 0 {
		return nil, errors.New("no coordinator address given")
	}
	c.avoid = make([]time.Time, len(c.addrs))
	for _, o := range opts {
		o(c)
	}
	if c.hc == nil {
		c.hc = &http.Client{Transport: c.tr, Timeout: c.timeout}
	}
	return c, nil
}

// APIError is an error answer from the API. It unwraps to ErrNotFound,
// ErrInvalid, ErrConflict, ErrStale or ErrForbidden where one applies.
type APIError struct {
	StatusCode int
	ErrorResponse
}

func (e *APIError) Error() string {
	msg := fmt.Sprintf("coordinator: %d %s", e.StatusCode, e.ErrorResponse.Error)
	if len(e.Fields) > 0 {
		msg += ":\n  " + strings.Join(e.Fields, "\n  ")
	}
	return msg
}

func (e *APIError) Unwrap() error {
	switch e.Code {
	case "not_found":
		return ErrNotFound
	case "invalid", "too_large":
		return ErrInvalid
	case "conflict":
		return ErrConflict
	case "stale":
		return ErrStale
	case "forbidden", "unauthorized":
		return ErrForbidden
	}
	return nil
}

// Submit submits a YAML or JSON job spec.
func (c *Client) Submit(ctx context.Context, spec []byte) (SubmitResult, error) {
	key := make([]byte, 16)
	_, _ = cryptorand.Read(key)
	hdr := http.Header{"Content-Type": {"application/yaml"}, idempotencyHeader: {hex.EncodeToString(key)}}
	var res SubmitResult
	err := c.do(ctx, http.MethodPost, "/v1/jobs", spec, hdr, &res)
	return res, err
}

// Jobs lists all jobs in submission order.
func (c *Client) Jobs(ctx context.Context) ([]Job, error) {
	var res JobList
	err := c.do(ctx, http.MethodGet, "/v1/jobs", nil, nil, &res)
	return res.Jobs, err
}

// Job returns one job's full status.
func (c *Client) Job(ctx context.Context, id string) (Job, error) {
	var j Job
	err := c.do(ctx, http.MethodGet, jobPath(id, ""), nil, nil, &j)
	return j, err
}

// Cancel cancels a job; canceling a canceled job is not an error.
func (c *Client) Cancel(ctx context.Context, id, reason string) (Job, error) {
	var j Job
	err := c.doJSON(ctx, http.MethodPost, jobPath(id, "/cancel"), CancelRequest{Reason: reason}, &j)
	return j, err
}

// Progress reports rank 0's progress; cancel says the job ended and the
// worker should stop.
func (c *Client) Progress(ctx context.Context, id string, p ProgressReport) (cancel bool, err error) {
	var res ProgressResponse
	body, err := json.Marshal(p)
	if err != nil {
		return false, fmt.Errorf("encode progress report: %w", err)
	}
	err = c.send(ctx, c.progressAttempt, http.MethodPost, jobPath(id, "/progress"), body, http.Header{"Content-Type": {"application/json"}}, &res)
	return res.Cancel, err
}

// ReportShard reports this worker's checkpoint shard; the response says
// whether that completed and committed the checkpoint.
func (c *Client) ReportShard(ctx context.Context, id string, r ShardReport) (ShardResponse, error) {
	var res ShardResponse
	err := c.doJSON(ctx, http.MethodPost, jobPath(id, "/checkpoints"), r, &res)
	return res, err
}

// ReportMemory reports that this worker's run of a generation stopped and
// what it holds in memory for the next one.
func (c *Client) ReportMemory(ctx context.Context, id string, r MemoryReport) error {
	return c.doJSON(ctx, http.MethodPost, jobPath(id, "/memory"), r, nil)
}

// Checkpoints lists a job's committed (retained) and pending checkpoints.
func (c *Client) Checkpoints(ctx context.Context, id string) (CheckpointsView, error) {
	var res CheckpointsView
	err := c.do(ctx, http.MethodGet, jobPath(id, "/checkpoints"), nil, nil, &res)
	return res, err
}

// Complete reports that the generation ran the job's last step.
func (c *Client) Complete(ctx context.Context, id string, r CompleteReport) (Job, error) {
	var j Job
	err := c.doJSON(ctx, http.MethodPost, jobPath(id, "/complete"), r, &j)
	return j, err
}

// Fail ends a job that cannot continue.
func (c *Client) Fail(ctx context.Context, id string, r FailReport) (Job, error) {
	var j Job
	err := c.doJSON(ctx, http.MethodPost, jobPath(id, "/fail"), r, &j)
	return j, err
}

func jobPath(id, suffix string) string { return "/v1/jobs/" + url.PathEscape(id) + suffix }

func (c *Client) doJSON(ctx context.Context, method, path string, in, out any) error {
	body, err := json.Marshal(in)
	if err != nil {
		return fmt.Errorf("encode %s %s: %w", method, path, err)
	}
	return c.do(ctx, method, path, body, http.Header{"Content-Type": {"application/json"}}, out)
}

// do sends one request with retries: the next coordinator after a
// connection failure, a backoff after a 5xx or after every coordinator
// failed to connect.
func (c *Client) do(ctx context.Context, method, path string, body []byte, hdr http.Header, out any) error {
	return c.send(ctx, 0, method, path, body, hdr, out)
}

// send is do with each attempt bounded by perAttempt (0: the request
// timeout only).
func (c *Client) send(ctx context.Context, perAttempt time.Duration, method, path string, body []byte, hdr http.Header, out any) error {
	backoff := c.backoff
	var lastErr error
	for attempt := 0; attempt < c.attempts; attempt++ {
		i := c.pick()
		actx, cancel := ctx, context.CancelFunc(func() {})
		if perAttempt > 0 {
			actx, cancel = context.WithTimeout(ctx, perAttempt)
		}
		retry, err := c.once(actx, c.addrs[i]+path, method, body, hdr, out)
		cancel()
		var apiErr *APIError
		answered := err == nil || errors.As(err, &apiErr)
		switch {
		case answered:
			c.markAnswered(i, true)
		case retry && ctx.Err() == nil: // not our own cancellation
			c.markAnswered(i, false)
		}
		if err == nil {
			// Start there next time, rather than where the rotation
			// stood: that may be a coordinator being passed over.
			c.next.Store(int64(i))
			return nil
		}
		lastErr = err
		if !retry || ctx.Err() != nil {
			return err
		}
		// Move on to the next coordinator. After a connection failure
		// try it at once; back off after an answer (5xx: no leader yet)
		// or once every coordinator failed.
		c.next.CompareAndSwap(int64(i), int64((i+1)%len(c.addrs)))
		if !answered && (i+1)%len(c.addrs) != 0 {
			continue
		}
		jitter := time.Duration(rand.Int64N(int64(backoff)/2 + 1))
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last error: %v)", ctx.Err(), lastErr)
		case <-time.After(backoff + jitter):
		}
		backoff = min(2*backoff, 2*time.Second)
	}
	return fmt.Errorf("%s %s: gave up after %d attempts: %w", method, path, c.attempts, lastErr)
}

// pick is the coordinator to try: the first from next on that is not
// being passed over, or next itself when every one is.
func (c *Client) pick() int {
	start := int(c.next.Load()) % len(c.addrs)
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	for k := range len(c.addrs) {
		i := (start + k) % len(c.addrs)
		if !now.Before(c.avoid[i]) {
			return i
		}
	}
	return start
}

// markAnswered records whether coordinator i answered at all.
func (c *Client) markAnswered(i int, answered bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if answered {
		c.avoid[i] = time.Time{}
	} else {
		c.avoid[i] = time.Now().Add(c.avoidFor)
	}
}

// once sends a request and reports whether a failure is worth retrying.
func (c *Client) once(ctx context.Context, u, method string, body []byte, hdr http.Header, out any) (retry bool, err error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return false, fmt.Errorf("%s %s: %w", method, u, err)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return true, fmt.Errorf("%s %s: %w", method, u, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return true, fmt.Errorf("%s %s: read response: %w", method, u, err)
	}
	if resp.StatusCode >= 300 {
		e := &APIError{StatusCode: resp.StatusCode}
		if json.Unmarshal(data, &e.ErrorResponse) != nil || e.ErrorResponse.Error == "" {
			e.ErrorResponse.Error = strings.TrimSpace(truncate(string(data), 200))
		}
		return resp.StatusCode >= 500, e
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return false, fmt.Errorf("%s %s: decode response: %w", method, u, err)
		}
	}
	return false, nil
}
