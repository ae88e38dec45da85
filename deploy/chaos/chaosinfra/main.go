// Command chaosinfra is the one static helper binary of the multi-host chaos
// suite's container image (deploy/chaos). No image can be pulled where the
// suite runs, so the infrastructure is built from the Go module cache:
//
//	chaosinfra nats   --port 4222 --user U --password-file F   a NATS server with user/password auth
//	                  (and /healthz on --monitor-port 8222)
//	chaosinfra nats   --tls-dir D                              the same over mutual TLS: only worker
//	                  certificates of D's CA connect, as the one user (on modcoord.> only)
//	chaosinfra etcd   --data-dir D --advertise URL             a one-member etcd
//	chaosinfra etcd   --tls-dir D --cluster C --listen https://0.0.0.0:2379 --advertise https://etcd:2379
//	                  the same over mutual TLS, with etcd auth set up for cluster C
//	                  (users coordinator and worker; see modcoord etcd-setup)
//	chaosinfra http   [--tls-dir D] [--body-file F] [--when-isolated] [--repeat-for D] METHOD URL
//	                  one HTTP(S) request: prints the status code (0: no answer)
//	                  and the body (exit 0 whatever the status); or, with
//	                  --repeat-for, one JSON line per attempt; --when-isolated
//	                  first waits until the container lost its network (JSON
//	                  lines {"waiting":true}, then {"isolated_ms":T}); with
//	                  --tls-dir, https URLs use D's ca.crt and the one
//	                  certificate found there (user, worker, coordinator,
//	                  etcd or nats, tried in that order; or --role) as the
//	                  client certificate
//	chaosinfra verify --root /checkpoints < manifests.json
//	                  checks committed checkpoints (the coordinator's JSON
//	                  records) against the shard files on the volume; prints
//	                  one JSON result per manifest
//	chaosinfra fill   --path F [--remove]                      grow F until its file system is full
//	                  (the soak's full checkpoint volume), or delete it
//	chaosinfra hold                                            sleep until stopped (holds a volume mounted)
//
// It is built with CGO_ENABLED=0, so it runs in a FROM scratch image.
package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/modcoord/modcoord/checkpoint"
	"github.com/modcoord/modcoord/embedded"
	"github.com/modcoord/modcoord/pki"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: chaosinfra nats|etcd|http|verify|fill|hold [flags]")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch os.Args[1] {
	case "nats":
		err = runNATS(ctx, os.Args[2:])
	case "etcd":
		err = runEtcd(ctx, os.Args[2:])
	case "http":
		err = runHTTP(ctx, os.Args[2:])
	case "verify":
		err = runVerify(ctx, os.Args[2:])
	case "fill":
		err = runFill(ctx, os.Args[2:])
	case "hold":
		err = runHold(ctx, os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "chaosinfra:", err)
		os.Exit(1)
	}
}

func readSecret(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return "", fmt.Errorf("%s is empty", path)
	}
	return s, nil
}

func runNATS(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("nats", flag.ContinueOnError)
	port := fs.Int("port", 4222, "client port")
	user := fs.String("user", "modcoord", "the one user")
	passFile := fs.String("password-file", "", "file holding the user's password (required without --tls-dir: auth is always on)")
	tlsDir := fs.String("tls-dir", "", "directory with ca.crt and a nats certificate: mutual TLS, users from worker certificates, no password")
	monitor := fs.Int("monitor-port", 8222, "HTTP monitoring port (/healthz), 0 for none")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg := embedded.NATSConfig{Host: "0.0.0.0", Port: *port, HTTPPort: *monitor, Log: true, ReadyTimeout: 30 * time.Second}
	auth := ""
	if *tlsDir != "" {
		creds, err := pki.LoadDir(*tlsDir, pki.RoleNATS)
		if err != nil {
			return fmt.Errorf("--tls-dir: %w", err)
		}
		if cfg.TLS, err = pki.ServerConfig(creds, pki.RoleWorker); err != nil {
			return err
		}
		cfg.CertUsers = true
		cfg.Users = []*server.User{{Username: pki.NATSUser(pki.RoleWorker), Permissions: embedded.RingPermissions()}}
		auth = "mutual TLS, worker certificates as " + pki.NATSUser(pki.RoleWorker)
	} else {
		pass, err := readSecret(*passFile)
		if err != nil {
			return fmt.Errorf("--password-file: %w", err)
		}
		cfg.Users = []*server.User{{Username: *user, Password: pass}}
		auth = "user " + *user
	}
	s, err := embedded.StartNATS(cfg)
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "nats-server ready on :%d (auth: %s)\n", *port, auth)
	<-ctx.Done()
	s.Shutdown()
	s.WaitForShutdown()
	return nil
}

