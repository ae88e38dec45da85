package coordinator

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"slices"
	"time"

	"github.com/hashicorp/raft"
	"github.com/modcoord/modcoord/checkpoint"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/modcoord/modcoord/jobspec"
	"github.com/modcoord/modcoord/pki"
)

// HTTP API, served by every coordinator over HTTPS with mutual TLS: a
// client presents a certificate from the cluster CA (pki), and its role
// decides what it may do. Followers forward /v1 requests to the leader,
// so a client may use any coordinator.
//
//	                                                         user  worker
//	POST /v1/jobs                     spec (YAML or JSON)  → SubmitResult (201)   ✓
//	GET  /v1/jobs                                          → JobList              ✓     ✓
//	GET  /v1/jobs/{id}                                     → Job                  ✓     ✓
//	POST /v1/jobs/{id}/cancel         CancelRequest (opt.) → Job                  ✓
//	POST /v1/jobs/{id}/progress       ProgressReport       → ProgressResponse           ✓
//	POST /v1/jobs/{id}/checkpoints    ShardReport          → ShardResponse              ✓
//	GET  /v1/jobs/{id}/checkpoints                         → CheckpointsView      ✓     ✓
//	POST /v1/jobs/{id}/complete       CompleteReport       → Job                        ✓
//	POST /v1/jobs/{id}/fail           FailReport           → Job                        ✓
//	POST /v1/jobs/{id}/memory         MemoryReport         → Job                        ✓
//
// A coordinator's certificate is admitted only to forward: a follower
// sends the request on to the leader with the caller's role in
// X-Modcoord-Forwarded-Role, and the leader honours that header only when
// the TLS peer itself is a coordinator. From anyone else the header is
// refused (403), and a coordinator that forwards nothing has no role.
//
// /healthz, /readyz and /metrics are not on the API port: they are served
// over plain HTTP on the coordinator's separate ops listener
// (Config.OpsAddr), for kubelet probes and Prometheus, and that listener
// serves no /v1 route.
//
// Errors are ErrorResponse with 400 (bad request or spec), 401 (no
// verified client certificate), 403 (the caller's role may not do this),
// 404, 409 (impossible in the job's state, or stale), 413, 500 (the state
// machine or the leader's address failed), 502 (a follower could not
// reach the leader: retry), or 503 (no leader yet: retry).

// ErrorResponse is the body of every error.
type ErrorResponse struct {
	Error string `json:"error"`
	// Code is one of invalid, unauthorized, forbidden, not_found, conflict, stale,
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
	forwardedHeader = "X-Modcoord-Forwarded"
	// forwardedRoleHeader and forwardedForHeader carry the original
	// caller's role and identity from a follower to the leader; they are
	// honoured only from a coordinator peer.
	forwardedRoleHeader = "X-Modcoord-Forwarded-Role"
	forwardedForHeader  = "X-Modcoord-Forwarded-For"
	idempotencyHeader   = "Idempotency-Key"
	maxRequestBytes     = MaxSpecBytes
)

type apiServer struct {
	node     *Node
	fsm      *FSM
	board    *loadBoard // the leader's live workers (stragglers); may be nil
	log      *slog.Logger
	dataRoot string
	// specLimits bound what a spec may ask for; see Config.SpecLimits.
	specLimits jobspec.Limits
	metrics    *prometheus.Registry
	proxy      http.RoundTripper // a follower's forwards to the leader (newForwardTransport)
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
// bounded, presenting this coordinator's certificate (tlsConf) and
// accepting only a coordinator's.
func newForwardTransport(dial, response time.Duration, tlsConf *tls.Config) *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.DialContext = (&net.Dialer{Timeout: dial, KeepAlive: 30 * time.Second}).DialContext
	t.ResponseHeaderTimeout = response
	if tlsConf != nil {
		t.TLSClientConfig = tlsConf.Clone() // net/http edits NextProtos on first use
	}
	return t
}

// Who may call each /v1 route, by the caller's role (see the table above).
var (
	rolesRead   = []pki.Role{pki.RoleUser, pki.RoleWorker}
	rolesUser   = []pki.Role{pki.RoleUser}
	rolesWorker = []pki.Role{pki.RoleWorker}
)

// handler is the API (HTTPS, mutual TLS): /v1 only.
func (s *apiServer) handler() http.Handler {
	mux := http.NewServeMux()
	route := func(pattern string, roles []pki.Role, h http.HandlerFunc) {
		mux.Handle(pattern, s.allow(roles, s.onLeader(h)))
	}
	route("POST /v1/jobs", rolesUser, s.submit)
	route("GET /v1/jobs", rolesRead, s.listJobs)
	route("GET /v1/jobs/{id}", rolesRead, s.getJob)
	route("POST /v1/jobs/{id}/cancel", rolesUser, s.cancel)
	route("POST /v1/jobs/{id}/progress", rolesWorker, s.progress)
	route("POST /v1/jobs/{id}/checkpoints", rolesWorker, s.reportShard)
	route("GET /v1/jobs/{id}/checkpoints", rolesRead, s.checkpoints)
	route("POST /v1/jobs/{id}/complete", rolesWorker, s.complete)
	route("POST /v1/jobs/{id}/fail", rolesWorker, s.fail)
	route("POST /v1/jobs/{id}/memory", rolesWorker, s.memory)
	return s.authenticate(mux)
}

