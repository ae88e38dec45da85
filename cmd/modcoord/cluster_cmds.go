package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/modcoord/modcoord/coordinator"
)

// Cluster commands: `coordinator` runs a raft node; submit, status, watch,
// cancel and checkpoints talk to a running cluster through the API.

func cmdCoordinator(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("coordinator", flag.ContinueOnError)
	id := fs.String("id", envOr("POD_NAME", "coord-0"), "raft server id, one of --peers (default: $POD_NAME)")
	raftAddr := fs.String("raft-addr", "", "raft listen address (default: this node's address in --peers)")
	apiAddr := fs.String("api-addr", ":7070", "HTTP API listen address")
	dataDir := fs.String("data-dir", "raft-data", "directory for the raft log, stable store and snapshots")
	peers := fs.String("peers", "", "every coordinator as id=raftHost:port=apiHost:port, comma-separated (default: this node alone, raft 127.0.0.1:7000)")
	bootstrap := fs.Bool("bootstrap", false, "form the cluster from --peers if this node has no raft state (safe on every node)")
	etcd := fs.String("etcd", envOr("MODCOORD_ETCD", "http://127.0.0.1:2379"), "etcd client URLs, comma-separated")
	cluster := fs.String("cluster", "default", "cluster name (scopes etcd keys)")
	tokenFile := fs.String("token-file", os.Getenv("MODCOORD_TOKEN_FILE"), "file holding the API bearer token (or set MODCOORD_TOKEN)")
	insecure := fs.Bool("insecure-no-auth", false, "serve the API without authentication (never in production)")
	metricsAddr := fs.String("metrics", "", "extra listen address for /metrics alone (the API serves /metrics too)")
	skipData := fs.Bool("skip-data-check", false, "do not check that a submitted job's data file exists on this machine")
	heartbeat := fs.Duration("raft-heartbeat", time.Second, "raft heartbeat and election timeout")
	debounce := fs.Duration("debounce", time.Second, "how long the live worker set must be quiet before a new generation forms")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	token := ""
	if !*insecure {
		var err error
		if token, err = readToken(*tokenFile); err != nil {
			return fmt.Errorf("%w, or --insecure-no-auth", err)
		}
	}
	peerSpec := *peers
	if peerSpec == "" {
		raft := *raftAddr
		if raft == "" {
			raft = "127.0.0.1:7000"
		}
		peerSpec = fmt.Sprintf("%s=%s=%s", *id, loopbackFor(raft), loopbackFor(*apiAddr))
	}
	peerList, err := coordinator.ParsePeers(peerSpec)
	if err != nil {
		return fmt.Errorf("--peers: %w", err)
	}
	etcdCli, err := clientv3.New(clientv3.Config{Endpoints: splitList(*etcd), DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return fmt.Errorf("etcd client: %w", err)
	}
	defer etcdCli.Close()

	co, err := coordinator.Start(coordinator.Config{
		Node: coordinator.NodeConfig{
			ID: *id, RaftBind: *raftAddr, DataDir: *dataDir, Peers: peerList, Bootstrap: *bootstrap,
			Timing: coordinator.RaftTiming{HeartbeatTimeout: *heartbeat, ElectionTimeout: *heartbeat, LeaderLeaseTimeout: *heartbeat / 2},
		},
		APIAddr: *apiAddr, Cluster: *cluster, Etcd: etcdCli,
		Token: token, InsecureNoAuth: *insecure, CheckData: !*skipData,
		Debounce: *debounce, Logger: log,
	})
	if err != nil {
		return err
	}
	defer co.Close()
	if *metricsAddr != "" {
		srv := &http.Server{Addr: *metricsAddr, Handler: co.MetricsHandler(), ReadHeaderTimeout: 5 * time.Second}
		go func() {
			if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("metrics listener stopped", "err", err)
			}
		}()
		defer srv.Close()
	}
	<-ctx.Done()
	log.Info("shutting down")
	return nil
}

// loopbackFor turns a listen address such as ":7070" or "0.0.0.0:7070"
// into one this machine can dial.
func loopbackFor(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || (host != "" && host != "0.0.0.0" && host != "::") {
		return addr
	}
	return net.JoinHostPort("127.0.0.1", port)
}

// clientFlags are the flags every client command takes.
type clientFlags struct {
	addr, tokenFile *string
}