func runEtcd(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("etcd", flag.ContinueOnError)
	name := fs.String("name", "etcd", "member name")
	dir := fs.String("data-dir", "/var/lib/etcd", "data directory")
	listen := fs.String("listen", "http://0.0.0.0:2379", "client listen URL")
	advertise := fs.String("advertise", "http://etcd:2379", "advertised client URL")
	tlsDir := fs.String("tls-dir", "", "directory with ca.crt and an etcd certificate: clients need a certificate of that CA, and etcd auth is set up (URLs must be https)")
	cluster := fs.String("cluster", "", "with --tls-dir: the modcoord cluster names (comma-separated) to set up etcd users for")
	if err := fs.Parse(args); err != nil {
		return err
	}
	lu, err := url.Parse(*listen)
	if err != nil {
		return err
	}
	au, err := url.Parse(*advertise)
	if err != nil {
		return err
	}
	peer, _ := url.Parse("http://127.0.0.1:2380")
	cfg := embedded.EtcdConfig{
		Name: *name, Dir: *dir, LogLevel: "warn", ReadyTimeout: 60 * time.Second,
		ClientURL: *lu, AdvertiseURL: *au, PeerURL: *peer,
	}
	var creds *pki.Credentials
	if *tlsDir != "" {
		if *cluster == "" {
			return errors.New("--tls-dir needs --cluster: the cluster names to set up etcd users for")
		}
		if lu.Scheme != "https" || au.Scheme != "https" {
			return errors.New("--tls-dir: give https --listen and --advertise URLs")
		}
		f, err := pki.FilesInDir(*tlsDir, pki.RoleEtcd)
		if err != nil {
			return fmt.Errorf("--tls-dir: %w", err)
		}
		if creds, err = pki.LoadDir(*tlsDir, pki.RoleEtcd); err != nil {
			return fmt.Errorf("--tls-dir: %w", err)
		}
		cfg.ClientTLS = &embedded.EtcdTLS{CAFile: f.CA, CertFile: f.Cert, KeyFile: f.Key}
	}
	e, err := embedded.StartEtcd(cfg)
	if err != nil {
		return err
	}
	defer e.Close()
	if creds != nil {
		if err := setupEtcdAuth(ctx, creds, au.String(), strings.Split(*cluster, ",")); err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "etcd auth set up for clusters %s\n", *cluster)
	}
	fmt.Fprintf(os.Stderr, "etcd ready on %s\n", *listen)
	select {
	case <-ctx.Done():
		return nil
	case err := <-e.Err():
		return err
	}
}

