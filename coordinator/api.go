package coordinator

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"time"

	"github.com/hashicorp/raft"
	"github.com/modcoord/modcoord/checkpoint"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/modcoord/modcoord/jobspec"
)

// HTTP API, served by every coordinator. /healthz, /readyz and /metrics are
// open; everything under /v1 needs "Authorization: Bearer <token>".
// Followers forward /v1 requests to the leader, so a client may use any
// coordinator.
//
//	POST /v1/jobs                     spec (YAML or JSON)  → SubmitResult (201)
//	GET  /v1/jobs                                          → JobList
//	GET  /v1/jobs/{id}                                     → Job
//	POST /v1/jobs/{id}/cancel         CancelRequest (opt.) → Job
//	POST /v1/jobs/{id}/progress       ProgressReport       → ProgressResponse
//	POST /v1/jobs/{id}/checkpoints    ShardReport          → ShardResponse
//	GET  /v1/jobs/{id}/checkpoints                         → CheckpointsView
//	POST /v1/jobs/{id}/complete       CompleteReport       → Job
//	POST /v1/jobs/{id}/fail           FailReport           → Job
//
// Errors are ErrorResponse with 400 (bad request or spec), 401, 404, 409
// (impossible in the job's state, or stale), 413, 500 (the state machine
// or the leader's address failed), 502 (a follower could not reach the
// leader: retry), or 503 (no leader yet: retry).

// ErrorResponse is the body of every error.
type ErrorResponse struct {
	Error string `json:"error"`
	// Code is one of invalid, unauthorized, not_found, conflict, stale,
	// too_large, unavailable, internal.
	Code   string   `json:"code"`
	Fields []string `json:"fields,omitempty"`
}

// JobList is GET /v1/jobs's body. Each job's Recent holds only its last
// progress report; GET /v1/jobs/{id} has them all.
type JobList struct {
	Jobs []Job `json:"jobs"`
}

// ProgressResponse tells rank 0 whether to stop.
type ProgressResponse struct {
	Cancel bool `json:"cancel"`
}

// ShardResponse says whether the shard report completed and committed the
// checkpoint; if so, Dropped lists the checkpoints retention let go, whose
// files may now be deleted.
type ShardResponse struct {
	Committed bool                 `json:"committed"`
	Manifest  *checkpoint.Manifest `json:"manifest,omitempty"`
	// Retained (oldest first, ending with Manifest) and Dropped tell the
	// committing rank what to keep and what it may delete.
	Retained []checkpoint.Manifest `json:"retained,omitempty"`
	Dropped  []checkpoint.Manifest `json:"dropped,omitempty"`
}

// CheckpointsView is GET /v1/jobs/{id}/checkpoints's body.
type CheckpointsView struct {
	Job        string                `json:"job"`
	Checkpoint *checkpoint.Manifest  `json:"checkpoint"`
	Retained   []checkpoint.Manifest `json:"retained"`
	Dropped    []checkpoint.Manifest `json:"dropped,omitempty"`
	Pending    *checkpoint.Manifest  `json:"pending,omitempty"`
}

const (
	forwardedHeader   = "X-Modcoord-Forwarded"
	idempotencyHeader = "Idempotency-Key"
	maxRequestBytes   = MaxSpecBytes
)

type apiServer struct {
	node      *Node
	fsm       *FSM
	log       *slog.Logger
	dataRoot  string
	// specLimits bound what a spec may ask for; see Config.SpecLimits.
	specLimits jobspec.Limits
	metrics    *prometheus.Registry
	// tokenHash is SHA-256 of the token (nil: no auth). Comparing hashes
	// keeps the comparison constant-time even in the token's length.
	tokenHash []byte
	proxy     http.RoundTripper // a follower's forwards to the leader (newForwardTransport)
}

// A follower's forward to the leader is bounded below the workers' 5 s
// request timeout. Just after the leader is partitioned away, followers
// still name it; a forward that waited for it would hold the worker's
// request until the worker gave up on this healthy follower. Bounded, it
// answers 502 "leader unreachable; retry" and the worker retries here
// once the election has named the new leader.
const (
	forwardDialTimeout     = time.Second
	forwardResponseTimeout = 3 * time.Second
)

