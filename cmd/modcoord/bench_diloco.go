package main

import (
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/signal"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/spf13/cobra"

	"github.com/modcoord/modcoord/allreduce"
	"github.com/modcoord/modcoord/embedded"
	"github.com/modcoord/modcoord/jobspec"
	"github.com/modcoord/modcoord/mod"
	"github.com/modcoord/modcoord/train"
)

// The DiLoCo benchmark (tools/diloco_bench.sh) runs one process per rank,
// each in its own network namespace behind a shaped link, and a NATS
// server on the host side. These two hidden commands are its parts: the
// server, and one rank that trains a fixed small model and prints one JSON
// line per evaluation. They use a password on an isolated test network,
// not the cluster's mutual TLS: they are a measurement harness, not a
// deployment, so both refuse any address but a loopback or private one
// (benchAddrOK) and a short password.

// benchMinPassword is the shortest password the benchmark commands take
// (tools/diloco_bench.sh passes 32 random hex digits).
const benchMinPassword = 16

// benchAddrOK refuses an address the plain-text, password-only benchmark
// NATS should never be reachable on or send its password to: anything
// but a loopback, private (RFC 1918 / ULA) or link-local IP literal.
func benchAddrOK(flag, host string) error {
	ip := net.ParseIP(host)
	if ip == nil || !(ip.IsLoopback() || ip.IsPrivate() || ip.IsLinkLocalUnicast()) {
		return usageErrorf("%s %q: the DiLoCo benchmark uses a password without TLS, so it runs only on a loopback or private IP address; a cluster's NATS uses mutual TLS (modcoord coordinator, worker)", flag, host)
	}
	return nil
}

func benchPasswordOK(pw string) error {
	if len(pw) < benchMinPassword {
		return usageErrorf("--password: %d characters, the benchmark needs at least %d (tools/diloco_bench.sh generates one)", len(pw), benchMinPassword)
	}
	return nil
}

func newBenchDiLoCoNATSCmd() *cobra.Command {
	var host, password string
	var port int
	cmd := &cobra.Command{
		Use:    "diloco-nats",
		Short:  "A NATS server for the DiLoCo benchmark (tools/diloco_bench.sh)",
		Hidden: true,
		Args:   noSubcommandArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := benchAddrOK("--host", host); err != nil {
				return err
			}
			if err := benchPasswordOK(password); err != nil {
				return err
			}
			srv, err := embedded.StartNATS(embedded.NATSConfig{Host: host, Port: port,
				Users: []*server.User{{Username: "bench", Password: password, Permissions: embedded.RingPermissions()}}})
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "nats listening on %s\n", srv.ClientURL())
			sig := make(chan os.Signal, 1)
			signal.Notify(sig, os.Interrupt)
			select {
			case <-sig:
			case <-cmd.Context().Done():
			}
			srv.Shutdown()
			return nil
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&host, "host", "127.0.0.1", "address to listen on")
	fs.IntVar(&port, "port", 4222, "port")
	fs.StringVar(&password, "password", "", "password of user bench (required, at least 16 characters)")
	cmd.MarkFlagRequired("password")
	return cmd
}

// benchRankPoint is one evaluation of a benchmark rank, as rank 0 prints it.
type benchRankPoint struct {
	Mode         string  `json:"mode"`
	Step         int64   `json:"step"`
	Seconds      float64 `json:"seconds"` // since the ring formed
	ValLoss      float64 `json:"val_loss"`
	TrainLoss    float64 `json:"train_loss"`
	SentBytes    uint64  `json:"sent_bytes"` // by this rank
	Tokens       int64   `json:"tokens"`     // by the whole job
	OuterSteps   int64   `json:"outer_steps"`
	OuterSeconds float64 `json:"outer_seconds"`
	FLOPs        float64 `json:"flops"` // by the whole job: steps·per-step + outer steps·outer FLOPs
	// ValLossAll is the last step's validation loss over every window of
	// the validation split (after the clock stopped); ValLoss, over the
	// first --eval-windows, is what every evaluation reports.
	ValLossAll float64 `json:"val_loss_all,omitempty"`
}

