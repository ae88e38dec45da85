// Command etcd is the one-member etcd that .ci/kube-install-test.sh gives
// its throwaway kube-apiserver: go.etcd.io/etcd/server/v3/embed, loopback
// only, on the ports it is told. It writes "ready" to --ready-file once
// the server serves, and stops on SIGINT/SIGTERM.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/url"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/modcoord/modcoord/embedded"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "kubetest etcd:", err)
		os.Exit(1)
	}
}

func run() error {
	dir := flag.String("data-dir", "", "data directory (required)")
	client := flag.String("client-url", "http://127.0.0.1:23790", "client URL (listen and advertise)")
	peer := flag.String("peer-url", "http://127.0.0.1:23800", "peer URL (listen and advertise)")
	ready := flag.String("ready-file", "", "file to create once etcd serves")
	timeout := flag.Duration("start-timeout", 60*time.Second, "how long to wait for etcd to become ready")
	flag.Parse()
	if *dir == "" {
		return errors.New("--data-dir is required")
	}
	cu, err := url.Parse(*client)
	if err != nil {
		return fmt.Errorf("--client-url: %w", err)
	}
	pu, err := url.Parse(*peer)
	if err != nil {
		return fmt.Errorf("--peer-url: %w", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	e, err := embedded.StartEtcd(embedded.EtcdConfig{
		Name: "kubetest", Dir: *dir, LogLevel: "warn", ReadyTimeout: *timeout,
		ClientURL: *cu, PeerURL: *pu,
	})
	if err != nil {
		return err
	}
	defer e.Close()
	if ctx.Err() != nil {
		return nil
	}
	fmt.Fprintf(os.Stderr, "kubetest etcd: ready on %s\n", cu)
	if *ready != "" {
		if err := os.WriteFile(*ready, []byte("ready\n"), 0o644); err != nil {
			return err
		}
	}
	select {
	case <-ctx.Done():
		return nil
	case err := <-e.Err():
		return err
	}
}