// newForwardTransport is the round tripper for forwards: the default
// transport with the dial and the wait for the leader's response headers
// bounded.
func newForwardTransport(dial, response time.Duration) *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.DialContext = (&net.Dialer{Timeout: dial, KeepAlive: 30 * time.Second}).DialContext
	t.ResponseHeaderTimeout = response
	return t
}

func (s *apiServer) setToken(token string) {
	h := sha256.Sum256([]byte(token))
	s.tokenHash = h[:]
}

func (s *apiServer) handler() http.Handler {
	v1 := http.NewServeMux()
	v1.HandleFunc("POST /v1/jobs", s.submit)
	v1.HandleFunc("GET /v1/jobs", s.listJobs)
	v1.HandleFunc("GET /v1/jobs/{id}", s.getJob)
	v1.HandleFunc("POST /v1/jobs/{id}/cancel", s.cancel)
	v1.HandleFunc("POST /v1/jobs/{id}/progress", s.progress)
	v1.HandleFunc("POST /v1/jobs/{id}/checkpoints", s.reportShard)
	v1.HandleFunc("GET /v1/jobs/{id}/checkpoints", s.checkpoints)
	v1.HandleFunc("POST /v1/jobs/{id}/complete", s.complete)
	v1.HandleFunc("POST /v1/jobs/{id}/fail", s.fail)

	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", s.ready)
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.metrics, promhttp.HandlerOpts{}))
	mux.Handle("/v1/", s.authenticate(s.onLeader(v1)))
	return mux
}

func (s *apiServer) ready(w http.ResponseWriter, r *http.Request) {
	id, _ := s.node.Leader()
	if id == "" {
		writeJSON(w, http.StatusServiceUnavailable, map[string]any{"ready": false, "leader": ""})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"ready": true, "leader": id, "is_leader": s.node.IsLeader()})
}

func (s *apiServer) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.tokenHash != nil {
			given, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
			h := sha256.Sum256([]byte(given))
			if !ok || subtle.ConstantTimeCompare(h[:], s.tokenHash) != 1 {
				w.Header().Set("WWW-Authenticate", `Bearer realm="modcoord"`)
				writeError(w, http.StatusUnauthorized, "unauthorized", "missing or wrong bearer token", nil)
				return
			}
		}
		r.Body = http.MaxBytesReader(w, r.Body, maxRequestBytes)
		next.ServeHTTP(w, r)
	})
}

// onLeader serves on the leader and forwards to it from a follower. A
// request forwarded once is not forwarded again: leadership moved, and
// the client should retry.
func (s *apiServer) onLeader(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.node.IsLeader() {
			if err := s.node.CatchUp(r.Context()); err != nil {
				w.Header().Set("Retry-After", "1")
				writeError(w, http.StatusServiceUnavailable, "unavailable", "new leader is catching up; retry: "+err.Error(), nil)
				return
			}
			next.ServeHTTP(w, r)
			return
		}
		leader, ok := s.node.LeaderAPI()
		if !ok || r.Header.Get(forwardedHeader) != "" {
			w.Header().Set("Retry-After", "1")
			writeError(w, http.StatusServiceUnavailable, "unavailable", "no raft leader to serve this request yet; retry", nil)
			return
		}
		target, err := url.Parse(leader)
		if err != nil {
			writeError(w, http.StatusInternalServerError, "internal", fmt.Sprintf("leader API address %q: %v", leader, err), nil)
			return
		}
		proxy := &httputil.ReverseProxy{
			Rewrite: func(pr *httputil.ProxyRequest) {
				pr.SetURL(target)
				pr.SetXForwarded()
				pr.Out.Header.Set(forwardedHeader, s.node.ID())
			},
			Transport: s.proxy,
			ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
				s.log.Warn("forward to leader failed", "leader", leader, "path", r.URL.Path, "err", err)
				w.Header().Set("Retry-After", "1")
				writeError(w, http.StatusBadGateway, "unavailable", "leader unreachable; retry", nil)
			},
		}
		proxy.ServeHTTP(w, r)
	})
}