func addClientFlags(fs *flag.FlagSet) clientFlags {
	return clientFlags{
		addr:      fs.String("addr", envOr("MODCOORD_ADDR", "http://127.0.0.1:7070"), "coordinator API URLs, comma-separated (env MODCOORD_ADDR)"),
		tokenFile: fs.String("token-file", os.Getenv("MODCOORD_TOKEN_FILE"), "file holding the API bearer token (env MODCOORD_TOKEN_FILE, or MODCOORD_TOKEN holding the token)"),
	}
}

func (f clientFlags) client() (*coordinator.Client, error) {
	token := ""
	if *f.tokenFile != "" || os.Getenv("MODCOORD_TOKEN") != "" {
		var err error
		if token, err = readToken(*f.tokenFile); err != nil {
			return nil, err
		}
	}
	// Without a token the request goes out bare: a cluster run with
	// --insecure-no-auth accepts it, any other answers 401.
	return coordinator.NewClient(splitList(*f.addr), token)
}

// parseInterleaved parses flags that may come before or after the
// positional arguments ("submit job.yaml --skip-data-check").
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

func cmdSubmit(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("submit", flag.ContinueOnError)
	cf := addClientFlags(fs)
	skipData := fs.Bool("skip-data-check", false, "do not check that the data file exists here (only the workers may see it)")
	jsonOut := fs.Bool("json", false, "print the coordinator's answer as JSON")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return errors.New("usage: modcoord submit [flags] job.yaml")
	}
	body, err := os.ReadFile(pos[0])
	if err != nil {
		return fmt.Errorf("read job spec: %w", err)
	}
	// Validate here first: the same checks the coordinator runs, without a
	// round trip, and with the data file checked on this machine.
	spec, err := coordinator.ParseSpec(body)
	if err == nil && !*skipData {
		err = spec.CheckData(".")
	}
	if err != nil {
		return fmt.Errorf("%s is not a valid job spec:\n  %s", pos[0], strings.Join(coordinator.FieldErrors(err), "\n  "))
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	res, err := c.Submit(ctx, body)
	if err != nil {
		return err
	}
	if *jsonOut {
		return json.NewEncoder(os.Stdout).Encode(res)
	}
	fmt.Printf("%s\t%d steps × %.4g FLOPs/step (budget %.4g FLOPs)\n", res.ID, res.Steps, res.FLOPsPerStep, res.BudgetFLOPs)
	return nil
}

func cmdStatus(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	cf := addClientFlags(fs)
	jsonOut := fs.Bool("json", false, "print JSON")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 1 {
		return errors.New("usage: modcoord status [flags] [JOB]")
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	var jobs []coordinator.Job
	if len(pos) == 1 {
		j, err := c.Job(ctx, pos[0])
		if err != nil {
			return err
		}
		jobs = []coordinator.Job{j}
	} else if jobs, err = c.Jobs(ctx); err != nil {
		return err
	}
	if *jsonOut {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		if len(pos) == 1 {
			return enc.Encode(jobs[0])
		}
		return enc.Encode(jobs)
	}
	if len(pos) == 1 {
		printJob(os.Stdout, jobs[0])
		return nil
	}
	if len(jobs) == 0 {
		fmt.Println("no jobs")
		return nil
	}
	printJobTable(os.Stdout, jobs)
	return nil
}

func printJobTable(w io.Writer, jobs []coordinator.Job) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "JOB\tNAME\tSTATUS\tSTEP\tLOSS\tBUDGET\tGEN\tWORKERS\tREASON")
	for _, j := range jobs {
		loss := "-"
		if l, ok := j.LastLoss(); ok {
			loss = fmt.Sprintf("%.4f", l)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d/%d\t%s\t%s\t%d\t%d\t%s\n", j.ID, j.Spec.Name, j.Status,
			j.Ledger.StepsDone, j.Ledger.TotalSteps, loss, budgetUsed(j.Ledger), j.Generation, len(j.Members), j.Reason)
	}
	tw.Flush()
}

func budgetUsed(l coordinator.Ledger) string {
	if l.BudgetFLOPs <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f%%", 100*l.FLOPsUsed/l.BudgetFLOPs)
}