func newBenchDiLoCoRankCmd() *cobra.Command {
	var o struct {
		benchDiLoCoRun
		nats, password, data string
		rank, world          int
	}
	cmd := &cobra.Command{
		Use:    "diloco-rank",
		Short:  "One rank of the DiLoCo benchmark (tools/diloco_bench.sh)",
		Hidden: true,
		Args:   noSubcommandArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			sync, err := o.sync()
			if err != nil {
				return err
			}
			if err := benchPasswordOK(o.password); err != nil {
				return err
			}
			u, err := url.Parse(o.nats)
			if err != nil {
				return usageErrorf("--nats %q: %v", o.nats, err)
			}
			if err := benchAddrOK("--nats", u.Hostname()); err != nil {
				return err
			}
			ds, err := mod.LoadDataset(o.data)
			if err != nil {
				return err
			}
			tp, err := allreduce.DialNATS(allreduce.NATSOptions{URL: o.nats, User: "bench", Password: o.password, Name: fmt.Sprintf("bench-rank-%d", o.rank)})
			if err != nil {
				return err
			}
			defer tp.Close()
			ring, err := allreduce.NewRing(tp, allreduce.Config{Job: "diloco-bench", Generation: 1, Rank: o.rank, World: o.world, Deadline: 120 * time.Second})
			if err != nil {
				return err
			}
			defer ring.Close()
			tr, err := train.NewTrainer(benchDiLoCoConfig(o.rank, o.world, o.steps, o.lr, o.seed, sync), ds, ring)
			if err != nil {
				return err
			}
			defer tr.Close()
			perStep, outer := benchDiLoCoFLOPs(sync)
			// A first scalar all-reduce waits until every rank is up, so the
			// clock starts with the ring complete.
			if err := ring.AllReduceScalars(ctx, 1<<62, []float64{0}); err != nil {
				return fmt.Errorf("form the ring: %w", err)
			}
			start := time.Now()
			enc := json.NewEncoder(cmd.OutOrStdout())
			for tr.StepsDone() < o.steps {
				res, err := tr.Step(ctx)
				if err != nil {
					return err
				}
				if !o.evalAt(res.Step) {
					continue
				}
				val, err := tr.EvalLoss(ctx, o.evalWindows)
				if err != nil {
					return err
				}
				st := tr.OuterStats()
				p := benchRankPoint{Mode: benchModeName(sync), Step: res.Step, Seconds: time.Since(start).Seconds(), ValLoss: val, TrainLoss: res.Loss,
					SentBytes: ring.Stats().SentBytes, Tokens: res.Step * int64(tr.TokensPerStep()), OuterSteps: st.Steps,
					OuterSeconds: st.Elapsed.Seconds(), FLOPs: float64(res.Step)*perStep + float64(st.Steps)*outer}
				if res.Step == o.steps {
					if p.ValLossAll, err = tr.EvalLoss(ctx, 0); err != nil {
						return err
					}
				}
				if o.rank == 0 {
					enc.Encode(p)
				}
			}
			return nil
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&o.nats, "nats", "nats://127.0.0.1:4222", "NATS server URL")
	fs.StringVar(&o.password, "password", "", "password of user bench")
	fs.StringVar(&o.data, "data", "data/tinyshakespeare.txt", "text file to train on")
	fs.IntVar(&o.rank, "rank", 0, "this rank")
	fs.IntVar(&o.world, "world", 4, "ranks in all")
	o.benchDiLoCoRun.flags(fs)
	return cmd
}

func benchModeName(s *jobspec.Sync) string {
	if !s.IsDiLoCo() {
		return jobspec.SyncEveryStep
	}
	name := fmt.Sprintf("diloco-h%d", s.InnerSteps)
	if s.Int8() {
		name += "-int8"
	}
	if s.WarmupSteps > 0 {
		name += fmt.Sprintf("-w%d", s.WarmupSteps)
	}
	return name
}

// newBenchDiLoCoDelayCmd is a TCP proxy that holds every byte for a fixed
// delay in each direction: the benchmark's link latency, where the kernel
// has no netem (tc's tbf still shapes the rate). Each direction keeps its
// order and its bandwidth; at most delayQueue reads wait in flight, after
// which TCP's flow control pushes back on the sender.
func newBenchDiLoCoDelayCmd() *cobra.Command {
	var listen, target string
	var delay time.Duration
	cmd := &cobra.Command{
		Use:    "diloco-delay",
		Short:  "A TCP proxy adding a fixed one-way delay (tools/diloco_bench.sh)",
		Hidden: true,
		Args:   noSubcommandArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ln, err := net.Listen("tcp", listen)
			if err != nil {
				return err
			}
			go func() {
				<-cmd.Context().Done()
				ln.Close()
			}()
			for {
				c, err := ln.Accept()
				if err != nil {
					return nil
				}
				go func() {
					defer c.Close()
					up, err := net.Dial("tcp", target)
					if err != nil {
						fmt.Fprintln(cmd.ErrOrStderr(), err)
						return
					}
					defer up.Close()
					done := make(chan struct{}, 2)
					go func() { delayCopy(up, c, delay); done <- struct{}{} }()
					go func() { delayCopy(c, up, delay); done <- struct{}{} }()
					<-done
				}()
			}
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&listen, "listen", "127.0.0.1:4222", "address to accept on")
	fs.StringVar(&target, "target", "", "address to forward to")
	fs.DurationVar(&delay, "delay", 10*time.Millisecond, "one-way delay added in each direction")
	return cmd
}

const delayQueue = 1024

func delayCopy(dst net.Conn, src net.Conn, delay time.Duration) {
	type chunk struct {
		b  []byte
		at time.Time
	}
	q := make(chan chunk, delayQueue)
	go func() {
		defer close(q)
		for {
			buf := make([]byte, 32<<10)
			n, err := src.Read(buf)
			if n > 0 {
				q <- chunk{buf[:n], time.Now().Add(delay)}
			}
			if err != nil {
				return
			}
		}
	}()
	for c := range q {
		time.Sleep(time.Until(c.at))
		if _, err := dst.Write(c.b); err != nil {
			break
		}
	}
	dst.Close()
	src.Close()
	// After a failed write the reader may be blocked on a full q; closing
	// src ends its Read, and draining lets it reach close(q) and exit.
	for range q {
	}
}