func (s *apiServer) submit(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		writeBodyError(w, err)
		return
	}
	spec, err := jobspec.Parse(body, s.specLimits)
	if err == nil && s.dataRoot != "" {
		err = spec.CheckData(s.dataRoot)
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, "invalid", "invalid job spec", FieldErrors(err))
		return
	}
	plan, err := spec.Plan(s.specLimits)
	if err != nil {
		writeError(w, http.StatusBadRequest, "invalid", "invalid job spec", FieldErrors(err))
		return
	}
	key := r.Header.Get(idempotencyHeader)
	if len(key) > 128 {
		writeError(w, http.StatusBadRequest, "invalid", idempotencyHeader+" is longer than 128 bytes", nil)
		return
	}
	res, err := s.node.Apply(r.Context(), Command{Type: CmdSubmit, At: now(),
		Submit: &SubmitCommand{Spec: spec, Plan: plan, RequestID: key}})
	if err != nil {
		s.writeApplyError(w, err)
		return
	}
	sub := res.(SubmitResult)
	s.log.Info("job submitted", "job", sub.ID, "name", spec.Name, "steps", sub.Steps, "flops_per_step", sub.FLOPsPerStep)
	writeJSON(w, http.StatusCreated, sub)
}

func (s *apiServer) listJobs(w http.ResponseWriter, r *http.Request) {
	jobs := s.fsm.Jobs()
	for i := range jobs {
		if n := len(jobs[i].Recent); n > 1 {
			jobs[i].Recent = jobs[i].Recent[n-1:]
		}
	}
	writeJSON(w, http.StatusOK, JobList{Jobs: jobs})
}

func (s *apiServer) getJob(w http.ResponseWriter, r *http.Request) {
	if j, ok := s.job(w, r); ok {
		writeJSON(w, http.StatusOK, j)
	}
}

func (s *apiServer) job(w http.ResponseWriter, r *http.Request) (Job, bool) {
	id := r.PathValue("id")
	j, ok := s.fsm.Job(id)
	if !ok {
		writeError(w, http.StatusNotFound, "not_found", fmt.Sprintf("job %q not found", truncate(id, 80)), nil)
	}
	return j, ok
}

func (s *apiServer) cancel(w http.ResponseWriter, r *http.Request) {
	var req CancelRequest
	if !decodeBody(w, r, &req, true) {
		return
	}
	s.applyAndShow(w, r, Command{Type: CmdCancel, Cancel: &req})
}

func (s *apiServer) complete(w http.ResponseWriter, r *http.Request) {
	var req CompleteReport
	if !decodeBody(w, r, &req, false) {
		return
	}
	s.applyAndShow(w, r, Command{Type: CmdComplete, Complete: &req})
}

func (s *apiServer) fail(w http.ResponseWriter, r *http.Request) {
	var req FailReport
	if !decodeBody(w, r, &req, false) {
		return
	}
	s.applyAndShow(w, r, Command{Type: CmdFail, Fail: &req})
}

// applyAndShow applies a command for the job in the path and answers with
// the job as it is after.
func (s *apiServer) applyAndShow(w http.ResponseWriter, r *http.Request, c Command) {
	id := r.PathValue("id")
	c.Job, c.At = id, now()
	if _, err := s.node.Apply(r.Context(), c); err != nil {
		s.writeApplyError(w, err)
		return
	}
	s.log.Info("job "+string(c.Type), "job", id)
	if j, ok := s.job(w, r); ok {
		writeJSON(w, http.StatusOK, j)
	}
}

func (s *apiServer) progress(w http.ResponseWriter, r *http.Request) {
	var req ProgressReport
	if !decodeBody(w, r, &req, false) {
		return
	}
	j, ok := s.job(w, r)
	if !ok {
		return
	}
	if j.Status.Terminal() {
		writeJSON(w, http.StatusOK, ProgressResponse{Cancel: true})
		return
	}
	_, err := s.node.Apply(r.Context(), Command{Type: CmdProgress, Job: j.ID, At: now(), Progress: &req})
	if err != nil {
		if j, ok := s.fsm.Job(j.ID); ok && j.Status.Terminal() {
			writeJSON(w, http.StatusOK, ProgressResponse{Cancel: true}) // ended meanwhile
			return
		}
		s.writeApplyError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, ProgressResponse{})
}