func printJob(w io.Writer, j coordinator.Job) {
	l := j.Ledger
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	row := func(k, format string, a ...any) { fmt.Fprintf(tw, "%s\t"+format+"\n", append([]any{k}, a...)...) }
	row("job", "%s (%s)", j.ID, j.Spec.Name)
	row("status", "%s", j.Reason) // reasons start with the status
	row("model", "%s", j.Spec.Model)
	row("data", "%s, batch %d, workers %d..%d", j.Spec.Data, j.Spec.Batch, j.Spec.MinWorkers, j.Spec.MaxWorkers)
	row("steps", "%d of %d (generation %d started at step %d)", l.StepsDone, l.TotalSteps, j.Generation, j.StartStep)
	row("budget", "%.4g of %.4g FLOPs used (%s), %.4g spent incl. redone steps, %.4g FLOPs/step",
		l.FLOPsUsed, l.BudgetFLOPs, budgetUsed(l), l.FLOPsSpent, l.FLOPsPerStep)
	row("members", "%s", strings.Join(j.Members, " "))
	if loss, ok := j.LastLoss(); ok {
		row("loss", "%.4f", loss)
	}
	if j.Checkpoint != nil {
		row("checkpoint", "step %d (generation %d, %d shards)", j.Checkpoint.Step, j.Checkpoint.Generation, len(j.Checkpoint.Shards))
	}
	row("submitted", "%s", j.SubmittedAt.Format(time.RFC3339))
	if !j.EndedAt.IsZero() {
		row("ended", "%s", j.EndedAt.Format(time.RFC3339))
	}
	tw.Flush()
}

func cmdWatch(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("watch", flag.ContinueOnError)
	cf := addClientFlags(fs)
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 1 {
		return errors.New("usage: modcoord watch [flags] [JOB]")
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	id := ""
	if len(pos) == 1 {
		id = pos[0]
	} else if id, err = currentJob(ctx, c); err != nil {
		return err
	}
	j, err := watchJob(ctx, c, id, os.Stderr)
	if err != nil {
		return err
	}
	if j.Status != coordinator.StatusCompleted {
		return fmt.Errorf("job %s %s", j.ID, j.Reason)
	}
	fmt.Fprintf(os.Stderr, "job %s %s\n", j.ID, j.Reason)
	return nil
}

// currentJob is the job holding the workers, else the next queued one,
// else the last submitted.
func currentJob(ctx context.Context, c *coordinator.Client) (string, error) {
	jobs, err := c.Jobs(ctx)
	if err != nil {
		return "", err
	}
	if len(jobs) == 0 {
		return "", errors.New("no jobs to watch")
	}
	for _, j := range jobs {
		if !j.Status.Terminal() {
			return j.ID, nil
		}
	}
	return jobs[len(jobs)-1].ID, nil
}

func cmdCancel(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("cancel", flag.ContinueOnError)
	cf := addClientFlags(fs)
	reason := fs.String("reason", "", "why, recorded in the job's status")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return errors.New("usage: modcoord cancel [flags] JOB")
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	j, err := c.Cancel(ctx, pos[0], *reason)
	if err != nil {
		return err
	}
	fmt.Printf("%s\t%s\n", j.ID, j.Reason)
	return nil
}

func cmdCheckpoints(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("checkpoints", flag.ContinueOnError)
	cf := addClientFlags(fs)
	jsonOut := fs.Bool("json", false, "print JSON")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return errors.New("usage: modcoord checkpoints [flags] JOB")
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	v, err := c.Checkpoints(ctx, pos[0])
	if err != nil {
		return err
	}
	if *jsonOut {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	if len(v.Retained) == 0 && v.Pending == nil {
		fmt.Printf("job %s has no checkpoints yet\n", v.Job)
		return nil
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "STEP\tGEN\tSTATE\tSHARDS\tPARAMS\tBYTES")
	show := func(m coordinator.CheckpointManifest, state string) {
		var bytes int64
		for _, s := range m.Shards {
			bytes += s.Bytes
		}
		fmt.Fprintf(tw, "%d\t%d\t%s\t%d/%d\t%d\t%d\n", m.Step, m.Generation, state, len(m.Shards), m.World, m.Total, bytes)
	}
	for i, m := range v.Retained {
		state := "committed"
		if i == len(v.Retained)-1 {
			state = "committed (latest)"
		}
		show(m, state)
	}
	if v.Pending != nil {
		show(*v.Pending, "pending")
	}
	return tw.Flush()
}