// setupEtcdAuth connects as the etcd server's own certificate (the root
// role once auth is on) and sets up modcoord's users and roles.
func setupEtcdAuth(ctx context.Context, creds *pki.Credentials, endpoint string, clusters []string) error {
	tlsCfg, err := pki.ClientConfig(creds, pki.RoleEtcd)
	if err != nil {
		return err
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, TLS: tlsCfg, DialTimeout: 10 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return fmt.Errorf("etcd auth setup: %w", err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	return embedded.SetupEtcdAuth(ctx, cli, clusters...)
}

func runHTTP(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("http", flag.ContinueOnError)
	tlsDir := fs.String("tls-dir", "", "directory with ca.crt and a certificate: https requests present it and trust only that CA")
	role := fs.String("role", "", "with --tls-dir: the certificate's role (default: the first of user, worker, coordinator, etcd, nats found)")
	bodyFile := fs.String("body-file", "", "request body file")
	ctype := fs.String("content-type", "application/yaml", "request content type")
	timeout := fs.Duration("timeout", 20*time.Second, "timeout of one request")
	isolated := fs.Bool("when-isolated", false, "first wait (up to --wait) until this container has no network interface but loopback, then send")
	wait := fs.Duration("wait", 30*time.Second, "how long --when-isolated waits")
	repeatFor := fs.Duration("repeat-for", 0, "send again and again for this long, printing one JSON line per attempt")
	interval := fs.Duration("interval", 200*time.Millisecond, "pause between repeated attempts")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 2 {
		return errors.New("usage: chaosinfra http [flags] METHOD URL")
	}
	method, target := fs.Arg(0), fs.Arg(1)
	var body []byte
	if *bodyFile != "" {
		var err error
		if body, err = os.ReadFile(*bodyFile); err != nil {
			return err
		}
	}
	hc := &http.Client{Timeout: *timeout}
	if *tlsDir != "" {
		tlsCfg, err := clientTLS(*tlsDir, *role)
		if err != nil {
			return err
		}
		hc.Transport = &http.Transport{TLSClientConfig: tlsCfg, ForceAttemptHTTP2: true}
	}
	send := func() (int, string) {
		var rd io.Reader
		if body != nil {
			rd = bytes.NewReader(body)
		}
		req, err := http.NewRequestWithContext(ctx, method, target, rd)
		if err != nil {
			return 0, err.Error()
		}
		if body != nil {
			req.Header.Set("Content-Type", *ctype)
		}
		resp, err := hc.Do(req)
		if err != nil {
			// No answer at all (refused, timed out) is status 0: not a 2xx.
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		return resp.StatusCode, string(b)
	}
	enc := json.NewEncoder(os.Stdout)
	if *isolated {
		// Say so at once: the caller cuts the network only after this line.
		_ = enc.Encode(map[string]any{"waiting": true})
		deadline := time.Now().Add(*wait)
		for !onlyLoopback() {
			if time.Now().After(deadline) {
				return fmt.Errorf("still connected to a network after %s", *wait)
			}
			time.Sleep(2 * time.Millisecond)
		}
		_ = enc.Encode(map[string]any{"isolated_ms": time.Now().UnixMilli()})
	}
	if *repeatFor <= 0 {
		code, text := send()
		fmt.Printf("%d\n%s\n", code, text)
		return nil
	}
	// One JSON line per attempt; times are Unix milliseconds (the host's
	// clock: containers share the kernel's).
	end := time.Now().Add(*repeatFor)
	for time.Now().Before(end) && ctx.Err() == nil {
		start := time.Now()
		code, text := send()
		if len(text) > 300 {
			text = text[:300]
		}
		_ = enc.Encode(map[string]any{"start_ms": start.UnixMilli(), "end_ms": time.Now().UnixMilli(),
			"isolated": onlyLoopback(), "status": code, "body": strings.TrimSpace(text)})
		time.Sleep(*interval)
	}
	return nil
}

// clientTLS is the TLS client configuration of `http --tls-dir`: the
// certificate of role found in dir (or of the first role found there),
// accepting any server certificate of dir's CA that carries a serving role.
func clientTLS(dir, role string) (*tls.Config, error) {
	roles := []pki.Role{pki.RoleUser, pki.RoleWorker, pki.RoleCoordinator, pki.RoleEtcd, pki.RoleNATS}
	if role != "" {
		r, err := pki.ParseRole(role)
		if err != nil {
			return nil, fmt.Errorf("--role: %w", err)
		}
		roles = []pki.Role{r}
	}
	var errs []error
	for _, r := range roles {
		if _, err := pki.FilesInDir(dir, r); err != nil {
			errs = append(errs, err)
			continue
		}
		creds, err := pki.LoadDir(dir, r)
		if err != nil {
			return nil, fmt.Errorf("--tls-dir: %w", err)
		}
		return pki.ClientConfig(creds, pki.RoleCoordinator, pki.RoleEtcd, pki.RoleNATS, pki.RoleWorker)
	}
	return nil, fmt.Errorf("--tls-dir: %w", errors.Join(errs...))
}

// onlyLoopback reports whether every network interface with an address
// is a loopback one (the container was disconnected from its networks).
func onlyLoopback() bool {
	ifs, err := net.Interfaces()
	if err != nil {
		return false
	}
	for _, i := range ifs {
		if i.Flags&net.FlagLoopback != 0 || i.Flags&net.FlagUp == 0 {
			continue
		}
		if addrs, err := i.Addrs(); err == nil && len(addrs) > 0 {
			return false
		}
	}
	return true
}

// VerifyResult is what verify prints for one committed checkpoint.
type VerifyResult struct {
	Step        int64    `json:"step"`
	Generation  uint64   `json:"generation"`
	OK          bool     `json:"ok"`
	HasManifest bool     `json:"has_manifest"` // MANIFEST.json on disk (informational)
	Problems    []string `json:"problems,omitempty"`
}

func runVerify(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("verify", flag.ContinueOnError)
	root := fs.String("root", "/checkpoints", "checkpoint volume")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var ms []checkpoint.Manifest
	if err := json.NewDecoder(os.Stdin).Decode(&ms); err != nil {
		return fmt.Errorf("decode manifests on stdin: %w", err)
	}
	store, err := checkpoint.NewDirStore(*root)
	if err != nil {
		return err
	}
	out := make([]VerifyResult, 0, len(ms))
	for _, m := range ms {
		out = append(out, verifyOne(ctx, store, m))
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}

// verifyOne checks every shard the coordinator recorded for a commit: the
// file exists, has the recorded size, its header hashes to the recorded
// header checksum, and its data to the recorded data checksum.
func verifyOne(ctx context.Context, store *checkpoint.DirStore, m checkpoint.Manifest) VerifyResult {
	r := VerifyResult{Step: m.Step, Generation: m.Generation}
	dir := store.StepDir(m.Job, m.Step, m.Generation)
	if _, err := os.Stat(filepath.Join(dir, checkpoint.ManifestFile)); err == nil {
		r.HasManifest = true
	}
	if len(m.Shards) != m.World || m.World == 0 {
		r.Problems = append(r.Problems, fmt.Sprintf("%d shards recorded for world %d", len(m.Shards), m.World))
	}
	for _, sh := range m.Shards {
		path := filepath.Join(dir, sh.File)
		bad := func(format string, a ...any) {
			r.Problems = append(r.Problems, fmt.Sprintf("rank %d %s: ", sh.Rank, path)+fmt.Sprintf(format, a...))
		}
		st, err := os.Stat(path)
		if err != nil {
			bad("%v", err)
			continue
		}
		if st.Size() != sh.Bytes {
			bad("%d bytes on disk, %d recorded", st.Size(), sh.Bytes)
			continue
		}
		f, err := checkpoint.OpenShard(path)
		if err != nil {
			bad("open: %v", err)
			continue
		}
		switch {
		case f.HeaderSHA256() != sh.HeaderSHA256:
			bad("header sha256 %s, recorded %s", f.HeaderSHA256(), sh.HeaderSHA256)
		case f.DataSHA256() != sh.DataSHA256:
			bad("header says data sha256 %s, recorded %s", f.DataSHA256(), sh.DataSHA256)
		default:
			if err := f.VerifyData(ctx); err != nil {
				bad("data: %v", err)
			}
		}
		f.Close()
	}
	r.OK = len(r.Problems) == 0
	return r
}