// opsHandler is the plain-HTTP ops listener: health, readiness and
// metrics, and nothing under /v1.
func (s *apiServer) opsHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", s.ready)
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.metrics, promhttp.HandlerOpts{}))
	return mux
}

// caller is who a /v1 request acts for: the verified TLS peer, or, for a
// request a follower forwarded, the original caller the follower names.
type caller struct {
	Role pki.Role
	// Name is the certificate name, for logs ("user/alice").
	Name string
	// Via is the forwarding coordinator, if any.
	Via string
}

type callerKey struct{}

func callerOf(r *http.Request) (caller, bool) {
	c, ok := r.Context().Value(callerKey{}).(caller)
	return c, ok
}

// authenticate finds the caller's role from its verified certificate. A
// coordinator peer stands for the caller named in the forwarding headers;
// anyone else sending those headers is refused, so a worker or user
// cannot claim another role by setting them.
func (s *apiServer) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, err := pki.RequestIdentity(r)
		if err != nil {
			writeError(w, http.StatusUnauthorized, "unauthorized", "no verified client certificate: "+err.Error(), nil)
			return
		}
		c := caller{Role: id.Role, Name: id.String()}
		fwdRole := r.Header.Get(forwardedRoleHeader)
		switch {
		case id.Role == pki.RoleCoordinator && fwdRole != "":
			role, err := pki.ParseRole(fwdRole)
			if err != nil || !slices.Contains(rolesRead, role) {
				writeError(w, http.StatusForbidden, "forbidden", fmt.Sprintf("forwarded role %q is not a client role", truncate(fwdRole, 40)), nil)
				return
			}
			c = caller{Role: role, Name: truncate(r.Header.Get(forwardedForHeader), 80), Via: id.String()}
		case id.Role == pki.RoleCoordinator:
			// A coordinator has no API role of its own; it only forwards.
			c.Role = ""
		case fwdRole != "" || r.Header.Get(forwardedForHeader) != "" || r.Header.Get(forwardedHeader) != "":
			s.log.Warn("refused forwarding headers from a non-coordinator", "peer", id.String(), "path", r.URL.Path)
			writeError(w, http.StatusForbidden, "forbidden", "forwarding headers are accepted from coordinators only", nil)
			return
		}
		r = r.WithContext(context.WithValue(r.Context(), callerKey{}, c))
		r.Body = http.MaxBytesReader(w, r.Body, maxRequestBytes)
		next.ServeHTTP(w, r)
	})
}

// allow admits callers whose role is one of roles, and answers 403 to the rest.
func (s *apiServer) allow(roles []pki.Role, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, ok := callerOf(r)
		if !ok || !slices.Contains(roles, c.Role) {
			who := "a coordinator that forwards nothing"
			if c.Role != "" {
				who = "a " + string(c.Role) + " certificate"
			}
			writeError(w, http.StatusForbidden, "forbidden", fmt.Sprintf("%s may not %s %s (allowed: %v)", who, r.Method, r.URL.Path, roles), nil)
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (s *apiServer) ready(w http.ResponseWriter, r *http.Request) {
	id, _ := s.node.Leader()
	if id == "" {
		writeJSON(w, http.StatusServiceUnavailable, map[string]any{"ready": false, "leader": ""})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"ready": true, "leader": id, "is_leader": s.node.IsLeader()})
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
				// The leader sees this coordinator as the TLS peer; the
				// caller's role travels in a header it trusts only from
				// a coordinator.
				if c, ok := callerOf(pr.In); ok {
					pr.Out.Header.Set(forwardedRoleHeader, string(c.Role))
					pr.Out.Header.Set(forwardedForHeader, c.Name)
				}
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
		j.Stragglers = s.board.stragglers(j, time.Now())
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

func (s *apiServer) memory(w http.ResponseWriter, r *http.Request) {
	var req MemoryReport
	if !decodeBody(w, r, &req, false) {
		return
	}
	s.applyAndShow(w, r, Command{Type: CmdMemoryReport, Memory: &req})
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

// writeError answers with an error body. Messages can quote what a client
// sent (a decoder's "unknown field" names the field in full), so every
// message and field name is cut short here, whatever path built it.
func writeError(w http.ResponseWriter, status int, code, msg string, fields []string) {
	const maxMessage, maxField, maxFields = 1024, 128, 64
	if len(fields) > maxFields {
		fields = fields[:maxFields]
	}
	bounded := make([]string, len(fields))
	for i, f := range fields {
		bounded[i] = truncate(f, maxField)
	}
	if fields == nil {
		bounded = nil
	}
	writeJSON(w, status, ErrorResponse{Error: truncate(msg, maxMessage), Code: code, Fields: bounded})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func now() time.Time { return time.Now().UTC() }
