package main

import (
	"context"
	"io"
	"log/slog"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/modcoord/modcoord/allreduce"
)

// TestDialNATSRetrying: a worker that starts while NATS is down (restarting)
// connects once the server is back instead of exiting.
func TestDialNATSRetrying(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close() // nothing listens there until the server starts
	go func() {
		time.Sleep(700 * time.Millisecond)
		s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: port, NoLog: true, NoSigs: true})
		if err != nil {
			t.Error(err)
			return
		}
		go s.Start()
		t.Cleanup(s.Shutdown)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	start := time.Now()
	tr, err := dialNATSRetrying(ctx, allreduce.NATSOptions{URL: "nats://127.0.0.1:" + itoa(port), Name: "w"}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatalf("after %s: %v", time.Since(start), err)
	}
	tr.Close()
	if time.Since(start) < 500*time.Millisecond {
		t.Errorf("connected after %s, before the server started: the test proves nothing", time.Since(start))
	}
}

func itoa(n int) string { return strconv.Itoa(n) }