func (s *apiServer) reportShard(w http.ResponseWriter, r *http.Request) {
	var req ShardReport
	if !decodeBody(w, r, &req, false) {
		return
	}
	id := r.PathValue("id")
	res, err := s.node.Apply(r.Context(), Command{Type: CmdReportShard, Job: id, At: now(), Shard: &req})
	if err != nil {
		s.writeApplyError(w, err)
		return
	}
	if !res.(ShardResult).Complete {
		writeJSON(w, http.StatusOK, ShardResponse{})
		return
	}
	// Every rank has reported: the second phase.
	res, err = s.node.Apply(r.Context(), Command{Type: CmdCommitCheckpoint, Job: id, At: now(),
		Commit: &CommitCheckpoint{Generation: req.Generation, Step: req.Step}})
	if err != nil {
		s.writeApplyError(w, err)
		return
	}
	cr := res.(CommitResult)
	s.log.Info("checkpoint committed", "job", id, "step", cr.Manifest.Step, "generation", cr.Manifest.Generation, "dropped", len(cr.Dropped))
	writeJSON(w, http.StatusOK, ShardResponse{Committed: true, Manifest: &cr.Manifest, Retained: cr.Retained, Dropped: cr.Dropped})
}

func (s *apiServer) checkpoints(w http.ResponseWriter, r *http.Request) {
	j, ok := s.job(w, r)
	if !ok {
		return
	}
	retained := j.Retained
	if retained == nil {
		retained = []checkpoint.Manifest{}
	}
	writeJSON(w, http.StatusOK, CheckpointsView{Job: j.ID, Checkpoint: j.Checkpoint, Retained: retained, Dropped: j.Dropped, Pending: j.Pending})
}

// decodeBody reads a JSON request body strictly; an empty body is allowed
// when optional.
func decodeBody(w http.ResponseWriter, r *http.Request, v any, optional bool) bool {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		writeBodyError(w, err)
		return false
	}
	if optional && len(bytes.TrimSpace(body)) == 0 {
		return true
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		writeError(w, http.StatusBadRequest, "invalid", "request body: "+err.Error(), nil)
		return false
	}
	return true
}

func writeBodyError(w http.ResponseWriter, err error) {
	var tooLarge *http.MaxBytesError
	if errors.As(err, &tooLarge) {
		writeError(w, http.StatusRequestEntityTooLarge, "too_large", fmt.Sprintf("request body is larger than %d bytes", tooLarge.Limit), nil)
		return
	}
	writeError(w, http.StatusBadRequest, "invalid", "read request body: "+err.Error(), nil)
}

// writeApplyError maps an FSM or raft error to its HTTP status.
func (s *apiServer) writeApplyError(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, ErrNotFound):
		writeError(w, http.StatusNotFound, "not_found", err.Error(), nil)
	case errors.Is(err, ErrInvalid):
		writeError(w, http.StatusBadRequest, "invalid", err.Error(), nil)
	case errors.Is(err, ErrStale):
		writeError(w, http.StatusConflict, "stale", err.Error(), nil)
	case errors.Is(err, ErrConflict):
		writeError(w, http.StatusConflict, "conflict", err.Error(), nil)
	case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipLost),
		errors.Is(err, raft.ErrRaftShutdown), errors.Is(err, raft.ErrEnqueueTimeout):
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusServiceUnavailable, "unavailable", err.Error()+"; retry", nil)
	default:
		s.log.Error("apply failed", "err", err)
		writeError(w, http.StatusInternalServerError, "internal", err.Error(), nil)
	}
}

func writeError(w http.ResponseWriter, status int, code, msg string, fields []string) {
	writeJSON(w, status, ErrorResponse{Error: msg, Code: code, Fields: fields})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func now() time.Time { return time.Now().UTC() }
